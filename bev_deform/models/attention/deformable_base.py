"""The layers and initialisation every deformable attention here shares (Deformable DETR's)."""

from __future__ import annotations

import math

import torch
from mmengine.model import BaseModule, constant_init, xavier_init
from torch import Tensor, nn


def init_sampling_offsets(linear: nn.Linear, num_heads: int, num_levels: int, num_points: int) -> None:
    """Deformable DETR's offset initialisation, in place.

    Zero weights, and a bias that puts head ``h``'s point ``p`` at ``(p + 1) * d_h`` feature pixels
    from the reference point, where ``d_h`` is the direction ``2 pi h / num_heads`` scaled so that its
    larger component is 1 (a ring of directions around the point, the same for every level).

    Args:
        linear: the offset projection, with ``num_heads * num_levels * num_points * 2`` outputs.
    """
    expected = num_heads * num_levels * num_points * 2
    if linear.out_features != expected:
        raise ValueError(
            f"linear must have num_heads * num_levels * num_points * 2 = {expected} outputs, "
            f"got {linear.out_features}"
        )
    constant_init(linear, 0.0)
    thetas = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)  # (M,)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)  # (M, 2)
    grid = grid / grid.abs().max(-1, keepdim=True)[0]
    # (M, 2) -> (M, 1, 1, 2) -> (M, L, P, 2)
    grid = grid.view(num_heads, 1, 1, 2).repeat(1, num_levels, num_points, 1)
    grid = grid * torch.arange(1, num_points + 1, dtype=torch.float32).view(
        1, 1, -1, 1
    )  # (P,) -> (1, 1, P, 1)
    with torch.no_grad():
        linear.bias.copy_(grid.flatten())  # (M * L * P * 2,)


def check_divisible(embed_dims: int, num_heads: int) -> None:
    if embed_dims % num_heads != 0:
        raise ValueError(
            f"embed_dims must be divisible by num_heads={num_heads}, got embed_dims={embed_dims}"
        )


def level_normalizer(spatial_shapes: Tensor, like: Tensor) -> Tensor:
    """(L, 2) level shapes as (H, W) -> (L, 2) as (W, H) in ``like``'s dtype, to turn offsets in
    feature pixels into offsets in normalised [0, 1] coordinates of each level."""
    return spatial_shapes.flip(-1).to(like)


