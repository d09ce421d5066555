"""The BEVFormer-style detector learns: overfitting one synthetic nuScenes sample (slow).

The DETR3D-style overfitting test's sample (the ``tiny`` synthetic set: six 160x90 cameras,
~26 boxes of all classes) and backbone (ResNet-18 at 1/8 width, FPN to 4 levels of 64 channels),
with a 32x32 BEV encoded by 2 layers and 60 queries decoded on it by 3 layers, no dropout,
AdamW with a one-cycle schedule. Known answer: the loss falls by at least half and every
ground-truth box has a prediction of its class (score > 0.3) whose centre lies within 0.5 m of it.
"""

from __future__ import annotations

import pytest
from test_overfit import CLASSES, PC_RANGE, _small_detector_cfg, assert_overfits_one_sample  # same sample

STEPS, LR = 300, 3e-3


def _small_bev_detector_cfg() -> dict:
    cfg = _small_detector_cfg()
    old = cfg["bbox_head"]
    c = old["embed_dims"]
    cfg["type"] = "BEVFormer"
    cfg["bbox_head"] = dict(
        type="BEVFormerHead",
        num_classes=len(CLASSES),
        pc_range=PC_RANGE,
        embed_dims=c,
        num_query=60,
        num_levels=4,
        encoder=dict(
            bev_h=32,
            bev_w=32,
            num_layers=2,
            num_points_in_pillar=4,
            layer_cfg=dict(
                tsa_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
                sca_cfg=dict(num_heads=4, num_points=8, dropout=0.0),
                ffn_cfg=dict(feedforward_channels=2 * c, ffn_drop=0.0),
            ),
        ),
        decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(num_heads=4, attn_drop=0.0),
                cross_attn_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
                ffn_cfg=dict(feedforward_channels=2 * c, ffn_drop=0.0),
            ),
        ),
        bbox_coder=old["bbox_coder"],
    )
    return cfg


@pytest.mark.slow
def test_overfitting_one_synthetic_sample_lands_every_box_within_half_a_metre(synthetic_nuscenes_tiny):
    assert_overfits_one_sample(_small_bev_detector_cfg(), synthetic_nuscenes_tiny, STEPS, LR)
