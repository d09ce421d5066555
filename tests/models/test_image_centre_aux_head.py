"""The dense auxiliary head: known-answer targets for a box on CAM_FRONT's optical axis, nothing for
a box no camera sees, and losses that fall when it fits (its place in the detector: test_detector)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.structures import InstanceData

from bev_deform.geometry import CameraGeometry
from bev_deform.models.heads import ImageCentreAuxHead

IMG_HW = (96, 160)  # image (H, W); the padded batch is the same, the stride-8 level is 12 x 20
FEAT_HW = (12, 20)
LWH = (4.0, 2.0, 1.5)


def _cams(rig, batch: int = 1) -> CameraGeometry:
    l2i = rig((IMG_HW[1], IMG_HW[0])).lidar2img()
    metas = [dict(lidar2img=l2i, img_shape=IMG_HW, batch_input_shape=IMG_HW)] * batch
    return CameraGeometry.from_metas(metas, "cpu")


def _gt(centres, yaws, labels) -> InstanceData:
    """Boxes from gravity centres (G, 3), yaws (G,) and labels (G,)."""
    rows = [[x, y, z - LWH[2] / 2, *LWH, yaw, 0.0, 0.0] for (x, y, z), yaw in zip(centres, yaws)]
    boxes = LiDARInstance3DBoxes(torch.tensor(rows, dtype=torch.float32).view(-1, 9), box_dim=9)
    return InstanceData(bboxes_3d=boxes, labels_3d=torch.tensor(labels, dtype=torch.long))


def test_box_on_front_optical_axis_peaks_at_the_principal_point_with_its_depth_and_angle(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    centre = rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0])  # 10 m ahead of CAM_FRONT, on its axis
    yaw = 0.7
    head = ImageCentreAuxHead(num_classes=10, in_channels=8)
    heatmap, reg, index = head.targets([_gt([centre], [yaw], [3])], _cams(nuscenes_rig), FEAT_HW)

    fx, fy, cx, cy = rig.intrinsics(0)
    x, y = int(cx / 8), int(cy / 8)  # the principal point, in stride-8 feature pixels
    assert index.tolist() == [[0, 0, y, x]]  # sample 0, CAM_FRONT only
    assert heatmap[0, 0, 3, y, x] == 1.0
    assert heatmap[0, :, [c for c in range(10) if c != 3]].max() == 0.0  # only its class
    assert heatmap[0, 1:].max() == 0.0  # no other camera
    alpha = yaw - math.atan2(centre[1], centre[0])
    expected = [math.log(10.0), math.sin(alpha), math.cos(alpha), *np.log(LWH)]
    np.testing.assert_allclose(reg[0].numpy(), expected, atol=1e-4)


def test_nearer_box_gets_a_wider_peak(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    head = ImageCentreAuxHead(num_classes=10, in_channels=8)
    widths = []
    for depth in (3.0, 25.0):
        centre = rig.cam_point_in_lidar(0, [0.0, 0.0, depth])
        heatmap, _, _ = head.targets([_gt([centre], [0.0], [0])], _cams(nuscenes_rig), FEAT_HW)
        widths.append(int((heatmap[0, 0, 0] > 0.01).sum()))
    assert widths[0] > widths[1] >= 1


def test_box_no_camera_sees_gives_no_target_and_finite_losses(nuscenes_rig):
    centre = [0.0, 0.0, 60.0]  # 60 m straight above the ego: above every image
    head = ImageCentreAuxHead(num_classes=10, in_channels=8)
    head.init_weights()
    heatmap, reg, index = head.targets([_gt([centre], [0.0], [0])], _cams(nuscenes_rig), FEAT_HW)
    assert heatmap.max() == 0.0 and reg.shape == (0, 6) and index.shape == (0, 4)

    sample = Det3DDataSample(
        metainfo=dict(
            lidar2img=nuscenes_rig((160, 96)).lidar2img(), img_shape=IMG_HW, batch_input_shape=IMG_HW
        )
    )
    sample.gt_instances_3d = _gt([centre], [0.0], [0])
    feats = [torch.randn(1, 6, 8, *FEAT_HW, requires_grad=True)]
    losses = head.loss(feats, [sample])
    assert set(losses) == {"aux_loss_heatmap", "aux_loss_reg"}
    assert torch.isfinite(losses["aux_loss_heatmap"]) and losses["aux_loss_heatmap"] > 0
    assert losses["aux_loss_reg"] == 0.0


def test_label_outside_the_classes_is_named(nuscenes_rig):
    """A -1 ('ignore') label would draw into the last class's heatmap: a named error instead."""
    head = ImageCentreAuxHead(num_classes=10, in_channels=8)
    with pytest.raises(ValueError, match=r"ImageCentreAuxHead: labels_3d must be in \[0, 10\), got \[-1\]"):
        head.targets([_gt([[0.0, 0.0, 10.0]], [0.0], [-1])], _cams(nuscenes_rig), FEAT_HW)


