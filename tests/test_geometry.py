"""Known answers for the one projection function (STYLE.md 3 and 12)."""

import numpy as np
import pytest
import torch
from pyquaternion import Quaternion

from bev_deform.geometry import (
    CAM_NAMES,
    FeatureLevels,
    denormalize_points,
    level_stride,
    lidar2img_from_calib,
    normalize_points,
    project_points,
)

# nuScenes CAM_FRONT and LIDAR_TOP calibration (DESIGN.md), 1600x900 images
CAM_T, CAM_Q = [1.70079, 0.01595, 1.51096], [0.49980, -0.50303, 0.49978, -0.49737]
F, CX, CY, W, H = 1266.42, 816.27, 491.51, 1600, 900
LIDAR_T, LIDAR_Q = [0.943713, 0.0, 1.84023], [0.7077955, -0.0064922, 0.0106462, -0.7063073]


def _pose(t, q):
    m = np.eye(4)
    m[:3, :3] = Quaternion(q).rotation_matrix
    m[:3, 3] = t
    return m


def _front_camera():
    cam2ego, lidar2ego = _pose(CAM_T, CAM_Q), _pose(LIDAR_T, LIDAR_Q)
    lidar2cam = np.linalg.inv(cam2ego) @ lidar2ego
    cam2img = np.array([[F, 0, CX], [0, F, CY], [0, 0, 1.0]])
    return torch.from_numpy(cam2img), torch.from_numpy(lidar2cam), cam2ego, lidar2ego


def _cam_point_in_lidar(p_cam, cam2ego, lidar2ego):
    ego = cam2ego @ np.append(p_cam, 1.0)
    return (np.linalg.inv(lidar2ego) @ ego)[:3]


def test_point_on_optical_axis_lands_on_principal_point():
    cam2img, lidar2cam, cam2ego, lidar2ego = _front_camera()
    lidar2img = lidar2img_from_calib(cam2img, lidar2cam)[None, None]  # (1, 1, 4, 4)
    p = _cam_point_in_lidar([0.0, 0.0, 10.0], cam2ego, lidar2ego)
    uv, valid, depth = project_points(torch.tensor(p)[None, None], lidar2img, (H, W))
    assert valid.item()
    assert depth.item() == pytest.approx(10.0, abs=1e-9)
    assert uv[0, 0, 0].tolist() == pytest.approx([CX / W, CY / H], abs=1e-9)
    # nuScenes' LIDAR_TOP frame has y forward and x to the right: 10 m ahead of CAM_FRONT is
    # ~10.76 m along +y (CAM_FRONT sits 0.76 m ahead of the lidar), on the lidar's x = 0 plane
    assert p[1] == pytest.approx(10.757, abs=0.01) and abs(p[0]) < 0.1


def test_point_off_axis_lands_at_pinhole_pixel_and_behind_is_invalid():
    cam2img, lidar2cam, cam2ego, lidar2ego = _front_camera()
    lidar2img = lidar2img_from_calib(cam2img, lidar2cam)[None, None]
    pts = [
        _cam_point_in_lidar([2.0, -1.0, 20.0], cam2ego, lidar2ego),  # u = cx + f*0.1, v = cy - f*0.05
        _cam_point_in_lidar([0.0, 0.0, -5.0], cam2ego, lidar2ego),  # behind the camera
        _cam_point_in_lidar([30.0, 0.0, 10.0], cam2ego, lidar2ego),  # in front but far right of the image
    ]
    uv, valid, _ = project_points(torch.tensor(np.stack(pts))[None], lidar2img, (H, W))
    assert uv[0, 0, 0].tolist() == pytest.approx([(CX + F * 0.1) / W, (CY - F * 0.05) / H], abs=1e-9)
    assert valid[0, 0].tolist() == [True, False, False]


def test_per_camera_image_sizes_and_batch_shapes():
    cam2img, lidar2cam, cam2ego, lidar2ego = _front_camera()
    l2i = lidar2img_from_calib(cam2img, lidar2cam)
    lidar2img = torch.stack([l2i, l2i])[None].expand(2, 2, 4, 4)  # (B=2, N=2, 4, 4)
    p = torch.tensor(_cam_point_in_lidar([0.0, 0.0, 10.0], cam2ego, lidar2ego))
    points = p.expand(2, 5, 3)  # (B=2, Q=5, 3)
    hw = torch.tensor([[H, W], [2 * H, 2 * W]], dtype=torch.float64).expand(2, 2, 2)
    uv, valid, depth = project_points(points, lidar2img, hw)
    assert uv.shape == (2, 2, 5, 2) and valid.shape == depth.shape == (2, 2, 5)
    assert uv[:, 0, :, 0].allclose(torch.tensor(CX / W, dtype=torch.float64))
    assert uv[:, 1, :, 0].allclose(torch.tensor(CX / (2 * W), dtype=torch.float64))


