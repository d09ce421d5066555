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
