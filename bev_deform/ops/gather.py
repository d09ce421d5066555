"""Pure-PyTorch fast path of multi-scale deformable attention: one gather for all samples.

The CPU fallback when the compiled kernel (``bev_deform.ops._msda_cpu``) is not built. Every
bilinear corner of every sample becomes one row index into value viewed as (B*S*M, D) plus one
weight (bilinear weight x attention weight, 0 outside the level), and a single
``embedding_bag(mode='sum', per_sample_weights=...)`` sums the 4*L*P rows of each (b, q, m).
Autograd differentiates it (the row indices are constant, the weights carry the location
gradient), so no hand-written backward is needed. Same semantics as the reference.
"""

import torch
import torch.nn.functional as F


def multi_scale_deformable_attn_gather(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention as one ``embedding_bag`` gather.

    Expects inputs already validated by ``checks.check_msda_inputs`` with value,
    sampling_locations and attention_weights of one floating dtype (the dispatcher's job).

    Args:
        value: (B, S, M, D).
        spatial_shapes: (L, 2) integer (H_l, W_l).
        level_start_index: (L,) integer.
        sampling_locations: (B, Q, M, L, P, 2) (x, y) in [0, 1] per level.
        attention_weights: (B, Q, M, L, P).

    Returns:
        (B, Q, M * D) in value's dtype.
    """
    B, S, M, D = value.shape
    Q, L, P = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    device = value.device
    shapes = spatial_shapes.to(device=device, dtype=torch.long)
    # (L, 1) broadcasts over the trailing (L, P) of (B, Q, M, L, P)
    height, width = shapes[:, 0].view(L, 1), shapes[:, 1].view(L, 1)
    x = sampling_locations[..., 0] * width - 0.5  # (B, Q, M, L, P) pixel column
    y = sampling_locations[..., 1] * height - 0.5  # (B, Q, M, L, P) pixel row
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0  # differentiable through x, y; floor has zero gradient
    # corners top-left, top-right, bottom-left, bottom-right: (B, Q, M, L, P) -> (B, Q, M, L, P, 4)
    col = x0.unsqueeze(-1) + torch.tensor([0, 1, 0, 1], device=device)
    row = y0.unsqueeze(-1) + torch.tensor([0, 0, 1, 1], device=device)
    corner_weight = torch.stack([1 - fx, fx, 1 - fx, fx], -1) * torch.stack([1 - fy, 1 - fy, fy, fy], -1)
    # (L, 1, 1) broadcasts over the trailing (L, P, 4); NaN locations compare False, so they are outside
    inside = (col >= 0) & (col < width.unsqueeze(-1)) & (row >= 0) & (row < height.unsqueeze(-1))
    weight = torch.where(inside, corner_weight * attention_weights.unsqueeze(-1), 0)
    row, col = torch.where(inside, row, 0).long(), torch.where(inside, col, 0).long()
    pixel = row * width.unsqueeze(-1) + col  # (B, Q, M, L, P, 4) pixel inside its level
    pixel = pixel + level_start_index.to(device=device, dtype=torch.long).view(L, 1, 1)
    batch = torch.arange(B, device=device).view(B, 1, 1, 1, 1, 1)
    head = torch.arange(M, device=device).view(1, 1, M, 1, 1, 1)
    index = (batch * S + pixel) * M + head  # row of value viewed as (B*S*M, D)
    output = F.embedding_bag(
        index.view(B * Q * M, L * P * 4),  # (B, Q, M, L, P, 4) -> (B*Q*M, L*P*4): one bag per (b, q, m)
        value.reshape(B * S * M, D),  # (B, S, M, D) -> (B*S*M, D)
        per_sample_weights=weight.reshape(B * Q * M, L * P * 4),
        mode="sum",
    )
    return output.view(B, Q, M * D)  # (B*Q*M, D) -> (B, Q, M*D)
