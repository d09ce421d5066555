"""The tools on corrupt checkpoints: tools/test.py CHECKPOINT, tools/train.py --resume PATH and a
config's load_from each fail naming the file and its size, before a Runner is built; no tool
sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (checkpoints load with torch's weights-only default)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py")
ENV_SWITCH = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"bev_deform_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restored_environ(monkeypatch):
    """os.environ without the weights-only switch, given back as it was after the test."""
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    saved = os.environ.copy()
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def cut_checkpoint(tmp_path) -> Path:
    """A torch checkpoint cut short at half its size, as a kill during ``torch.save`` leaves it."""
    path = tmp_path / "iter_40.pth"
    torch.save({"state_dict": {"w": torch.randn(1000)}, "meta": {"iter": 40}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "tool, args",
    [
        ("test", ["{ckpt}"]),
        ("train", ["--resume", "{ckpt}"]),
        ("train", ["--cfg-options", "load_from={ckpt}"]),
    ],
    ids=["test.py CKPT", "train.py --resume PATH", "train.py load_from"],
)
def test_tool_names_a_corrupt_checkpoint_and_its_size(tool, args, cut_checkpoint, tmp_path, restored_environ):
    main = load_tool(tool).main
    argv = [CONFIG, *(a.format(ckpt=cut_checkpoint) for a in args), "--work-dir", str(tmp_path / "work")]
    size = cut_checkpoint.stat().st_size
    for attempt in ("first", "second"):
        with pytest.raises(ValueError, match=rf"checkpoint {cut_checkpoint} \({size} bytes\) is incomplete"):
            main(argv)
        assert ENV_SWITCH not in os.environ
        if attempt == "first":  # imported libraries (OpenCV's Qt paths) and LOCAL_RANK settle once
            settled = os.environ.copy()
    assert os.environ == settled  # the tool's own path changes nothing


def test_no_tool_or_module_sets_the_weights_only_switch():
    sources = [*REPO.glob("tools/*.py"), *REPO.glob("bev_deform/**/*.py")]
    assert len(sources) > 20
    assert [str(p) for p in sources if ENV_SWITCH in p.read_text()] == []
