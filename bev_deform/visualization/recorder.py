"""Record where the deformable attentions sampled, during a normal forward pass.

``SamplingRecorder`` wraps, for the duration of a ``with`` block, the ``sampling_points`` method
of every :class:`MultiViewDeformableAttention3D` in a model (one per decoder layer, in layer
order) and keeps a detached copy of what it returned. For a BEVFormer-style model (a
:class:`BEVFormerTransformer`) it records instead, per decoder layer, where the queries sampled
on the BEV (in metres), and per encoder layer what the spatial cross-attention predicted for
every BEV cell, from which the camera pixels of chosen cells are computed on demand by the
attention's own :meth:`PillarDeformableAttention.locations`. The wrapped methods return the very
same tensors, so the model's outputs are unchanged (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bev_deform.geometry import BEVGrid, FeatureLevels, denormalize_points
from bev_deform.models.attention.multiview_deform_attn_3d import (
    MultiViewDeformableAttention3D,
    SamplingPoints,
)
from bev_deform.models.attention.spatial_cross_attn import PillarProjection, PillarSamplingPoints
from bev_deform.models.layers.bevformer_transformer import BEVFormerTransformer


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
        weights: (B, Q, M, L, P) attention weights (softmax over L * P per head, or a sigmoid of
            each with the attention's ``attention_fn='sigmoid'``).
        ref_valid: None when every query has one reference point; (B, N, Q, R) bool for R
            reference points per query (a BEV cell's pillar anchors), whose ``ref_pixels`` are
            then (B, N, Q, R, 2).
    """

    ref_points: Tensor
    ref_pixels: Tensor
    valid: Tensor
    pixels: Tensor
    weights: Tensor
    ref_valid: Tensor | None = None

    def select(self, batch_idx: int, query_ids: Tensor) -> LayerRecord:
        """One sample's chosen queries: every field keeps a leading batch dim of 1."""
        b = slice(batch_idx, batch_idx + 1)
        return LayerRecord(
            ref_points=self.ref_points[b][:, query_ids],  # (1, K, 3)
            ref_pixels=self.ref_pixels[b][:, :, query_ids],  # (1, N, K, 2) or (1, N, K, R, 2)
            valid=self.valid[b][:, :, query_ids],  # (1, N, K)
            pixels=self.pixels[b][:, :, query_ids],  # (1, N, K, M, L, P, 2)
            weights=self.weights[b][:, query_ids],  # (1, K, M, L, P)
            ref_valid=None if self.ref_valid is None else self.ref_valid[b][:, :, query_ids],
        )


@dataclass
class BEVLayerRecord:
    """Where one BEV decoder layer's queries sampled on the BEV (detached, on CPU, metres).

    Attributes:
        ref_points: (B, Q, 2) reference points (x, y) in metres (LIDAR_TOP frame).
        points: (B, Q, M, L, P, 2) sampling points (x, y) in metres, L = 1 (the BEV).
        weights: (B, Q, M, L, P) attention weights.
    """

    ref_points: Tensor
    points: Tensor
    weights: Tensor

    def select(self, batch_idx: int, query_ids: Tensor) -> BEVLayerRecord:
        """One sample's chosen queries, with a leading batch dim of 1."""
        b = slice(batch_idx, batch_idx + 1)
        return BEVLayerRecord(
            self.ref_points[b][:, query_ids], self.points[b][:, query_ids], self.weights[b][:, query_ids]
        )


