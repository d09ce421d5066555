"""tools/analysis/compare_matched.py: greedy same-class matching within 2 m, the devkit's class
ranges, and the errors on the objects both models detect, on a scene written out by hand."""

import importlib.util
import math
import pickle
from pathlib import Path

import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("compare_matched", REPO / "tools/analysis/compare_matched.py")
cm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cm)

CAR, PEDESTRIAN, BARRIER = 0, 7, 9


def _gt(label, x, y, vx=0.0, vy=0.0, pts=5):
    return dict(
        bbox_label_3d=label, bbox_3d=[x, y, 0.0, 4.0, 2.0, 1.5, 0.0], velocity=[vx, vy], num_lidar_pts=pts
    )


INFOS = [
    dict(
        instances=[
            _gt(CAR, 10.0, 0.0, vx=1.0),  # 0: moving car
            _gt(PEDESTRIAN, 0.0, 20.0),  # 1
            _gt(CAR, 60.0, 0.0),  # 2: beyond the car range (50 m): not evaluated
            _gt(BARRIER, 5.0, 5.0),  # 3: no velocity
            _gt(CAR, -10.0, 0.0, pts=0),  # 4: no lidar point: not evaluated
        ]
    )
]


def _result(preds, yaws=None):
    """preds: (label, score, x, y, vx, vy), yaws: their headings (0 by default) -> a tools/test.py
    --out entry of sample 0."""
    yaws = yaws or [0.0] * len(preds)
    rows = [[x, y, 0.0, 4.0, 2.0, 1.5, yaw, vx, vy] for (_, _, x, y, vx, vy), yaw in zip(preds, yaws)]
    boxes = torch.tensor(rows)
    return dict(
        sample_idx=0,
        pred_instances_3d=dict(
            bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9),
            scores_3d=torch.tensor([s for _, s, *_ in preds]),
            labels_3d=torch.tensor([label for label, *_ in preds]),
        ),
    )


A = [_result([
    (CAR, 0.9, 10.5, 0.0, 1.0, 0.0),  # -> 0, centre 0.5 m, velocity exact
    (PEDESTRIAN, 0.5, 0.0, 21.5, 0.0, 0.0),  # -> 1, centre 1.5 m
    (CAR, 0.8, 60.0, 0.0, 0.0, 0.0),  # the out-of-range car: no match
    (CAR, 0.7, -10.0, 0.0, 0.0, 0.0),  # the car without lidar points: no match
    (CAR, 0.1, 10.0, 0.0, 1.0, 0.0),  # below the score threshold
])]  # fmt: skip
B = [_result([
    (CAR, 0.9, 10.0, 0.0, 2.0, 0.0),  # -> 0, centre 0 m, velocity 1 m/s off
    (CAR, 0.6, 10.2, 0.0, 1.0, 0.0),  # 0 is taken: no match
    (BARRIER, 0.7, 5.0, 5.5, 0.0, 0.0),  # -> 3
    (PEDESTRIAN, 0.5, 0.0, 23.0, 0.0, 0.0),  # 3 m from 1: no match
    (BARRIER, 0.8, 0.0, 20.0, 0.0, 0.0),  # at the pedestrian, wrong class: no match
])]  # fmt: skip


def test_match_is_greedy_by_score_same_class_within_range_and_distance():
    a, b = cm.match(A, INFOS, 0.2, 2.0), cm.match(B, INFOS, 0.2, 2.0)
    nan = float("nan")
    # label, centre err, vel err, speed, yaw err, vel dir err, pred speed, pred xy, then the
    # velocity error along / across the line of sight and the truth's speed along / across it
    expected_a = {
        (0, 0): (CAR, 0.5, 0.0, 1.0, 0.0, 0.0, 1.0, (10.5, 0.0), 0.0, 0.0, 1.0, 0.0),
        (0, 1): (PEDESTRIAN, 1.5, 0.0, 0.0, 0.0, nan, 0.0, (0.0, 21.5), 0.0, 0.0, 0.0, 0.0),
    }
    expected_b = {
        (0, 0): (CAR, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, (10.0, 0.0), 1.0, 0.0, 1.0, 0.0),
        (0, 3): (BARRIER, 0.5, 0.0, 0.0, 0.0, nan, 0.0, (5.0, 5.5), 0.0, 0.0, 0.0, 0.0),
    }
    for got, expected in ((a, expected_a), (b, expected_b)):
        assert got.keys() == expected.keys()
        for key, row in expected.items():  # NaN where a velocity is zero: compared as NaN
            assert got[key][:7] == pytest.approx(row[:7], nan_ok=True)
            assert got[key].pred_xy == pytest.approx(row[7])
            assert got[key][8:] == pytest.approx(row[8:])
    # a looser threshold lets B's pedestrian (3 m off) match
    assert (0, 1) in cm.match(B, INFOS, 0.2, 3.0)