def test_losses_fall_when_the_head_fits_one_sample(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    meta = dict(lidar2img=rig.lidar2img(), img_shape=IMG_HW, batch_input_shape=IMG_HW)
    sample = Det3DDataSample(metainfo=meta)
    centres = [rig.cam_point_in_lidar(0, [1.0, 0.0, 12.0]), rig.cam_point_in_lidar(3, [0.0, 0.5, 8.0])]
    sample.gt_instances_3d = _gt(centres, [0.3, -2.0], [0, 7])
    torch.manual_seed(0)
    head = ImageCentreAuxHead(num_classes=10, in_channels=8)
    head.init_weights()
    feats = [torch.randn(1, 6, 8, *FEAT_HW)]
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        losses = head.loss(feats, [sample])
        total = sum(losses.values())
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.2 * first


def test_level_out_of_range_is_rejected(nuscenes_rig):
    head = ImageCentreAuxHead(num_classes=10, in_channels=8, level=4)
    with pytest.raises(ValueError, match="level=4 is not one of the 1 feature levels"):
        head.loss([torch.zeros(1, 6, 8, *FEAT_HW)], [])


def _depth_head() -> ImageCentreAuxHead:
    head = ImageCentreAuxHead(
        num_classes=10, in_channels=8, loss_depth=dict(type="mmdet.L1Loss", loss_weight=1.0)
    )
    head.init_weights()
    return head


def _axis_points(rig) -> torch.Tensor:
    """LIDAR_TOP points (with an intensity column) around CAM_FRONT's optical axis: 12 m and 10 m
    on it (one cell, the nearer counts), 20 m at 30 px right of the principal point (another cell),
    and one 5 m behind the camera (no cell of CAM_FRONT; CAM_BACK sees it)."""
    fx = rig.intrinsics(0)[0]
    cam_pts = [[0.0, 0.0, 12.0], [0.0, 0.0, 10.0], [30.0 / fx * 20.0, 0.0, 20.0], [0.0, 0.0, -5.0]]
    xyz = torch.from_numpy(np.array([rig.cam_point_in_lidar(0, p) for p in cam_pts], dtype=np.float32))
    return torch.cat([xyz, torch.full((4, 1), 7.0)], dim=1)  # (4, 4)


def test_depth_targets_keep_the_nearest_lidar_point_of_each_cell(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    _, _, cx, cy = rig.intrinsics(0)
    head = _depth_head()
    target = head.depth_targets([_axis_points(rig)], _cams(nuscenes_rig), FEAT_HW)
    assert target.shape == (1, 6, *FEAT_HW)
    x, y, x_right = int(cx / 8), int(cy / 8), int((cx + 30.0) / 8)
    assert x_right != x
    torch.testing.assert_close(target[0, 0, y, x], torch.tensor(10.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(target[0, 0, y, x_right], torch.tensor(20.0), atol=1e-4, rtol=0)
    assert int((target[0, 0] > 0).sum()) == 2  # no other cell of CAM_FRONT, nothing from behind it
    # the point behind CAM_FRONT is in front of CAM_BACK (3), the only other camera with a cell
    assert [cam for cam in range(6) if (target[0, cam] > 0).any()] == [0, 3]
    assert int((target[0, 3] > 0).sum()) == 1 and 0 < target[0, 3].max() < 5.0


def test_depth_loss_is_l1_on_log_depth_over_the_cells_with_a_point(nuscenes_rig):
    """A depth conv that predicts log 5 m everywhere: the loss is the mean of |log 5 - log d| over
    the three cells with a point (10 m, 20 m and CAM_BACK's), and it needs the points."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    head = _depth_head()
    with torch.no_grad():
        head.depth.weight.zero_()
        head.depth.bias.fill_(math.log(5.0))
    sample = Det3DDataSample(
        metainfo=dict(lidar2img=rig.lidar2img(), img_shape=IMG_HW, batch_input_shape=IMG_HW)
    )
    sample.gt_instances_3d = _gt([rig.cam_point_in_lidar(0, [0.0, 0.0, 15.0])], [0.0], [0])
    feats = [torch.randn(1, 6, 8, *FEAT_HW, requires_grad=True)]
    losses = head.loss(feats, [sample], [_axis_points(rig)])
    assert set(losses) == {"aux_loss_heatmap", "aux_loss_reg", "aux_loss_depth"}
    back = head.depth_targets([_axis_points(rig)], _cams(nuscenes_rig), FEAT_HW)[0, 3].max().item()
    expected = (math.log(10.0 / 5.0) + math.log(20.0 / 5.0) + abs(math.log(back / 5.0))) / 3
    torch.testing.assert_close(losses["aux_loss_depth"], torch.tensor(expected), atol=1e-5, rtol=0)
    losses["aux_loss_depth"].backward()
    # d/dbias of the mean |bias - log d|: -1/3 per cell deeper than 5 m, +1/3 for CAM_BACK's 3.3 m
    assert head.depth.bias.grad.item() == pytest.approx(-1.0 / 3.0)
    assert feats[0].grad.abs().max() == 0  # a zero conv passes nothing back to the features
    with pytest.raises(
        ValueError, match=r"loss_depth needs the lidar points of each of the 1 samples.*got None"
    ):
        head.loss(feats, [sample])
    # without loss_depth: no depth branch, no new key in the state dict, no points needed
    plain = ImageCentreAuxHead(num_classes=10, in_channels=8)
    assert plain.depth is None and not any(k.startswith("depth") for k in plain.state_dict())
