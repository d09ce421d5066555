"""Known answers for the history BEV's alignment by ego motion (``BEVGrid.align_history``,
``lidar_motion``): translations shift by whole cells, rotations turn about the ego for any grid,
static world points keep their feature, and cells from outside the previous grid are zero."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bev_deform.geometry import BEVGrid, lidar2global, lidar_motion, meta_matrix

SYMMETRIC = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)


def _se3(yaw: float, t=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """(4, 4) float64 rotation about z by ``yaw`` then translation ``t``."""
    m = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(yaw), math.sin(yaw)
    m[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    m[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return m


def _coordinate_bev(grid: BEVGrid) -> torch.Tensor:
    """(1, H*W, 2) float64 BEV whose channels are the metric (x, y) of each cell centre: bilinear
    reads of it return the metric point read (a linear function), away from the border."""
    return grid.cell_centres(dtype=torch.float64)[None]


@pytest.mark.parametrize("k", [1, 3])
def test_a_pure_translation_of_k_cells_shifts_the_bev_by_exactly_k_cells(k):
    grid = BEVGrid(50, 50, SYMMETRIC)
    dx = grid.cell_size[0]
    prev = torch.randn(1, 50 * 50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # the ego drove k cells forward (+x): a static point's current x is its previous x - k dx
    cur_from_prev = _se3(0.0, (-k * dx, 0.0, 0.0))[None]
    aligned, valid = grid.align_history(prev, cur_from_prev)
    prev_map, out_map, valid_map = prev.view(50, 50, 4), aligned.view(50, 50, 4), valid.view(50, 50)
    torch.testing.assert_close(out_map[:, : 50 - k], prev_map[:, k:], atol=1e-9, rtol=0)
    assert valid_map[:, : 50 - k].all()
    assert not valid_map[:, 50 - k :].any()  # entering from outside the previous grid
    assert torch.equal(out_map[:, 50 - k :], torch.zeros_like(out_map[:, 50 - k :]))


@pytest.mark.parametrize("size", [50, 200])
def test_a_90_degree_ego_rotation_turns_the_bev_about_the_ego_for_every_grid_size(size):
    grid = BEVGrid(size, size, SYMMETRIC)
    prev = torch.randn(1, size * size, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # the ego turned left by 90 degrees: a static point's current coordinates are R(-90) @ previous
    cur_from_prev = _se3(-math.pi / 2)[None]
    aligned, valid = grid.align_history(prev, cur_from_prev)
    assert valid.all()  # a square grid centred on the ego maps onto itself
    # current cell (i, j) at (x, y) reads the previous point R(90) (x, y) = (-y, x): row j, column H-1-i
    expected = torch.rot90(prev.view(size, size, 3), k=1, dims=(0, 1))  # B[i, j] = A[j, n-1-i]
    i, j = 3, 7
    x, y = grid.cell_centres(dtype=torch.float64).view(size, size, 2)[i, j]
    src = grid.cell_index(torch.stack([-y, x]))
    assert torch.equal(expected[i, j], prev[0, src])  # the hand-picked cell agrees with rot90
    torch.testing.assert_close(aligned.view(size, size, 3), expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "pc_range", [SYMMETRIC, (-20.0, -40.0, -5.0, 60.0, 40.0, 3.0)], ids=["ego-centred", "ego-off-centre"]
)
def test_aligned_features_are_read_where_each_cell_was_in_the_previous_frame(pc_range):
    """On a BEV holding each cell's own (x, y), the aligned BEV holds, in the cells that stay
    inside, prev_from_cur applied to the cell centre: the rotation is about the ego, not a cell."""
    grid = BEVGrid(50, 40, pc_range)
    motion = _se3(0.3, (2.5, -1.2, 0.1))  # cur_from_prev
    aligned, valid = grid.align_history(_coordinate_bev(grid), motion[None])
    centres = grid.cell_centres(dtype=torch.float64)  # (H*W, 2)
    homog = torch.cat([centres, torch.zeros(len(centres), 1), torch.ones(len(centres), 1)], -1).double()
    prev_xy = (torch.linalg.inv(motion) @ homog.T).T[:, :2]  # (H*W, 2)
    cells = grid.metres_to_cells(prev_xy)
    inner = ((cells >= 0.5) & (cells <= torch.tensor([40 - 0.5, 50 - 0.5]).double())).all(-1)
    assert inner.sum() > 1000 and valid[0, inner].all()
    torch.testing.assert_close(aligned[0, inner], prev_xy[inner], atol=1e-9, rtol=0)
    outside = ~((cells >= 0) & (cells < torch.tensor([40.0, 50.0]).double())).all(-1)
    assert outside.any() and not valid[0, outside].any()
    assert torch.equal(aligned[0, outside], torch.zeros_like(aligned[0, outside]))


def test_a_static_world_point_keeps_its_feature_while_the_ego_drives_past_it():
    """Poses as the info files give them (lidar2ego with nuScenes' ~90 degree LIDAR_TOP yaw,
    ego2global per frame): a feature put at a world point's cell in frame 0 is, after aligning
    frame by frame, at that point's cell in every later frame."""
    grid = BEVGrid(64, 64, SYMMETRIC)
    dx = grid.cell_size[0]
    lidar2ego = _se3(-math.pi / 2, (0.94, 0.0, 1.84))
    # the ego drives along global +y by 3 cells per frame, heading +y (yaw 90 deg), at (300, 800),
    # past the point (it starts 10.5 cells ahead and ends 1.5 behind)
    poses = [_se3(math.pi / 2, (300.0, 800.0 + 3 * dx * t, 0.0)) for t in range(5)]
    l2g = [lidar2global(lidar2ego, p) for p in poses]
    # a world point at a cell centre of frame 0, ahead of the ego: LIDAR_TOP's y is the ego's
    # forward axis (its x points right), lidar (x, y) = (0.5 dx, 10.5 dx)
    point0 = torch.tensor([0.5 * dx, 10.5 * dx, 0.0, 1.0], dtype=torch.float64)
    world = l2g[0] @ point0
    bev = torch.zeros(1, grid.num_cells, 1, dtype=torch.float64)
    bev[0, grid.cell_index(point0[:2]), 0] = 1.0
    for t in range(1, 5):
        motion = lidar_motion(l2g[t - 1], l2g[t])  # (4, 4)
        bev, _ = grid.align_history(bev, motion[None])
        here = torch.linalg.inv(l2g[t]) @ world  # the point in frame t's LIDAR_TOP
        torch.testing.assert_close(
            here[:2], point0[:2] - torch.tensor([0.0, 3 * dx * t], dtype=torch.float64), atol=1e-9, rtol=0
        )
        assert bev[0, grid.cell_index(here[:2]), 0] == pytest.approx(1.0, abs=1e-9)
        assert bev.sum() == pytest.approx(1.0, abs=1e-9)


