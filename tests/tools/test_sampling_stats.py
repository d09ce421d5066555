"""``tools/analysis/sampling_stats.py``: the statistics of a hand-built record (known answers)."""

import importlib.util
from pathlib import Path

import torch

from bev_deform.visualization.recorder import LayerRecord

REPO = Path(__file__).resolve().parents[2]


def load_tool():
    spec = importlib.util.spec_from_file_location("sampling_stats", REPO / "tools/analysis/sampling_stats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hand_record() -> LayerRecord:
    """1 sample, 2 cameras, 2 queries, 1 head, 2 levels, 2 points: query 0 seen by camera 0 only,
    query 1 by no camera; camera 0's image is 64x128 (H x W)."""
    ref_pixels = torch.zeros(1, 2, 2, 2)
    ref_pixels[0, 0, 0] = torch.tensor([50.0, 30.0])
    pixels = torch.zeros(1, 2, 2, 1, 2, 2, 2)  # (B, N, Q, M, L, P, 2)
    # level 0 (stride 8): 8 and 16 image pixels away -> 1 and 2 level pixels, both inside
    pixels[0, 0, 0, 0, 0] = torch.tensor([[58.0, 30.0], [50.0, 46.0]])
    # level 1 (stride 16): 32 px away (2 level px) inside, and x = 200 > W = 128 outside (9.375 level px)
    pixels[0, 0, 0, 0, 1] = torch.tensor([[82.0, 30.0], [200.0, 30.0]])
    valid = torch.tensor([[[True, False], [False, False]]])  # (B, N, Q)
    weights = torch.tensor([[0.1, 0.2], [0.3, 0.4]]).expand(1, 2, 1, 2, 2).clone()  # (B, Q, M, L, P)
    return LayerRecord(torch.zeros(1, 2, 3), ref_pixels, valid, pixels, weights)


def test_offsets_outside_share_level_mass_and_camera_counts_are_the_hand_computed_ones():
    tool = load_tool()
    acc = tool.Accumulator()
    level_hw = [(8, 16), (4, 8)]
    acc.add("all", 0, hand_record(), torch.arange(2), level_hw, (64, 128), torch.tensor([[64.0, 128.0]] * 2))
    lvl0, lvl1 = acc.rows[("all", 0, 0)], acc.rows[("all", 0, 1)]
    assert torch.cat(lvl0["dist"]).tolist() == [1.0, 2.0]
    assert torch.cat(lvl1["dist"]).tolist() == [2.0, 9.375]
    assert torch.cat(lvl0["outside"]).tolist() == [0.0, 0.0]
    assert torch.cat(lvl1["outside"]).tolist() == [0.0, 1.0]
    # only the seen query's weights count: level masses 0.1 + 0.2 and 0.3 + 0.4
    assert torch.allclose(torch.cat(lvl0["weight"]), torch.tensor([0.3]))
    assert torch.allclose(torch.cat(lvl1["weight"]), torch.tensor([0.7]))
    report = acc.report(level_hw)
    assert "seen by 0 / 1 / 2+ cameras: 0.50 / 0.50 / 0.00" in report
    # level 1: median 5.6875 level px of an 8-wide map, half the points outside
    assert "5.69 / 8.64" in report and "0.711" in report and "0.500" in report