def test_compare_reports_the_errors_on_the_objects_both_detect():
    rows = cm.compare(cm.match(A, INFOS, 0.2, 2.0), cm.match(B, INFOS, 0.2, 2.0))
    assert rows["both"] == 1 and rows["both_moving"] == 1
    assert rows["A"]["velocity_both"] == 0.0 and rows["B"]["velocity_both"] == 1.0
    assert rows["A"]["centre_both"] == 0.5 and rows["B"]["centre_both"] == 0.0
    assert rows["A"]["velocity_own"] == 0.0  # the car and the pedestrian, both exact
    assert rows["B"]["velocity_own"] == 1.0  # the barrier has no velocity: only the car counts
    assert rows["A"]["only"] == 1 and rows["B"]["only"] == 1
    assert math.isnan(rows["B"]["velocity_only"])  # B's only object is the barrier


def test_heading_errors_split_static_and_moving_with_the_turned_around_share():
    """The moving car (0) predicted turned around, the pedestrian (1, static) 0.5 rad off, the
    barrier (3, static) turned around by pi, which its period pi forgives: a heading error of 0."""
    preds = [
        (CAR, 0.9, 10.0, 0.0, 1.0, 0.0),
        (PEDESTRIAN, 0.8, 0.0, 20.0, 0.0, 0.0),
        (BARRIER, 0.7, 5.0, 5.0, 0.0, 0.0),
    ]
    m = cm.match([_result(preds, [math.pi, -0.5, math.pi])], INFOS, 0.2, 2.0)
    assert m[(0, 0)].yaw_err == pytest.approx(math.pi) and m[(0, 1)].yaw_err == pytest.approx(0.5)
    assert m[(0, 3)].yaw_err == pytest.approx(0.0, abs=1e-6)  # float32 boxes
    rows = cm.compare(m, m)["A"]
    assert (rows["n_static"], rows["n_moving"]) == (2, 1)
    assert rows["heading_static"] == pytest.approx(0.25) and rows["turned_static"] == 0.0
    assert rows["heading_moving"] == pytest.approx(math.pi) and rows["turned_moving"] == 1.0
    assert rows["turned_moving_by_class"]["car"] == (1.0, 1)
    assert rows["turned_static_by_class"]["pedestrian"] == (0.0, 1)
    assert math.isnan(rows["turned_static_by_class"]["truck"][0])


