"""Every config on real nuScenes starts its backbone from pre-trained weights and normalises the
images as those weights expect; frozen layers (frozen stages, frozen BN) come only with
pre-trained weights. No weights are downloaded: the backbones are built, never initialised from
a real checkpoint (the FCOS3D test writes an FCOS3D-shaped checkpoint of random tensors).

The known answers: torchvision's ImageNet ResNets (``style='pytorch'``) take RGB with the ImageNet
mean and std; caffe-style ResNets (detectron2's, FCOS3D's; ``style='caffe'``) take BGR with the
mean subtracted and std 1 (mmdet/mmdet3d configs of those weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import mmengine
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from bev_deform.registry import MODELS

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "configs" / "_base_"
MODEL_CONFIGS = sorted(
    p.relative_to(REPO).as_posix() for p in (REPO / "configs").glob("*/*.py") if p.parent.name != "_base_"
)
FCOS3D_CONFIG = "deform_detr3d_r101-dcn_fpn_8xb1-24e_nus-1600x900-fcos3d.py"
SYNTH_ROOT = Config.fromfile(str(BASE / "datasets" / "synth_nus_3d_cam.py")).data_root

TORCHVISION_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
CAFFE_NORM = dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False)
NORM_OF_STYLE = {"pytorch": TORCHVISION_NORM, "caffe": CAFFE_NORM}
# the names mmengine resolves for torchvision:// (its table of torchvision's ImageNet weights)
TORCHVISION_NAMES = set(
    json.loads((Path(mmengine.__file__).parent / "hub" / "torchvision_0.12.json").read_text())
)


def inner_dataset(loader: dict) -> dict:
    """The dataset config of a dataloader, inside any wrapper (CBGSDataset)."""
    dataset = loader["dataset"]
    while "dataset" in dataset:
        dataset = dataset["dataset"]
    return dataset


def is_real(cfg: Config) -> bool:
    return inner_dataset(cfg.train_dataloader)["data_root"] != SYNTH_ROOT


def weight_problems(model_cfg: dict, load_from: str | None = None) -> list[str]:
    """What is wrong with how ``model_cfg``'s image backbone gets its weights and inputs: frozen
    parts without pre-trained weights, a normalisation other than the one of the backbone's
    weight style, a torchvision checkpoint of another depth or style. [] when all is right.
    The backbone is built (not initialised), so mmdet's defaults count as they do in training."""
    with DefaultScope.overwrite_default_scope("bev_deform"):
        backbone = MODELS.build(model_cfg["img_backbone"])
    init = backbone.init_cfg if isinstance(backbone.init_cfg, dict) else {}
    pretrained = init.get("type") == "Pretrained"
    problems = []
    frozen_bn = [n for n, p in backbone.named_parameters() if "bn" in n and not p.requires_grad]
    frozen = [
        what
        for what, yes in (
            (f"frozen_stages={backbone.frozen_stages}", backbone.frozen_stages >= 0),
            ("norm_eval=True", backbone.norm_eval),
            (f"BN without gradients ({len(frozen_bn)} tensors)", bool(frozen_bn)),
        )
        if yes
    ]
    if frozen and not (pretrained or load_from):
        problems.append(f"{', '.join(frozen)} but no Pretrained init_cfg or load_from: frozen random layers")
    expected = NORM_OF_STYLE[backbone.style]
    pre = model_cfg["data_preprocessor"]
    if not (
        np.allclose(pre["mean"], expected["mean"])
        and np.allclose(pre["std"], expected["std"])
        and bool(pre.get("bgr_to_rgb", False)) == expected["bgr_to_rgb"]
    ):
        got = {k: pre.get(k) for k in expected}
        problems.append(
            f"style={backbone.style!r} weights expect {expected}, the data preprocessor has {got}"
        )
    checkpoint = str(init.get("checkpoint", "")) if pretrained else ""
    if checkpoint.startswith("torchvision://"):
        name = checkpoint.removeprefix("torchvision://")
        if backbone.style != "pytorch":
            problems.append(f"{checkpoint} is a pytorch-style ResNet, the backbone style={backbone.style!r}")
        if name != f"resnet{backbone.depth}":
            problems.append(f"{checkpoint} for a ResNet-{backbone.depth}")
        if name not in TORCHVISION_NAMES:
            problems.append(f"mmengine does not know {checkpoint}")
    elif "caffe" in checkpoint and backbone.style != "caffe":
        problems.append(f"{checkpoint} is a caffe-style ResNet, the backbone style={backbone.style!r}")
    return problems


# ---------------------------------------------------------------- the checker finds what it must

SMALL = dict(type="mmdet.ResNet", depth=18, base_channels=8, num_stages=4, out_indices=(3,), style="pytorch")


def small_model(backbone: dict, norm: dict = TORCHVISION_NORM) -> dict:
    return dict(img_backbone=dict(SMALL, **backbone), data_preprocessor=dict(type="X", **norm))


