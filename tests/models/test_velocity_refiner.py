"""VelocityRefiner: the velocity of a walker the head calls standing, voted from its detections of
the earlier frames, in the LiDAR frame of a rotated ego; what it leaves alone, bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from bev_deform.datasets.synthetic.rig import yaw_pose
from bev_deform.models.task_modules.velocity_refiner import VelocityRefiner

NAMES = ["car", "pedestrian"]


def _pose(yaw: float, x: float, y: float) -> torch.Tensor:
    return torch.as_tensor(yaw_pose(yaw, (x, y, 0.0)))


def _frame(objects, pose: torch.Tensor):
    """(boxes (N, 9) in the LiDAR frame of ``pose``, scores, labels) of objects given as (global x,
    global y, label, score), the head's velocity 0 for all."""
    g = torch.tensor([[x, y] for x, y, _, _ in objects], dtype=torch.float64)
    xy = (g - pose[:2, 3]) @ pose[:2, :2]  # global -> LiDAR: R^T (g - t)
    boxes = torch.zeros(len(objects), 9, dtype=torch.float64)
    boxes[:, :2] = xy
    boxes[:, 3:6] = torch.tensor([0.7, 0.7, 1.8], dtype=torch.float64)
    labels = torch.tensor([label for _, _, label, _ in objects])
    scores = torch.tensor([s for _, _, _, s in objects], dtype=torch.float64)
    return boxes, scores, labels


def _run(refiner, frames: int, walker_speed: float = 1.2, labels=(1, 1, 0), score: float = 0.5):
    """``frames`` frames 0.5 s apart: a walker at ``walker_speed`` m/s along global +x, a standing
    pedestrian 2 m beside its path and a car at 8 m/s, seen by an ego turned 90 degrees (LiDAR x =
    global y) that drives 3 m per frame along global +y; the last frame's boxes, refined."""
    for k in range(frames):
        t = 0.5 * k
        objects = [(10.0 + walker_speed * t, 5.0, labels[0], score), (10.0, 7.0, labels[1], score)]
        objects.append((30.0 + 8.0 * t, -4.0, labels[2], score))
        pose = _pose(math.pi / 2, 100.0, 3.0 * k)
        out = refiner(*_frame(objects, pose), pose, t)
    return out


def test_the_walker_gets_its_velocity_in_the_lidar_frame_and_the_rest_stays_bit_for_bit():
    refiner = VelocityRefiner(NAMES, classes=dict(pedestrian=2.0), num_frames=8)
    out = _run(refiner, frames=9)
    # global (1.2, 0) in a LiDAR frame whose x is global y: (0, -1.2), the 8 earlier frames' slope
    torch.testing.assert_close(out[0, 7:9], torch.tensor([0.0, -1.2], dtype=torch.float64), atol=1e-9, rtol=0)
    assert out[1, 7:9].tolist() == [0.0, 0.0]  # standing: the head's velocity has all the support
    assert out[2, 7:9].tolist() == [0.0, 0.0]  # a car: not a class to refine
    # the walker from the 6th frame on: 4 earlier frames of score 0.5 support the 1.25 m/s grid
    # point by 1.995 (< 2), 5 by 2.49
    assert refiner.num_refined == 4
    assert len(refiner.frames) == 8


def test_cars_are_refined_around_the_head_velocity_when_named():
    refiner = VelocityRefiner(NAMES, classes=dict(car=3.0), num_frames=8)
    out = _run(refiner, frames=9)
    # the car's 8 m/s lies outside the +-3 m/s grid around the head's 0: no hypothesis reaches it
    assert out[2, 7:9].tolist() == [0.0, 0.0]
    refiner = VelocityRefiner(NAMES, classes=dict(car=9.0), num_frames=8)
    out = _run(refiner, frames=9)
    torch.testing.assert_close(out[2, 7:9], torch.tensor([0.0, -8.0], dtype=torch.float64), atol=1e-9, rtol=0)
    assert out[0, 7:9].tolist() == [0.0, 0.0]  # pedestrians are not named now


def test_too_little_support_or_a_reset_keeps_the_head_velocity():
    refiner = VelocityRefiner(NAMES, classes=dict(pedestrian=2.0), num_frames=8)
    out = _run(refiner, frames=4)  # 3 earlier frames of score 0.5: support 1.5 < 2
    assert out[0, 7:9].tolist() == [0.0, 0.0] and refiner.num_refined == 0
    # 1.498 against the head's 0.760: a gain of 0.74
    refiner = VelocityRefiner(NAMES, classes=dict(pedestrian=2.0), min_support=1.0, min_gain=0.5)
    out = _run(refiner, frames=4)
    torch.testing.assert_close(out[0, 7:9], torch.tensor([0.0, -1.2], dtype=torch.float64), atol=1e-9, rtol=0)
    refiner.reset()
    pose = _pose(math.pi / 2, 100.0, 0.0)
    again = refiner(*_frame([(10.0, 5.0, 1, 0.5)], pose), pose, 9.0)
    assert again[0, 7:9].tolist() == [0.0, 0.0] and len(refiner.frames) == 1


def test_min_gain_keeps_a_head_velocity_almost_as_well_supported():
    # a walker at 0.6 m/s, its earlier selves 0.3 m apart: after 8 frames the head's 0 has
    # support 1.817 against 3.876 at 0.5 m/s (a gain of 2.06); with min_gain 2.5 it stays
    strict = VelocityRefiner(NAMES, classes=dict(pedestrian=2.0), min_gain=2.5)
    assert _run(strict, frames=9, walker_speed=0.6)[0, 7:9].tolist() == [0.0, 0.0]
    loose = VelocityRefiner(NAMES, classes=dict(pedestrian=2.0), min_gain=0.75)
    out = _run(loose, frames=9, walker_speed=0.6)
    torch.testing.assert_close(out[0, 7:9], torch.tensor([0.0, -0.6], dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(classes=dict(bus=2.0)), r"\['bus'\] are not in class_names"),
        (dict(classes=dict(car=0.0)), "radii > 0"),
        (dict(classes=dict(car=2.0), num_frames=0), "num_frames >= 1"),
    ],
)
def test_bad_config_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VelocityRefiner(NAMES, **kwargs)
