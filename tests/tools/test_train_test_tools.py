"""The user-facing tools on the tiny synthetic data: ``mim train`` / ``mim test`` find our scripts
and configs and really train, checkpoint, evaluate NDS/mAP and draw the sampling-point mosaics;
``tools/train.py --resume`` continues; ``tools/dist_train.sh`` trains with 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = "deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py"
BIN = Path(sys.executable).parent


def tiny_options(root: Path, iters: int) -> list[str]:
    """--data-root and --cfg-options for the CPU config on the tiny data, for a few iterations."""
    opts = [
        f"train_cfg.max_iters={iters}",
        f"train_cfg.val_interval={iters}",
        "train_dataloader.batch_size=1",
    ]
    for split in ("train", "val", "test"):
        opts += [f"{split}_dataloader.num_workers=0", f"{split}_dataloader.persistent_workers=False"]
    return ["--data-root", str(root), "--cfg-options", *opts]


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="2", PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


def last_metrics(work_dir: Path) -> dict:
    """The last NuScenes metrics mmengine logged under ``work_dir``: a validation's in
    ``{ts}/vis_data/scalars.json``, a test's in ``{ts}/{ts}.json``."""
    files = [*work_dir.glob("*/vis_data/scalars.json"), *work_dir.glob("*/[0-9]*.json")]
    lines = [json.loads(s) for f in files for s in f.read_text().splitlines()]
    found = [d for d in lines if any(k.startswith("NuScenes metric") for k in d)]
    assert found, f"no NuScenes metrics logged under {work_dir}"
    return found[-1]


def _mim_train_and_test(config: str, root: Path, tmp_path: Path) -> Path:
    """``mim train`` 2 iterations of ``config`` (by name: mim finds it through
    bev_deform/.mim/configs) on the tiny data, then ``mim test`` with ``--show-dir vis``; checks
    the checkpoint and the NDS/mAP of both, returns the test's work dir."""
    work = tmp_path / "work"
    run(
        [str(BIN / "mim"), "train", "bev_deform", config, "--work-dir", str(work), *tiny_options(root, 2)],
        cwd=tmp_path,
    )
    ckpt = work / "iter_2.pth"
    assert ckpt.is_file() and (work / "last_checkpoint").read_text().strip().endswith("iter_2.pth")
    train_metrics = last_metrics(work)
    for key in (
        "NuScenes metric/pred_instances_3d_NuScenes/NDS",
        "NuScenes metric/pred_instances_3d_NuScenes/mAP",
    ):
        assert 0.0 <= train_metrics[key] <= 1.0

    test_work = tmp_path / "test"
    run(
        [
            str(BIN / "mim"), "test", "bev_deform", config, "--checkpoint", str(ckpt),
            "--work-dir", str(test_work), "--show-dir", "vis", *tiny_options(root, 2),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    metrics = last_metrics(test_work)
    assert 0.0 <= metrics["NuScenes metric/pred_instances_3d_NuScenes/NDS"] <= 1.0
    mosaics = sorted(test_work.glob("*/vis/*_mosaic.png"))
    assert len(mosaics) == 6, "one mosaic per val sample"  # the tiny val split has 6 samples
    return test_work


def test_mim_train_and_mim_test_with_show_dir(synthetic_nuscenes_tiny, tmp_path):
    test_work = _mim_train_and_test(CONFIG, synthetic_nuscenes_tiny, tmp_path)
    assert len(list(test_work.glob("*/vis/*_CAM_BACK_LEFT.png"))) == 6


@pytest.mark.slow
def test_mim_trains_and_tests_the_temporal_bevformer_cpu_config(synthetic_nuscenes_tiny, tmp_path):
    """Queue training (3 frames), video testing and the scene sampler through mim."""
    _mim_train_and_test(
        "bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py", synthetic_nuscenes_tiny, tmp_path
    )


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(synthetic_nuscenes_tiny, tmp_path):
    work = tmp_path / "work"
    opts = tiny_options(synthetic_nuscenes_tiny, 2)
    run(
        [
            sys.executable,
            str(REPO / "tools/train.py"),
            str(REPO / "configs/deform_detr3d" / CONFIG),
            "--work-dir",
            str(work),
            *opts,
        ],
        cwd=tmp_path,
    )
    opts4 = tiny_options(synthetic_nuscenes_tiny, 4)
    out = run(
        [
            sys.executable,
            str(REPO / "tools/train.py"),
            str(REPO / "configs/deform_detr3d" / CONFIG),
            "--work-dir",
            str(work),
            "--resume",
            *opts4,
        ],
        cwd=tmp_path,
    )
    assert "resumed" in out.lower() and "iter_2.pth" in out
    assert (work / "iter_4.pth").is_file()


@pytest.mark.slow
def test_dist_train_runs_two_cpu_processes(synthetic_nuscenes_tiny, tmp_path):
    work = tmp_path / "dist"
    env_port = str(29500 + os.getpid() % 1000)
    out = run(
        [
            "env",
            f"PORT={env_port}",
            "bash",
            str(REPO / "tools/dist_train.sh"),
            str(REPO / "configs/deform_detr3d" / CONFIG),
            "2",
            "--work-dir",
            str(work),
            *tiny_options(synthetic_nuscenes_tiny, 2),
        ],
        cwd=tmp_path,
    )
    # mmengine's environment report: two processes ("GPU number" is its name for the world size)
    assert "Distributed launcher: pytorch" in out and "Distributed training: True" in out
    assert "GPU number: 2" in out and "CPUDistributedDataParallel" in out
    assert (work / "iter_2.pth").is_file()


@pytest.mark.slow
def test_dist_train_of_the_temporal_config_allows_batches_without_an_earlier_frame(
    synthetic_nuscenes_tiny, tmp_path
):
    """With every history dropped (a 0.01 s gap limit) the decoder's history_attn gets no gradient
    in any iteration; 2 CPU processes still train, as the config lets DDP find unused parameters."""
    work = tmp_path / "dist"
    opts = tiny_options(synthetic_nuscenes_tiny, 2)
    out = run(
        [
            "env",
            f"PORT={29500 + (os.getpid() + 7) % 1000}",
            "bash",
            str(REPO / "tools/dist_train.sh"),
            str(REPO / "configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py"),
            "2",
            "--work-dir",
            str(work),
            *opts,
            "model.max_history_gap=0.01",
        ],
        cwd=tmp_path,
    )
    assert "GPU number: 2" in out and "CPUDistributedDataParallel" in out
    assert (work / "iter_2.pth").is_file()
