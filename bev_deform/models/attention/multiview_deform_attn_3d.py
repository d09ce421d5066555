"""Multi-view 3D deformable cross-attention: 3D reference points sample every camera.

For each query, its reference point (normalised in pc_range) is projected into every camera
with :func:`bev_deform.geometry.project_points`; offsets and attention weights predicted from the
query place P points per head and level around the projected point (in each level's own cells,
:class:`bev_deform.geometry.FeatureLevels`, by default); one call of
:func:`bev_deform.ops.multi_scale_deformable_attn` samples all cameras (batched as B*N) and
levels, with the cells in each camera's padding zeroed; the results are averaged over the
cameras that see the point. Options (issue 12) turn it, step by step, into DETR3D's sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from mmdet.models.layers import inverse_sigmoid
from mmengine.model import constant_init
from torch import Tensor, nn

from bev_deform.geometry import CameraGeometry, FeatureLevels, denormalize_points, project_points
from bev_deform.models.attention.deformable_base import (
    DeformableAttentionBase,
    bilinear_mass,
    project_samples,
    resolve_project_values,
)
from bev_deform.models.attention.visible_pairs import VisiblePairs
from bev_deform.ops import multi_scale_deformable_attn
from bev_deform.registry import MODELS

# normalised location given to cameras that do not see a point: outside every feature map, so the
# op samples zeros there (the result is masked out anyway), and never a huge or NaN coordinate
OUTSIDE = -2.0

# camera_fusion='mass': the in-image attention mass a point's reads are divided by is at least this,
# so that a point whose samples barely touch the images is not amplified more than 1 / MASS_FLOOR
MASS_FLOOR = 0.05

# the allowed values of each option of MultiViewDeformableAttention3D, the default first
OPTIONS = {
    "offset_units": ("level", "image"),
    "attention_fn": ("softmax", "sigmoid"),
    "camera_fusion": ("mean", "sum", "mass"),
    "sampling": ("deformable", "projection", "anchored", "deformable+projection"),
    "pos_encoding": ("raw", "inverse_sigmoid"),
}


class SamplingPoints(NamedTuple):
    """Where a 3D attention call samples, per camera.

    Attributes:
        ref_pixels: (B, N, Q, 2) projected reference points in image pixels (u, v); meaningful
            where valid.
        valid: (B, N, Q) bool, the point is in front of camera n and inside its image.
        ref_locations: (B, N, Q, L, 2) the projected points normalised per level
            (:class:`FeatureLevels`); ``OUTSIDE`` for the cameras that do not see the point.
        offsets: (B, Q, M, L, P, 2) offsets normalised per level, the same in every camera; zeros
            with ``sampling='projection'``. With ``sampling='deformable+projection'`` there are
            P + 1 points, the last one at the projection (zero offset).
        weights: (B, Q, M, L, P) attention weights, the same in every camera: softmax over L * P
            per head, or a sigmoid of each (``attention_fn='sigmoid'``); with
            ``'deformable+projection'`` (B, Q, M, L, P + 1), the last the projected point's own
            sigmoid.
    """

    ref_pixels: Tensor
    valid: Tensor
    ref_locations: Tensor
    offsets: Tensor
    weights: Tensor

    @property
    def locations(self) -> Tensor:
        """(B, N, Q, M, L, P, 2) sampling locations of every (query, camera) pair, normalised per
        level (:meth:`FeatureLevels.locations_to_pixels` turns them into image pixels)."""
        # (B, N, Q, 1, L, 1, 2) + (B, 1, Q, M, L, P, 2) -> (B, N, Q, M, L, P, 2)
        return self.ref_locations[:, :, :, None, :, None, :] + self.offsets[:, None]


@MODELS.register_module()
class MultiViewDeformableAttention3D(DeformableAttentionBase):
    """Deformable cross-attention from 3D reference points into multi-camera feature maps.

    The query (plus ``query_pos`` and a positional encoding of its reference point) predicts
    per-head, per-level, per-point offsets (in feature pixels of each level) and attention
    weights; the same offsets and weights are used in every camera, around the point's
    projection there. Camera results are averaged over the cameras that see the point; a query
    that no camera sees gets exactly ``identity`` back (no NaN, no bias leaks through).

    Only the (query, camera) pairs where the point is visible are sampled: per camera the visible
    queries are gathered (padded to the largest count of any camera in the batch, so one MSDA
    call serves them all), sampled, and added back to their queries. On the nuScenes rig a point
    is seen by one or two of the six cameras, so this skips most of the sampling and its
    backward. ``dense=True`` samples every pair and masks afterwards (the same result up to
    float rounding; kept for comparison and benchmarks).

    Where the value projection runs (``project_values``; the same result up to float rounding):
    ``'cells'`` projects every cell of every camera's levels before sampling, as Deformable DETR
    does; ``'samples'`` samples the unprojected features and projects each (query, camera, head)
    sample with that head's rows of ``value_proj`` (MSDA is linear in the value), which replaces a
    C x C linear over all B*N*S cells by one over the sampled pairs, at M times the channels per
    sampled point; ``'auto'`` (default) is ``'samples'`` on CPU and ``'cells'`` on GPU. With
    ``'samples'`` the features are sampled in place: the op reads each camera's padding as zero
    (``valid_shapes``, no masked copy) and the bias is scaled by the bilinear mass that fell on
    real cells (:func:`~bev_deform.models.attention.deformable_base.bilinear_mass`).

    Options for ablations against DETR3D (issue 12; each default is the behaviour above, and every
    option works with both paths, both ``project_values`` and the recorder):

    - ``offset_units``: ``'level'`` (default): offsets are in cells of each level, so the
      initial ring of 1..P cells spans (p + 1) * s_l image pixels, which on coarse levels covers
      much of the map; ``'image'``: offsets are in cells of level 0 at every level, an offset of
      1 moves a point by s_0 image pixels on every level (the same image-space extent).
    - ``attention_fn``: ``'softmax'`` (default) over the L * P points of each head;
      ``'sigmoid'``: an independent sigmoid per (head, level, point), not normalised (DETR3D).
    - ``camera_fusion``: ``'mean'`` (default) over the cameras that see the point; ``'sum'``
      over them (DETR3D); ``'mass'``: the sum over them divided, per head, by the attention mass
      that landed on real cells of those cameras (:func:`bilinear_mass`, summed over the cameras,
      at least ``MASS_FLOOR``): a weighted mean of what the samples read inside the images, in
      which a camera counts by how much of the head's attention landed in it and samples outside
      every image count for nothing (with ``'mean'`` and ``'sum'`` they read zero and shrink the
      result: after training 77 % of the level-3 points of the CPU config fall outside). A query
      that no camera sees gets ``identity`` back in all three.
    - ``sampling``: ``'deformable'`` (default); ``'projection'``: no offsets, every point samples
      the projected reference point itself (DETR3D's sampling; with ``num_points=1``,
      ``attention_fn='sigmoid'`` and ``camera_fusion='sum'`` this module then computes DETR3D's
      cross-attention, but for weights shared by the cameras and the ``value_proj`` DETR3D lacks).
      ``sampling_offsets`` stays in the state dict (checkpoints load either way) but gets no
      gradient: multi-GPU training then needs ``find_unused_parameters=True``. ``'anchored'``:
      point 0 of every head and level stays at the projection (its offset is zero whatever
      ``sampling_offsets`` says), the other ``num_points - 1`` points deform as in
      ``'deformable'``: DETR3D's exact read of the projected point plus deformable context
      around it (with ``num_points=1`` it equals ``'projection'``), since Deformable DETR's ring
      puts every point 1..P cells of its level away from the projection from the first step. On
      the CPU config it did not train better than ``'deformable'`` (rows in that config).
      ``'deformable+projection'``: the P deformable points of ``'deformable'`` (their weights
      normalised as ``attention_fn`` says) plus one more point per head and level at the
      projection, weighted by its own sigmoid from ``projection_weights`` (a Linear(C, M * L),
      zero-initialised: weight 0.5), outside the softmax, so that no deformable point can weigh
      the projected read down: DETR3D's read and Deformable DETR's points side by side.
    - ``pos_encoding``: ``'raw'`` (default): ``position_encoder`` encodes the [0, 1] reference
      point; ``'inverse_sigmoid'``: it encodes ``inverse_sigmoid(ref)`` (DETR3D's input; DETR3D adds
      the encoding to the output, here it is added to the query that predicts offsets and weights).
    - ``use_value_proj``: True (default): each layer projects the features with ``value_proj``
      (a C x C linear, over every cell or, with ``project_values='samples'``, over the samples);
      False: the points read the FPN features as they are, head ``h`` its channels ``h * C / M``
      to ``(h + 1) * C / M`` (DETR3D has no value projection; ``project_values`` then has no
      effect, and the state dict has no ``value_proj``). Equal to True with ``value_proj`` the
      identity.

    Config dict (embed_dims, num_levels and pc_range are passed down by the decoder)::

        dict(type='MultiViewDeformableAttention3D', num_heads=8, num_points=4, dropout=0.1)

    Args:
        embed_dims: channels C of queries and values; divisible by ``num_heads``.
        num_heads: attention heads M.
        num_levels: feature levels L.
        num_points: sampling points P per head and level.
        pc_range: (x0, y0, z0, x1, y1, z1) in metres; reference points are normalised in it.
        dropout: dropout on the attention output before the residual.
        dense: sample all (query, camera) pairs instead of the visible ones only.
        project_values: ``'cells'``, ``'samples'`` or ``'auto'``: where ``value_proj`` runs.
        offset_units: ``'level'`` or ``'image'``: the cells the offsets are predicted in.
        attention_fn: ``'softmax'`` or ``'sigmoid'``: how the attention weights are normalised.
        camera_fusion: ``'mean'``, ``'sum'`` or ``'mass'``: how the cameras that see a point are fused.
        sampling: ``'deformable'``, ``'projection'``, ``'anchored'`` or
            ``'deformable+projection'``: predicted offsets, none, none for point 0 and predicted
            ones for the others, or predicted ones plus a point at the projection.
        pos_encoding: ``'raw'`` or ``'inverse_sigmoid'``: what ``position_encoder`` encodes.
        use_value_proj: project the features with ``value_proj`` before sampling (default), or
            read them as they are (False; DETR3D's value).
        init_cfg: mmengine init config, replacing the default initialisation when given.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        pc_range: Sequence[float] | None = None,
        dropout: float = 0.1,
        dense: bool = False,
        project_values: str = "auto",
        offset_units: str = "level",
        attention_fn: str = "softmax",
        camera_fusion: str = "mean",
        sampling: str = "deformable",
        pos_encoding: str = "raw",
        use_value_proj: bool = True,
        init_cfg: dict | None = None,
    ) -> None:
        resolve_project_values(project_values, torch.device("cpu"))  # a bad name raises here
        options = dict(
            offset_units=offset_units,
            attention_fn=attention_fn,
            camera_fusion=camera_fusion,
            sampling=sampling,
            pos_encoding=pos_encoding,
        )
        for name, value in options.items():
            if value not in OPTIONS[name]:
                raise ValueError(f"{name} must be one of {OPTIONS[name]}, got {value!r}")
        if pc_range is None or len(pc_range) != 6:
            raise ValueError(f"pc_range must be (x0, y0, z0, x1, y1, z1), got {pc_range}")
        super().__init__(embed_dims, num_heads, num_levels, num_points, dropout, init_cfg)
        self.pc_range = [float(v) for v in pc_range]
        self.dense = dense
        self.project_values = project_values
        self.offset_units, self.attention_fn, self.camera_fusion = offset_units, attention_fn, camera_fusion
        self.sampling, self.pos_encoding = sampling, pos_encoding
        if not use_value_proj:  # the FPN features are read as they are (DETR3D); no key in the state dict
            self.value_proj = None
        self.position_encoder = nn.Sequential(
            nn.Linear(3, embed_dims),
            nn.LayerNorm(embed_dims),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims),
            nn.LayerNorm(embed_dims),
            nn.ReLU(inplace=True),
        )
        # the projected point's own weight per head and level ('deformable+projection' only, so
        # that the other settings' state dicts stay as they were)
        self.projection_weights = (
            nn.Linear(embed_dims, num_heads * num_levels) if sampling == "deformable+projection" else None
        )
        self._reset_projection_weights()

    def _reset_parameters(self) -> None:
        """The base's initialisation, and a zero ``projection_weights`` (sigmoid 0.5)."""
        super()._reset_parameters()
        self._reset_projection_weights()

    def _reset_projection_weights(self) -> None:
        if getattr(self, "projection_weights", None) is not None:
            constant_init(self.projection_weights, val=0.0, bias=0.0)

    def sampling_points(
        self, query: Tensor, ref_points: Tensor, cams: CameraGeometry, levels: FeatureLevels
    ) -> SamplingPoints:
        """Project the reference points and place the sampling points around them.

        Args:
            query: (B, Q, C) query, ``query_pos`` already added.
            ref_points: (B, Q, 3) reference points normalised in pc_range ([0, 1]^3).
            cams: the batch's cameras.
            levels: the batch's feature levels.

        Returns:
            :class:`SamplingPoints` (what a recorder or visualiser needs as well).
        """
        b, q, _ = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        pos = inverse_sigmoid(ref_points) if self.pos_encoding == "inverse_sigmoid" else ref_points
        query = query + self.position_encoder(pos)
        logits = self.attention_weights(query)  # (B, Q, M*L*P)
        if self.attention_fn == "softmax":
            # (B, Q, M*L*P) -> (B, Q, M, L*P): softmax over the levels and points of each head
            weights = logits.view(b, q, m, lv * p).softmax(-1)
        else:
            weights = logits.sigmoid()  # (B, Q, M*L*P), each on its own
        weights = weights.view(b, q, m, lv, p)  # -> (B, Q, M, L, P)

        # projection and locations in at least float32, also under fp16 autocast (pixels ~1e3)
        dtype = torch.promote_types(ref_points.dtype, torch.float32)
        points = denormalize_points(ref_points.to(dtype), self.pc_range)  # (B, Q, 3) metres
        with torch.autocast(device_type=points.device.type, enabled=False):
            uv, valid, _ = project_points(points, cams.lidar2img, cams.img_hw)  # (B, N, Q, 2) by image size
        ref_pixels = uv * cams.img_hw.flip(-1).to(uv)[:, :, None, :]  # (B, N, Q, 2) * (B, N, 1, 2)
        ref_loc = levels.pixels_to_locations(ref_pixels)  # (B, N, Q, L, 2) normalised per level
        ref_loc = torch.where(valid[..., None, None], ref_loc, ref_loc.new_tensor(OUTSIDE))
        if self.sampling == "projection":
            offsets = ref_loc.new_zeros(b, q, m, lv, p, 2)  # every point at the projection
        else:
            offsets = self.sampling_offsets(query).view(b, q, m, lv, p, 2)  # (B, Q, M, L, P, 2) cells
            # (B, Q, M, L, P, 2) / (L, 1, 2): cells -> normalised per level
            offsets = offsets.to(dtype) / self._offset_cells(levels, ref_loc).view(lv, 1, 2)
            if self.sampling == "anchored":  # point 0 of every head and level at the projection
                offsets = torch.cat((torch.zeros_like(offsets[..., :1, :]), offsets[..., 1:, :]), dim=-2)
            elif self.sampling == "deformable+projection":  # point P at the projection, own sigmoid
                offsets = torch.cat((offsets, torch.zeros_like(offsets[..., :1, :])), dim=-2)
                at_projection = self.projection_weights(query).sigmoid().view(b, q, m, lv, 1)
                weights = torch.cat((weights, at_projection.to(weights.dtype)), dim=-1)  # (B, Q, M, L, P+1)
        return SamplingPoints(ref_pixels, valid, ref_loc, offsets, weights)

    def _offset_cells(self, levels: FeatureLevels, like: Tensor) -> Tensor:
        """(L, 2) (W, H): the number of offset cells across each level, which turns offsets into
        normalised locations. ``'level'``: the level's own cells (W_l, H_l), an offset of 1 is s_l
        image pixels; ``'image'``: cells of level 0, extent_l / s_0, an offset of 1 is s_0 pixels."""
        if self.offset_units == "level":
            return levels.spatial_shapes.flip(-1).to(like)  # (L, 2) (H_l, W_l) -> (W_l, H_l)
        return levels.extent_wh(like) / levels.strides[0]  # (L, 2) (W_l s_l, H_l s_l) / s_0

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        ref_points: Tensor,
        levels: FeatureLevels,
        cams: CameraGeometry,
        query_pos: Tensor | None = None,
        identity: Tensor | None = None,
    ) -> Tensor:
        """Sample every camera around each query's projected 3D point and fuse over cameras.

        Args:
            query: (B, Q, C).
            value: (B*N, S, C) camera-batched flattened feature levels (camera index fastest),
                S = sum of H_l * W_l.
            ref_points: (B, Q, 3) normalised in pc_range.
            levels: the feature levels (shapes, start indexes, strides).
            cams: the batch's cameras (N of them).
            query_pos: (B, Q, C) added to the query for predicting offsets and weights.
            identity: (B, Q, C) residual; ``query`` when None.

        Returns:
            (B, Q, C): ``identity + dropout(output_proj(mean over seeing cameras))`` (the sum with
            ``camera_fusion='sum'``), and exactly ``identity`` for a query that no camera sees.
        """
        self._check_inputs(query, value, ref_points, levels, cams)
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        (b, _, c), n = query.shape, cams.lidar2img.shape[1]
        m = self.num_heads
        pts = self.sampling_points(query, ref_points, cams, levels)

        # cells in a camera's padding carry no image: zero, as the 2D module's key_padding_mask does;
        # without value_proj the features are read as they are, per head its C / M channels, as cells
        projected_cells = resolve_project_values(self.project_values, value.device) == "cells"
        cells = self.value_proj is None or projected_cells
        # (B*N, L, 2) the real cells of each camera's levels, for the bilinear mass that the
        # projected samples and 'mass' need (projected cells without 'mass' do not)
        needs_mass = not cells or self.camera_fusion == "mass"
        real_hw = levels.valid_shapes(cams.img_hw.flatten(0, 1)) if needs_mass else None
        if cells:
            padding = levels.padding_mask(cams.img_hw.flatten(0, 1))  # (B*N, S)
            if self.value_proj is not None:
                value = self.value_proj(value)
            value = value.masked_fill(padding[..., None], 0.0)
            value = value.view(b * n, value.shape[1], m, c // m)  # (B*N, S, C) -> (B*N, S, M, C/M)
        else:
            value = value[:, :, None]  # (B*N, S, C) -> (B*N, S, 1, C), no copy; the padding reads zero
        sample = self._sample_dense if self.dense else self._sample_visible
        # (B, Q, C) sum over the cameras that see each point (C + M: with their masses, for 'mass')
        summed = sample(value, pts, levels, real_hw, cells)
        count = pts.valid.sum(1)[..., None].to(summed.dtype)  # (B, Q, 1) cameras that see each point
        if self.camera_fusion == "mean":
            fused = summed / count.clamp(min=1.0)
        elif self.camera_fusion == "mass":  # (B, Q, M, C/M) / (B, Q, M, 1): a weighted mean of real reads
            summed, mass = summed.split([c, m], dim=-1)
            fused = (summed.view(b, -1, m, c // m) / mass.clamp(min=MASS_FLOOR)[..., None]).flatten(2)
        else:
            fused = summed  # (B, Q, C)
        out = self.output_proj(fused) * (count > 0).to(fused.dtype)  # unseen: no bias either
        return identity + self.dropout(out)

    def _read(
        self,
        value: Tensor,
        levels: FeatureLevels,
        locations: Tensor,
        weights: Tensor,
        real_hw: Tensor | None,
        cells: bool,
    ) -> Tensor:
        """One MSDA call: locations (R, K, M, L, P, 2) and weights (R, K, M, L, P) into value
        (R, S, M, D) projected cells with the padding zeroed (``cells``), or (R, S, 1, C)
        unprojected ones (each head's points then read all C channels as one query of a one-head
        call, the padding outside the (R, L, 2) real extent ``real_hw`` of each row's levels as
        zero, and ``value_proj`` follows, its bias scaled by :func:`bilinear_mass`); -> (R, K, C),
        or (R, K, C + M) with ``camera_fusion='mass'``: each head's bilinear mass appended.
        ``real_hw`` is None only for projected cells without ``'mass'``, which need no mass."""
        r, k, m = weights.shape[:3]
        mass = None if real_hw is None else bilinear_mass(locations, weights, levels.spatial_shapes, real_hw)
        if cells:  # projected cells (D = C / M channels per head)
            out = multi_scale_deformable_attn(
                value, levels.spatial_shapes, levels.level_start_index, locations, weights, check_levels=False
            )
        else:
            sampled = multi_scale_deformable_attn(
                value,
                levels.spatial_shapes,
                levels.level_start_index,
                locations.flatten(1, 2)[:, :, None],  # (R, K, M, L, P, 2) -> (R, K*M, 1, L, P, 2)
                weights.flatten(1, 2)[:, :, None],  # (R, K, M, L, P) -> (R, K*M, 1, L, P)
                check_levels=False,
                valid_shapes=real_hw,  # the padding reads zero, without a masked copy of value
            )  # (R, K*M, C)
            out = project_samples(sampled.view(r, k, m, -1), mass, self.value_proj, m)  # (R, K, C)
        if self.camera_fusion == "mass":
            out = torch.cat((out, mass.view(r, k, m).to(out.dtype)), dim=-1)  # (R, K, C + M)
        return out

    def _sample_dense(
        self, value: Tensor, pts: SamplingPoints, levels: FeatureLevels, real_hw: Tensor | None, cells: bool
    ) -> Tensor:
        """Sample every (query, camera) pair, then mask: value, ``real_hw`` and ``cells`` as
        :meth:`_read` takes them -> (B, Q, C) (or C + M) sum over the cameras that see each point."""
        b, n, q = pts.valid.shape
        locations = pts.locations.flatten(0, 1)  # (B, N, Q, M, L, P, 2) -> (B*N, Q, M, L, P, 2)
        # (B, Q, M, L, P) -> (B, N, Q, M, L, P) -> (B*N, Q, M, L, P)
        weights = pts.weights[:, None].expand(b, n, *pts.weights.shape[1:]).flatten(0, 1)
        sampled = self._read(value, levels, locations, weights, real_hw, cells)
        sampled = sampled.view(b, n, q, -1)  # (B*N, Q, C) -> (B, N, Q, C)
        return (sampled * pts.valid[..., None].to(sampled.dtype)).sum(1)  # (B, Q, C)

    def _sample_visible(
        self, value: Tensor, pts: SamplingPoints, levels: FeatureLevels, real_hw: Tensor | None, cells: bool
    ) -> Tensor:
        """Sample only the visible (query, camera) pairs: value, ``real_hw`` and ``cells`` as
        :meth:`_read` takes them -> (B, Q, C) (or C + M) sum over the cameras that see each point.

        Per camera, its K_n visible queries are moved to the front (stable, so in query order) and
        the first K = max_n K_n slots are sampled in one MSDA call; the slots past K_n get zero
        weights. The results are added into their queries with one ``index_add``
        (:class:`VisiblePairs`).
        """
        b, _, q = pts.valid.shape
        lv = self.num_levels
        pairs = VisiblePairs.from_valid(pts.valid)  # one host sync per call, for K
        if pairs.num_slots == 0:
            extra = self.num_heads if self.camera_fusion == "mass" else 0
            return value.new_zeros(b, q, self.embed_dims + extra)
        k = pairs.num_slots
        # (B*N, Q, L, 2) -> (B*N, K, L, 2) -> (B*N, K, 1, L, 1, 2), plus the offsets shared by the
        # sample's cameras (B, Q, M, L, P, 2) -> (B*N, K, M, L, P, 2)
        ref = pairs.per_camera(pts.ref_locations.flatten(0, 1)).view(-1, k, 1, lv, 1, 2)
        locations = ref + pairs.per_sample(pts.offsets)  # (B*N, K, M, L, P, 2)
        # weights are shared by the cameras: (B, Q, M, L, P) -> (B*N, K, M, L, P), zero in padding slots
        weights = pairs.per_sample(pts.weights) * pairs.keep[..., None, None, None].to(pts.weights.dtype)
        # (B*N, K, C), 0 in padding slots
        sampled = self._read(value, levels, locations, weights, real_hw, cells)
        return pairs.scatter_sum(sampled)  # (B, Q, C)

    def _check_inputs(
        self, query: Tensor, value: Tensor, ref: Tensor, levels: FeatureLevels, cams: CameraGeometry
    ) -> None:
        b, c = query.shape[0], self.embed_dims
        if query.dim() != 3 or query.shape[-1] != c:
            raise ValueError(f"query must be (B, Q, C={c}), got shape {tuple(query.shape)}")
        if ref.shape != (*query.shape[:2], 3):
            raise ValueError(f"ref_points must be (B, Q, 3)={(*query.shape[:2], 3)}, got {tuple(ref.shape)}")
        if cams.lidar2img.dim() != 4 or cams.lidar2img.shape[0] != b:
            raise ValueError(f"cams.lidar2img must be (B={b}, N, 4, 4), got {tuple(cams.lidar2img.shape)}")
        bn = b * cams.lidar2img.shape[1]
        if value.dim() != 3 or value.shape[0] != bn or value.shape[-1] != c:
            raise ValueError(f"value must be (B*N={bn}, S, C={c}), got shape {tuple(value.shape)}")
        if levels.num_levels != self.num_levels:
            raise ValueError(f"levels must have L={self.num_levels} levels, got shapes {levels.shapes}")
        if value.shape[1] != levels.num_values:
            raise ValueError(
                f"value must have S={levels.num_values} (sum of H_l * W_l of {levels.shapes}) values, "
                f"got shape {tuple(value.shape)}"
            )