class DeformableAttentionBase(BaseModule):
    """The layers every deformable attention here shares, with Deformable DETR's initialisation:
    ``sampling_offsets`` (rotational bias), ``attention_weights`` (zero: uniform softmax),
    ``value_proj`` and ``output_proj`` (xavier), and ``dropout``.

    Args:
        embed_dims: channels C of queries and values; divisible by ``num_heads``.
        num_heads: attention heads M.
        num_levels: feature levels L.
        num_points: sampling points P per head and level.
        dropout: dropout on the output before the residual.
        init_cfg: mmengine init config, replacing Deformable DETR's initialisation when given.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        dropout: float = 0.1,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        check_divisible(embed_dims, num_heads)
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self._reset_parameters()

    def init_weights(self) -> None:
        """Deformable DETR's initialisation, or ``init_cfg`` (e.g. Pretrained) when one is given."""
        if self.init_cfg is not None:
            super().init_weights()
        else:
            self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Rotational offset bias, zero attention weights (uniform softmax), xavier projections."""
        init_sampling_offsets(self.sampling_offsets, self.num_heads, self.num_levels, self.num_points)
        constant_init(self.attention_weights, val=0.0, bias=0.0)
        if self.value_proj is not None:  # None where a subclass reads the features as they are
            xavier_init(self.value_proj, distribution="uniform", bias=0.0)
        xavier_init(self.output_proj, distribution="uniform", bias=0.0)


PROJECT_VALUES = ("cells", "samples", "auto")


def resolve_project_values(project_values: str, device: torch.device) -> str:
    """``'cells'`` or ``'samples'`` for a ``project_values`` setting; ``'auto'`` is
    ``'samples'`` on CPU and ``'cells'`` elsewhere (mmcv's CUDA op is fastest with power-of-two
    channels per head, and the value projection over every cell is cheap on a GPU)."""
    if project_values not in PROJECT_VALUES:
        raise ValueError(f"project_values must be one of {PROJECT_VALUES}, got {project_values!r}")
    if project_values == "auto":
        return "samples" if device.type == "cpu" else "cells"
    return project_values


def bilinear_mass(locations: Tensor, weights: Tensor, spatial_shapes: Tensor, valid_hw: Tensor) -> Tensor:
    """The attention-weighted bilinear mass that falls on real cells: what MSDA returns for a value
    of ones in the real cells and zeros in the padding, computed from the locations alone.

    The op reads a location (x, y) of level l at pixel (x W_l - 0.5, y H_l - 0.5) from its four
    neighbouring cells with bilinear weights, and reads zero from any cell outside the level. The
    weight on real cells is separable: along x, ``(1 - f) [0 <= x0 < W_v] + f [0 <= x0 + 1 < W_v]``
    for ``x0`` the floor and ``f`` the fraction, times the same along y; its gradient is the op's.

    Args:
        locations: (R, K, M, L, P, 2) normalised (x, y) sampling locations.
        weights: (R, K, M, L, P) attention weights.
        spatial_shapes: (L, 2) (H_l, W_l) of the levels.
        valid_hw: (R, L, 2) (H_v, W_v) real rows and columns of each row's levels
            (:meth:`bev_deform.geometry.FeatureLevels.valid_shapes`).

    Returns:
        (R, K, M, 1): per (row, query, head), the sum over levels and points of the weight times the
        bilinear mass on real cells; it scales the value projection's bias (:func:`project_samples`).
    """
    size = spatial_shapes.flip(-1).to(locations)  # (L, 2) (W_l, H_l)
    valid = valid_hw.flip(-1).to(locations)[:, None, None, :, None, :]  # (R, L, 2) -> (R, 1, 1, L, 1, 2)
    pixels = locations * size[:, None, :] - 0.5  # (R, K, M, L, P, 2) * (L, 1, 2)
    low = pixels.floor()
    frac = pixels - low

    def real(index: Tensor) -> Tensor:
        return ((index >= 0) & (index < valid)).to(pixels.dtype)

    per_axis = (1.0 - frac) * real(low) + frac * real(low + 1.0)  # (R, K, M, L, P, 2)
    mass = per_axis[..., 0] * per_axis[..., 1]  # (R, K, M, L, P)
    return (weights * mass).sum((-2, -1))[..., None]  # (R, K, M, L, P) -> (R, K, M, 1)


def project_samples(sampled: Tensor, mass: Tensor, proj: nn.Linear, num_heads: int) -> Tensor:
    """Apply a value projection to samples of unprojected values, head by head.

    MSDA is linear in the value, so sampling ``proj(x)`` with head ``h``'s weights equals
    projecting, with head ``h``'s rows of ``proj``, the same weighted sample of ``x``, plus the bias
    times the bilinear mass that fell on real cells. It replaces a C x C linear over every cell of
    every camera by one per (query, camera, head) sample.

    Args:
        sampled: (R, K, M, C) per-head samples of the unprojected values (one head of C channels,
            padding read as zero).
        mass: (R, K, M, 1) their :func:`bilinear_mass`.
        proj: the C -> C value projection.
        num_heads: M.

    Returns:
        (R, K, C), the heads' projected samples concatenated, as sampling ``proj(x)`` gives.
    """
    c = proj.in_features
    d = proj.out_features // num_heads
    weight = proj.weight.view(num_heads, d, c)  # (C, C) -> (M, D, C): rows of head h
    out = torch.einsum("rkmc,mdc->rkmd", sampled, weight)  # (R, K, M, D)
    if proj.bias is not None:
        out = out + mass * proj.bias.view(num_heads, d)  # (R, K, M, 1) * (M, D)
    return out.flatten(2)  # (R, K, M, D) -> (R, K, C)
