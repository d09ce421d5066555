"""Multi-scale deformable attention (MSDA): the device dispatcher and the CPU autograd Function.

``multi_scale_deformable_attn`` has mmcv's shapes and semantics and picks the kernel by device:

- CUDA: mmcv's registered ``MultiScaleDeformableAttnFunction``, always in float32 (autocast off
  inside), with an ``im2col_step`` that divides the batch.
- CPU: the compiled kernel ``bev_deform.ops._msda_cpu`` (``csrc/msda_cpu.cpp``, forward and
  backward, parallel over ``torch.get_num_threads()`` threads) through ``MSDAFunctionCPU``; where
  it is not built, the pure-PyTorch gather path (``gather.py``) with a one-time warning.
- Inside ``with ops.msda_implementation('decomposed' | 'trt'):``, on any device: the form that
  ONNX export records (``export.py``).

float16 / bfloat16 inputs are computed in float32 and the result is returned in value's dtype.

``valid_shapes`` (optional, (B, L, 2) integer (H_v, W_v) per row and level) makes the cells of row
b's level l past row H_v or column W_v read zero, as a camera's padding does: the CPU kernel skips
them in place; the other paths zero them in a masked copy of value (:func:`mask_invalid_cells`).
"""

import functools
import importlib
import warnings

import torch
from torch.autograd.function import Function, once_differentiable

from .checks import check_msda_inputs, compute_dtype
from .export import active_export_implementation
from .gather import multi_scale_deformable_attn_gather

MAX_IM2COL_STEP = 64  # mmcv's default im2col_step


