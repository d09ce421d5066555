"""2D MSDeformAttn: Deformable DETR's initialisation and semantics (mmcv's module as the oracle)."""

from __future__ import annotations

import math

import pytest
import torch
from mmcv.ops import MultiScaleDeformableAttention

from bev_deform.models.attention import MSDeformAttn
from bev_deform.models.attention.deformable_base import init_sampling_offsets
from bev_deform.registry import MODELS

SHAPES = torch.tensor([[16, 16], [8, 12]])
START = torch.tensor([0, 256])
S = 256 + 96


def _identity_projections(attn: MSDeformAttn) -> None:
    with torch.no_grad():
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(attn.embed_dims))
            lin.bias.zero_()


def test_offset_bias_is_a_ring_of_head_directions_scaled_by_point_index():
    attn = MODELS.build(dict(type="MSDeformAttn", embed_dims=32, num_heads=8, num_levels=3, num_points=4))
    assert attn.sampling_offsets.weight.abs().max() == 0
    bias = attn.sampling_offsets.bias.view(8, 3, 4, 2)  # (M, L, P, 2)
    for h in range(8):
        theta = 2 * math.pi * h / 8
        d = torch.tensor([math.cos(theta), math.sin(theta)])
        d = d / d.abs().max()
        for p in range(4):
            for lvl in range(3):
                assert torch.allclose(bias[h, lvl, p], d * (p + 1), atol=1e-6), (h, lvl, p)
    assert bias[0, 0, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0]  # head 0 looks along +x
    assert torch.allclose(bias[1, 0, 1], torch.tensor([2.0, 2.0]))  # 45 degrees: a diagonal
    assert bias.view(8, -1, 2).sum(0).abs().max() < 1e-5  # the ring is centred on the reference


def test_zero_attention_weights_average_levels_and_points_uniformly():
    torch.manual_seed(0)
    attn = MSDeformAttn(embed_dims=8, num_heads=2, num_levels=2, num_points=3).double().eval()
    assert attn.attention_weights.weight.abs().max() == 0 and attn.attention_weights.bias.abs().max() == 0
    _identity_projections(attn)
    # level 0 constant 1.0, level 1 constant 4.0: every in-image sample returns its level's constant
    value = torch.cat([torch.full((256, 8), 1.0), torch.full((96, 8), 4.0)]).double()[None]
    query = torch.randn(1, 5, 8, dtype=torch.float64)  # any query: the weights do not depend on it yet
    ref = torch.full((1, 5, 2), 0.5, dtype=torch.float64)  # centre; offsets <= 3 pixels stay inside
    out = attn(query, value, ref, SHAPES, START, identity=torch.zeros_like(query))
    assert torch.allclose(out, torch.full_like(out, (1.0 + 4.0) / 2))


def test_zero_offsets_sample_exactly_at_the_reference_point():
    attn = MSDeformAttn(embed_dims=4, num_heads=2, num_levels=2, num_points=2).double().eval()
    _identity_projections(attn)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
    levels = []
    for h, w in SHAPES.tolist():  # channel 0 = x of the pixel centre, channel 1 = y, per head
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        levels.append(torch.stack([xs.flatten(), ys.flatten()] * 2, dim=1))  # (H*W, 4)
    value = torch.cat(levels).double()[None]
    ref = torch.tensor([[[0.3, 0.6], [0.71, 0.25]]], dtype=torch.float64)  # (1, 2, 2)
    out = attn(torch.zeros(1, 2, 4, dtype=torch.float64), value, ref, SHAPES, START)
    assert torch.allclose(out, ref.repeat(1, 1, 2), atol=1e-12)


def test_matches_mmcv_multiscale_deformable_attention_with_the_same_weights():
    torch.manual_seed(0)
    ours = MSDeformAttn(embed_dims=16, num_heads=4, num_levels=2, num_points=3).double().eval()
    with torch.no_grad():  # move away from the init so that offsets and weights depend on the query
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref_impl = MultiScaleDeformableAttention(
        embed_dims=16, num_heads=4, num_levels=2, num_points=3, batch_first=True
    ).double()
    ref_impl.load_state_dict(ours.state_dict())
    ref_impl.eval()
    query, pos = torch.randn(2, 7, 16).double(), torch.randn(2, 7, 16).double()
    value = torch.randn(2, S, 16).double()
    ref = torch.rand(2, 7, 2, 2).double()
    mask = torch.zeros(2, S, dtype=torch.bool)
    mask[1, -20:] = True
    out = ours(query, value, ref, SHAPES, START, query_pos=pos, key_padding_mask=mask)
    expected = ref_impl(
        query,
        value=value,
        query_pos=pos,
        key_padding_mask=mask,
        reference_points=ref,
        spatial_shapes=SHAPES,
        level_start_index=START,
    )
    assert torch.allclose(out, expected, atol=1e-10)


def test_gradients_reach_every_parameter_and_bad_shapes_raise():
    torch.manual_seed(0)
    attn = MSDeformAttn(embed_dims=8, num_heads=2, num_levels=2, num_points=2)
    query = torch.randn(1, 3, 8, requires_grad=True)
    out = attn(query, torch.randn(1, S, 8), torch.rand(1, 3, 2), SHAPES, START)
    out.square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match=r"value must be \(B=1, S, C=8\)"):
        attn(query, torch.randn(2, S, 8), torch.rand(1, 3, 2), SHAPES, START)
    with pytest.raises(ValueError, match="reference_points must be"):
        attn(query, torch.randn(1, S, 8), torch.rand(1, 3, 3, 2), SHAPES, START)
    with pytest.raises(ValueError, match="linear must have"):
        init_sampling_offsets(torch.nn.Linear(4, 10), num_heads=2, num_levels=2, num_points=2)
