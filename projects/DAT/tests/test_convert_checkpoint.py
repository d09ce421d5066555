"""The checkpoint converter: an official v1 state dict (keys and shapes of the official code)
becomes a backbone checkpoint that the detection backbone loads with nothing unexpected."""

from __future__ import annotations

import pytest
import torch

from projects.DAT.dat import DAT
from projects.DAT.tests.test_backbone import OFFICIAL
from projects.DAT.tools.convert_dat_checkpoint import convert, main, official_state_dict


def _official(arch: str) -> dict[str, torch.Tensor]:
    """An official-layout state dict whose tensors are views of one scalar each (tiny on disk)."""
    return {
        k: torch.tensor(0 if k.endswith("relative_position_index") else 0.5).expand(shape)
        for k, shape in OFFICIAL[arch]["state_dict"].items()
    }


def test_official_state_dict_converts_to_a_backbone_checkpoint():
    state = _official("tiny")
    assert official_state_dict({"model": state, "epoch": 300}) is state
    arch, backbone = convert(state)
    assert arch == "tiny" and not any(k.startswith(("cls_norm.", "cls_head.")) for k in backbone)
    with torch.device("meta"):
        model = DAT("tiny", out_indices=(1, 2, 3))
    result = model.load_state_dict(backbone, strict=False, assign=True)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == sorted(
        f"norms.{i}.norm.{p}" for i in (1, 2, 3) for p in ("weight", "bias")
    )
    assert model.stages[2].attns[1].rpe_table.device.type == "cpu"  # loaded, not left on meta


def test_a_state_dict_that_is_not_official_is_refused_with_the_differences():
    state = _official("tiny")
    state["stages.2.attns.1.rpe_table"] = torch.zeros(12, 55, 55)  # a table built at another size
    with pytest.raises(
        ValueError, match=r"closest is 'tiny'.*mismatched shapes \['stages.2.attns.1.rpe_table'\]"
    ):
        convert(state)


def test_command_line_writes_an_mmengine_checkpoint(tmp_path):
    with torch.device("meta"):
        arch_keys = set(DAT("tiny").state_dict())
    src, dst = tmp_path / "dat_tiny_in1k_224.pth", tmp_path / "out" / "dat-t.pth"
    torch.save({"model": _official("tiny")}, src)
    main([str(src), str(dst)])
    saved = torch.load(dst, weights_only=True)
    assert saved["meta"] == {"arch": "tiny", "source": src.name} and src.stat().st_size < 2**20
    assert set(saved["state_dict"]) == arch_keys - {k for k in arch_keys if k.startswith("norms.")}
