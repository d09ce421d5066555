"""Window and shifted-window attention: which keys each query sees (its window, its shifted
region, never padding) and the relative position bias, read back through known answers."""

from __future__ import annotations

import torch

from projects.DAT.dat.layers import (
    MASK_VALUE,
    ShiftedWindowAttention,
    WindowAttention,
    biased_attention,
    relative_position_index,
    window_attention_mask,
)

C = 4


def _uniform_reader(attn: WindowAttention) -> WindowAttention:
    """q = 0 (every key gets the same logit but for the bias), v = x, out = identity, bias 0:
    each query's output is the mean of the keys it may see."""
    with torch.no_grad():
        attn.proj_qkv.weight.zero_()
        attn.proj_qkv.bias.zero_()
        attn.proj_qkv.weight[2 * C :].copy_(torch.eye(C))  # the v rows
        attn.proj_out.weight.copy_(torch.eye(C))
        attn.proj_out.bias.zero_()
        attn.relative_position_bias_table.zero_()
    return attn.double().eval()


def test_window_attention_averages_its_window_and_masks_the_padding():
    attn = _uniform_reader(WindowAttention(C, num_heads=2, window_size=7))
    x = torch.randn(1, C, 7, 10, dtype=torch.float64)  # width padded to 14: a full and a 7x3 window
    out = attn(x)
    assert out.shape == x.shape
    left, right = x[..., :7].mean((2, 3)), x[..., 7:].mean((2, 3))  # (1, C)
    assert torch.allclose(out[..., :7], left[..., None, None].expand(-1, -1, 7, 7))
    # the 7x3 window's 21 real tokens, not 49 with the padding's zeros
    assert torch.allclose(out[..., 7:], right[..., None, None].expand(-1, -1, 7, 3))


def test_shifted_windows_attend_within_their_region_and_never_to_padding():
    attn = _uniform_reader(ShiftedWindowAttention(C, num_heads=2, window_size=7, fmap_size=(14, 14)))
    assert attn.shift == 4 and attn.attn_mask.shape == (4, 49, 49)
    x = torch.randn(1, C, 14, 14, dtype=torch.float64)
    out = attn(x)
    # rolled by -4: the window holding rows/cols 11..13 and 0..3 is split into its regions
    assert torch.allclose(out[..., 0, 0], x[..., :4, :4].mean((2, 3)))
    assert torch.allclose(out[..., 13, 13], x[..., 11:, 11:].mean((2, 3)))
    assert torch.allclose(out[..., 5, 5], x[..., 4:11, 4:11].mean((2, 3)))  # an unsplit window
    # 12x12 (not the construction size: mask computed, padded to 14): row/col 11 is real but
    # shares its region only with padding, so the corner token reads itself
    x12 = x[..., :12, :12].contiguous()
    out12 = attn(x12)
    assert torch.allclose(out12[..., 11, 11], x12[..., 11, 11])
    assert torch.allclose(out12[..., 0, 0], x12[..., :4, :4].mean((2, 3)))
    assert torch.allclose(out12[..., 5, 5], x12[..., 4:11, 4:11].mean((2, 3)))


def test_relative_position_bias_reads_the_table_at_the_query_key_displacement():
    ws = 7
    attn = _uniform_reader(WindowAttention(C, num_heads=1, window_size=ws))
    # table row for displacement query - key = (dy, dx) = (0, +1): key = the left neighbour
    with torch.no_grad():
        attn.relative_position_bias_table[(ws - 1) * (2 * ws - 1) + ws] = 50.0
    x = torch.randn(1, C, 7, 7, dtype=torch.float64)
    out = attn(x)
    assert torch.allclose(out[..., :, 1:], x[..., :, :-1], atol=1e-12)
    idx = relative_position_index(3)
    assert idx.dtype == torch.int64 and idx.shape == (9, 9) and idx[4, 4] == 12 and idx[0, 8] == 0


def test_attention_mask_is_none_only_without_shift_and_padding():
    assert window_attention_mask(14, 14, 7, 0) is None
    pad = window_attention_mask(14, 10, 7, 0)  # keys in columns 10..13 are blocked
    assert pad.shape == (4, 49, 49) and set(pad.unique().tolist()) == {MASK_VALUE, 0.0}
    assert (pad[1].view(49, 7, 7)[:, :, 3:] == MASK_VALUE).all() and (
        pad[1].view(49, 7, 7)[:, :, :3] == 0
    ).all()


def test_biased_attention_is_torchs_scaled_dot_product_attention_with_an_additive_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 5, 8, dtype=torch.float64).unbind(0)  # (B, heads, N, d)
    bias = torch.randn(4, 5, 5, dtype=torch.float64)  # per head, broadcast over the batch
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert torch.allclose(biased_attention(q, k, v, bias), ref, atol=1e-12)  # CUDA runs the latter
