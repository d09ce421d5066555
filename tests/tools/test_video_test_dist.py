"""Video testing through the tools: ``tools/dist_test.sh`` with 2 CPU processes gives the NDS and
every prediction of ``tools/test.py`` with 1, because ``SceneSequentialSampler`` keeps each scene
on one process; with mmengine's ``DefaultSampler`` (every other frame per process) the frames
get other histories and the predictions change."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from test_train_test_tools import BIN, REPO, last_metrics, run

from bev_deform.registry import MODELS

CONFIG = REPO / "configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py"
NDS = "NuScenes metric/pred_instances_3d_NuScenes/NDS"


def _options(root) -> list[str]:
    opts = []
    for split in ("val", "test"):
        opts += [f"{split}_dataloader.num_workers=0", f"{split}_dataloader.persistent_workers=False"]
    return ["--data-root", str(root), "--cfg-options", *opts]


@pytest.mark.slow
def test_two_process_video_test_equals_one_process(synthetic_nuscenes_tiny, tmp_path):
    cfg = Config.fromfile(str(CONFIG))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = tmp_path / "init.pth"
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    results = {}
    dist = ["bash", str(REPO / "tools/dist_test.sh")]
    for name, launch in (
        ("one", [str(BIN / "python"), str(REPO / "tools/test.py")]),
        ("two", ["env", f"PORT={29600 + os.getpid() % 1000}", *dist]),
        ("two-default", ["env", f"PORT={29700 + os.getpid() % 1000}", *dist]),
    ):
        work = tmp_path / name
        dump = tmp_path / f"{name}.pkl"
        args = [str(CONFIG), str(ckpt)] + (["2"] if name != "one" else []) + ["--work-dir", str(work)]
        args += ["--out", str(dump)]
        opts = _options(synthetic_nuscenes_tiny)
        if name == "two-default":
            opts += ["test_dataloader.sampler.type=DefaultSampler", "test_dataloader.sampler.shuffle=False"]
        out = run([*launch, *args, *opts], cwd=tmp_path)
        if name != "one":
            assert "Distributed launcher: pytorch" in out
        preds = {d["sample_idx"]: d["pred_instances_3d"] for d in pickle.loads(dump.read_bytes())}
        results[name] = (last_metrics(work)[NDS], preds)
    (nds_one, one), (nds_two, two), (_, cut) = results["one"], results["two"], results["two-default"]
    assert sorted(one) == sorted(two) == sorted(cut) == list(range(6))  # every sample, once
    assert nds_two == nds_one
    for idx in one:
        torch.testing.assert_close(two[idx]["scores_3d"], one[idx]["scores_3d"], atol=1e-5, rtol=1e-5)
        boxes = [getattr(p[idx]["bboxes_3d"], "tensor", p[idx]["bboxes_3d"]) for p in (two, one)]
        torch.testing.assert_close(*boxes, atol=1e-4, rtol=1e-5)
    # frames 1..5 of the one scene read another history when the scene is cut between processes
    assert any(not torch.allclose(cut[i]["scores_3d"], one[i]["scores_3d"], atol=1e-4) for i in range(1, 6))
