"""Box code, NMS-free decoding, 3D L1 match cost and Hungarian assignment, on known answers."""

from __future__ import annotations

import math

import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.structures import InstanceData

from bev_deform.models.task_modules import BBox3DL1Cost, HungarianAssigner3D, NMSFreeCoder
from bev_deform.registry import TASK_UTILS


def test_encode_puts_gravity_centre_and_w_before_l():
    boxes = LiDARInstance3DBoxes(torch.tensor([[1.0, 2.0, -1.0, 4.0, 2.0, 1.5, 0.3, 1.0, -0.5]]), box_dim=9)
    code = NMSFreeCoder().encode(boxes)[0]
    expected = [
        1.0,
        2.0,
        math.log(2.0),
        math.log(4.0),
        -0.25,
        math.log(1.5),
        math.sin(0.3),
        math.cos(0.3),
        1.0,
        -0.5,
    ]
    assert code.tolist() == pytest.approx(expected, abs=1e-6)


def test_encode_decode_round_trip_against_lidar_boxes():
    torch.manual_seed(0)
    n = 50
    t = torch.cat(
        [
            torch.rand(n, 2) * 100 - 50,  # x, y
            torch.rand(n, 1) * 4 - 3,  # z (bottom)
            torch.rand(n, 3) * 5 + 0.3,  # l, w, h
            torch.rand(n, 1) * 2 * math.pi - math.pi,  # yaw in [-pi, pi)
            torch.randn(n, 2) * 3,  # vx, vy
        ],
        dim=1,
    )
    boxes = LiDARInstance3DBoxes(t, box_dim=9)
    coder = NMSFreeCoder()
    decoded = coder.decode_boxes(coder.encode(boxes))
    assert isinstance(decoded, LiDARInstance3DBoxes) and decoded.box_dim == 9
    # boxes are float32 (mmdet3d casts): agreement to float32 precision at 50 m
    assert torch.allclose(decoded.tensor, t, atol=1e-4)
    assert torch.allclose(decoded.gravity_center, boxes.gravity_center, atol=1e-4)
    assert torch.allclose(decoded.corners, boxes.corners, atol=1e-4)


def test_decode_keeps_top_k_query_class_pairs_and_filters():
    coder = TASK_UTILS.build(
        dict(type="NMSFreeCoder", max_num=3, score_threshold=0.2, post_center_range=[-10, -10, -5, 10, 10, 5])
    )
    logits = torch.full((4, 3), -10.0)
    logits[0, 2], logits[1, 0], logits[2, 1], logits[3, 2] = 3.0, 2.0, 1.0, 4.0
    codes = torch.zeros(4, 10)
    codes[:, 7] = 1.0  # cos = 1: yaw 0; log sizes 0: unit boxes
    codes[:, 0] = torch.tensor([1.0, 2.0, 3.0, 20.0])  # query 3 lies outside post_center_range
    res = coder.decode(logits, codes)
    # top-3 pairs: (q3, c2) 0.98, (q0, c2) 0.95, (q1, c0) 0.88; q3 dropped by the range
    assert res.labels_3d.tolist() == [2, 0]
    assert res.query_ids.tolist() == [0, 1]  # the queries the kept boxes came from
    assert res.scores_3d.tolist() == pytest.approx(
        [torch.sigmoid(torch.tensor(3.0)).item(), 0.8807970], abs=1e-6
    )
    assert res.bboxes_3d.tensor[:, 0].tolist() == [1.0, 2.0] and res.bboxes_3d.box_dim == 9
    assert res.bboxes_3d.tensor[:, 2].tolist() == [-0.5, -0.5]  # cz 0, h 1 -> bottom at -0.5

    strict = NMSFreeCoder(max_num=10, score_threshold=0.9)
    assert strict.decode(logits, codes).labels_3d.tolist() == [2, 2]  # only q3 and q0 score > 0.9


def test_bbox3d_l1_cost_ignores_velocity_by_default():
    pred = InstanceData(bboxes=torch.tensor([[0.0] * 8 + [5.0, 5.0]]))
    gt = InstanceData(bboxes=torch.tensor([[1.0] * 8 + [0.0, 0.0], [0.0] * 10]))
    cost = BBox3DL1Cost(weight=0.5)(pred, gt)
    assert cost.tolist() == [[4.0, 0.0]]
    assert BBox3DL1Cost(num_dims=10)(pred, gt).tolist() == [[18.0, 10.0]]
    with pytest.raises(ValueError, match=r"gt_instances.bboxes must be \(n, >= 8\)"):
        BBox3DL1Cost()(pred, InstanceData(bboxes=torch.zeros(2, 3)))


def test_hungarian_assignment_is_optimal_not_greedy():
    # costs |p - g|: p0 [0.9, 1.2], p1 [0.1, 0.2], p2 [2.1, 1.8]. Greedy takes (p1, g0) then
    # (p0, g1) = 1.3; the optimum is (p0, g0) + (p1, g1) = 1.1.
    assigner = HungarianAssigner3D(match_costs=[dict(type="BBox3DL1Cost", num_dims=1)])
    pred = InstanceData(scores=torch.zeros(3, 2), bboxes=torch.tensor([[0.0], [1.0], [3.0]]))
    gt = InstanceData(labels=torch.tensor([1, 0]), bboxes=torch.tensor([[0.9], [1.2]]))
    result = assigner.assign(pred, gt)
    assert result.gt_inds.tolist() == [1, 2, 0]
    assert result.labels.tolist() == [1, 0, -1]


def test_default_costs_combine_focal_class_cost_and_box_cost():
    assigner = TASK_UTILS.build(dict(type="HungarianAssigner3D"))  # mmdet.FocalLossCost + BBox3DL1Cost
    codes = torch.zeros(2, 10)
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])  # query 0 says class 0, query 1 class 1
    gt = InstanceData(labels=torch.tensor([1]), bboxes=torch.zeros(1, 10))  # both boxes equally close
    assert assigner.assign(InstanceData(scores=logits, bboxes=codes), gt).gt_inds.tolist() == [0, 1]
    empty = InstanceData(labels=torch.zeros(0, dtype=torch.long), bboxes=torch.zeros(0, 10))
    assert assigner.assign(InstanceData(scores=logits, bboxes=codes), empty).gt_inds.tolist() == [0, 0]


def test_bad_coder_arguments_raise():
    with pytest.raises(ValueError, match="max_num must be >= 1"):
        NMSFreeCoder(max_num=0)
    with pytest.raises(ValueError, match="post_center_range must be"):
        NMSFreeCoder(post_center_range=[0, 1])
    with pytest.raises(ValueError, match="box_dim 9"):
        NMSFreeCoder().encode(LiDARInstance3DBoxes(torch.zeros(1, 7)))
    with pytest.raises(ValueError, match="match_costs must name at least one cost"):
        HungarianAssigner3D(match_costs=[])
