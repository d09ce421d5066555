"""The BEVFormer-style detector: as thin as ``DeformDETR3D``, whose image path it shares."""

from __future__ import annotations

from bev_deform.models.detectors.deform_detr3d import DeformDETR3D
from bev_deform.registry import MODELS


@MODELS.register_module()
class BEVFormer(DeformDETR3D):
    """Camera images -> backbone + neck per camera -> ``BEVFormerHead`` (BEV encoder, decoder on
    the BEV, set-prediction branches).

    Everything but the head is ``DeformDETR3D``'s: the same data preprocessor, GridMask,
    optional image encoder after the neck (``img_encoder``), channels-last option and
    training-only auxiliary image head; ``loss()`` and ``predict()``
    call the head's. Without temporal fusion every frame is its own history (BEVFormer's first
    frame).

    Config dict::

        dict(type='BEVFormer', data_preprocessor=..., img_backbone=..., img_neck=...,
             grid_mask=..., bbox_head=dict(type='BEVFormerHead', ...))
    """
