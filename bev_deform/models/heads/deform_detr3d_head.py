"""The DETR3D-style query head: learned object queries with 3D reference points and a decoder that
samples the cameras; branches, losses, matching and decoding come from :class:`QueryHeadBase`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.model import xavier_init
from mmengine.structures import InstanceData
from torch import Tensor, nn

from bev_deform.geometry import CameraGeometry
from bev_deform.models.heads.denoising_3d import Denoising3D, DenoisingQueries
from bev_deform.models.heads.query_head_base import QueryHeadBase
from bev_deform.models.layers.deform_detr3d_decoder import DeformDETR3DDecoder
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS


@MODELS.register_module()
class DeformDETR3DHead(QueryHeadBase):
    """DETR3D-style head on multi-scale deformable attention.

    ``num_query`` learned queries (content + position) start from reference points predicted
    from their position embedding; the decoder samples the cameras around them and refines them
    layer by layer; the branches, losses, matching and decoding are :class:`QueryHeadBase`'s.

    With ``denoising``, training adds groups of noised ground-truth queries after the matching
    queries (DINO's contrastive denoising in 3D, :class:`Denoising3D`), hidden from the matching
    queries by the self-attention mask, with their own losses (``dn_loss_*``); inference never
    builds them, so predictions do not depend on it.

    Config dict (embed_dims, num_levels and pc_range are passed down to the decoder, so they are
    stated once, here)::

        dict(type='DeformDETR3DHead', num_classes=10, pc_range=point_cloud_range,
             embed_dims=256, num_query=900, num_levels=4,
             decoder=dict(num_layers=6, layer_cfg=dict(...)),
             bbox_coder=dict(type='NMSFreeCoder', max_num=300, post_center_range=[...]),
             loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                           loss_weight=2.0),
             loss_bbox=dict(type='mmdet.L1Loss', loss_weight=0.25),
             train_cfg=dict(assigner=dict(type='HungarianAssigner3D', match_costs=[...])),
             denoising=dict(num_groups=5, box_noise_scale=1.0, label_noise_ratio=0.25))  # optional

    Args:
        decoder: decoder config; type defaults to ``DeformDETR3DDecoder``.
        denoising: optional 3D contrastive denoising config; type defaults to ``Denoising3D``,
            whose num_classes, embed_dims and pc_range are passed down; None (default): off.
        the others: those of :class:`QueryHeadBase`.
    """

    def __init__(
        self,
        num_classes: int,
        pc_range: Sequence[float],
        embed_dims: int = 256,
        num_query: int = 900,
        num_levels: int = 4,
        decoder: dict | None = None,
        bbox_coder: dict | None = None,
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        code_weights: Sequence[float] | None = None,
        train_cfg: dict | None = None,
        denoising: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(
            num_classes, pc_range, embed_dims, num_query, num_levels, bbox_coder, loss_cls, loss_bbox,
            code_weights, train_cfg, init_cfg,
        )  # fmt: skip
        decoder = {"type": DeformDETR3DDecoder, **(decoder or {})}
        self.decoder = MODELS.build(
            with_shared(
                decoder, "decoder", embed_dims=embed_dims, num_levels=num_levels, pc_range=self.pc_range
            )
        )
        self._init_branches(self.decoder.num_layers)
        self.reference_points = nn.Linear(embed_dims, 3)
        self.denoising = None
        if denoising is not None:
            shared = dict(num_classes=num_classes, embed_dims=embed_dims, pc_range=self.pc_range)
            self.denoising = MODELS.build(
                with_shared({"type": Denoising3D, **denoising}, "denoising", **shared)
            )

    def init_weights(self) -> None:
        """Children's own initialisation, classification biases for a prior probability of 0.01
        (focal loss), and a xavier reference-point layer."""
        super().init_weights()
        xavier_init(self.reference_points, distribution="uniform", bias=0.0)

    def forward(
        self,
        mlvl_feats: Sequence[Tensor],
        batch_input_metas: Sequence[dict] | CameraGeometry,
        batch_gt_instances_3d: Sequence[InstanceData] | None = None,
        selected_refs: Tensor | None = None,
    ) -> dict:
        """Decode the queries against the camera features.

        Args:
            mlvl_feats: L tensors (B, N, C, H_l, W_l), the neck's levels per camera.
            batch_input_metas: B metainfo dicts with ``lidar2img`` (N, 4, 4), ``img_shape`` and
                ``batch_input_shape`` (see :meth:`CameraGeometry.from_metas`), or the
                ``CameraGeometry`` itself (ONNX export builds it from graph-input tensors).
            batch_gt_instances_3d: the ground truth, from which training with ``denoising`` builds
                the denoising queries; ignored otherwise.
            selected_refs: (B, k, 3) reference points normalised in pc_range for the first k
                queries (query selection from the image side); their content queries stay learned,
                the other queries keep their learned reference points.

        Returns:
            ``all_cls_scores`` (num_layers, B, Q, K) logits and ``all_bbox_preds``
            (num_layers, B, Q, 10) codes with the centre in metres, of the matching queries; with
            denoising queries also ``dn_cls_scores`` (num_layers, B, D, K), ``dn_bbox_preds``
            (num_layers, B, D, 10) and ``dn`` (:class:`DenoisingQueries`, their targets).
        """
        self._check_feats(mlvl_feats)
        cams = batch_input_metas
        if not isinstance(cams, CameraGeometry):
            cams = CameraGeometry.from_metas(batch_input_metas, mlvl_feats[0].device)
        value, levels = self._flatten_levels(mlvl_feats, cams.pad_hw)
        query_pos, query = self._split_queries(cams.lidar2img.shape[0])  # (B, Q, C) each
        ref_points = self.reference_points(query_pos).sigmoid()  # (B, Q, 3) normalised in pc_range
        if selected_refs is not None:
            k = selected_refs.shape[1]
            if selected_refs.shape != (ref_points.shape[0], k, 3) or k > self.num_query:
                raise ValueError(
                    f"selected_refs must be (B={ref_points.shape[0]}, k <= {self.num_query}, 3), got "
                    f"{tuple(selected_refs.shape)}"
                )
            # (B, k, 3) selected and (B, Q - k, 3) learned -> (B, Q, 3)
            ref_points = torch.cat([selected_refs.to(ref_points.dtype), ref_points[:, k:]], 1)
        dn = None
        if self.training and self.denoising is not None and batch_gt_instances_3d is not None:
            dn = self._denoising_queries(batch_gt_instances_3d, value.device)
        if dn is None:
            hidden, refs, raw_codes = self.decoder(
                query, query_pos, value, ref_points, levels, cams, self.reg_branches
            )
            return self._outputs(hidden, refs, raw_codes)
        # [matching (Q) | denoising (D)]: (B, Q, .) and (B, D, .) -> (B, Q + D, .)
        query, query_pos = torch.cat([query, dn.query], 1), torch.cat([query_pos, dn.query_pos], 1)
        ref_points = torch.cat([ref_points, dn.ref_points], 1)
        hidden, refs, raw_codes = self.decoder(
            query, query_pos, value, ref_points, levels, cams, self.reg_branches,
            dn.attn_mask, dn.key_padding_mask,
        )  # fmt: skip
        outs = self._outputs(hidden, refs, raw_codes)
        q = self.num_query
        # (num_layers, B, Q + D, .) -> the matching (.., :Q, .) and the denoising (.., Q:, .) queries
        return dict(
            all_cls_scores=outs["all_cls_scores"][:, :, :q],
            all_bbox_preds=outs["all_bbox_preds"][:, :, :q],
            dn_cls_scores=outs["all_cls_scores"][:, :, q:],
            dn_bbox_preds=outs["all_bbox_preds"][:, :, q:],
            dn=dn,
        )

    def _denoising_queries(
        self, batch_gt_instances_3d: Sequence[InstanceData], device: torch.device
    ) -> DenoisingQueries | None:
        """The batch's denoising queries, or None when no sample has a box."""
        codes = [self.bbox_coder.encode(g.bboxes_3d.to(device)) for g in batch_gt_instances_3d]  # (G_b, 10)
        labels = [g.labels_3d.to(device) for g in batch_gt_instances_3d]
        return self.denoising(codes, labels, self.num_query)

    def loss(
        self, mlvl_feats: Sequence[Tensor], batch_data_samples: Sequence, selected_refs: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Losses of every decoder layer (:meth:`loss_by_feat`) and, with ``denoising``, those of the
        denoising queries times its ``loss_weight`` (:meth:`loss_denoising`: ``dn_loss_cls``,
        ``dn_loss_bbox``, ``d{i}.dn_loss_*``), zero in a batch without any box. ``selected_refs``:
        see :meth:`forward`."""
        gts = [s.gt_instances_3d for s in batch_data_samples]
        outs = self(mlvl_feats, [s.metainfo for s in batch_data_samples], gts, selected_refs=selected_refs)
        if self.denoising is None:
            return self.loss_by_feat(outs["all_cls_scores"], outs["all_bbox_preds"], gts)
        losses = self.loss_by_feat(outs["all_cls_scores"], outs["all_bbox_preds"], gts)
        if "dn" in outs:
            dn_losses = self.loss_denoising(outs["dn_cls_scores"], outs["dn_bbox_preds"], outs["dn"])
        else:  # zero losses that still reach the denoising parameters (every parameter gets a grad)
            zero = sum(p.sum() for p in self.denoising.parameters()) * 0.0
            dn_losses = {k.replace("loss_", "dn_loss_"): zero for k in losses}
        losses.update({k: v * self.denoising.loss_weight for k, v in dn_losses.items()})
        return losses
