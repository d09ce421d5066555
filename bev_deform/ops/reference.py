"""Pure-PyTorch reference of multi-scale deformable attention: the tests' oracle.

Imports nothing compiled beyond torch itself, runs on any device, and is written for clarity
rather than speed: one ``grid_sample`` per level, which defines the semantics
(location in [0, 1] -> pixel loc * size - 0.5, bilinear, zero outside the level).
"""

import torch
import torch.nn.functional as F

from .checks import check_msda_inputs, compute_dtype


def multi_scale_deformable_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention, one ``grid_sample`` per level.

    Args:
        value: (B, S, M, D) features of L levels flattened row-major per level, M heads of D channels.
        spatial_shapes: (L, 2) integer (H_l, W_l) per level, sum of H_l * W_l = S.
        level_start_index: (L,) integer, first row of each level in S.
        sampling_locations: (B, Q, M, L, P, 2) (x, y) per sample, [0, 1] covers the level.
        attention_weights: (B, Q, M, L, P) weight per sample.

    Returns:
        (B, Q, M * D) in value's dtype, computed in float32 or wider (``checks.compute_dtype``).

    Raises:
        ValueError: on bad input, see ``checks.check_msda_inputs``.
    """
    levels = check_msda_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    dtype = compute_dtype(value, sampling_locations, attention_weights)
    B, _, M, D = value.shape
    Q, P = sampling_locations.shape[1], sampling_locations.shape[4]
    grids = 2 * sampling_locations.to(dtype) - 1  # [0, 1] -> grid_sample's [-1, 1]
    weights = attention_weights.to(dtype)
    output = value.new_zeros((B * M, D, Q), dtype=dtype)
    for level, (height, width, start) in enumerate(levels):
        # (B, H*W, M, D) -> (B, M, D, H*W) -> (B*M, D, H, W)
        value_l = value[:, start : start + height * width].to(dtype).permute(0, 2, 3, 1)
        value_l = value_l.reshape(B * M, D, height, width)
        # (B, Q, M, P, 2) -> (B, M, Q, P, 2) -> (B*M, Q, P, 2)
        grid_l = grids[:, :, :, level].transpose(1, 2).reshape(B * M, Q, P, 2)
        # (B*M, D, Q, P)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        # (B, Q, M, P) -> (B, M, Q, P) -> (B*M, 1, Q, P)
        weights_l = weights[:, :, :, level].transpose(1, 2).reshape(B * M, 1, Q, P)
        output = output + (sampled * weights_l).sum(-1)
    # (B*M, D, Q) -> (B, M*D, Q) -> (B, Q, M*D)
    output = output.view(B, M * D, Q).transpose(1, 2).contiguous()
    return output.to(value.dtype)
