"""Input validation shared by every multi-scale deformable attention (MSDA) entry point.

Shapes (mmcv's): value (B, S, M, D), spatial_shapes (L, 2) holding (H_l, W_l),
level_start_index (L,), sampling_locations (B, Q, M, L, P, 2) holding (x, y),
attention_weights (B, Q, M, L, P); S = sum over levels of H_l * W_l.
"""

from __future__ import annotations

from typing import List, Tuple

import torch

_RANKS = {
    "value": (4, "(B, S, M, D)"),
    "spatial_shapes": (2, "(L, 2)"),
    "level_start_index": (1, "(L,)"),
    "sampling_locations": (6, "(B, Q, M, L, P, 2)"),
    "attention_weights": (5, "(B, Q, M, L, P)"),
}
_FLOATING = ("value", "sampling_locations", "attention_weights")
_INTEGER_DTYPES = (torch.int32, torch.int64)


def check_msda_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    check_levels: bool = True,
    valid_shapes: torch.Tensor | None = None,
) -> List[Tuple[int, int, int]] | None:
    """Validates MSDA inputs (shapes in the module docstring) and returns the levels.

    With ``check_levels`` it also reads ``spatial_shapes`` and ``level_start_index`` back to Python
    (one device sync on CUDA) to check their values; callers that built them from Python ints
    (``bev_deform.geometry.FeatureLevels``) pass False and keep the hot path free of syncs.

    Returns:
        list of (H_l, W_l, start_l) Python ints, one per level; None without ``check_levels``.

    Raises:
        ValueError: naming the offending argument and the expected shape, dtype or device,
            for a non-tensor, a wrong rank, a non-floating value / locations / weights, a
            non-integer spatial_shapes / level_start_index, mixed devices, B / Q / M / L / P that
            disagree between arguments, spatial shapes that do not sum to S, or a
            level_start_index that is not the running sum of H_l * W_l.
    """
    tensors = {
        "value": value,
        "spatial_shapes": spatial_shapes,
        "level_start_index": level_start_index,
        "sampling_locations": sampling_locations,
        "attention_weights": attention_weights,
    }
    _check_types(tensors)
    _check_sizes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if valid_shapes is not None:
        _check_valid_shapes(valid_shapes, value, spatial_shapes)
    if not check_levels:
        return None
    return _check_levels(value.shape[1], spatial_shapes, level_start_index)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype MSDA computes in: the promoted dtype of ``tensors``, at least float32
    (float16 / bfloat16 inputs are computed in float32)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _check_types(tensors: dict) -> None:
    """Type, rank, dtype and device of each argument."""
    for name, tensor in tensors.items():
        rank, spec = _RANKS[name]
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {spec}, got {type(tensor).__name__}")
        if tensor.dim() != rank:
            raise ValueError(f"{name} must have shape {spec} ({rank} dims), got shape {tuple(tensor.shape)}")
        if name in _FLOATING and not tensor.is_floating_point():
            raise ValueError(
                f"{name} of shape {spec} must be a floating tensor (float16, bfloat16, float32 or float64), "
                f"got {tensor.dtype}"
            )
        if name not in _FLOATING and tensor.dtype not in _INTEGER_DTYPES:
            raise ValueError(f"{name} of shape {spec} must be an int64 (or int32) tensor, got {tensor.dtype}")
    device = tensors["value"].device
    for name, tensor in tensors.items():
        if tensor.device != device:
            raise ValueError(
                f"{name} of shape {_RANKS[name][1]} is on {tensor.device} but value is on {device}: "
                "all inputs must share one device"
            )


def _check_sizes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    """B, Q, M, L, P agree between the arguments (their ranks are already checked)."""
    B, _, M, _ = value.shape
    L = spatial_shapes.shape[0]
    Q, P = sampling_locations.shape[1], sampling_locations.shape[4]
    if L < 1 or spatial_shapes.shape[1] != 2:
        raise ValueError(
            f"spatial_shapes must have shape (L, 2) with L >= 1, got {tuple(spatial_shapes.shape)}"
        )
    if tuple(level_start_index.shape) != (L,):
        raise ValueError(
            f"level_start_index must have shape (L,) = ({L},) with L from spatial_shapes, "
            f"got {tuple(level_start_index.shape)}"
        )
    expected = (B, Q, M, L, P, 2)
    if tuple(sampling_locations.shape) != expected:
        raise ValueError(
            f"sampling_locations must have shape (B, Q, M, L, P, 2) = {expected} with B, M from value "
            f"{tuple(value.shape)} and L from spatial_shapes, got {tuple(sampling_locations.shape)}"
        )
    if tuple(attention_weights.shape) != expected[:5]:
        raise ValueError(
            f"attention_weights must have shape (B, Q, M, L, P) = {expected[:5]} to match value and "
            f"sampling_locations, got {tuple(attention_weights.shape)}"
        )


def _check_valid_shapes(valid_shapes, value, spatial_shapes) -> None:
    """valid_shapes is an integer (B, L, 2) tensor on value's device (its values are checked by the
    CPU kernel, without a device sync here)."""
    expected = (value.shape[0], spatial_shapes.shape[0], 2)
    if not isinstance(valid_shapes, torch.Tensor) or valid_shapes.dtype not in _INTEGER_DTYPES:
        raise ValueError(
            f"valid_shapes must be an int64 (or int32) tensor of shape (B, L, 2) = {expected}, "
            f"got {getattr(valid_shapes, 'dtype', type(valid_shapes).__name__)}"
        )
    if tuple(valid_shapes.shape) != expected:
        raise ValueError(
            f"valid_shapes must have shape (B, L, 2) = {expected} with B from value and L from "
            f"spatial_shapes, got {tuple(valid_shapes.shape)}"
        )
    if valid_shapes.device != value.device:
        raise ValueError(f"valid_shapes is on {valid_shapes.device} but value is on {value.device}")


def _check_levels(num_keys: int, spatial_shapes, level_start_index) -> List[Tuple[int, int, int]]:
    """Positive level sizes that sum to S, and level_start_index their running sum."""
    shapes = [tuple(hw) for hw in spatial_shapes.tolist()]
    starts = level_start_index.tolist()
    if any(h <= 0 or w <= 0 for h, w in shapes):
        raise ValueError(f"spatial_shapes must hold positive (H, W) per level, got {shapes}")
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != num_keys:
        raise ValueError(
            f"spatial_shapes must sum (H * W over levels) to value's S = {num_keys}, "
            f"got {shapes} summing to {sum(sizes)}"
        )
    expected = [sum(sizes[:level]) for level in range(len(sizes))]
    if starts != expected:
        raise ValueError(
            f"level_start_index of shape (L,) must be the running sum of H * W from spatial_shapes, "
            f"{expected}, got {starts}"
        )
    return [(h, w, start) for (h, w), start in zip(shapes, starts)]
