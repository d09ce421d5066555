"""tools/analysis/match_probe.py: its displacement statistics and the time gap to the frame the
decoder reads, on inputs with a known answer; its named errors."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("match_probe", REPO / "tools/analysis/match_probe.py")
mp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp)


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
