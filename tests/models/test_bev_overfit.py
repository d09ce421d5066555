"""The BEVFormer-style detector learns: overfitting one synthetic nuScenes sample (slow).

The DETR3D-style overfitting test's sample (the ``tiny`` synthetic set: six 160x90 cameras,
~26 boxes of all classes) and backbone (ResNet-18 at 1/8 width, FPN to 4 levels of 64 channels),
with a 32x32 BEV encoded by 2 layers and 60 queries decoded on it by 3 layers, no dropout,
AdamW with a one-cycle schedule. Known answer: the loss falls by at least half and every
ground-truth box has a prediction of its class (score > 0.3) whose centre lies within 0.5 m of it.
"""

from __future__ import annotations

import pytest
import torch
from mmengine.registry import DefaultScope
from test_overfit import CLASSES, PC_RANGE, _one_sample, _small_detector_cfg  # the same sample and backbone

from bev_deform.registry import MODELS

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
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        data = _one_sample(synthetic_nuscenes_tiny)
        model = MODELS.build(_small_bev_detector_cfg())
    model.init_weights()
    gt = data["data_samples"][0].gt_instances_3d
    assert len(gt) >= 10  # a real scene: many boxes of many classes

    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.1)
    model.train()
    history = []
    for _ in range(STEPS):
        total, _ = model.parse_losses(model(**model.data_preprocessor(data, training=True), mode="loss"))
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        opt.step()
        sched.step()
        history.append(total.item())
    assert sum(history[-10:]) / 10 <= 0.5 * history[0], (history[0], history[-10:])

    model.eval()
    with torch.no_grad():
        pred = model(**model.data_preprocessor(data, training=False), mode="predict")[0].pred_instances_3d
    centres, gt_centres = pred.bboxes_3d.gravity_center, gt.bboxes_3d.gravity_center
    misses = []
    for i in range(len(gt)):
        same_class = (pred.labels_3d == gt.labels_3d[i]) & (pred.scores_3d > 0.3)
        dist = (centres[same_class] - gt_centres[i]).norm(dim=1)
        if dist.numel() == 0 or dist.min() > 0.5:
            misses.append((i, gt.labels_3d[i].item(), dist.min().item() if dist.numel() else None))
    assert not misses, f"ground-truth boxes without a prediction within 0.5 m: {misses}"