@dataclass
class PillarRecord:
    """What one encoder layer's spatial cross-attention predicted for every BEV cell (detached,
    on CPU): enough to place the camera sampling points of any chosen cells.

    Attributes:
        grid: the BEV grid.
        pillars: the cells' pillars projected into the cameras, (B, N, Q, D).
        sampling: the cells' offsets (B, Q, M, L, P, 2) and weights (B, Q, M, L, P).
        levels: the camera feature levels (on CPU).
        locate: the attention's ``PillarDeformableAttention.locations``.
    """

    grid: BEVGrid
    pillars: PillarProjection
    sampling: PillarSamplingPoints
    levels: FeatureLevels
    locate: Callable[..., Tensor]

    def select(self, batch_idx: int, cell_ids: Tensor) -> LayerRecord:
        """The camera record of one sample's chosen cells: each cell is a query with its D
        anchors as reference points (``ref_pixels`` (1, N, K, D, 2), ``ref_valid``)."""
        b, ids = batch_idx, torch.as_tensor(cell_ids, dtype=torch.long)
        ref_pixels = self.pillars.ref_pixels[b][:, ids]  # (N, K, D, 2)
        anchor_valid = self.pillars.anchor_valid[b][:, ids]  # (N, K, D)
        n = ref_pixels.shape[0]
        offsets = self.sampling.offsets[b][ids][None].expand(n, -1, -1, -1, -1, -1)  # (N, K, M, L, P, 2)
        locations = self.locate(ref_pixels, anchor_valid, offsets, self.levels)  # (N, K, M, L, P, 2)
        heights = self.grid.pillar_heights(1, dtype=ref_pixels.dtype).expand(len(ids), 1)  # (K, 1)
        centres = torch.cat([self.grid.cell_centres(dtype=ref_pixels.dtype)[ids], heights], dim=-1)
        return LayerRecord(
            ref_points=centres[None],  # (1, K, 3) cell centre at the pillar's middle height
            ref_pixels=ref_pixels[None],
            valid=self.pillars.valid[b][:, ids][None],  # (1, N, K)
            pixels=self.levels.locations_to_pixels(locations, level_dim=-3)[None],
            weights=self.sampling.weights[b][ids][None],  # (1, K, M, L, P)
            ref_valid=anchor_valid[None],
        )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP / mmengine model wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class SamplingRecorder:
    """Context manager capturing each decoder layer's sampling points (and, for a BEVFormer-style
    model, each encoder layer's spatial cross-attention).

    Usage::

        with SamplingRecorder(model) as rec:
            outputs = model.test_step(data)
        rec.layers[-1].pixels  # the last layer's (B, N, Q, M, L, P, 2)

    ``rec.layers`` holds one :class:`LayerRecord` per decoder layer of a DETR3D-style model, or
    one :class:`BEVLayerRecord` per BEV decoder layer; ``rec.encoder_layers`` one
    :class:`PillarRecord` per BEV encoder layer (empty for a DETR3D-style model).
    """

    def __init__(self, model: nn.Module) -> None:
        modules = list(unwrap_model(model).modules())
        self.attentions = [m for m in modules if isinstance(m, MultiViewDeformableAttention3D)]
        transformers = [m for m in modules if isinstance(m, BEVFormerTransformer)]
        # (attention, recording wrapper factory) for every module whose sampling_points is wrapped
        self._wrapped: list[tuple[nn.Module, Callable]] = [(a, self._wrap) for a in self.attentions]
        for tr in transformers:
            grid = tr.encoder.grid
            self._wrapped += [(lyr.attentions[1], self._bev_wrapper(grid)) for lyr in tr.decoder.layers]
            self._wrapped += [(lyr.attentions[1], self._pillar_wrapper(grid)) for lyr in tr.encoder.layers]
        if not self._wrapped:
            raise ValueError(
                f"{type(unwrap_model(model)).__name__} has no MultiViewDeformableAttention3D or "
                "BEVFormerTransformer to record"
            )
        self.layers: list[LayerRecord | BEVLayerRecord] = []
        self.encoder_layers: list[PillarRecord] = []

    def __enter__(self) -> SamplingRecorder:
        self.layers, self.encoder_layers = [], []
        for attn, wrapper in self._wrapped:
            attn.sampling_points = wrapper(attn)  # instance attribute shadows the method
        return self

    def __exit__(self, *exc) -> None:
        for attn, _ in self._wrapped:
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

    def _bev_wrapper(self, grid: BEVGrid):
        def wrap(attn: nn.Module):
            method = type(attn).sampling_points.__get__(attn)

            def recorded(query, reference_points, spatial_shapes):
                locations, weights = method(query, reference_points, spatial_shapes)
                self.layers.append(
                    BEVLayerRecord(
                        ref_points=grid.locations_to_metres(reference_points.detach()).cpu(),
                        points=grid.locations_to_metres(locations.detach()).cpu(),
                        weights=weights.detach().cpu(),
                    )
                )
                return locations, weights

            return recorded

        return wrap

    def _pillar_wrapper(self, grid: BEVGrid):
        def wrap(attn: nn.Module):
            method = type(attn).sampling_points.__get__(attn)

            def recorded(query, pillars, levels) -> PillarSamplingPoints:
                pts = method(query, pillars, levels)
                self.encoder_layers.append(
                    PillarRecord(
                        grid=grid,
                        pillars=PillarProjection(*(t.detach().cpu() for t in pillars)),
                        sampling=PillarSamplingPoints(*(t.detach().cpu() for t in pts)),
                        levels=FeatureLevels(
                            levels.spatial_shapes.cpu(),
                            levels.level_start_index.cpu(),
                            levels.shapes,
                            levels.strides,
                        ),
                        locate=attn.deformable_attention.locations,
                    )
                )
                return pts

            return recorded

        return wrap