@functools.cache
def cpu_extension():
    """The compiled CPU kernel module, or None (warning once) when it is not importable."""
    try:
        ext = importlib.import_module(f"{__package__}._msda_cpu")
    except ImportError as err:
        warnings.warn(
            f"bev_deform.ops._msda_cpu is not built ({err}); multi-scale deformable attention on CPU "
            "uses the slower pure-PyTorch gather path. Build it with "
            "`pip install --no-build-isolation --no-deps -e .` or `python setup.py build_ext --inplace`.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return ext


class MSDAFunctionCPU(Function):
    """Autograd Function over the compiled CPU kernel; inputs contiguous, int64 shapes, one dtype.

    Forward: value (B, S, M, D), spatial_shapes (L, 2), level_start_index (L,),
    sampling_locations (B, Q, M, L, P, 2), attention_weights (B, Q, M, L, P), valid_shapes
    (B, L, 2) int64 or None -> (B, Q, M * D).
    Backward returns gradients for value, sampling_locations and attention_weights.
    """

    @staticmethod
    def forward(
        ctx,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        valid_shapes=None,
    ):
        ext = cpu_extension()
        if ext is None:
            raise RuntimeError("MSDAFunctionCPU needs the compiled bev_deform.ops._msda_cpu extension")
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        ctx.valid_shapes = valid_shapes  # an integer tensor: never needs a gradient
        return ext.forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, valid_shapes
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = cpu_extension().backward(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            grad_output.contiguous(),
            ctx.valid_shapes,
        )
        return grad_value, None, None, grad_locations, grad_weights, None


def multi_scale_deformable_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    check_levels: bool = True,
    valid_shapes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-scale deformable attention with mmcv's shapes and semantics, on CPU or CUDA.

    A location (x, y) in [0, 1] on level l samples pixel (y * H_l - 0.5, x * W_l - 0.5)
    bilinearly, reading zero outside the level (``grid_sample(align_corners=False,
    padding_mode='zeros')``); the samples of each (b, q, m) are summed with their weights.

    Args:
        value: (B, S, M, D) features of L levels flattened row-major per level, M heads of D channels.
        spatial_shapes: (L, 2) integer (H_l, W_l) per level, sum of H_l * W_l = S.
        level_start_index: (L,) integer, first row of each level in S (running sum of H_l * W_l).
        sampling_locations: (B, Q, M, L, P, 2) (x, y) per sample; outside [0, 1] reads zeros.
        attention_weights: (B, Q, M, L, P) weight per sample.
        check_levels: also check the values of ``spatial_shapes`` and ``level_start_index``
            (reads them back to the host: a device sync on CUDA). Callers whose levels come from
            ``bev_deform.geometry.FeatureLevels`` (built from Python ints) pass False.
        valid_shapes: optional (B, L, 2) integer (H_v, W_v), 0 <= H_v <= H_l, 0 <= W_v <= W_l:
            the cells of row b's level l past row H_v or column W_v read zero and get zero
            gradient, exactly as if value were zero there (a camera's padding without a masked
            copy of value on the CPU kernel; :meth:`bev_deform.geometry.FeatureLevels.valid_shapes`).

    Returns:
        (B, Q, M * D) in value's dtype; computed in float32 for float16 / bfloat16 inputs, in the
        promoted dtype otherwise (``checks.compute_dtype``).

    Raises:
        ValueError: on bad input (``checks.check_msda_inputs``) or a device other than CPU / CUDA.
    """
    check_msda_inputs(
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        check_levels,
        valid_shapes,
    )
    export_form = active_export_implementation()  # inside ``ops.msda_implementation(...)``: ONNX export
    kernel = value.device.type == "cpu" and export_form is None and cpu_extension() is not None
    if valid_shapes is not None and not kernel:
        value, valid_shapes = mask_invalid_cells(value, spatial_shapes, valid_shapes), None
    if export_form is not None:
        return export_form(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if value.device.type not in ("cpu", "cuda"):
        raise ValueError(f"value must be on a CPU or CUDA device, got {value.device}")
    dtype = compute_dtype(value, sampling_locations, attention_weights)
    args = (
        value.to(dtype).contiguous(),
        spatial_shapes.long().contiguous(),
        level_start_index.long().contiguous(),
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
    )
    output = _msda_cuda(*args) if value.is_cuda else _msda_cpu(*args, valid_shapes)
    return output.to(value.dtype)


def mask_invalid_cells(
    value: torch.Tensor, spatial_shapes: torch.Tensor, valid_shapes: torch.Tensor
) -> torch.Tensor:
    """value (B, S, M, D) with the cells of row b's level l past row H_v or column W_v of
    ``valid_shapes`` (B, L, 2) zeroed, in a copy: what ``valid_shapes`` means, for the paths other
    than the CPU kernel (reads ``spatial_shapes`` back to the host)."""
    masks = []
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        rows = torch.arange(h, device=value.device)[None, :, None]  # (1, H_l, 1)
        cols = torch.arange(w, device=value.device)[None, None, :]  # (1, 1, W_l)
        extent = valid_shapes[:, level].to(value.device)  # (B, 2)
        # (1, H_l, 1) >= (B, 1, 1) | (1, 1, W_l) >= (B, 1, 1) -> (B, H_l, W_l)
        pad = (rows >= extent[:, 0, None, None]) | (cols >= extent[:, 1, None, None])
        masks.append(pad.flatten(1))
    return value.masked_fill(torch.cat(masks, 1)[:, :, None, None], 0.0)  # (B, S) -> (B, S, 1, 1)


def cuda_im2col_step(batch: int, max_step: int = MAX_IM2COL_STEP) -> int:
    """The largest divisor of ``batch`` not above ``max_step`` (mmcv's CUDA op needs one)."""
    return max(step for step in range(1, max(1, min(batch, max_step)) + 1) if batch % step == 0)


def _msda_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """mmcv's registered CUDA op in float32 / float64 with autocast off; shapes as the dispatcher."""
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction

    with torch.autocast("cuda", enabled=False):
        return MultiScaleDeformableAttnFunction.apply(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            cuda_im2col_step(value.shape[0]),
        )


def _msda_cpu(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, valid_shapes=None
):
    """The compiled CPU kernel (which reads the cells past ``valid_shapes`` as zero in place), or
    the pure-PyTorch gather path where it is not built (the dispatcher has masked value then)."""
    if cpu_extension() is None:
        return multi_scale_deformable_attn_gather(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    if valid_shapes is not None:
        valid_shapes = valid_shapes.long().contiguous()
    return MSDAFunctionCPU.apply(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, valid_shapes
    )
