"""The analysis tools end to end on the tiny synthetic data: ``tools/vis_sampling_points.py``
draws a sample's mosaic and camera panels from a checkpoint, ``tools/analysis/sampling_stats.py``
reports every decoder layer and level of the CPU config, with softmax level weights that sum to
one per head, and the same statistics from a checkpoint as from the model it was saved from."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from bev_deform.runtime import build_eval_dataset, build_model, load_config, set_data_root

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py"
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)x(\d+)\s+[\d.]+ / [\d.]+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)$")


def load_tool(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(synthetic_nuscenes_tiny, tmp_path_factory) -> Path:
    """The CPU config's model as initialised with seed 0, saved as a runner checkpoint."""
    cfg = load_config(str(CONFIG), None, None)
    torch.manual_seed(0)
    model = build_model(cfg, None)
    path = tmp_path_factory.mktemp("ckpt") / "init.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


def test_vis_sampling_points_writes_the_mosaic_and_one_panel_per_camera(
    synthetic_nuscenes_tiny, checkpoint, tmp_path, capsys
):
    tool = load_tool("tools/vis_sampling_points.py")
    out = tmp_path / "vis"
    tool.main(
        [str(CONFIG), str(checkpoint), "--sample-idx", "1", "--split", "val", "--out-dir", str(out),
         "--queries", "top-5", "--data-root", str(synthetic_nuscenes_tiny)]
    )  # fmt: skip
    names = sorted(p.name for p in out.glob("*.png"))
    cams = ["CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT", "CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"]
    assert names == sorted(["1_mosaic.png", *(f"1_{c}.png" for c in cams)])
    assert all(p.stat().st_size > 1000 for p in out.glob("*.png"))
    assert str(out / "1_mosaic.png") in capsys.readouterr().out


def test_vis_sampling_points_names_a_sample_index_out_of_range(synthetic_nuscenes_tiny, checkpoint, tmp_path):
    tool = load_tool("tools/vis_sampling_points.py")
    with pytest.raises(ValueError, match=r"--sample-idx must be in \[0, 5\] for the val split, got 6"):
        tool.main(
            [str(CONFIG), str(checkpoint), "--sample-idx", "6", "--split", "val", "--out-dir", str(tmp_path),
             "--data-root", str(synthetic_nuscenes_tiny)]
        )  # fmt: skip


def stats_rows(text: str) -> dict[tuple[str, int, int], tuple[tuple[int, int], float, float]]:
    """(population, layer, level) -> ((h, w), outside, weight) from the tool's report."""
    rows, population = {}, None
    for line in text.splitlines():
        if line.endswith("queries: none"):
            population = None
        elif " queries (" in line:
            population = line.split()[0]
        elif population and (m := ROW.match(line)):
            layer, lvl, h, w = (int(v) for v in m.groups()[:4])
            rows[(population, layer, lvl)] = ((h, w), float(m.group(5)), float(m.group(6)))
    return rows


def test_sampling_stats_reports_every_layer_and_level_from_a_checkpoint(
    synthetic_nuscenes_tiny, checkpoint, capsys
):
    tool = load_tool("tools/analysis/sampling_stats.py")
    args = ["--num-samples", "2", "--data-root", str(synthetic_nuscenes_tiny)]
    tool.main([str(CONFIG), str(checkpoint), *args])
    rows = stats_rows(capsys.readouterr().out)
    all_rows = {k: v for k, v in rows.items() if k[0] == "all"}
    assert sorted((k[1], k[2]) for k in all_rows) == [(layer, lvl) for layer in range(3) for lvl in range(4)]
    # the 4 FPN levels of a 224 x 416 padded batch: strides 8, 16, 32, 64
    assert [all_rows[("all", 0, lvl)][0] for lvl in range(4)] == [(28, 52), (14, 26), (7, 13), (4, 7)]
    for layer in range(3):  # softmax over levels x points per head: the level masses sum to one
        assert sum(all_rows[("all", layer, lvl)][2] for lvl in range(4)) == pytest.approx(1.0, abs=2e-3)
    assert all(0.0 <= v[1] <= 1.0 for v in all_rows.values())


def test_build_eval_dataset_names_a_missing_split(synthetic_nuscenes_tiny):
    cfg = load_config(str(CONFIG), None, None)
    set_data_root(cfg, str(synthetic_nuscenes_tiny))
    with pytest.raises(ValueError, match="no bogus_dataloader"):
        build_eval_dataset(cfg, "bogus")
    train = build_eval_dataset(cfg, "train")  # read with the test pipeline: no augmentation
    built = [type(t) for t in train.pipeline.transforms]
    assert built == [t["type"] for t in cfg.test_dataloader.dataset.pipeline]
    assert built != [t["type"] for t in cfg.train_dataloader.dataset.pipeline]
