"""Multi-scale deformable attention (MSDA) for ONNX export: the forms the dispatcher switches to.

Inside ``with msda_implementation(name):`` the dispatcher ``multi_scale_deformable_attn`` runs
``EXPORT_IMPLEMENTATIONS[name]`` instead of a kernel, with the same signature and semantics:

- ``"decomposed"``: standard ONNX ops that stock ONNX Runtime runs: one ``GridSample`` per level
  (bilinear, ``padding_mode='zeros'``, ``align_corners=0``, which is mmcv's sampling) and the
  weighted sum. This is the pure-PyTorch reference (``reference.py``) itself, so the exported
  graph and the tests' oracle are one piece of code. Export it at opset 16-19: GridSample exists
  from opset 16, and TensorRT reads opset 20's renamed ``mode='linear'`` as nearest
  (NVIDIA/TensorRT#4646).
- ``"trt"``: one node per call in the form of TensorRT's ``MultiscaleDeformableAttnPlugin_TRT``
  (libnvinfer_plugin): inputs value (B, S, M, D), spatial_shapes (L, 2) INT32, level_start_index
  (L,) INT32, sampling_locations (B, Q, M, L, P, 2), attention_weights (B, Q, M, L, P); output
  (B, Q, M, D), reshaped to (B, Q, M*D) after the node. The level shapes and starts are INT32
  constants of the graph. ONNX Runtime cannot run it; TensorRT's ONNX parser maps the node to the
  plugin by its op type (the ``trt`` domain only keeps ``onnx.checker`` from looking for an
  ai.onnx schema). Needs the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``),
  which calls the Function's ``symbolic``.

Both read the level shapes back to Python (``checks.check_msda_inputs``), which a trace records
as constants: the exported graph has static level shapes and starts, as TensorRT's plugin and a
fixed input size want.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
from torch.autograd import Function

from .checks import check_msda_inputs
from .reference import multi_scale_deformable_attn_reference

TRT_PLUGIN_OP = "MultiscaleDeformableAttnPlugin_TRT"  # TensorRT's plugin name (version "1")
TRT_PLUGIN_DOMAIN = "trt"

_ACTIVE: ContextVar[str | None] = ContextVar("bev_deform_msda_implementation", default=None)


class MSDATensorRTPlugin(Function):
    """TensorRT's MSDA plugin as one ONNX node on export; the reference when run eagerly.

    Forward: value (B, S, M, D), sampling_locations (B, Q, M, L, P, 2), attention_weights
    (B, Q, M, L, P), ``levels``, a tuple of (H_l, W_l, start_l) Python ints, and ``out_shape``,
    (B, Q, M, D) as Python ints (for the node's output type) -> (B, Q, M, D).
    Inference only (no backward).
    """

    @staticmethod
    def forward(ctx, value, sampling_locations, attention_weights, levels, out_shape):
        shapes = torch.tensor([(h, w) for h, w, _ in levels], dtype=torch.long, device=value.device)
        starts = torch.tensor([start for _, _, start in levels], dtype=torch.long, device=value.device)
        output = multi_scale_deformable_attn_reference(
            value, shapes, starts, sampling_locations, attention_weights
        )
        return output.view(out_shape)  # (B, Q, M*D) -> (B, Q, M, D)

    @staticmethod
    def symbolic(g, value, sampling_locations, attention_weights, levels, out_shape):
        shapes = torch.tensor([(h, w) for h, w, _ in levels], dtype=torch.int32)  # (L, 2)
        starts = torch.tensor([start for _, _, start in levels], dtype=torch.int32)  # (L,)
        output = g.op(
            f"{TRT_PLUGIN_DOMAIN}::{TRT_PLUGIN_OP}",
            value,
            g.op("Constant", value_t=shapes),
            g.op("Constant", value_t=starts),
            sampling_locations,
            attention_weights,
            plugin_version_s="1",
        )
        output.setType(value.type().with_sizes(list(out_shape)))
        return output


def multi_scale_deformable_attn_trt(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """MSDA as TensorRT's plugin node on export (the reference's values otherwise).

    Args and shapes: those of ``multi_scale_deformable_attn``; returns (B, Q, M * D).
    """
    levels = check_msda_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    # Python ints, static in a trace (whose sizes are otherwise traced values)
    b, _, m, d = (int(size) for size in value.shape)
    q = int(sampling_locations.shape[1])
    output = MSDATensorRTPlugin.apply(
        value, sampling_locations, attention_weights, tuple(levels), (b, q, m, d)
    )
    return output.reshape(b, q, m * d)  # (B, Q, M, D) -> (B, Q, M*D)


EXPORT_IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "decomposed": multi_scale_deformable_attn_reference,
    "trt": multi_scale_deformable_attn_trt,
}


@contextlib.contextmanager
def msda_implementation(name: str) -> Iterator[None]:
    """Within the block, ``multi_scale_deformable_attn`` runs the export form ``name``
    (``"decomposed"`` or ``"trt"``, see the module docstring) on every device.

    Raises:
        ValueError: for an unknown ``name``.
    """
    if name not in EXPORT_IMPLEMENTATIONS:
        raise ValueError(f"name must be one of {sorted(EXPORT_IMPLEMENTATIONS)}, got {name!r}")
    token = _ACTIVE.set(name)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_export_implementation() -> Callable[..., torch.Tensor] | None:
    """The implementation selected by the innermost ``msda_implementation`` block, or None."""
    name = _ACTIVE.get()
    return None if name is None else EXPORT_IMPLEMENTATIONS[name]
