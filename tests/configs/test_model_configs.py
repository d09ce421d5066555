"""Every model config in configs/ builds and predicts on the tiny synthetic data through its own
pipelines (image size shrunk to 96x160, a BEV model's grid to 20x20), and runs one training
step (STYLE.md 9).

A variant whose model is its base config's up to the listed differences (``VARIANTS``: the CBGS
one differs only in its train set, the FCOS3D one in weights and normalisation) trains its step
in the slow suite only; the fast suite checks the difference is exactly that and runs its
forward. The real configs' pre-trained ``init_cfg`` (torchvision / FCOS3D checkpoints) is
dropped before building: nothing is downloaded, the weights are mmdet's default init. DCNv2
layers (mmcv's ``ModulatedDeformConv2dPack``) run forward and backward on CPU."""

from pathlib import Path

import pytest
import torch
from mmcv.ops import ModulatedDeformConv2dPack
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
R101_DCN = "configs/deform_detr3d/deform_detr3d_r101-dcn_fpn_8xb1-24e_nus-1600x900.py"
# variant config -> (its base config, the model keys in which it differs from the base's model)
VARIANTS = {
    "configs/deform_detr3d/deform_detr3d_r101-dcn_fpn_8xb1-24e-cbgs_nus-1600x900.py": (R101_DCN, set()),
    "configs/deform_detr3d/deform_detr3d_r101-dcn_fpn_8xb1-24e_nus-1600x900-fcos3d.py": (
        R101_DCN,
        {
            "data_preprocessor.mean",
            "data_preprocessor.std",
            "data_preprocessor.bgr_to_rgb",
            "img_backbone.style",
            "img_backbone.init_cfg.checkpoint",
            "img_backbone.init_cfg.prefix",
            "img_neck.init_cfg",
        },
    ),
}
TINY_BEV = (20, 20)  # BEVFormer-base's 200x200 grid through 6 layers takes minutes on CPU


def test_every_model_config_is_listed():
    assert len(MODEL_CONFIGS) >= 3 and all("_base_" not in c for c in MODEL_CONFIGS)


def _batch(cfg: Config, split: str) -> dict:
    ds_cfg = cfg[f"{split}_dataloader"].dataset
    inner = ds_cfg
    while "dataset" in inner:  # a wrapper (CBGSDataset): the pipeline is the wrapped dataset's
        inner = inner.dataset
    for t in inner.pipeline:
        if "final_size" in t:  # shrink the resize/crop to a tiny input
            t.update(final_size=TINY_HW, scale_range=(0.1, 0.1) if t.get("test_mode") else (0.1, 0.11))
    dataset = DATASETS.build(ds_cfg)
    return pseudo_collate([dataset[0]])


def _drop_pretrained(model_cfg: dict) -> bool:
    """Remove the ``Pretrained`` init_cfg of the backbone and neck (mmdet's default init instead);
    True when the backbone had one."""
    dropped = []
    for part in ("img_backbone", "img_neck"):
        init = model_cfg[part].get("init_cfg")
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            del model_cfg[part]["init_cfg"]
            dropped.append(part)
    return "img_backbone" in dropped


def _stand_in_for_pretrained_bn(backbone: torch.nn.Module) -> None:
    """mmdet's default ResNet init zeroes the last BN of every residual branch
    (``zero_init_residual``); with BN frozen, as the pre-trained configs have it, those branches
    would stay zero and pass no gradient. Loaded weights have non-zero BN scales: set them to 1."""
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.fill_(1.0)


def _build(config: str, root: Path):
    """The config (data root ``root``, no pre-trained init_cfg), its model (init_weights done) and
    one train and one test batch."""
    cfg = Config.fromfile(str(REPO / config))
    set_data_root(cfg, str(root))
    pretrained = _drop_pretrained(cfg.model)
    if "bev_h" in cfg.model.bbox_head.get("encoder", {}):
        cfg.model.bbox_head.encoder.update(bev_h=TINY_BEV[0], bev_w=TINY_BEV[1])
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg.model)
        train_batch, test_batch = _batch(cfg, "train"), _batch(cfg, "test")
    model.init_weights()
    if pretrained:
        _stand_in_for_pretrained_bn(model.img_backbone)
    head = cfg.model.bbox_head
    assert model.bbox_head.num_query == head.num_query and len(model.bbox_head.cls_branches) == (
        head.decoder.num_layers
    )
    return cfg, model, train_batch, test_batch


