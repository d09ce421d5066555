"""A thin multi-camera detector: images -> backbone + neck per camera -> query head."""

from __future__ import annotations

from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.structures import Det3DDataSample
from torch import Tensor

from bev_deform.registry import MODELS


@MODELS.register_module()
class DeformDETR3D(Base3DDetector):
    """DETR3D-style detector on multi-scale deformable attention.

    The B x N camera images go through the backbone and neck as one batch of B*N images; the
    neck's levels, reshaped to (B, N, C, H_l, W_l), go to the head together with each sample's
    metainfo (``lidar2img``, ``img_shape``, ``batch_input_shape``).

    Config dict::

        dict(type='DeformDETR3D',
             data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[...], std=[...],
                                    bgr_to_rgb=True, pad_size_divisor=32),
             img_backbone=dict(type='mmdet.ResNet', depth=50, ...,
                               init_cfg=dict(type='Pretrained', checkpoint='...')),  # optional
             img_neck=dict(type='mmdet.FPN', in_channels=[...], out_channels=256, num_outs=4, ...),
             grid_mask=dict(type='GridMask', ...),  # optional, applied in training only
             bbox_head=dict(type='DeformDETR3DHead', ...))

    Args:
        img_backbone: image backbone config (e.g. mmdet's ResNet); a checkpoint may be given
            through its ``init_cfg``.
        img_neck: neck config (e.g. mmdet's FPN) whose number of outputs equals the head's
            ``num_levels`` and whose channels equal its ``embed_dims``.
        bbox_head: head config (``DeformDETR3DHead``).
        grid_mask: optional GridMask config; it is only run while training.
        data_preprocessor: mmdet3d's ``Det3DDataPreprocessor`` config.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        img_backbone: dict,
        img_neck: dict,
        bbox_head: dict,
        grid_mask: dict | None = None,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = MODELS.build(img_neck)
        self.bbox_head = MODELS.build(bbox_head)
        self.grid_mask = MODELS.build(grid_mask) if grid_mask is not None else None

    def extract_feat(self, batch_inputs_dict: dict) -> list[Tensor]:
        """``batch_inputs_dict['imgs']`` (B, N, 3, H, W) -> L levels (B, N, C, H_l, W_l)."""
        imgs = batch_inputs_dict.get("imgs")
        if imgs is None or imgs.dim() != 5:
            shape = None if imgs is None else tuple(imgs.shape)
            raise ValueError(f"batch_inputs_dict['imgs'] must be (B, N, 3, H, W) camera images, got {shape}")
        b, n = imgs.shape[:2]
        x = imgs.flatten(0, 1)  # (B, N, 3, H, W) -> (B*N, 3, H, W)
        if self.grid_mask is not None and self.training:
            x = self.grid_mask(x)
        feats = self.img_neck(self.img_backbone(x))
        return [f.view(b, n, *f.shape[1:]) for f in feats]  # (B*N, C, H_l, W_l) -> (B, N, C, H_l, W_l)

    def loss(self, batch_inputs_dict: dict, batch_data_samples: list[Det3DDataSample]) -> dict[str, Tensor]:
        """Losses of every decoder layer (see ``DeformDETR3DHead.loss_by_feat``)."""
        return self.bbox_head.loss(self.extract_feat(batch_inputs_dict), batch_data_samples)

    def predict(
        self, batch_inputs_dict: dict, batch_data_samples: list[Det3DDataSample]
    ) -> list[Det3DDataSample]:
        """The data samples with ``pred_instances_3d`` (``bboxes_3d`` as ``LiDARInstance3DBoxes``
        with velocity, ``scores_3d``, ``labels_3d``)."""
        results = self.bbox_head.predict(self.extract_feat(batch_inputs_dict), batch_data_samples)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(
        self, batch_inputs_dict: dict, batch_data_samples: list[Det3DDataSample]
    ) -> tuple[Tensor, Tensor]:
        """Raw head outputs (num_layers, B, Q, K) logits and (num_layers, B, Q, 10) codes."""
        metas = [s.metainfo for s in batch_data_samples]
        outs = self.bbox_head(self.extract_feat(batch_inputs_dict), metas)
        return outs["all_cls_scores"], outs["all_bbox_preds"]