def test_lidar_motion_maps_a_world_points_previous_coordinates_to_its_current_ones():
    lidar2ego = _se3(-1.55, (0.9, 0.1, 1.8))
    prev, cur = (
        lidar2global(lidar2ego, _se3(0.4, (10.0, 5.0, 0.2))),
        lidar2global(lidar2ego, _se3(0.5, (12.0, 6.5, 0.3))),
    )
    world = torch.tensor([20.0, -3.0, 1.0, 1.0], dtype=torch.float64)
    p_prev, p_cur = torch.linalg.inv(prev) @ world, torch.linalg.inv(cur) @ world
    torch.testing.assert_close(lidar_motion(prev, cur) @ p_prev, p_cur, atol=1e-9, rtol=0)


def test_meta_matrix_reads_a_pose_in_float64_whatever_the_dataset_packed():
    # a global pose a kilometre from the origin, packed as float64, as a float32 list or as a tensor
    pose = _se3(0.3, (1234.567891, -987.654321, 0.5))
    for packed in (pose.numpy(), pose.numpy().astype(np.float32).tolist(), pose):
        read = meta_matrix(dict(lidar2global=packed))
        assert read.dtype == torch.float64 and read.shape == (4, 4)
    torch.testing.assert_close(meta_matrix(dict(lidar2global=pose.numpy())), pose, atol=0, rtol=0)
    cams = meta_matrix(dict(lidar2img=np.tile(np.eye(4), (6, 1, 1))), "lidar2img")
    assert cams.shape == (6, 4, 4) and torch.equal(cams[5], torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="the metainfo needs 'lidar2global'.*got keys \\['timestamp'\\]"):
        meta_matrix(dict(timestamp=0.0))
    with pytest.raises(ValueError, match="'lidar2img' must be \\(\\.\\.\\., 4, 4\\), got \\(6, 3, 4\\)"):
        meta_matrix(dict(lidar2img=np.zeros((6, 3, 4))), "lidar2img")


def test_alignment_rejects_bad_shapes():
    grid = BEVGrid(10, 10, SYMMETRIC)
    with pytest.raises(ValueError, match="prev_bev must be"):
        grid.align_history(torch.zeros(1, 99, 4), torch.eye(4)[None])
    with pytest.raises(ValueError, match="cur_from_prev must be"):
        grid.align_history(torch.zeros(2, 100, 4), torch.eye(4)[None])
