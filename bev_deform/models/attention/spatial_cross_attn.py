"""BEVFormer's spatial cross-attention (SCA): every BEV cell samples the cameras that see its pillar.

Each cell of a :class:`bev_deform.geometry.BEVGrid` has a pillar of D anchors at evenly spaced
heights (:meth:`BEVGrid.pillar_points`); :func:`project_pillars` projects them into every camera
with :func:`bev_deform.geometry.project_points`, once per forward pass, for all encoder layers.
Per head, level and point, 2D offsets (in feature cells of each level) and softmax weights are
predicted from the cell's query and placed around the projections of its anchors (the points of
head m and level l are split over the D anchors, anchor fastest, as BEVFormer does). Only the
visible (cell, camera) pairs are sampled (:class:`VisiblePairs`), one MSDA call for the batch, and
the results are averaged over the cameras that see the pillar.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from mmengine.model import BaseModule, constant_init, xavier_init
from torch import Tensor, nn

from bev_deform.geometry import BEVGrid, CameraGeometry, FeatureLevels, project_points
from bev_deform.models.attention.deformable_base import check_divisible, init_sampling_offsets
from bev_deform.models.attention.multiview_deform_attn_3d import OUTSIDE
from bev_deform.models.attention.visible_pairs import VisiblePairs
from bev_deform.ops import multi_scale_deformable_attn
from bev_deform.registry import MODELS


class PillarProjection(NamedTuple):
    """The BEV cells' pillar anchors projected into every camera of a batch.

    Attributes:
        ref_pixels: (B, N, Q, D, 2) image pixels (u, v) of each anchor; meaningful where
            ``anchor_valid``.
        anchor_valid: (B, N, Q, D) bool, anchor d of cell q is in front of camera n and inside its
            image.
        valid: (B, N, Q) bool, camera n sees some anchor of cell q's pillar (the pair is sampled).
    """

    ref_pixels: Tensor
    anchor_valid: Tensor
    valid: Tensor


class PillarSamplingPoints(NamedTuple):
    """What one SCA call predicted from its queries (what a recorder needs besides the projection).

    Attributes:
        offsets: (B, Q, M, L, P, 2) offsets in feature cells of each level, P = points per head and
            level, split over the D anchors (point p belongs to anchor ``p % D``).
        weights: (B, Q, M, L, P) attention weights, softmax over L * P per head.
    """

    offsets: Tensor
    weights: Tensor


def project_pillars(grid: BEVGrid, num_points_in_pillar: int, cams: CameraGeometry) -> PillarProjection:
    """Project every cell's pillar anchors into every camera (in float32 at least, autocast off).

    Args:
        grid: the BEV grid (H*W = Q cells).
        num_points_in_pillar: D anchors per pillar.
        cams: the batch's cameras, (B, N) of them.

    Returns:
        :class:`PillarProjection`.
    """
    b = cams.lidar2img.shape[0]
    dtype = torch.promote_types(cams.lidar2img.dtype, torch.float32)
    pts = grid.pillar_points(num_points_in_pillar, cams.lidar2img.device, dtype)  # (Q, D, 3) metres
    q, d = pts.shape[:2]
    with torch.autocast(device_type=pts.device.type, enabled=False):
        # (Q, D, 3) -> (1, Q*D, 3) -> (B, Q*D, 3) -> uv (B, N, Q*D, 2) by each camera's image size
        uv, valid, _ = project_points(pts.view(1, q * d, 3).expand(b, -1, -1), cams.lidar2img, cams.img_hw)
    ref_pixels = uv * cams.img_hw.flip(-1).to(uv)[:, :, None, :]  # (B, N, Q*D, 2) * (B, N, 1, 2)
    n = ref_pixels.shape[1]
    anchor_valid = valid.view(b, n, q, d)  # (B, N, Q*D) -> (B, N, Q, D)
    return PillarProjection(ref_pixels.view(b, n, q, d, 2), anchor_valid, anchor_valid.any(-1))


class PillarDeformableAttention(BaseModule):
    """The sampling layers of SCA (BEVFormer's ``MSDeformableAttention3D``, without an output
    projection, which SCA applies after the camera mean): offsets and weights from the query, and
    the value projection, with Deformable DETR's initialisation over the P points of a head and level.

    Args:
        embed_dims: channels C; divisible by ``num_heads``.
        num_heads: attention heads M.
        num_levels: feature levels L.
        num_points: sampling points P per head and level, all anchors together (BEVFormer: 8 for
            4 anchors, 2 around each); divisible by ``num_points_in_pillar``.
        num_points_in_pillar: D anchors per pillar.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 8,
        num_points_in_pillar: int = 4,
    ) -> None:
        super().__init__()
        check_divisible(embed_dims, num_heads)
        if num_points_in_pillar < 1 or num_points % num_points_in_pillar != 0:
            raise ValueError(
                f"num_points must be a multiple of num_points_in_pillar={num_points_in_pillar} (the points "
                f"are split over the pillar's anchors), got num_points={num_points}"
            )
        self.embed_dims, self.num_heads, self.num_levels = embed_dims, num_heads, num_levels
        self.num_points, self.num_points_in_pillar = num_points, num_points_in_pillar
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        """Rotational offset bias over the P points, uniform weights, xavier value projection."""
        init_sampling_offsets(self.sampling_offsets, self.num_heads, self.num_levels, self.num_points)
        constant_init(self.attention_weights, val=0.0, bias=0.0)
        xavier_init(self.value_proj, distribution="uniform", bias=0.0)

    def forward(self, query: Tensor) -> PillarSamplingPoints:
        """(B, Q, C) queries -> offsets (B, Q, M, L, P, 2) in cells and weights (B, Q, M, L, P)."""
        b, q, _ = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(
            b, q, m, lv, p, 2
        )  # (B, Q, M*L*P*2) -> (B, Q, M, L, P, 2)
        # (B, Q, M*L*P) -> (B, Q, M, L*P): softmax over the levels and points of each head
        weights = self.attention_weights(query).view(b, q, m, lv * p).softmax(-1)
        return PillarSamplingPoints(offsets, weights.view(b, q, m, lv, p))  # (B, Q, M, L, P)

    def locations(
        self, ref_pixels: Tensor, anchor_valid: Tensor, offsets: Tensor, levels: FeatureLevels
    ) -> Tensor:
        """Sampling locations of K cells in R camera rows, around the projections of their anchors.

        Args:
            ref_pixels: (R, K, D, 2) image pixels of the anchors.
            anchor_valid: (R, K, D) bool; the other anchors get ``OUTSIDE`` (never a huge or NaN
                coordinate from a point behind the camera).
            offsets: (R, K, M, L, P, 2) offsets in cells of each level.
            levels: the feature levels.

        Returns:
            (R, K, M, L, P, 2) locations normalised per level (point p around anchor p % D).
        """
        r, k, d = anchor_valid.shape
        m, lv, p = offsets.shape[2:5]
        # in at least float32, also under fp16 autocast (pixels ~1e3)
        dtype = torch.promote_types(offsets.dtype, torch.float32)
        offsets = offsets.to(dtype)
        ref_loc = levels.pixels_to_locations(ref_pixels.to(dtype))  # (R, K, D, L, 2)
        ref_loc = torch.where(anchor_valid[..., None, None], ref_loc, ref_loc.new_tensor(OUTSIDE))
        ref_loc = ref_loc.transpose(2, 3)  # (R, K, D, L, 2) -> (R, K, L, D, 2)
        # cells -> normalised: (R, K, M, L, P, 2) / (L, 1, 2) (W_l, H_l)
        offsets = offsets / levels.spatial_shapes.flip(-1).to(offsets.dtype).view(lv, 1, 2)
        # (R, K, 1, L, 1, D, 2) + (R, K, M, L, P/D, D, 2): point p = i * D + d sits around anchor d
        loc = ref_loc[:, :, None, :, None] + offsets.view(r, k, m, lv, p // d, d, 2)
        return loc.reshape(r, k, m, lv, p, 2)  # (R, K, M, L, P/D, D, 2) -> (R, K, M, L, P, 2)


@MODELS.register_module()
class SpatialCrossAttention(BaseModule):
    """BEVFormer's spatial cross-attention: BEV cells sample the cameras that see their pillar.

    Only the visible (cell, camera) pairs are sampled (per camera of every sample its own cells,
    padded to the largest count, one MSDA call); within a pair, an anchor the camera does not see
    gets zero weight. The results are averaged over the cameras that see the pillar and projected
    by ``output_proj``; a cell that no camera sees gets exactly ``identity`` back (no NaN and no
    bias leak). Cells in the padding of a camera's feature maps read zeros. ``dense=True`` samples
    every pair and masks (the same result; for tests and benchmarks).

    Config dict (embed_dims, num_levels and num_points_in_pillar are passed down by the encoder)::

        dict(type='SpatialCrossAttention', num_heads=8, num_points=8, dropout=0.1)

    Args:
        embed_dims: channels C.
        num_heads: attention heads M.
        num_levels: camera feature levels L.
        num_points: sampling points per head and level, over all anchors of the pillar.
        num_points_in_pillar: D anchors per pillar.
        dropout: dropout on the output before the residual.
        dense: sample all (cell, camera) pairs instead of the visible ones only.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 8,
        num_points_in_pillar: int = 4,
        dropout: float = 0.1,
        dense: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        self.deformable_attention = PillarDeformableAttention(
            embed_dims, num_heads, num_levels, num_points, num_points_in_pillar
        )
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.embed_dims, self.num_levels, self.dense = embed_dims, num_levels, dense
        self.num_points_in_pillar = num_points_in_pillar
        xavier_init(self.output_proj, distribution="uniform", bias=0.0)

    def init_weights(self) -> None:
        """The sampling layers' Deformable DETR initialisation and a xavier output projection, or
        ``init_cfg`` when one is given."""
        if self.init_cfg is not None:
            super().init_weights()
            return
        self.deformable_attention.init_weights()
        xavier_init(self.output_proj, distribution="uniform", bias=0.0)

    def sampling_points(
        self, query: Tensor, pillars: PillarProjection, levels: FeatureLevels
    ) -> PillarSamplingPoints:
        """Offsets and weights of every cell (``pillars`` and ``levels`` are for recorders, which
        wrap this method; :meth:`PillarDeformableAttention.locations` places the points)."""
        return self.deformable_attention(query)

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        pillars: PillarProjection,
        levels: FeatureLevels,
        key_padding_mask: Tensor | None = None,
        query_pos: Tensor | None = None,
        identity: Tensor | None = None,
    ) -> Tensor:
        """Sample the cameras around each cell's projected pillar and average over the cameras.

        Args:
            query: (B, Q, C) BEV queries, Q = H_bev * W_bev.
            value: (B*N, S, C) camera-batched flattened feature levels (camera index fastest).
            pillars: the cells' projected pillars (:func:`project_pillars`), (B, N, Q, D).
            levels: the camera feature levels.
            key_padding_mask: (B*N, S) bool, True for the cells in a camera's padding
                (:meth:`FeatureLevels.padding_mask`); their values read zero.
            query_pos: (B, Q, C) added to the query for predicting offsets and weights.
            identity: (B, Q, C) residual; ``query`` when None.

        Returns:
            (B, Q, C): ``identity + dropout(output_proj(mean over seeing cameras))``, exactly
            ``identity`` for a cell that no camera sees.
        """
        self._check_inputs(query, value, pillars, levels)
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        (b, _, c), n = query.shape, pillars.valid.shape[1]
        m = self.deformable_attention.num_heads
        pts = self.sampling_points(query, pillars, levels)
        value = self.deformable_attention.value_proj(value)
        if key_padding_mask is not None:  # cells in a camera's padding carry no image: zero
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(b * n, value.shape[1], m, c // m)  # (B*N, S, C) -> (B*N, S, M, C/M)
        sample = self._sample_dense if self.dense else self._sample_visible
        summed = sample(value, pillars, pts, levels)  # (B, Q, C) sum over the cameras that see each cell
        count = pillars.valid.sum(1)[..., None].to(summed.dtype)  # (B, Q, 1) cameras that see each pillar
        fused = summed / count.clamp(min=1.0)  # (B, Q, C) mean
        out = self.output_proj(fused) * (count > 0).to(fused.dtype)  # unseen: no bias either
        return identity + self.dropout(out)

    def _sample_visible(
        self, value: Tensor, pillars: PillarProjection, pts: PillarSamplingPoints, levels: FeatureLevels
    ) -> Tensor:
        """Sample only the visible (cell, camera) pairs: value (B*N, S, M, D) -> (B, Q, C) summed over
        the cameras that see each pillar. Offsets and weights are gathered after they were predicted
        once per cell; the locations are built for the K slots of each camera row only."""
        b, _, q = pillars.valid.shape
        pairs = VisiblePairs.from_valid(pillars.valid)  # one host sync per call, for K
        if pairs.num_slots == 0:
            return value.new_zeros(b, q, self.embed_dims)
        anchor_valid = pairs.per_camera(pillars.anchor_valid.flatten(0, 1))  # (B*N, K, D)
        ref_pixels = pairs.per_camera(pillars.ref_pixels.flatten(0, 1))  # (B*N, K, D, 2)
        offsets = pairs.per_sample(pts.offsets)  # (B, Q, M, L, P, 2) -> (B*N, K, M, L, P, 2)
        locations = self.deformable_attention.locations(ref_pixels, anchor_valid, offsets, levels)
        # a padding slot holds a cell the camera does not see: all its anchors, so all its weights, are 0
        weights = self._anchor_weights(pairs.per_sample(pts.weights), anchor_valid)  # (B*N, K, M, L, P)
        sampled = multi_scale_deformable_attn(
            value, levels.spatial_shapes, levels.level_start_index, locations, weights, check_levels=False
        )  # (B*N, K, C)
        return pairs.scatter_sum(sampled)  # (B, Q, C)

    def _sample_dense(
        self, value: Tensor, pillars: PillarProjection, pts: PillarSamplingPoints, levels: FeatureLevels
    ) -> Tensor:
        """Sample every (cell, camera) pair with the anchors a camera does not see masked:
        value (B*N, S, M, D) -> (B, Q, C) summed over the cameras."""
        b, n, q = pillars.valid.shape
        rows = (b, n, *pts.offsets.shape[1:])  # (B, N, Q, M, L, P, 2)
        offsets = pts.offsets[:, None].expand(rows).flatten(0, 1)  # (B*N, Q, M, L, P, 2)
        anchor_valid = pillars.anchor_valid.flatten(0, 1)  # (B, N, Q, D) -> (B*N, Q, D)
        locations = self.deformable_attention.locations(
            pillars.ref_pixels.flatten(0, 1), anchor_valid, offsets, levels
        )  # (B*N, Q, M, L, P, 2)
        weights = pts.weights[:, None].expand(rows[:-1]).flatten(0, 1)  # (B*N, Q, M, L, P)
        weights = self._anchor_weights(weights, anchor_valid)
        sampled = multi_scale_deformable_attn(
            value, levels.spatial_shapes, levels.level_start_index, locations, weights, check_levels=False
        )  # (B*N, Q, C)
        return sampled.view(b, n, q, -1).sum(1)  # (B*N, Q, C) -> (B, N, Q, C) -> (B, Q, C)

    @staticmethod
    def _anchor_weights(weights: Tensor, anchor_valid: Tensor) -> Tensor:
        """(R, K, M, L, P) weights with the points of the anchors a camera does not see set to zero,
        for (R, K, D) anchor visibility (point p belongs to anchor p % D)."""
        r, k, m, lv, p = weights.shape
        d = anchor_valid.shape[-1]
        mask = anchor_valid[:, :, None, None, None, :].to(weights.dtype)  # (R, K, 1, 1, 1, D)
        return (weights.view(r, k, m, lv, p // d, d) * mask).view(r, k, m, lv, p)

    def _check_inputs(
        self, query: Tensor, value: Tensor, pillars: PillarProjection, levels: FeatureLevels
    ) -> None:
        c, d = self.embed_dims, self.num_points_in_pillar
        if query.dim() != 3 or query.shape[-1] != c:
            raise ValueError(f"query must be (B, Q, C={c}), got shape {tuple(query.shape)}")
        b, q = query.shape[:2]
        if (
            pillars.anchor_valid.dim() != 4
            or pillars.anchor_valid.shape[0] != b
            or (pillars.anchor_valid.shape[2:] != (q, d))
        ):
            raise ValueError(
                f"pillars must be projected for (B={b}, N, Q={q}, D={d}), got anchor_valid of shape "
                f"{tuple(pillars.anchor_valid.shape)}"
            )
        bn = b * pillars.valid.shape[1]
        if value.dim() != 3 or value.shape[0] != bn or value.shape[-1] != c:
            raise ValueError(f"value must be (B*N={bn}, S, C={c}), got shape {tuple(value.shape)}")
        if levels.num_levels != self.num_levels or value.shape[1] != levels.num_values:
            raise ValueError(
                f"levels must have L={self.num_levels} levels with S={value.shape[1]} values in all, got "
                f"shapes {levels.shapes}"
            )
