"""The whole detector learns: overfitting one synthetic nuScenes sample (slow, ~2-4 min on 2 cores).

One sample of the ``tiny`` synthetic set (six 160x90 cameras, ~26 boxes of all classes), loaded
through our dataset class and a deterministic pipeline, a small model (ResNet-18 at 1/8 width,
FPN to 4 levels of 64 channels, 3 decoder layers, 60 queries, no dropout), AdamW with a one-cycle
schedule. Known answer: the loss falls by at least half and every ground-truth box has a
prediction of its class (score > 0.3) whose centre lies within 0.5 m of it.
"""

from __future__ import annotations

import pytest
import torch
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.datasets.transforms import (
    LoadAnnotations3D,
    ObjectNameFilter,
    ObjectRangeFilter,
    Pack3DDetInputs,
)
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from bev_deform.datasets.nuscenes_dataset import BevNuScenesDataset
from bev_deform.datasets.transforms import LoadMultiViewImages
from bev_deform.geometry import CAM_NAMES
from bev_deform.registry import DATASETS, MODELS

CLASSES = list(NuScenesDataset.METAINFO["classes"])  # mmdet3d's, in label order
CAMERAS = CAM_NAMES
PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
STEPS, LR = 300, 3e-3


def _one_sample(root) -> dict:
    pipeline = [
        dict(type=LoadMultiViewImages, cameras=CAMERAS),
        dict(type=LoadAnnotations3D, with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
        dict(type=ObjectRangeFilter, point_cloud_range=PC_RANGE),
        dict(type=ObjectNameFilter, classes=CLASSES),
        dict(type=Pack3DDetInputs, keys=["img", "gt_bboxes_3d", "gt_labels_3d"]),
    ]
    dataset = DATASETS.build(
        dict(
            type=BevNuScenesDataset,
            data_root=str(root),
            ann_file="nuscenes_infos_train.pkl",
            pipeline=pipeline,
            metainfo=dict(classes=CLASSES, version="v1.0-mini"),
            modality=dict(use_lidar=False, use_camera=True),
            cameras=CAMERAS,
            data_prefix=dict(pts="samples/LIDAR_TOP", **{cam: f"samples/{cam}" for cam in CAMERAS}),
            box_type_3d="LiDAR",
            test_mode=False,
        )
    )
    return pseudo_collate([dataset[0]])


def _small_detector_cfg() -> dict:
    c = 64
    layer = dict(
        self_attn_cfg=dict(num_heads=4, attn_drop=0.0),
        cross_attn_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
        ffn_cfg=dict(feedforward_channels=2 * c, ffn_drop=0.0),
    )
    head = dict(
        type="DeformDETR3DHead",
        num_classes=len(CLASSES),
        pc_range=PC_RANGE,
        embed_dims=c,
        num_query=60,
        num_levels=4,
        decoder=dict(num_layers=3, layer_cfg=layer),
        bbox_coder=dict(type="NMSFreeCoder", max_num=100),
    )
    return dict(
        type="DeformDETR3D",
        data_preprocessor=dict(
            type="Det3DDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32,
        ),
        img_backbone=dict(
            type="mmdet.ResNet", depth=18, base_channels=8, out_indices=(1, 2, 3), style="pytorch"
        ),
        img_neck=dict(
            type="mmdet.FPN",
            in_channels=[16, 32, 64],
            out_channels=c,
            add_extra_convs="on_output",
            num_outs=4,
        ),
        bbox_head=head,
    )


def assert_overfits_one_sample(model_cfg: dict, root, steps: int = None, lr: float = None) -> None:
    """Train ``model_cfg`` on the tiny set's sample (AdamW, one-cycle) and assert the known answer:
    the loss falls by at least half and every ground-truth box has a prediction of its class
    (score > 0.3) whose centre lies within 0.5 m of it."""
    steps, lr = steps or STEPS, lr or LR
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        data = _one_sample(root)
        model = MODELS.build(model_cfg)
    model.init_weights()
    gt = data["data_samples"][0].gt_instances_3d
    assert len(gt) >= 10  # a real scene: many boxes of many classes

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    history = []
    for _ in range(steps):
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


@pytest.mark.slow
def test_overfitting_one_synthetic_sample_lands_every_box_within_half_a_metre(synthetic_nuscenes_tiny):
    assert_overfits_one_sample(_small_detector_cfg(), synthetic_nuscenes_tiny)
