"""Deformable attention: reference points, the offset bound, sampling, and the relative position
bias lookup, each as a known answer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from projects.DAT.dat.deformable_attention import DeformableAttention, reference_points

C, HEADS, GROUPS = 12, 6, 3


def _attn(fmap=(14, 14), **kw) -> DeformableAttention:
    torch.manual_seed(0)
    return DeformableAttention(C, HEADS, GROUPS, fmap, offset_kernel=5, **kw).double().eval()


def _zero_offsets(attn: DeformableAttention) -> DeformableAttention:
    with torch.no_grad():
        attn.conv_offset[3].weight.zero_()
    return attn


def test_reference_points_are_cell_centres():
    ref = reference_points(2, 4, torch.float64, torch.device("cpu"))  # (2, 4, 2) as (y, x)
    assert ref[..., 0].tolist() == [[-0.5] * 4, [0.5] * 4]
    assert ref[0, :, 1].tolist() == [-0.75, -0.25, 0.25, 0.75]


@pytest.mark.parametrize("hw", [(14, 14), (6, 10)])
def test_zero_offsets_sample_the_grid_exactly(hw):
    attn = _zero_offsets(_attn())
    x = torch.randn(2, C, *hw, dtype=torch.float64)
    loc, ref = attn.sampling_locations(attn.proj_q(x))
    assert loc.shape == (2 * GROUPS, *hw, 2) and torch.equal(loc, ref)
    assert torch.allclose(attn.sample(x, loc), x.flatten(2), atol=1e-12)  # (B, C, H*W)


def test_offsets_stay_within_range_factor_over_key_size():
    attn = _attn(offset_range_factor=2.0)
    with torch.no_grad():
        attn.conv_offset[3].weight.mul_(1e3)  # saturate tanh
    x = torch.randn(2, C, 8, 16, dtype=torch.float64)
    loc, ref = attn.sampling_locations(attn.proj_q(x))
    off = (loc - ref).abs()  # (B*G, Hk, Wk, 2) as (x, y)
    bound_x, bound_y = 2.0 / 16, 2.0 / 8
    assert off[..., 0].max() <= bound_x and off[..., 1].max() <= bound_y
    assert off[..., 0].max() > 0.99 * bound_x and off[..., 1].max() > 0.99 * bound_y  # the bound is reached


def test_stride_two_zero_offsets_sample_the_centres_of_2x2_cells():
    attn = _zero_offsets(_attn(stride=2))
    x = torch.randn(1, C, 8, 12, dtype=torch.float64)
    loc, _ = attn.sampling_locations(attn.proj_q(x))
    assert loc.shape == (GROUPS, 4, 6, 2)
    assert torch.allclose(attn.sample(x, loc), F.avg_pool2d(x, 2).flatten(2), atol=1e-12)


def _bias_reader(attn: DeformableAttention, dy: int, dx: int) -> DeformableAttention:
    """q = 0, so the logits are the bias alone; zero offsets; v and out identity; the table 50 at
    displacement (dy, dx) table cells from its centre and 0 elsewhere."""
    _zero_offsets(attn)
    fh, fw = (s // 2 for s in attn.rpe_table.shape[-2:])  # centre = (Hq - 1, Wq - 1)
    with torch.no_grad():
        for conv in (attn.proj_q, attn.proj_v, attn.proj_out):
            conv.weight.zero_()
            conv.bias.zero_()
        attn.proj_v.weight.copy_(torch.eye(C, dtype=torch.float64)[..., None, None])
        attn.proj_out.weight.copy_(torch.eye(C, dtype=torch.float64)[..., None, None])
        attn.rpe_table.zero_()
        attn.rpe_table[:, fh + dy, fw + dx] = 50.0
    return attn


def test_position_bias_reads_the_table_at_the_query_key_displacement():
    attn = _bias_reader(_attn(fmap=(14, 14)), dy=1, dx=-2)
    assert attn.rpe_table.shape == (HEADS, 27, 27)
    x = torch.randn(1, C, 14, 14, dtype=torch.float64)
    out = attn(x)
    # query - key = (1, -2): every query reads the pixel one row up and two columns right
    assert torch.allclose(out[..., 1:, :-2], x[..., :-1, 2:], atol=1e-12)


def test_position_bias_table_stretches_over_other_map_sizes():
    attn = _bias_reader(_attn(fmap=(14, 14)), dy=1, dx=0)
    x = torch.randn(1, C, 27, 8, dtype=torch.float64)  # (27 - 1) / (14 - 1) = 2 pixels per table cell
    out = attn(x)
    assert torch.allclose(out[..., 2:, :], x[..., :-2, :], atol=1e-12)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="num_groups"):
        DeformableAttention(12, 6, 4, (14, 14), 5)
    with pytest.raises(ValueError, match="offset_kernel"):
        DeformableAttention(12, 6, 3, (14, 14), 4)