def test_velocity_on_moving_objects_splits_reversed_and_standing():
    """Three moving cars (1 m/s along x) predicted reversed (-1 m/s: error 2), standing (-0.2 m/s:
    error 1.2, pointing backwards too, but a standing prediction is not counted as reversed) and
    90 degrees off (1 m/s along y: error sqrt 2, neither); the static pedestrian does not count."""
    cars = [_gt(CAR, 10.0 * k, 0.0, vx=1.0) for k in (1, 2, 3)]
    infos = [dict(instances=cars + [_gt(PEDESTRIAN, 0.0, 20.0)])]
    preds = [
        (CAR, 0.9, 10.0, 0.0, -1.0, 0.0),
        (CAR, 0.8, 20.0, 0.0, -0.2, 0.0),
        (CAR, 0.7, 30.0, 0.0, 0.0, 1.0),
        (PEDESTRIAN, 0.6, 0.0, 20.0, 1.0, 0.0),
    ]
    m = cm.match([_result(preds)], infos, 0.2, 2.0)
    assert m[(0, 0)].vel_dir_err == pytest.approx(math.pi) and m[(0, 2)].vel_dir_err == pytest.approx(
        math.pi / 2
    )
    assert m[(0, 1)].vel_dir_err == pytest.approx(math.pi) and math.isnan(
        m[(0, 3)].vel_dir_err
    )  # static truth
    err, reversed_, standing, n = cm.compare(m, m)["A"]["velocity_moving_by_class"]["car"]
    assert n == 3 and err == pytest.approx((2.0 + 1.2 + math.sqrt(2)) / 3, abs=1e-6)
    assert reversed_ == pytest.approx(1 / 3) and standing == pytest.approx(1 / 3)
    rows = cm.compare(m, m)["A"]["velocity_moving_by_class"]
    assert rows["pedestrian"][3] == 0 and math.isnan(rows["pedestrian"][0])
    assert "barrier" not in rows and "traffic_cone" not in rows  # no velocity in the devkit


def test_velocity_error_splits_along_and_across_the_line_of_sight():
    """A car at (10, 10) driving 1 m/s along x predicted standing: its error (1, 0) is 1 / sqrt 2
    along the line of sight (diagonal) and 1 / sqrt 2 across it, as is its speed; a pedestrian
    straight ahead along y at (0, 20) walking 1 m/s across it (along x), predicted (1, 0.5): 0.5
    off along the line of sight, exact across it; a standing truck counts in no row."""
    infos = [dict(instances=[
        _gt(CAR, 10.0, 10.0, vx=1.0), _gt(PEDESTRIAN, 0.0, 20.0, vx=1.0), _gt(1, -10.0, 0.0),
    ])]  # fmt: skip
    preds = [
        (CAR, 0.9, 10.0, 10.0, 0.0, 0.0),
        (PEDESTRIAN, 0.8, 0.0, 20.0, 1.0, 0.5),
        (1, 0.7, -10.0, 0.0, 0.3, 0.0),
    ]
    m = cm.match([_result(preds)], infos, 0.2, 2.0)
    half = math.sqrt(0.5)
    assert m[(0, 0)][8:] == pytest.approx((half, half, half, half), abs=1e-6)
    assert m[(0, 1)][8:] == pytest.approx((0.5, 0.0, 0.0, 1.0), abs=1e-6)
    assert m[(0, 2)][8:] == pytest.approx((0.3, 0.0, 0.0, 0.0), abs=1e-6)  # along -x: (-1, 0)
    rows = cm.compare(m, m)["A"]["sight_moving_by_class"]
    assert rows["car"] == pytest.approx((half, half, half, half, 1), abs=1e-6)
    assert rows["pedestrian"] == pytest.approx((0.5, 0.0, 0.0, 1.0, 1), abs=1e-6)
    assert rows["truck"][4] == 0 and math.isnan(rows["truck"][0])  # static: no moving row
    assert "barrier" not in rows


def test_cli_prints_the_table_and_names_a_missing_file(tmp_path, capsys):
    paths = {}
    for name, obj in (("a.pkl", A), ("b.pkl", B), ("infos.pkl", dict(data_list=INFOS))):
        paths[name] = tmp_path / name
        paths[name].write_bytes(pickle.dumps(obj))
    rows = cm.main([str(paths["a.pkl"]), str(paths["b.pkl"]), "--infos", str(paths["infos.pkl"])])
    assert rows["both"] == 1
    out = capsys.readouterr().out
    assert "both detect 1 objects (1 moving" in out
    assert "turned around per class" in out and "  car " in out
    assert "reversed (> 135 deg) / standing" in out
    assert "along / across the line of sight" in out
    with pytest.raises(SystemExit, match="sample_idx 0 is not in --infos \\(0 samples\\)"):
        cm.match(A, [], 0.2, 2.0)
    with pytest.raises(SystemExit, match="missing.pkl"):
        cm.main([str(paths["a.pkl"]), str(tmp_path / "missing.pkl"), "--infos", str(paths["infos.pkl"])])
