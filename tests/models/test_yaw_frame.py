"""The query heads' ``yaw_frame='ray'``: the regression branch's (sin, cos) slots are the yaw
relative to the ray from the LiDAR origin to the predicted centre (the observation angle of
monocular 3D detectors), rotated by the ray's azimuth into the yaw of the box code."""

from __future__ import annotations

import math

import pytest
import torch
from test_denoising_3d import CAR_AHEAD, PED_LEFT, TRUCK, _build, _feats, _samples, head_cfg

from bev_deform.models.heads.query_head_base import ray_to_ego_yaw
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS
from bev_deform.registry import MODELS


def _sin_cos(angle: float) -> torch.Tensor:
    return torch.tensor([math.sin(angle), math.cos(angle)])


@pytest.mark.parametrize(
    ("xy", "ray_yaw", "yaw"),
    [
        ((0.0, 10.0), math.pi, -math.pi / 2),  # 10 m left, showing the ego its front: heading -y
        ((0.0, 10.0), 0.0, math.pi / 2),  # 10 m left, driving away along the ray: heading +y
        ((10.0, 0.0), 0.3, 0.3),  # on the +x axis the two frames agree
        ((-10.0, 0.0), 0.0, math.pi),  # behind, driving away: heading -x
        ((5.0, 5.0), math.pi / 2, 3 * math.pi / 4),  # azimuth 45 degrees + 90
        ((-3.0, -3.0), -math.pi / 4, -math.pi),  # azimuth -135 degrees - 45
    ],
)
def test_ray_relative_yaw_turns_into_the_yaw_by_the_azimuth_of_the_centre(xy, ray_yaw, yaw):
    got = ray_to_ego_yaw(_sin_cos(ray_yaw)[None], torch.tensor([xy]))[0]
    torch.testing.assert_close(got, _sin_cos(yaw), atol=1e-6, rtol=0)


def test_the_rotation_keeps_unnormalised_outputs_unnormalised_and_the_origin_has_azimuth_0():
    """Branch outputs are not unit vectors: the rotation keeps their length (the L1 loss on them
    means what it means in the ego frame); a centre at the origin leaves them as they are."""
    raw = torch.tensor([[0.6, -0.2], [2.0, 0.0], [0.3, 0.4]])
    xy = torch.tensor([[3.0, -7.0], [0.0, 4.0], [0.0, 0.0]])
    got = ray_to_ego_yaw(raw, xy)
    torch.testing.assert_close(got.norm(dim=-1), raw.norm(dim=-1))
    torch.testing.assert_close(got[1], torch.tensor([0.0, -2.0]))  # 90 degrees + azimuth 90: 180
    torch.testing.assert_close(got[2], raw[2])


def test_ray_frame_head_changes_only_the_yaw_slots_and_by_the_centres_azimuth(nuscenes_rig):
    """The same weights in both frames: every slot but (sin, cos) is the same, and the yaw decoded
    in the ray frame is the ego frame's yaw plus the azimuth of the predicted centre."""
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([TRUCK], [1])])
    metas = [s.metainfo for s in samples]
    feats = _feats(2)
    ego = _build(head_cfg())
    ray = MODELS.build(dict(head_cfg(), yaw_frame="ray"))
    ray.load_state_dict(ego.state_dict())
    ego.eval(), ray.eval()
    with torch.no_grad():
        a, b = ego(feats, metas)["all_bbox_preds"], ray(feats, metas)["all_bbox_preds"]  # (L, B, Q, 10)
    others = [i for i in range(10) if i not in (6, 7)]
    torch.testing.assert_close(b[..., others], a[..., others])
    azimuth = torch.atan2(a[..., 1], a[..., 0])
    want = torch.atan2(a[..., 6], a[..., 7]) + azimuth
    got = torch.atan2(b[..., 6], b[..., 7])
    diff = torch.remainder(got - want + math.pi, 2 * math.pi) - math.pi  # wrapped to [-pi, pi)
    assert diff.abs().max() < 1e-4
    assert azimuth.abs().max() > 1.0  # queries away from the +x axis: the two frames differ there
    assert (got - torch.atan2(a[..., 6], a[..., 7])).abs().max() > 1.0


def test_the_orientation_loss_does_not_move_the_centre():
    """The azimuth is taken from the detached centre: a loss on the (sin, cos) slots has no
    gradient on the centre's branch outputs, and one on the yaw slots themselves."""
    head = MODELS.build(dict(head_cfg(), yaw_frame="ray"))
    raw = torch.randn(1, 5, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    refs = torch.rand(1, 5, 3, generator=torch.Generator().manual_seed(1))
    head._to_code(raw, refs)[..., 6:8].abs().sum().backward()
    assert raw.grad[..., list(CENTER_SLOTS)].abs().max() == 0
    assert raw.grad[..., 6:8].abs().min() > 0


def test_bad_yaw_frame_raises_naming_it():
    with pytest.raises(
        ValueError, match=r"yaw_frame must be one of \(.ego., .ray., .ego\+ray.\), got .allo."
    ):
        MODELS.build(dict(head_cfg(), yaw_frame="allo"))


def test_ego_plus_ray_starts_as_the_ego_frame_and_adds_the_rotated_ray_part(nuscenes_rig):
    """'ego+ray': at initialisation the same parameters (drawn alike) and outputs as 'ego'; with
    the LiDAR-frame slots zeroed and the ray branches set to a constant ray-relative heading of 0
    (sin 0, cos 1), the decoded heading is the azimuth of each predicted centre."""
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([TRUCK], [1])])
    metas = [s.metainfo for s in samples]
    feats = _feats(2)
    ego, both = _build(head_cfg()), _build(dict(head_cfg(), yaw_frame="ego+ray"))
    ego_state, both_state = ego.state_dict(), both.state_dict()
    extra = sorted(set(both_state) - set(ego_state))
    assert extra == [f"ray_yaw_branches.{i}.{p}" for i in range(2) for p in ("bias", "weight")]
    for key, value in ego_state.items():
        torch.testing.assert_close(both_state[key], value, rtol=0, atol=0)
    ego.eval(), both.eval()
    with torch.no_grad():
        torch.testing.assert_close(both(feats, metas)["all_bbox_preds"], ego(feats, metas)["all_bbox_preds"])
        for reg in both.reg_branches:
            reg[-1].weight[6:8] = 0.0
            reg[-1].bias[6:8] = 0.0
        for branch in both.ray_yaw_branches:
            branch.bias.copy_(torch.tensor([0.0, 1.0]))
        codes = both(feats, metas)["all_bbox_preds"]  # (L, B, Q, 10)
    got = torch.atan2(codes[..., 6], codes[..., 7])
    want = torch.atan2(codes[..., 1], codes[..., 0])
    diff = torch.remainder(got - want + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-4
    assert want.std() > 0.5  # queries all around: the heading follows each one's azimuth