def test_checker_flags_frozen_random_backbones_wrong_normalisation_and_wrong_weights():
    # the state of the real configs before they loaded ImageNet weights
    random_frozen = dict(frozen_stages=1, norm_cfg=dict(type="BN2d", requires_grad=False), norm_eval=True)
    (problem,) = weight_problems(small_model(random_frozen))
    assert "frozen_stages=1, norm_eval=True, BN without gradients" in problem and "no Pretrained" in problem
    # mmdet's ResNet defaults to norm_eval=True: unfrozen must be stated
    assert "norm_eval=True" in weight_problems(small_model({}))[0]
    tv18 = dict(init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet18"))
    assert weight_problems(small_model(dict(tv18, **random_frozen))) == []
    assert weight_problems(small_model(random_frozen), load_from="ckpts/fcos3d.pth") == []
    (problem,) = weight_problems(small_model(tv18, CAFFE_NORM))
    assert "'pytorch' weights expect" in problem
    caffe = weight_problems(small_model(dict(tv18, style="caffe"), CAFFE_NORM))
    assert caffe == ["torchvision://resnet18 is a pytorch-style ResNet, the backbone style='caffe'"]
    tv50 = dict(init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet50"))
    assert weight_problems(small_model(tv50)) == ["torchvision://resnet50 for a ResNet-18"]
    detectron = dict(init_cfg=dict(type="Pretrained", checkpoint="open-mmlab://detectron2/resnet18_caffe"))
    assert "caffe-style ResNet" in weight_problems(small_model(detectron))[0]
    assert weight_problems(small_model(dict(detectron, style="caffe"), CAFFE_NORM)) == []
    from_scratch = dict(norm_cfg=dict(type="BN2d", requires_grad=True), norm_eval=False)
    assert weight_problems(small_model(from_scratch)) == []


# ---------------------------------------------------------------- every config

REAL_CONFIGS = [c for c in MODEL_CONFIGS if is_real(Config.fromfile(str(REPO / c)))]


def test_real_configs_are_found():
    names = [Path(c).name for c in REAL_CONFIGS]
    assert "deform_detr3d_r50_fpn_8xb1-24e_nus-800x450.py" in names
    assert FCOS3D_CONFIG in names
    synthetic = [c for c in MODEL_CONFIGS if "synth" in Path(c).name]
    assert not any("synth" in n for n in names) and len(REAL_CONFIGS) == len(MODEL_CONFIGS) - len(synthetic)


@pytest.mark.parametrize("config", REAL_CONFIGS)
def test_real_config_starts_from_pretrained_weights_and_normalises_for_them(config):
    cfg = Config.fromfile(str(REPO / config))
    init = cfg.model.img_backbone.get("init_cfg") or {}
    assert init.get("type") == "Pretrained" or cfg.get("load_from"), f"{config} trains a random backbone"
    assert weight_problems(cfg.model, cfg.get("load_from")) == []
    # what the real configs share: a frozen stem + stage 1 and frozen BN, as DETR3D / BEVFormer
    assert cfg.model.img_backbone.frozen_stages == 1 and cfg.model.img_backbone.norm_eval is True


@pytest.mark.parametrize("config", [c for c in MODEL_CONFIGS if c not in REAL_CONFIGS])
def test_synthetic_config_trains_from_scratch_unfrozen(config):
    cfg = Config.fromfile(str(REPO / config))
    backbone = cfg.model.img_backbone
    assert backbone.get("init_cfg") is None and not cfg.get("load_from")
    assert backbone.get("frozen_stages", -1) == -1 and backbone.norm_eval is False
    assert backbone.norm_cfg.requires_grad is True and weight_problems(cfg.model) == []


def test_fcos3d_config_loads_every_backbone_and_fpn_tensor_of_an_fcos3d_checkpoint(tmp_path):
    """An FCOS3D-shaped checkpoint (mmdet3d's FCOS3D R101-DCN backbone and FPN configs, random
    tensors, keys ``backbone.*`` / ``neck.*`` and a head) loads into every tensor of the config's
    backbone and FPN through their ``init_cfg``."""
    import mmdet3d

    fcos3d_cfg = Config.fromfile(
        str(
            Path(mmdet3d.__file__).parent
            / ".mim/configs/fcos3d/fcos3d_r101-caffe-dcn_fpn_head-gn_8xb2-1x_nus-mono3d.py"
        )
    )
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("mmdet3d"):
        source = {
            "backbone": MODELS.build(dict(fcos3d_cfg.model.backbone, init_cfg=None)),
            "neck": MODELS.build(fcos3d_cfg.model.neck),
        }
    state = {f"{prefix}.{k}": v for prefix, module in source.items() for k, v in module.state_dict().items()}
    state["bbox_head.conv_cls.weight"] = torch.zeros(10, 256, 3, 3)
    path = tmp_path / "fcos3d.pth"
    torch.save(dict(state_dict=state, meta=dict()), path)

    cfg = Config.fromfile(str(REPO / "configs/deform_detr3d" / FCOS3D_CONFIG))
    counts, offsets = {}, {}
    for part, prefix in (("img_backbone", "backbone"), ("img_neck", "neck")):
        init = cfg.model[part].init_cfg
        assert init.type == "Pretrained" and init.prefix == f"{prefix}." and init.checkpoint.endswith(".pth")
        with DefaultScope.overwrite_default_scope("bev_deform"):
            module = MODELS.build(dict(cfg.model[part], init_cfg=dict(init, checkpoint=str(path))))
        module.init_weights()
        loaded = module.state_dict()
        for key, value in loaded.items():
            assert torch.equal(value, state[f"{prefix}.{key}"]), f"{part}.{key} is not {prefix}.{key}"
        counts[part] = len(loaded)
        offsets[part] = sum("conv_offset" in k for k in loaded)
    # ResNet-101 with DCNv2 in its 23 + 3 blocks of stages 3-4 (trained offsets in FCOS3D); FPN 3 + 4 convs
    assert offsets == {"img_backbone": 2 * (23 + 3), "img_neck": 0}
    assert counts["img_neck"] == 2 * (3 + 4)
