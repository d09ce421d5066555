"""The project's configs: each builds its detector with DAT as ``img_backbone`` and runs one
training step and one prediction on six tiny random camera images; the CPU config is the R18 CPU
config with only the backbone and the iteration count changed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from bev_deform.registry import MODELS
from projects.DAT.dat import DAT

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "projects" / "DAT" / "configs"
CPU_CONFIG = CONFIGS / "deform_detr3d_dat-n_fpn_1xb2-cpu_synth-400x224.py"
NUS_CONFIG = CONFIGS / "deform_detr3d_dat-t_fpn_8xb1-24e_nus-800x450.py"
R18_CPU_CONFIG = REPO / "configs" / "deform_detr3d" / "deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py"
IMG_HW = (96, 160)


def test_every_project_config_is_tested():
    assert sorted(CONFIGS.glob("*.py")) == sorted([CPU_CONFIG, NUS_CONFIG])


def _lidar2img(h: int, w: int) -> np.ndarray:
    """(6, 4, 4): six pinhole cameras 1.5 m up, looking out horizontally every 60 degrees."""
    f = 0.8 * w
    cam2img = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    mats = []
    for k in range(6):
        yaw = k * math.pi / 3
        fwd, right = np.array([math.cos(yaw), math.sin(yaw), 0]), np.array([math.sin(yaw), -math.cos(yaw), 0])
        rot = np.stack([right, [0, 0, -1], fwd])  # rows: camera x (right), y (down), z (forward)
        lidar2cam = np.eye(4)
        lidar2cam[:3, :3], lidar2cam[:3, 3] = rot, -rot @ np.array([0, 0, 1.5])
        mats.append(cam2img @ lidar2cam)
    return np.stack(mats)


def _batch(training: bool) -> dict:
    meta = dict(lidar2img=_lidar2img(*IMG_HW), img_shape=IMG_HW, box_type_3d=LiDARInstance3DBoxes)
    sample = Det3DDataSample(metainfo=meta)
    boxes = torch.tensor([[12.0, 1.0, -0.8, 4.5, 1.9, 1.6, 0.2, 1.0, 0.0]])  # in front of camera 0
    sample.gt_instances_3d = InstanceData(
        bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9), labels_3d=torch.tensor([0])
    )
    if not training:
        del sample.gt_instances_3d
    return dict(
        inputs=dict(img=[torch.randint(0, 256, (6, 3, *IMG_HW), dtype=torch.uint8)]), data_samples=[sample]
    )


def _one_step_and_predict(config: Path) -> None:
    cfg = Config.fromfile(str(config))
    cfg.model.img_backbone.init_cfg = None  # no ImageNet checkpoint here
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg.model)
    model.init_weights()
    assert isinstance(model.img_backbone, DAT)
    assert model.img_backbone.out_channels == list(cfg.model.img_neck.in_channels)
    model.train()
    losses = model.train_step(
        _batch(True), OptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4))
    )
    assert torch.isfinite(losses["loss"]) and {"loss_cls", "loss_bbox"} <= set(losses)
    model.eval()
    with torch.no_grad():
        (out,) = model.test_step(_batch(False))
    pred = out.pred_instances_3d
    assert pred.bboxes_3d.tensor.shape[1] == 9 and torch.isfinite(pred.bboxes_3d.tensor).all()


def test_cpu_config_builds_trains_one_step_and_predicts():
    _one_step_and_predict(CPU_CONFIG)


@pytest.mark.slow
def test_nuscenes_config_builds_trains_one_step_and_predicts():
    _one_step_and_predict(NUS_CONFIG)


def test_nuscenes_config_builds_dat_t_for_the_converted_imagenet_checkpoint():
    cfg = Config.fromfile(str(NUS_CONFIG))
    backbone = cfg.model.img_backbone
    assert backbone.init_cfg == dict(type="Pretrained", checkpoint=cfg.pretrained)
    backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg.model)
    assert model.img_backbone.arch["dims"] == (96, 192, 384, 768)  # DAT-T at the checkpoint's 224
    assert model.img_backbone.stages[2].attns[1].rpe_table.shape == (12, 27, 27)
    assert model.img_backbone.out_channels == list(cfg.model.img_neck.in_channels) == [192, 384, 768]


def test_cpu_config_is_the_r18_cpu_config_without_training_devices_with_the_backbone_and_iterations_changed():
    dat, r18 = Config.fromfile(str(CPU_CONFIG)).to_dict(), Config.fromfile(str(R18_CPU_CONFIG)).to_dict()
    # the R18 config switched denoising, query groups and look forward twice (training only) on
    # after DAT-N's row was measured; DAT-N keeps the setting of that row (both read the same
    # _base_, which has none of them)
    assert r18["model"]["bbox_head"].pop("denoising") == dict(num_groups=5)
    assert r18["model"]["bbox_head"].pop("query_groups") == 3
    assert r18["model"]["bbox_head"]["decoder"].pop("look_forward_twice") is True
    assert "denoising" not in dat["model"]["bbox_head"] and "query_groups" not in dat["model"]["bbox_head"]
    assert "look_forward_twice" not in dat["model"]["bbox_head"]["decoder"]
    assert "DAT" in str(dat["model"].pop("img_backbone")["type"])
    assert "ResNet" in str(r18["model"].pop("img_backbone")["type"])
    n_dat, n_r18 = dat.pop("max_iters"), r18.pop("max_iters")
    for cfg, n in ((dat, n_dat), (r18, n_r18)):  # the schedule follows max_iters in the same way
        warmup, cosine = cfg.pop("param_scheduler")
        assert (warmup.pop("end"), cosine.pop("end"), cosine.pop("T_max")) == (n // 20, n, n)
        cfg["param_scheduler"] = [warmup, cosine]
        assert (cfg["train_cfg"].pop("max_iters"), cfg["train_cfg"].pop("val_interval")) == (n, n)
    assert str(dat) == str(r18)
