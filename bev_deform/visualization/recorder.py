"""Record where the 3D deformable attention sampled, during a normal forward pass.

``SamplingRecorder`` wraps, for the duration of a ``with`` block, the ``sampling_points`` method
of every :class:`MultiViewDeformableAttention3D` in a model (one per decoder layer, in layer
order) and keeps a detached copy of what it returned. The wrapped method returns the very same
tensors, so the model's outputs are unchanged (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bev_deform.geometry import denormalize_points
from bev_deform.models.attention.multiview_deform_attn_3d import (
    MultiViewDeformableAttention3D,
    SamplingPoints,
)


@dataclass
class LayerRecord:
    """What one decoder layer's 3D attention did for a batch (all tensors detached, on CPU).

    Attributes:
        ref_points: (B, Q, 3) reference points in metres (LIDAR_TOP frame).
        ref_pixels: (B, N, Q, 2) projected reference points in image pixels (u, v).
        valid: (B, N, Q) bool, camera n sees query q's reference point.
        pixels: (B, N, Q, M, L, P, 2) sampling locations in image pixels (edge coordinates:
            pixel i spans [i, i + 1]), converted from the op's per-level normalised locations by
            :meth:`bev_deform.geometry.FeatureLevels.locations_to_pixels`.
        weights: (B, Q, M, L, P) attention weights (softmax over L * P per head).
    """

    ref_points: Tensor
    ref_pixels: Tensor
    valid: Tensor
    pixels: Tensor
    weights: Tensor

    def select(self, batch_idx: int, query_ids: Tensor) -> LayerRecord:
        """One sample's chosen queries: every field keeps a leading batch dim of 1."""
        b = slice(batch_idx, batch_idx + 1)
        return LayerRecord(
            ref_points=self.ref_points[b][:, query_ids],  # (1, K, 3)
            ref_pixels=self.ref_pixels[b][:, :, query_ids],  # (1, N, K, 2)
            valid=self.valid[b][:, :, query_ids],  # (1, N, K)
            pixels=self.pixels[b][:, :, query_ids],  # (1, N, K, M, L, P, 2)
            weights=self.weights[b][:, query_ids],  # (1, K, M, L, P)
        )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP / mmengine model wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class SamplingRecorder:
    """Context manager capturing each decoder layer's sampling points.

    Usage::

        with SamplingRecorder(model) as rec:
            outputs = model.test_step(data)
        rec.layers[-1].pixels  # the last layer's (B, N, Q, M, L, P, 2)
    """

    def __init__(self, model: nn.Module) -> None:
        self.attentions = [
            m for m in unwrap_model(model).modules() if isinstance(m, MultiViewDeformableAttention3D)
        ]
        if not self.attentions:
            raise ValueError(
                f"{type(unwrap_model(model)).__name__} has no MultiViewDeformableAttention3D to record"
            )
        self.layers: list[LayerRecord] = []

    def __enter__(self) -> SamplingRecorder:
        self.layers = []
        for attn in self.attentions:
            attn.sampling_points = self._wrap(attn)  # instance attribute shadows the method
        return self

    def __exit__(self, *exc) -> None:
        for attn in self.attentions:
            del attn.sampling_points  # back to the class's method

    def _wrap(self, attn: MultiViewDeformableAttention3D):
        method = type(attn).sampling_points.__get__(attn)

        def recorded(query, ref_points, cams, levels) -> SamplingPoints:
            pts = method(query, ref_points, cams, levels)
            self.layers.append(
                LayerRecord(
                    ref_points=denormalize_points(ref_points, attn.pc_range).detach().cpu(),
                    ref_pixels=pts.ref_pixels.detach().cpu(),
                    valid=pts.valid.detach().cpu(),
                    pixels=levels.locations_to_pixels(pts.locations.detach(), level_dim=-3).cpu(),
                    weights=pts.weights.detach().cpu(),
                )
            )
            return pts

        return recorded
