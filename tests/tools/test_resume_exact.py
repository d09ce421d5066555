"""A training run killed (SIGKILL) after a checkpoint and resumed with ``tools/train.py --resume``
ends with the same weights as an uninterrupted run of the same config and seed, on the tiny
synthetic data with the CPU config (shrunk: 1 decoder layer, 50 queries). The resume also skips an
incomplete newer checkpoint (as a kill during an in-place write leaves one) and says so.

The CPU config is used with the wiring that exact resume needs in a config (appended to a copy
of it): ``SeededSampler`` for the training dataloader, ``SeedAugmentation`` at the head of the
training pipeline, ``ResumableCheckpointHook`` for checkpoints."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_test_tools import CONFIG, REPO, run, tiny_options  # pytest puts tests/tools on sys.path

from bev_deform.checkpoint import load_checkpoint_file

WIRING = """
# --- exact resume (appended by tests/tools/test_resume_exact.py) ---
from bev_deform.checkpoint import ResumableCheckpointHook
from bev_deform.datasets.samplers import SeededSampler
from bev_deform.datasets.transforms import SeedAugmentation

train_dataloader["sampler"]["type"] = SeededSampler  # noqa: F405
_pipeline = train_dataloader["dataset"]["pipeline"]  # noqa: F405
if _pipeline[0]["type"] is not SeedAugmentation:
    _pipeline.insert(0, dict(type=SeedAugmentation))
default_hooks["checkpoint"]["type"] = ResumableCheckpointHook  # noqa: F405
"""

TOTAL, KILL_AFTER = 10, 3  # iterations; the checkpoint after which the second run is killed


def wired_config(tmp_path: Path) -> Path:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    path = configs / "deform_detr3d" / CONFIG
    path.write_text(path.read_text() + WIRING)
    return path


def train_cmd(config: Path, work: Path, root: Path, *extra: str) -> list[str]:
    opts = tiny_options(root, TOTAL)
    opts += [
        f"default_hooks.checkpoint.interval={KILL_AFTER}",
        "default_hooks.checkpoint.max_keep_ckpts=5",
        "model.bbox_head.num_query=50",
        "model.bbox_head.decoder.num_layers=1",
        "val_cfg=None",
        "val_dataloader=None",
        "val_evaluator=None",
    ]
    return [sys.executable, str(REPO / "tools/train.py"), str(config), "--work-dir", str(work), *extra, *opts]


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = load_checkpoint_file(a)["state_dict"], load_checkpoint_file(b)["state_dict"]
    assert set(wa) == set(wb)
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def kill_after_checkpoint(cmd: list[str], work: Path, cwd: Path, step: int) -> None:
    """Start ``cmd`` and SIGKILL it as soon as ``work/last_checkpoint`` names ``iter_{step}.pth``."""
    log = cwd / "killed_run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    record, deadline = work / "last_checkpoint", time.monotonic() + 600
    try:
        while not (record.is_file() and record.read_text().endswith(f"iter_{step}.pth")):
            assert proc.poll() is None, f"training ended before iter_{step}.pth:\n{log.read_text()[-5000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 10 min"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / f"iter_{TOTAL}.pth").exists(), "killed too late: the run had already finished"


@pytest.mark.slow
def test_killed_and_resumed_training_equals_the_uninterrupted_run(synthetic_nuscenes_tiny, tmp_path):
    config, root = wired_config(tmp_path), synthetic_nuscenes_tiny
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(train_cmd(config, straight, root), cwd=tmp_path)

    kill_after_checkpoint(train_cmd(config, killed, root), killed, tmp_path, KILL_AFTER)
    # a newer checkpoint cut short, as mmengine's in-place writes leave one after a kill
    cut = killed / f"iter_{KILL_AFTER + 1}.pth"
    cut.write_bytes((killed / f"iter_{KILL_AFTER}.pth").read_bytes()[:1000])
    (killed / "last_checkpoint").write_text(str(cut))

    out = run(train_cmd(config, killed, root, "--resume"), cwd=tmp_path)
    assert (
        f"{cut} (1000 bytes) is incomplete" in out
        and f"resuming from {killed / f'iter_{KILL_AFTER}.pth'}" in out
    )
    assert f"iter: {KILL_AFTER}" in out  # mmengine's "resumed epoch: E, iter: I"
    diff = max_weight_difference(straight / f"iter_{TOTAL}.pth", killed / f"iter_{TOTAL}.pth")
    print(f"max |w_resumed - w_straight| after {TOTAL} iterations: {diff:.3g}")
    assert diff <= 1e-6
