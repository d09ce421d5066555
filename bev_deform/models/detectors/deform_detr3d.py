"""A thin multi-camera detector: images -> backbone + neck per camera -> query head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.structures import Det3DDataSample
from torch import Tensor

from bev_deform.geometry import CameraGeometry
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS


@MODELS.register_module()
class DeformDETR3D(Base3DDetector):
    """DETR3D-style detector on multi-scale deformable attention.

    The B x N camera images go through the backbone and neck (and the optional image encoder) as
    one batch of B*N images; the levels, reshaped to (B, N, C, H_l, W_l), go to the head together
    with each sample's metainfo (``lidar2img``, ``img_shape``, ``batch_input_shape``).

    Config dict::

        dict(type='DeformDETR3D',
             data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[...], std=[...],
                                    bgr_to_rgb=True, pad_size_divisor=32),
             img_backbone=dict(type='mmdet.ResNet', depth=50, ...,
                               init_cfg=dict(type='Pretrained', checkpoint='...')),  # optional
             img_neck=dict(type='mmdet.FPN', in_channels=[...], out_channels=256, num_outs=4, ...),
             img_encoder=dict(type='DeformableEncoderNeck', encoder=dict(num_layers=6)),  # optional
             grid_mask=dict(type='GridMask', ...),  # optional, applied in training only
             bbox_head=dict(type='DeformDETR3DHead', ...),
             aux_head=dict(type='ImageCentreAuxHead', level=0))  # optional, training only

    Args:
        img_backbone: image backbone config (e.g. mmdet's ResNet); a checkpoint may be given
            through its ``init_cfg``.
        img_neck: neck config (e.g. mmdet's FPN) whose number of outputs equals the head's
            ``num_levels`` and whose channels equal its ``embed_dims``.
        bbox_head: head config (``DeformDETR3DHead``).
        img_encoder: optional encoder over each camera's neck levels, applied after ``img_neck``
            (``DeformableEncoderNeck``: Deformable DETR's encoder); ``embed_dims`` and
            ``num_levels`` are passed down from ``bbox_head``.
        grid_mask: optional GridMask config; it is only run while training.
        aux_head: optional dense auxiliary head on the neck's levels (``ImageCentreAuxHead``),
            whose losses join the query head's in training; ``num_classes`` and ``in_channels``
            are passed down from ``bbox_head``. Inference runs it only for ``query_selection``.
        query_selection: k > 0: DINO's mixed query selection in 3D, in training and at inference:
            the aux head's k strongest centre peaks over all cameras, lifted to 3D with its
            predicted depth and ``lidar2img`` (:meth:`ImageCentreAuxHead.select_reference_points`,
            no gradient), are the reference points of the first k queries; content queries stay
            learned, the other queries keep their learned reference points. Needs ``aux_head``.
        channels_last: run the backbone and neck in the channels-last (NHWC) memory format, which
            oneDNN's CPU convolutions (and cuDNN's under AMP) run faster; the results are the same
            up to float rounding. On 2 CPU cores the CPU config's backbone + neck, forward and
            backward on 12 images of 224x416, take 0.40 s instead of 0.53 s.
        data_preprocessor: mmdet3d's ``Det3DDataPreprocessor`` config.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        img_backbone: dict,
        img_neck: dict,
        bbox_head: dict,
        img_encoder: dict | None = None,
        grid_mask: dict | None = None,
        aux_head: dict | None = None,
        query_selection: int = 0,
        channels_last: bool = False,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = MODELS.build(img_neck)
        self.bbox_head = MODELS.build(bbox_head)
        self.grid_mask = MODELS.build(grid_mask) if grid_mask is not None else None
        self.channels_last = channels_last
        if channels_last:  # the weights too; initialisation and checkpoint loading copy in place
            self.img_backbone.to(memory_format=torch.channels_last)
            self.img_neck.to(memory_format=torch.channels_last)
        self.aux_head = None
        if aux_head is not None:
            shared = dict(num_classes=self.bbox_head.num_classes, in_channels=self.bbox_head.embed_dims)
            self.aux_head = MODELS.build(with_shared(aux_head, "aux_head", **shared))
        num_query = getattr(self.bbox_head, "num_query", 0)
        if query_selection and (self.aux_head is None or not 0 < query_selection <= num_query):
            raise ValueError(
                f"query_selection must be 0, or 1..num_query={num_query} with an aux_head to select from, "
                f"got {query_selection} with aux_head {'set' if self.aux_head is not None else 'None'}"
            )
        self.query_selection = int(query_selection)
        self.fine_level = False  # BEVFormer's option (see extract_feat)
        self.img_encoder = None
        if img_encoder is not None:
            shared = dict(embed_dims=self.bbox_head.embed_dims, num_levels=self.bbox_head.num_levels)
            self.img_encoder = MODELS.build(with_shared(img_encoder, "img_encoder", **shared))

    def extract_feat(
        self, batch_inputs_dict: dict, batch_input_metas: Sequence[dict] | CameraGeometry | None = None
    ) -> list[Tensor]:
        """``batch_inputs_dict['imgs']`` (B, N, 3, H, W) -> L levels (B, N, C, H_l, W_l); with
        ``fine_level`` (:class:`BEVFormer`'s) the backbone's first output (B, N, C_f, H_f, W_f) after
        them, the neck taking the others.

        ``batch_input_metas`` (B metainfo dicts, or their ``CameraGeometry``) give the image
        encoder each camera's real image inside the padded batch; only needed with ``img_encoder``.
        """
        imgs = batch_inputs_dict.get("imgs")
        if imgs is None or imgs.dim() != 5:
            shape = None if imgs is None else tuple(imgs.shape)
            raise ValueError(f"batch_inputs_dict['imgs'] must be (B, N, 3, H, W) camera images, got {shape}")
        b, n = imgs.shape[:2]
        x = imgs.flatten(0, 1)  # (B, N, 3, H, W) -> (B*N, 3, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # same shape, NHWC strides
        if self.grid_mask is not None and self.training:
            x = self.grid_mask(x)
        outs = self.img_backbone(x)
        fine = None
        if self.fine_level:  # the backbone's first output kept after the neck's levels, not the neck's
            fine, outs = outs[0], outs[1:]
        feats = self.img_neck(outs)
        if self.img_encoder is not None:
            feats = self._encode(feats, batch_input_metas, imgs.device)
        feats = [*feats, fine] if fine is not None else list(feats)
        return [f.view(b, n, *f.shape[1:]) for f in feats]  # (B*N, C, H_l, W_l) -> (B, N, C, H_l, W_l)

    def loss(self, batch_inputs_dict: dict, batch_data_samples: list[Det3DDataSample]) -> dict[str, Tensor]:
        """Losses of every decoder layer (see ``DeformDETR3DHead.loss_by_feat``), and the auxiliary
        head's ``aux_loss_*`` when there is one."""
        metas = [s.metainfo for s in batch_data_samples]
        feats = self.extract_feat(batch_inputs_dict, metas)
        losses = self.bbox_head.loss(feats, batch_data_samples, **self._selection(feats, metas))
        if self.aux_head is not None:
            losses.update(self.aux_head.loss(feats, batch_data_samples, batch_inputs_dict.get("points")))
        return losses

    def predict(
        self, batch_inputs_dict: dict, batch_data_samples: list[Det3DDataSample]
    ) -> list[Det3DDataSample]:
        """The data samples with ``pred_instances_3d`` (``bboxes_3d`` as ``LiDARInstance3DBoxes``
        with velocity, ``scores_3d``, ``labels_3d``)."""
        metas = [s.metainfo for s in batch_data_samples]
        feats = self.extract_feat(batch_inputs_dict, metas)
        results = self.bbox_head.predict(feats, batch_data_samples, **self._selection(feats, metas))
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(
        self, batch_inputs_dict: dict, batch_data_samples: list[Det3DDataSample]
    ) -> tuple[Tensor, Tensor]:
        """Raw head outputs (num_layers, B, Q, K) logits and (num_layers, B, Q, 10) codes."""
        metas = [s.metainfo for s in batch_data_samples]
        feats = self.extract_feat(batch_inputs_dict, metas)
        outs = self.bbox_head(feats, metas, **self._selection(feats, metas))
        return outs["all_cls_scores"], outs["all_bbox_preds"]

    def _selection(self, feats: Sequence[Tensor], metas: Sequence[dict]) -> dict:
        """``{'selected_refs': (B, k, 3)}`` with ``query_selection``, else ``{}`` (head kwargs)."""
        if not self.query_selection:
            return {}
        cams = CameraGeometry.from_metas(metas, feats[0].device)
        refs, _ = self.aux_head.select_reference_points(
            feats[self.aux_head.level], cams, self.query_selection, self.bbox_head.pc_range
        )
        return dict(selected_refs=refs)

    def _encode(
        self, feats: Sequence[Tensor], metas: Sequence[dict] | CameraGeometry | None, device: torch.device
    ) -> tuple[Tensor, ...]:
        """L levels (B*N, C, H_l, W_l) -> the image encoder's levels of the same shapes."""
        if metas is None:
            raise ValueError(
                "batch_input_metas must be given (metainfo dicts or a CameraGeometry) when the "
                "detector has an img_encoder: it needs each camera's img_shape and batch_input_shape"
            )
        cams = metas if isinstance(metas, CameraGeometry) else CameraGeometry.from_metas(metas, device)
        return self.img_encoder(feats, cams.img_hw.flatten(0, 1), cams.pad_hw)  # img_hw (B, N, 2) -> (B*N, 2)
