"""tools/analysis/match_probe.py: its displacement statistics and the time gap to the frame the
decoder reads, on inputs with a known answer; its named errors."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("match_probe", REPO / "tools/analysis/match_probe.py")
mp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp)
bp_objects = mp.objects_in_grid  # bev_probe's, which the probe reuses


def test_displacement_stats_against_guessing_no_motion():
    # two movers: one found exactly (3-4-5: 5 m back), one found the wrong way (1 m back, found
    # 1 m forward: error 2 m); one standing object found 0.5 m off
    found = np.array([[3.0, 4.0], [0.0, 1.0], [0.3, 0.4]])
    true = np.array([[3.0, 4.0], [0.0, -1.0], [0.0, 0.0]])
    stats = mp.displacement_stats(found, true, np.array([True, True, False]))
    assert stats["moving"] == dict(n=2, error=1.0, zero_error=3.0, right=0.5)
    assert stats["standing"]["n"] == 1 and stats["standing"]["error"] == pytest.approx(0.5)
    assert stats["standing"]["zero_error"] == 0.0 and np.isnan(stats["standing"]["right"])
    empty = mp.displacement_stats(found, true, np.array([False, False, False]))["moving"]
    assert empty["n"] == 0 and np.isnan(empty["error"])


def test_time_gap_counts_stride_frames_back_in_each_scene():
    seen = {}
    frames = [("a", 0.0), ("a", 0.5), ("b", 7.0), ("a", 1.0), ("a", 1.5), ("b", 7.5), ("b", 8.0)]
    gaps = [mp.time_gap(seen, dict(scene_token=s, timestamp=t), 2) for s, t in frames]
    assert gaps == [None, None, None, 1.0, 1.0, None, 1.0]


def test_bad_arguments_are_named():
    with pytest.raises(SystemExit):
        mp.parse_args(["cfg.py", "ckpt.pth", "--max-dist", "0"])


TEMPORAL = REPO / "configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py"


@pytest.mark.parametrize("at", ["query", "object"])
def test_probe_runs_the_temporal_bev_model_over_the_val_scene(synthetic_nuscenes_tiny, tmp_path, capsys, at):
    """End to end on the tiny data with the temporal config's model as initialised: with any query
    distance allowed (or at each object's own centre), every pedestrian inside the grid of the
    frames that have a frame 2 before (frames 3 to 6 of the val scene; the history stride set to 2,
    the config's 4 leaving 2 of the 6 frames) is probed or counted as skipped (its search saw
    nothing), movers and standing ones as the info file says."""
    import pickle

    from bev_deform.runtime import build_model, load_config

    cfg = load_config(str(TEMPORAL), None, str(tmp_path))
    torch.manual_seed(0)
    model = build_model(cfg, None)
    ckpt = tmp_path / "init.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, ckpt)
    with open(synthetic_nuscenes_tiny / "nuscenes_infos_val.pkl", "rb") as f:
        data = pickle.load(f)
    frames = sorted(data["data_list"], key=lambda d: d["timestamp"])[2:]
    label = data["metainfo"]["categories"]["pedestrian"]
    vel = np.concatenate([bp_objects(info, {label}, model.bbox_head.grid)[1] for info in frames])
    moving = int((np.linalg.norm(vel, axis=1) >= 0.5).sum())
    assert moving > 0 and len(vel) > moving
    mp.main(
        [str(TEMPORAL), str(ckpt), "--classes", "pedestrian", "--max-dist", "1000", "--data-root",
         str(synthetic_nuscenes_tiny), "--at", at, "--cfg-options", f"work_dir={tmp_path}",
         "model.history_stride=2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "frame 6/6" in out and "history 2 frames back" in out
    assert ("at each object's centre" in out) == (at == "object")
    lines = [line.split() for line in out.splitlines() if line.startswith("pedestrian")]
    rows = {words[1]: int(words[2]) for words in lines}
    assert rows["moving"] <= moving and rows["standing"] <= len(vel) - moving
    assert rows["moving"] + rows["standing"] + rows["skipped"] == len(vel)
    assert rows["skipped"] <= 2  # nearly every pedestrian has a query whose point a camera sees


def test_probe_names_a_model_without_history_match(synthetic_nuscenes_tiny, tmp_path):
    from bev_deform.runtime import build_model, load_config

    options = {"model.bbox_head.decoder.history_match": None, "work_dir": str(tmp_path)}
    torch.manual_seed(0)
    ckpt = tmp_path / "init.pth"
    torch.save(
        {"state_dict": build_model(load_config(str(TEMPORAL), options, None), None).state_dict()}, ckpt
    )
    with pytest.raises(SystemExit, match="has no history_match"):
        mp.main(
            [str(TEMPORAL), str(ckpt), "--data-root", str(synthetic_nuscenes_tiny), "--cfg-options",
             "model.bbox_head.decoder.history_match=None"]
        )  # fmt: skip


def test_probe_names_a_model_without_a_bev_decoder(synthetic_nuscenes_tiny, tmp_path):
    from bev_deform.runtime import build_model, load_config

    config = REPO / "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py"
    torch.manual_seed(0)
    ckpt = tmp_path / "init.pth"
    torch.save({"state_dict": build_model(load_config(str(config), None, None), None).state_dict()}, ckpt)
    with pytest.raises(SystemExit, match="has no history_match .* got DeformDETR3D"):
        mp.main([str(config), str(ckpt), "--data-root", str(synthetic_nuscenes_tiny)])
