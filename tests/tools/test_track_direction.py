"""tools/analysis/track_direction.py on a scene written out by hand: the ego drives along global
+y (heading +y, so the LIDAR_TOP axes are turned 90 degrees from the global ones), a pedestrian
walks 0.6 m per frame, a car drives 3 m per frame; the pedestrian's detections are off by
+-0.4 m along its motion on alternate frames, so one-frame steps point the wrong way half the
time and two-frame steps never do; the head predicts every object standing."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("track_direction", REPO / "tools/analysis/track_direction.py")
td = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(td)

CAR, PEDESTRIAN = 0, 7
YAW = math.pi / 2
ROT = np.array([[math.cos(YAW), -math.sin(YAW)], [math.sin(YAW), math.cos(YAW)]])


def _pose(k: int) -> np.ndarray:
    pose = np.eye(4)
    pose[:2, :2], pose[:2, 3] = ROT, (0.0, 4.0 * k)
    return pose


def _to_lidar(k: int, xy) -> np.ndarray:
    return ROT.T @ (np.asarray(xy, dtype=np.float64) - _pose(k)[:2, 3])


def _scene(frames: int = 5):
    """Infos and a dump (in shuffled order) of one scene; global tracks: the pedestrian at
    (5, 20 + 0.6 k) walking +y at 1.2 m/s, the car at (-3, 10 + 3 k) at 6 m/s."""
    infos, dump = [], []
    for k in range(frames):
        ped, car = _to_lidar(k, (5.0, 20.0 + 0.6 * k)), _to_lidar(k, (-3.0, 10.0 + 3.0 * k))
        v_ped, v_car = ROT.T @ (0.0, 1.2), ROT.T @ (0.0, 6.0)
        infos.append(
            dict(
                timestamp=0.5 * k,
                ego2global=_pose(k).tolist(),
                lidar_points=dict(lidar2ego=np.eye(4).tolist()),
                instances=[
                    dict(bbox_label_3d=label, bbox_3d=[*xy, 0.0, 1.0, 1.0, 1.0, 0.0], velocity=v.tolist(),
                         num_lidar_pts=5)
                    for label, xy, v in ((PEDESTRIAN, ped, v_ped), (CAR, car, v_car))
                ],
            )
        )  # fmt: skip
        off = ROT.T @ (0.0, 0.4 if k % 2 == 0 else -0.4)  # along the pedestrian's motion
        rows = [[*(ped + off), 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [*car, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
        dump.append(
            dict(
                sample_idx=k, scene_token="s", timestamp=0.5 * k,
                pred_instances_3d=dict(
                    bboxes_3d=LiDARInstance3DBoxes(torch.tensor(rows), box_dim=9),
                    scores_3d=torch.tensor([0.9, 0.8]), labels_3d=torch.tensor([PEDESTRIAN, CAR]),
                ),
            )
        )  # fmt: skip
    order = np.random.default_rng(0).permutation(frames)
    return dict(data_list=infos), [dump[i] for i in order]


def test_displacements_along_the_motion_have_the_known_signs_and_sizes(tmp_path):
    import pickle

    infos, dump = _scene()
    (tmp_path / "infos.pkl").write_bytes(pickle.dumps(infos))
    (tmp_path / "dump.pkl").write_bytes(pickle.dumps(dump))
    rows = td.main(
        [str(tmp_path / "dump.pkl"), "--infos", str(tmp_path / "infos.pkl"), "--gaps", "1", "2",
         "--classes", "pedestrian", "car"]
    )  # fmt: skip
    # one-frame steps: 0.6 - 0.8 (wrong way) and 0.6 + 0.8, alternately, in 0.5 s: -0.4 and 2.8 m/s
    # against 1.2, 1.6 m/s off either way; two-frame steps: 1.2 m in 1 s each, exact; the head's
    # standing velocity is off by the speed; every object is detected at every frame (float32 boxes)
    ped = dict(head_err=1.2, both=1.0)
    assert rows[("pedestrian", 1)] == pytest.approx(
        dict(n=4, right=0.5, predicted=0.6, true=0.6, track_err=1.6, **ped)
    )
    assert rows[("pedestrian", 2)] == pytest.approx(
        dict(n=3, right=1.0, predicted=1.2, true=1.2, track_err=0.0, **ped), abs=1e-5
    )
    car = dict(right=1.0, track_err=0.0, head_err=6.0, both=1.0)
    assert rows[("car", 1)] == pytest.approx(dict(n=4, predicted=3.0, true=3.0, **car), abs=1e-5)
    assert rows[("car", 2)] == pytest.approx(dict(n=3, predicted=6.0, true=6.0, **car), abs=1e-5)


def test_an_undetected_frame_drops_its_steps_and_bad_input_is_named(tmp_path):
    import pickle

    infos, dump = _scene()
    for entry in dump:
        if entry["sample_idx"] == 2:  # the pedestrian missed at frame 2
            pred = entry["pred_instances_3d"]
            pred["scores_3d"] = torch.tensor([0.1, 0.8])
    (tmp_path / "infos.pkl").write_bytes(pickle.dumps(infos))
    (tmp_path / "dump.pkl").write_bytes(pickle.dumps(dump))
    args = [str(tmp_path / "dump.pkl"), "--infos", str(tmp_path / "infos.pkl"), "--gaps", "1", "2"]
    rows = td.main([*args, "--classes", "pedestrian"])
    # frame 2 ends or starts the steps 1-2, 2-3 (gap 1) and 0-2, 2-4 (gap 2): 0-1, 3-4 and 1-3 are left,
    # of the later frames that detect it, 1, 3, 4 (gap 1) and 3, 4 (gap 2)
    assert rows[("pedestrian", 1)]["n"] == 2 and rows[("pedestrian", 2)]["n"] == 1
    assert rows[("pedestrian", 1)]["both"] == pytest.approx(2 / 3) and rows[("pedestrian", 2)]["both"] == 0.5
    with pytest.raises(SystemExit, match="--classes"):
        td.main([*args, "--classes", "pedestrians"])
    with pytest.raises(SystemExit, match="--gaps must be >= 1"):
        td.main([*args, "--gaps", "0"])
    del dump[0]["scene_token"]
    (tmp_path / "dump.pkl").write_bytes(pickle.dumps(dump))
    with pytest.raises(SystemExit, match="no scene_token/timestamp"):
        td.main(args)