def test_pc_range_normalisation_round_trip_and_errors():
    pc_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
    pts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 0.5]])
    metric = denormalize_points(pts, pc_range)
    assert metric[0].tolist() == pytest.approx([-51.2, -51.2, -5.0])
    assert metric[2].tolist() == pytest.approx([0.0, -25.6, -1.0])
    assert normalize_points(metric, pc_range).allclose(pts)
    with pytest.raises(ValueError, match="pc_range must have 6 values"):
        denormalize_points(pts, [0, 1, 2])
    with pytest.raises(ValueError, match=r"points must be \(B, Q, 3\)"):
        project_points(torch.zeros(4, 3), torch.eye(4)[None, None], (H, W))
    with pytest.raises(ValueError, match="lidar2img must be"):
        project_points(torch.zeros(1, 4, 3), torch.eye(4)[None], (H, W))


def test_level_strides_follow_the_fpn_shapes_of_a_padded_input():
    # 448x800 padded to 32: the stride-64 level has ceil(800 / 64) = 13 columns, covering 832 px
    assert [level_stride((448, 800), hw) for hw in [(56, 100), (28, 50), (14, 25), (7, 13)]] == [
        8,
        16,
        32,
        64,
    ]
    assert level_stride((928, 1600), (15, 25)) == 64
    with pytest.raises(ValueError, match=r"feature level of shape \(7, 12\) is not a stride-64 level"):
        level_stride((448, 800), (7, 12))


def test_feature_levels_normalise_pixels_by_each_levels_own_extent():
    levels = FeatureLevels.from_shapes([(56, 100), (7, 13)], (448, 800))
    assert levels.spatial_shapes.tolist() == [[56, 100], [7, 13]]
    assert levels.level_start_index.tolist() == [0, 5600] and levels.num_values == 5600 + 91
    assert levels.extent_wh(torch.zeros(1)).tolist() == [[800.0, 448.0], [832.0, 448.0]]
    pix = torch.tensor([[416.0, 224.0]], dtype=torch.float64)  # the centre of column 6 at stride 64
    loc = levels.pixels_to_locations(pix)  # (1, L, 2)
    # mmcv's cell index = loc * size - 0.5: column 416 / 8 - 0.5 = 51.5 and 416 / 64 - 0.5 = 6 exactly
    assert (loc[0, :, 0] * torch.tensor([100.0, 13.0], dtype=torch.float64) - 0.5).tolist() == [51.5, 6.0]
    back = levels.locations_to_pixels(loc[:, :, None, :], level_dim=-3)  # (1, L, 1, 2)
    assert torch.allclose(back[:, :, 0], pix[:, None].expand(1, 2, 2))


def test_padding_mask_marks_the_cells_beyond_each_cameras_image():
    levels = FeatureLevels.from_shapes([(116, 200), (15, 25)], (928, 1600))
    mask = levels.padding_mask(torch.tensor([[900.0, 1600.0], [928.0, 1600.0], [900.0, 800.0]]))
    assert mask.shape == (3, 116 * 200 + 15 * 25)
    stride8, stride64 = mask[:, : 116 * 200].view(3, 116, 200), mask[:, 116 * 200 :].view(3, 15, 25)
    # 900 px high: stride-8 row 111 has its centre at 892 px, row 112 at 900 px: the first padding row
    assert stride8[0].any(1).nonzero().flatten().tolist() == list(range(112, 116))
    assert stride64[0].any(1).nonzero().flatten().tolist() == [14]  # centre 928 >= 900
    # a 928-high image fills the padded input, but the stride-64 level covers 960 px: its row 14
    # (centre 928 px) lies beyond the input, and is padding too
    assert not mask[1, : 116 * 200].any() and stride64[1].any(1).nonzero().flatten().tolist() == [14]
    assert stride64[2, 0].nonzero().flatten().tolist() == list(range(12, 25))  # 800 px wide: 12.5 cells


def test_valid_shapes_are_the_rectangle_that_padding_mask_leaves():
    levels = FeatureLevels.from_shapes([(116, 200), (15, 25)], (928, 1600))
    img_hw = torch.tensor([[900.0, 1600.0], [928.0, 1600.0], [900.0, 800.0], [4.0, 3.0]])
    valid = levels.valid_shapes(img_hw)
    assert valid.dtype == torch.long
    # 900 px: stride-8 rows 0..111 (row 112's centre is at 900 px); 800 px at stride 64: columns 0..11
    assert valid.tolist() == [
        [[112, 200], [14, 25]], [[116, 200], [14, 25]], [[112, 100], [14, 12]], [[0, 0], [0, 0]]
    ]  # fmt: skip
    mask = levels.padding_mask(img_hw)
    start = 0
    for level, (h, w) in enumerate(levels.shapes):
        for row in range(4):
            hv, wv = valid[row, level].tolist()
            expected = torch.ones(h, w, dtype=torch.bool)
            expected[:hv, :wv] = False
            assert torch.equal(mask[row, start : start + h * w].view(h, w), expected), (row, level)
        start += h * w


def test_camera_names_are_the_nuscenes_order():
    assert CAM_NAMES == (
        "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"
    )  # fmt: skip
