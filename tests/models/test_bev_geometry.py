"""Known answers for the BEV grid (``bev_deform.geometry.BEVGrid``): cell <-> metres, the flat
order, pillar heights, and the BEV as an MSDA level."""

from __future__ import annotations

import pytest
import torch

from bev_deform.geometry import BEVGrid, normalize_points
from bev_deform.ops import multi_scale_deformable_attn_reference

PC_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)


def test_cells_are_row_major_with_rows_along_y_and_known_centres():
    grid = BEVGrid(50, 40, PC_RANGE)
    dx, dy = grid.cell_size
    assert (dx, dy) == pytest.approx((102.4 / 40, 102.4 / 50))
    centres = grid.cell_centres(dtype=torch.float64)  # (H*W, 2)
    assert centres.shape == (2000, 2)
    i, j = 7, 31
    expected = torch.tensor([-51.2 + (j + 0.5) * dx, -51.2 + (i + 0.5) * dy], dtype=torch.float64)
    assert torch.allclose(centres[i * 40 + j], expected, atol=1e-12)
    assert grid.cell_index(expected).item() == i * 40 + j
    assert grid.cell_index(torch.tensor([[60.0, 0.0], [0.0, -51.3]])).tolist() == [-1, -1]  # outside


def test_normalised_bev_coordinates_are_the_pc_range_normalised_xy():
    grid = BEVGrid(30, 30, PC_RANGE)
    pts = torch.tensor([[3.0, -17.5, 0.4], [-50.0, 50.0, -4.0]], dtype=torch.float64)
    uv = grid.metres_to_locations(pts[:, :2])
    assert torch.allclose(uv, normalize_points(pts, PC_RANGE)[:, :2], atol=1e-12)
    assert torch.allclose(grid.locations_to_metres(uv), pts[:, :2], atol=1e-12)
    cells = grid.metres_to_cells(pts[:, :2])
    assert torch.allclose(grid.cells_to_metres(cells), pts[:, :2], atol=1e-12)
    # cell j's centre is location (j + 0.5) / W, mmcv's pixel j
    assert torch.allclose(
        grid.cell_locations(dtype=torch.float64)[0], torch.tensor([0.5 / 30, 0.5 / 30]).double()
    )


@pytest.mark.parametrize("size", [50, 150, 200])
def test_the_ego_sits_at_the_grid_centre_for_every_grid_size(size):
    """The history BEV's rotation centre must follow the grid: BEVFormer hard-codes cell (100, 100),
    right only for its 200x200 grid (BEVFormer#96). Here it is the ego's cell coordinates."""
    grid = BEVGrid(size, size, PC_RANGE)
    assert grid.metres_to_cells(torch.zeros(2, dtype=torch.float64)).tolist() == [size / 2, size / 2]


def test_pillar_heights_are_bevformers():
    """BEVFormer: linspace(0.5, Z - 0.5, D) / Z over the Z = 8 m of pc_range's z, from z0 = -5."""
    grid = BEVGrid(2, 2, PC_RANGE)
    heights = grid.pillar_heights(4, dtype=torch.float64)
    assert heights.tolist() == pytest.approx([-4.5, -5.0 + 0.5 + 7.0 / 3, -5.0 + 0.5 + 14.0 / 3, 2.5])
    assert grid.pillar_heights(1).tolist() == [-1.0]
    pts = grid.pillar_points(4, dtype=torch.float64)  # (H*W, D, 3)
    assert pts.shape == (4, 4, 3)
    assert torch.allclose(pts[3, :, :2], grid.cell_centres(dtype=torch.float64)[3].expand(4, 2))
    assert torch.allclose(pts[3, :, 2], heights)


def test_sampling_the_bev_level_at_cell_locations_reads_each_cell():
    grid = BEVGrid(6, 9, PC_RANGE)
    levels = grid.levels()
    assert levels.shapes == ((6, 9),) and levels.strides == (1,)
    value = torch.arange(54, dtype=torch.float64).view(1, 54, 1, 1)  # (B, S, M, D): each cell its index
    loc = grid.cell_locations(dtype=torch.float64).view(1, 54, 1, 1, 1, 2)  # (B, Q, M, L, P, 2)
    out = multi_scale_deformable_attn_reference(
        value, levels.spatial_shapes, levels.level_start_index, loc, torch.ones(1, 54, 1, 1, 1).double()
    )
    assert torch.allclose(out.flatten(), torch.arange(54, dtype=torch.float64))


def test_bad_grids_raise_value_errors():
    with pytest.raises(ValueError, match="bev_h and bev_w must be >= 1"):
        BEVGrid(0, 5, PC_RANGE)
    with pytest.raises(ValueError, match="pc_range must be"):
        BEVGrid(5, 5, (0, 0, 0, 1, 1))
    with pytest.raises(ValueError, match="pc_range must be"):
        BEVGrid(5, 5, (1, 0, 0, 0, 1, 1))
    with pytest.raises(ValueError, match="last dimension of 2"):
        BEVGrid(5, 5, PC_RANGE).metres_to_locations(torch.zeros(3))