def _predicts(cfg: Config, model, test_batch: dict) -> None:
    model.eval()
    with torch.no_grad():
        (out,) = model.test_step(test_batch)
    pred: InstanceData = out.pred_instances_3d
    head = cfg.model.bbox_head
    assert pred.bboxes_3d.tensor.shape[1] == 9 and len(pred) <= head.bbox_coder.max_num
    assert torch.isfinite(pred.bboxes_3d.tensor).all() and (pred.query_ids < head.num_query).all()


def _trains_one_step(cfg: Config, model, train_batch: dict) -> None:
    dcns = [m for m in model.modules() if isinstance(m, ModulatedDeformConv2dPack)]
    # DCNv2 in the 3x3 conv of every bottleneck of ResNet-101's stages 3-4 (23 + 3 blocks)
    assert len(dcns) == (23 + 3 if cfg.model.img_backbone.get("dcn") else 0)
    before = [m.conv_offset.weight.detach().clone() for m in dcns]
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    losses = model.train_step(train_batch, OptimWrapper(optimizer=optim))
    assert torch.isfinite(losses["loss"]) and {"loss_cls", "loss_bbox"} <= set(losses)
    # DCNv2's CPU backward reaches its offsets: one AdamW step moves every offset convolution
    assert all(not torch.equal(b, m.conv_offset.weight) for b, m in zip(before, dcns))


TRAIN_STEP_CONFIGS = [pytest.param(c, marks=pytest.mark.slow) if c in VARIANTS else c for c in MODEL_CONFIGS]


@pytest.mark.parametrize("config", TRAIN_STEP_CONFIGS)
def test_config_builds_trains_one_step_and_predicts(config, synthetic_nuscenes_tiny):
    cfg, model, train_batch, test_batch = _build(config, synthetic_nuscenes_tiny)
    _trains_one_step(cfg, model, train_batch)
    _predicts(cfg, model, test_batch)


def _flat(d: dict, prefix: str = "") -> dict:
    """``{'a.b': leaf}`` of a nested config dict (class types by name)."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = getattr(value, "__name__", value)
    return out


@pytest.mark.parametrize("config", sorted(VARIANTS))
def test_variant_model_is_its_base_model_but_for_the_listed_keys(config):
    """The fast stand-in for a variant's train step (slow): its model config is its base's, which
    trains in the fast suite, but for the listed keys; a different backbone runs forward."""
    base, differences = VARIANTS[config]
    assert config in MODEL_CONFIGS and base in MODEL_CONFIGS
    cfgs = [Config.fromfile(str(REPO / c)) for c in (config, base)]
    variant_model, base_model = (_flat(c.model.to_dict()) for c in cfgs)
    keys = variant_model.keys() | base_model.keys()
    differ = {k for k in keys if variant_model.get(k) != base_model.get(k)}
    # img_neck.init_cfg: the base FPN has mmdet's Xavier init, the FCOS3D one loads the checkpoint
    differ = {k if not k.startswith("img_neck.init_cfg") else "img_neck.init_cfg" for k in differ}
    assert differ == differences
    if any(k.startswith("img_backbone.") and ".init_cfg." not in k for k in differ):
        x = torch.randn(1, 3, 64, 96)
        shapes = []
        for cfg in cfgs:
            _drop_pretrained(cfg.model)
            with DefaultScope.overwrite_default_scope("bev_deform"):
                backbone = MODELS.build(cfg.model.img_backbone)
            with torch.no_grad():
                shapes.append([tuple(o.shape) for o in backbone(x)])
        assert shapes[0] == shapes[1] == [(1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]


def test_dcnv2_runs_on_cpu_and_starts_as_half_a_regular_convolution():
    """mmcv's DCNv2 (the R101-DCN configs' ``dcn=dict(type='DCNv2')``) has CPU kernels; its
    offset/mask convolution starts at zero (mmcv's init), so it starts as the regular convolution
    with its weights times the modulation sigmoid(0) = 0.5 (what ImageNet-initialised DCN layers do)."""
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2dPack(4, 6, 3, padding=1, bias=False)
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    out = dcn(x)  # (2, 6, 9, 11)
    expected = 0.5 * torch.nn.functional.conv2d(x, dcn.weight, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0 and dcn.conv_offset.weight.grad.abs().sum() > 0
