"""Every model config in configs/ builds, and runs one training step and one prediction on the
tiny synthetic data through its own pipelines (image size shrunk to 96x160, a BEV model's grid to
20x20; no pre-trained weights are loaded) (STYLE.md 9)."""

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from bev_deform.registry import DATASETS, MODELS
from bev_deform.runtime import set_data_root

REPO = Path(__file__).resolve().parents[2]
MODEL_CONFIGS = sorted(
    p.relative_to(REPO).as_posix() for p in (REPO / "configs").glob("*/*.py") if p.parent.name != "_base_"
)
TINY_HW = (96, 160)
TINY_BEV = (20, 20)  # BEVFormer-base's 200x200 grid through 6 layers takes minutes on CPU


def test_every_model_config_is_listed():
    assert len(MODEL_CONFIGS) >= 3 and all("_base_" not in c for c in MODEL_CONFIGS)


def _batch(cfg: Config, split: str) -> dict:
    ds_cfg = cfg[f"{split}_dataloader"].dataset
    for t in ds_cfg.pipeline:
        if "final_size" in t:  # shrink the resize/crop to a tiny input
            t.update(final_size=TINY_HW, scale_range=(0.1, 0.1) if t.get("test_mode") else (0.1, 0.11))
    dataset = DATASETS.build(ds_cfg)
    return pseudo_collate([dataset[0]])


@pytest.mark.parametrize("config", MODEL_CONFIGS)
def test_config_builds_trains_one_step_and_predicts(config, synthetic_nuscenes_tiny):
    cfg = Config.fromfile(str(REPO / config))
    set_data_root(cfg, str(synthetic_nuscenes_tiny))
    if (cfg.model.img_backbone.get("init_cfg") or {}).get("type") == "Pretrained":
        del cfg.model.img_backbone["init_cfg"]  # nothing is downloaded: mmdet's default init instead
    if "bev_h" in cfg.model.bbox_head.get("encoder", {}):
        cfg.model.bbox_head.encoder.update(bev_h=TINY_BEV[0], bev_w=TINY_BEV[1])
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg.model)
        train_batch, test_batch = _batch(cfg, "train"), _batch(cfg, "test")
    model.init_weights()
    head = cfg.model.bbox_head
    assert model.bbox_head.num_query == head.num_query and len(model.bbox_head.cls_branches) == (
        head.decoder.num_layers
    )
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    losses = model.train_step(train_batch, OptimWrapper(optimizer=optim))
    assert torch.isfinite(losses["loss"]) and {"loss_cls", "loss_bbox"} <= set(losses)
    model.eval()
    with torch.no_grad():
        (out,) = model.test_step(test_batch)
    pred: InstanceData = out.pred_instances_3d
    assert pred.bboxes_3d.tensor.shape[1] == 9 and len(pred) <= head.bbox_coder.max_num
    assert torch.isfinite(pred.bboxes_3d.tensor).all() and (pred.query_ids < head.num_query).all()
