"""The DAT backbone: the official v1 checkpoint layout (keys, shapes, parameter counts), input
sizes, outputs, and its registration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bev_deform.registry import MODELS
from projects.DAT.dat import DAT, DATClassifier
from projects.DAT.dat.deformable_attention import DeformableAttention
from projects.DAT.dat.layers import ShiftedWindowAttention, WindowAttention

# keys and shapes of the official v1 models' state dicts, from instantiating LeapLabTHU/DAT's
# CVPR2022 models/dat.py with configs/dat_{tiny,small,base}.yaml (see the file's "source")
OFFICIAL = json.loads(
    (Path(__file__).parent / "fixtures" / "official_dat_v1_state_dict_shapes.json").read_text()
)
SMALL_ARCH = dict(dims=(16, 32, 64, 128), depths=(2, 2, 2, 2), heads=(1, 2, 4, 8), deform_groups=(2, 4))


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch, millions", [("tiny", 28.32), ("small", 49.70), ("base", 87.88)])
def test_parameter_counts_and_state_dict_layout_are_the_official_v1(arch, millions):
    with torch.device("meta"):
        model = DATClassifier(arch)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 2) == millions and n == OFFICIAL[arch]["num_params"]
    assert _shapes(model) == OFFICIAL[arch]["state_dict"]


def test_official_tiny_state_dict_loads_strictly():
    state = {
        k: torch.zeros(shape, dtype=torch.int64 if k.endswith("relative_position_index") else torch.float32)
        for k, shape in OFFICIAL["tiny"]["state_dict"].items()
    }
    state["cls_head.bias"] = torch.arange(1000, dtype=torch.float32)
    model = DATClassifier("tiny")
    model.load_state_dict(state, strict=True)  # raises on any missing, unexpected or mis-shaped key
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 96))  # any multiple of 32, not only the checkpoint's 224
    assert torch.equal(logits, torch.arange(1000, dtype=torch.float32)[None])  # zero weights: the bias


def test_first_stage3_block_of_dat_t_at_224():
    with torch.device("meta"):
        model = DAT("tiny")
    attns = model.stages[2].attns
    assert isinstance(attns[0], WindowAttention) and isinstance(attns[1], DeformableAttention)
    assert attns[1].rpe_table.shape == (12, 27, 27)
    assert attns[1].conv_offset[0].kernel_size == (5, 5) and attns[1].conv_offset[0].groups == 128
    assert attns[1].conv_offset[3].bias is None and attns[1].conv_offset[3].out_channels == 2
    assert model.stages[3].attns[1].rpe_table.shape == (24, 13, 13)
    assert model.stages[3].attns[1].conv_offset[0].kernel_size == (3, 3)
    assert type(model.stages[0].attns[1]) is ShiftedWindowAttention
    assert model.stages[0].attns[1].attn_mask.shape == (64, 49, 49)


@pytest.mark.parametrize("hw", [(64, 96), (224, 416)])  # maps padded to the windows; img_size itself
def test_any_multiple_of_32_gives_maps_at_strides_4_to_32(hw):
    torch.manual_seed(0)
    model = DAT(SMALL_ARCH, img_size=(224, 416), out_indices=(1, 2, 3)).eval()
    assert model.out_channels == [32, 64, 128]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert [tuple(o.shape) for o in outs] == [
        (1, c, hw[0] // s, hw[1] // s) for c, s in zip((32, 64, 128), (8, 16, 32))
    ]
    assert all(torch.isfinite(o).all() for o in outs)


def test_input_not_a_multiple_of_32_raises():
    model = DAT(SMALL_ARCH)
    with pytest.raises(ValueError, match=r"multiples of 32, got \(1, 3, 100, 96\)"):
        model(torch.zeros(1, 3, 100, 96))
    with pytest.raises(ValueError, match="img_size"):
        DAT(SMALL_ARCH, img_size=(225, 400))
    with pytest.raises(ValueError, match="out_indices"):
        DAT(SMALL_ARCH, out_indices=(3, 1))


def test_checkpointing_and_channels_last_give_the_same_result_and_every_parameter_a_gradient():
    torch.manual_seed(0)
    model = DAT(SMALL_ARCH, out_indices=(2, 3)).train()
    x = torch.randn(1, 3, 32, 64)  # maps 8x16 to 1x2: every window padded
    ref = model(x)
    model.stages.apply(lambda m: setattr(m, "with_cp", True) if hasattr(m, "with_cp") else None)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    out = model(x_cl)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref, out))
    sum(o.square().sum() for o in out).backward()
    assert x_cl.grad is not None and torch.isfinite(x_cl.grad).all()
    # every parameter trains, the bias tables (added inside the fused attention) and offsets too
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_registers_only_dat():
    from mmengine.registry import DefaultScope

    assert MODELS.module_dict["DAT"] is DAT
    ours = [name for name, cls in MODELS.module_dict.items() if cls.__module__.startswith("projects.DAT.")]
    assert ours == ["DAT"]
    with DefaultScope.overwrite_default_scope("bev_deform"):  # whatever scope earlier tests left
        model = MODELS.build(dict(type="DAT", arch=SMALL_ARCH, out_indices=(3,)))
    assert isinstance(model, DAT) and model.out_channels == [128]
