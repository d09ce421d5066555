"""The DETR3D-style query head: learned object queries with 3D reference points and a decoder that
samples the cameras; branches, losses, matching and decoding come from :class:`QueryHeadBase`."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.model import xavier_init
from mmengine.structures import InstanceData
from torch import Tensor, nn

from bev_deform.geometry import CameraGeometry
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
    builds them, so predictions do not depend on it. With ``query_groups`` G > 1 (Group DETR),
    training decodes G groups of matching queries that cannot see each other, each matched on its
    own; inference decodes group 0 alone (:class:`QueryHeadBase`).

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
             denoising=dict(num_groups=5, box_noise_scale=1.0, label_noise_ratio=0.25),  # optional
             query_groups=1)  # optional: Group DETR's groups of matching queries in training

    Args:
        decoder: decoder config; type defaults to ``DeformDETR3DDecoder``.
        denoising: optional 3D contrastive denoising config; type defaults to ``Denoising3D``,
            whose num_classes, embed_dims and pc_range are passed down; None (default): off
            (see :meth:`QueryHeadBase._init_denoising`).
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
        query_groups: int = 1,
        yaw_frame: str = "ego",
    ) -> None:
        super().__init__(
            num_classes, pc_range, embed_dims, num_query, num_levels, bbox_coder, loss_cls, loss_bbox,
            code_weights, train_cfg, init_cfg, query_groups=query_groups, yaw_frame=yaw_frame,
        )  # fmt: skip
        decoder = {"type": DeformDETR3DDecoder, **(decoder or {})}
        self.decoder = MODELS.build(
            with_shared(
                decoder, "decoder", embed_dims=embed_dims, num_levels=num_levels, pc_range=self.pc_range
            )
        )
        self._init_branches(self.decoder.num_layers)
        self.reference_points = nn.Linear(embed_dims, 3)
        self._init_denoising(denoising)

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
        ref_points = self._with_selected(ref_points, selected_refs)
        dn = self._denoising_queries(batch_gt_instances_3d, value.device)
        query, query_pos, ref_points, attn_mask, key_padding_mask = self._with_denoising(
            query, query_pos, ref_points, dn
        )  # (B, Q + D, .) with denoising queries
        hidden, refs, raw_codes = self.decoder(
            query, query_pos, value, ref_points, levels, cams, self.reg_branches, attn_mask, key_padding_mask
        )
        return self._outputs(hidden, refs, raw_codes, dn)
