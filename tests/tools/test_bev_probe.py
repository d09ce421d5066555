"""tools/analysis/bev_probe.py: the 3x3 neighbourhood it samples, the motion labels and the probe's
scores, each on inputs with a known answer; its named errors."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from bev_deform.geometry import BEVGrid

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bev_probe", REPO / "tools/analysis/bev_probe.py")
bp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bp)

# 4 rows x 5 columns of 2 m cells: x in [-5, 5], y in [-4, 4]
GRID = BEVGrid(4, 5, (-5.0, -4.0, -1.0, 5.0, 4.0, 1.0))


def _index_bev() -> torch.Tensor:
    """(H*W, 2) flat BEV whose channels are each cell's row and column."""
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1)


def test_neighbourhood_reads_the_nine_cells_around_a_cell_centre_and_interpolates_between():
    # the centre of cell (row 1, column 2) is x = -5 + 2.5 * 2 = 0, y = -4 + 1.5 * 2 = -1
    feats = bp.sample_neighbourhood(_index_bev(), GRID, torch.tensor([[0.0, -1.0], [1.0, -1.0]]))
    assert feats.shape == (2, 18)
    got = feats[0].reshape(9, 2)  # per offset (row, column)
    want = torch.tensor([[1.0 + dy, 2.0 + dx] for dx, dy in bp.OFFSETS])
    assert torch.allclose(got, want)
    # 1 m right of that centre: half-way to column 3
    assert torch.allclose(feats[1].reshape(9, 2), want + torch.tensor([0.0, 0.5]))


def test_neighbourhood_reads_zeros_outside_the_grid():
    # the centre of the corner cell (row 0, column 0): its neighbours at row -1 or column -1 are outside
    feats = bp.sample_neighbourhood(_index_bev() + 1.0, GRID, torch.tensor([[-4.0, -3.0]])).reshape(9, 2)
    for (dx, dy), value in zip(bp.OFFSETS, feats):
        inside = dx >= 0 and dy >= 0
        assert torch.allclose(value, torch.tensor([1.0 + dy, 1.0 + dx]) if inside else torch.zeros(2))


def test_neighbourhood_names_a_bev_of_the_wrong_shape():
    with pytest.raises(
        ValueError, match=r"bev must be \(H\*W, C\) = \(20, C\) for a 4x5 grid, got \(19, 2\)"
    ):
        bp.sample_neighbourhood(torch.zeros(19, 2), GRID, torch.zeros(1, 2))


def test_motion_labels_use_the_axis_component_and_the_speed_threshold():
    v = np.array([[0.0, 0.3], [0.1, 1.2], [0.0, -1.0], [0.9, 0.0], [0.0, 0.5], [0.0, -0.5]])
    assert bp.motion_labels(v, axis=1, min_speed=0.5).tolist() == [0, 1, 2, 0, 1, 2]
    assert bp.motion_labels(v, axis=0, min_speed=0.5).tolist() == [0, 0, 0, 1, 0, 0]


def test_probe_finds_a_direction_the_features_carry_and_not_one_they_lack():
    rng = np.random.default_rng(0)
    y = np.repeat([bp.STANDING, bp.PLUS, bp.MINUS], [40, 30, 20])
    noise = 0.05 * rng.standard_normal((len(y), 3))
    # carried: one feature per label
    carried = np.eye(3)[y] + noise
    out = bp.probe_scores(carried, y, carried, y)
    assert (out["accuracy"], out["standing_recall"], out["right"], out["reversed"]) == (1.0, 1.0, 1.0, 0.0)
    assert out["counts"] == [40, 30, 20] and out["n"] == 90
    # lacking: the movers share one feature whichever way they go, so every mover gets the more
    # frequent direction (+: 30 of 50 right, 20 reversed)
    lacking = np.stack([y == bp.STANDING, y != bp.STANDING], axis=1).astype(float)
    out = bp.probe_scores(lacking, y, lacking, y)
    assert out["standing_recall"] == 1.0
    assert out["right"] == pytest.approx(0.6) and out["reversed"] == pytest.approx(0.4)


def test_probe_names_a_fit_split_with_one_label():
    with pytest.raises(ValueError, match=r"two motion labels or more, got \[0\]"):
        bp.probe_scores(np.zeros((4, 2)), np.zeros(4, dtype=int), np.zeros((4, 2)), np.zeros(4, dtype=int))


def test_cli_names_bad_arguments(capsys):
    for argv, message in (
        (["C", "K", "--min-speed", "0"], "--min-speed and --reg must be > 0"),
        (["C", "K", "--axis", "z"], "invalid choice: 'z'"),
    ):
        with pytest.raises(SystemExit):
            bp.parse_args(argv)
        assert message in capsys.readouterr().err


def test_cli_names_a_class_the_config_lacks():
    config = REPO / "configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py"
    with pytest.raises(SystemExit, match=r"--classes \['walker'\] are not the config's classes"):
        bp.main([str(config), "missing.pth", "--classes", "walker"])


TEMPORAL = REPO / "configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py"
CLASSES = ["car", "truck", "pedestrian"]


def _expected_counts(root: Path, split: str, grid: BEVGrid) -> list[int]:
    """standing / +y / -y of the split's objects of CLASSES inside the grid, from the info file."""
    import pickle

    with open(root / f"nuscenes_infos_{split}.pkl", "rb") as f:
        data = pickle.load(f)
    labels = {data["metainfo"]["categories"][c] for c in CLASSES}
    vel = [bp.objects_in_grid(info, labels, grid)[1] for info in data["data_list"]]
    return np.bincount(bp.motion_labels(np.concatenate(vel), 1, 0.5), minlength=3).tolist()


def test_probe_runs_the_temporal_bev_model_over_both_splits(synthetic_nuscenes_tiny, tmp_path, capsys):
    """End to end on the tiny data with the temporal config's model as initialised: every object of
    the classes inside the grid of both splits is probed (counts from the info files)."""
    from bev_deform.runtime import build_model, load_config

    cfg = load_config(str(TEMPORAL), None, str(tmp_path))
    torch.manual_seed(0)
    model = build_model(cfg, None)
    ckpt = tmp_path / "init.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, ckpt)
    grid = model.bbox_head.grid
    fit, score = (_expected_counts(synthetic_nuscenes_tiny, s, grid) for s in ("train", "val"))
    assert sum(fit[1:]) > 0 and fit[0] > 0  # the tiny scenes have standing and moving objects
    bp.main(
        [str(TEMPORAL), str(ckpt), "--classes", *CLASSES, "--data-root", str(synthetic_nuscenes_tiny),
         "--cfg-options", f"work_dir={tmp_path}"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert f"train: frame 6/6, {sum(fit)} objects" in out
    assert f"val: frame 6/6, {sum(score)} objects" in out
    assert f"fit on train ({sum(fit)} objects), scored on val: {sum(score)} objects" in out
    assert f"standing / +y / -y {score[0]} / {score[1]} / {score[2]}" in out


def test_probe_names_a_model_without_a_bev(synthetic_nuscenes_tiny, tmp_path):
    from bev_deform.runtime import build_model, load_config

    config = REPO / "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py"
    torch.manual_seed(0)
    ckpt = tmp_path / "init.pth"
    torch.save({"state_dict": build_model(load_config(str(config), None, None), None).state_dict()}, ckpt)
    with pytest.raises(SystemExit, match="the probe needs a BEV model .* got DeformDETR3D"):
        bp.main([str(config), str(ckpt), "--data-root", str(synthetic_nuscenes_tiny)])
