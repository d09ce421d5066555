"""Multi-view 3D deformable cross-attention: 3D reference points sample every camera.

For each query, its reference point (normalised in pc_range) is projected into every camera
with :func:`bev_deform.geometry.project_points`; offsets and attention weights predicted from the
query place P points per head and level around the projected point; one call of
:func:`bev_deform.ops.multi_scale_deformable_attn` samples all cameras (batched as B*N) and
levels; the results are averaged over the cameras that see the point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bev_deform.geometry import denormalize_points, project_points
from bev_deform.models.attention.msdeform_attn_2d import DeformableAttentionBase, level_normalizer
from bev_deform.ops import multi_scale_deformable_attn
from bev_deform.registry import MODELS

# normalised location given to cameras that do not see a point: outside every feature map, so the
# op samples zeros there (the result is masked out anyway), and never a huge or NaN coordinate
OUTSIDE = -2.0


class CameraGeometry(NamedTuple):
    """The cameras of one batch, as the 3D attention needs them.

    Attributes:
        lidar2img: (B, N, 4, 4) LIDAR_TOP -> pixel projection of each camera, after image transforms.
        img_hw: (B, N, 2) (H, W) of each camera's real image; points outside it are invalid.
        pad_hw: (H, W) of the padded batch the feature maps were computed from; sampling
            locations are normalised by it so that they agree with the feature maps.
    """

    lidar2img: Tensor
    img_hw: Tensor
    pad_hw: tuple[int, int]

    @classmethod
    def from_metas(cls, batch_input_metas: Sequence[dict], device: torch.device | str) -> CameraGeometry:
        """Build from ``Det3DDataSample.metainfo`` dicts with ``lidar2img`` (N, 4, 4),
        ``img_shape`` ((H, W) shared by the cameras, or one (H, W) per camera) and
        ``batch_input_shape`` (H, W) set by the data preprocessor."""
        lidar2img, img_hw = [], []
        for meta in batch_input_metas:
            for key in ("lidar2img", "img_shape", "batch_input_shape"):
                if key not in meta:
                    raise ValueError(f"batch_input_metas need {key!r}, got keys {sorted(meta)}")
            l2i = np.asarray(meta["lidar2img"], dtype=np.float32)  # (N, 4, 4)
            if l2i.ndim != 3 or l2i.shape[1:] != (4, 4):
                raise ValueError(f"meta['lidar2img'] must be (N, 4, 4), got shape {l2i.shape}")
            hw = np.asarray(meta["img_shape"], dtype=np.float32)
            if hw.ndim == 1:  # (H, W[, C]) shared by all cameras -> (N, 2)
                hw = np.broadcast_to(hw[:2], (l2i.shape[0], 2))
            elif hw.ndim != 2 or hw.shape[0] != l2i.shape[0]:
                raise ValueError(f"meta['img_shape'] must be (H, W) or (N, 2), got {meta['img_shape']}")
            lidar2img.append(l2i)
            img_hw.append(hw[:, :2])
        pad_h, pad_w = batch_input_metas[0]["batch_input_shape"][:2]
        return cls(
            lidar2img=torch.from_numpy(np.stack(lidar2img)).to(device),  # (B, N, 4, 4)
            img_hw=torch.from_numpy(np.stack(img_hw)).to(device),  # (B, N, 2)
            pad_hw=(int(pad_h), int(pad_w)),
        )


class SamplingPoints(NamedTuple):
    """Where a 3D attention call samples, per camera.

    Attributes:
        uv: (B, N, Q, 2) projected reference points, normalised by the padded batch (W, H);
            ``OUTSIDE`` where not valid.
        valid: (B, N, Q) bool, the point is in front of camera n and inside its image.
        locations: (B, N, Q, M, L, P, 2) sampling locations, normalised per level.
        weights: (B, Q, M, L, P) attention weights, softmax over L * P per head.
    """

    uv: Tensor
    valid: Tensor
    locations: Tensor
    weights: Tensor


@MODELS.register_module()
class MultiViewDeformableAttention3D(DeformableAttentionBase):
    """Deformable cross-attention from 3D reference points into multi-camera feature maps.

    The query (plus ``query_pos`` and a positional encoding of its reference point) predicts
    per-head, per-level, per-point offsets (in feature pixels of each level) and attention
    weights; the same offsets and weights are used in every camera, around the point's
    projection there. Camera results are averaged over the cameras that see the point; a query
    that no camera sees gets exactly ``identity`` back (no NaN, no bias leaks through).

    Config dict (embed_dims, num_levels and pc_range are passed down by the decoder)::

        dict(type='MultiViewDeformableAttention3D', num_heads=8, num_points=4, dropout=0.1)

    Args:
        embed_dims: channels C of queries and values; divisible by ``num_heads``.
        num_heads: attention heads M.
        num_levels: feature levels L.
        num_points: sampling points P per head and level.
        pc_range: (x0, y0, z0, x1, y1, z1) in metres; reference points are normalised in it.
        dropout: dropout on the attention output before the residual.
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
        init_cfg: dict | None = None,
    ) -> None:
        if pc_range is None or len(pc_range) != 6:
            raise ValueError(f"pc_range must be (x0, y0, z0, x1, y1, z1), got {pc_range}")
        super().__init__(embed_dims, num_heads, num_levels, num_points, dropout, init_cfg)
        self.pc_range = [float(v) for v in pc_range]
        self.position_encoder = nn.Sequential(
            nn.Linear(3, embed_dims),
            nn.LayerNorm(embed_dims),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims),
            nn.LayerNorm(embed_dims),
            nn.ReLU(inplace=True),
        )

    def sampling_points(
        self, query: Tensor, ref_points: Tensor, cams: CameraGeometry, spatial_shapes: Tensor
    ) -> SamplingPoints:
        """Project the reference points and place the sampling points around them.

        Args:
            query: (B, Q, C) query, ``query_pos`` already added.
            ref_points: (B, Q, 3) reference points normalised in pc_range ([0, 1]^3).
            cams: the batch's cameras.
            spatial_shapes: (L, 2) long, (H_l, W_l) per level.

        Returns:
            :class:`SamplingPoints` (what a recorder or visualiser needs as well).
        """
        b, q, _ = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        query = query + self.position_encoder(ref_points)
        offsets = self.sampling_offsets(query).view(b, q, m, lv, p, 2)  # (B, Q, M, L, P, 2) pixels
        # (B, Q, M*L*P) -> (B, Q, M, L*P): softmax over the levels and points of each head
        weights = self.attention_weights(query).view(b, q, m, lv * p).softmax(-1)
        weights = weights.view(b, q, m, lv, p)  # (B, Q, M, L*P) -> (B, Q, M, L, P)

        # projection and locations in at least float32, also under fp16 autocast (pixels ~1e3)
        dtype = torch.promote_types(ref_points.dtype, torch.float32)
        points = denormalize_points(ref_points.to(dtype), self.pc_range)  # (B, Q, 3) metres
        with torch.autocast(device_type=points.device.type, enabled=False):
            uv, valid, _ = project_points(points, cams.lidar2img, cams.img_hw)  # (B, N, Q, 2) by image size
        pad_wh = uv.new_tensor([cams.pad_hw[1], cams.pad_hw[0]])  # (2,)
        # (B, N, Q, 2) * (B, N, 1, 2) / (2,): normalised by the padded batch, as the feature maps are
        uv = uv * cams.img_hw.flip(-1).to(uv)[:, :, None, :] / pad_wh
        uv = torch.where(valid[..., None], uv, uv.new_tensor(OUTSIDE))

        offsets = offsets.to(dtype) / level_normalizer(spatial_shapes, uv).view(
            lv, 1, 2
        )  # normalised per level
        # (B, N, Q, 1, 1, 1, 2) + (B, 1, Q, M, L, P, 2) -> (B, N, Q, M, L, P, 2)
        locations = uv[:, :, :, None, None, None, :] + offsets[:, None]
        return SamplingPoints(uv=uv, valid=valid, locations=locations, weights=weights)

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        ref_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
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
            spatial_shapes: (L, 2) long, (H_l, W_l) per level.
            level_start_index: (L,) long.
            cams: the batch's cameras (N of them).
            query_pos: (B, Q, C) added to the query for predicting offsets and weights.
            identity: (B, Q, C) residual; ``query`` when None.

        Returns:
            (B, Q, C): ``identity + dropout(output_proj(mean over seeing cameras))``, and exactly
            ``identity`` for a query that no camera sees.
        """
        self._check_inputs(query, value, ref_points, spatial_shapes, cams)
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        (b, q, c), n = query.shape, cams.lidar2img.shape[1]
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        pts = self.sampling_points(query, ref_points, cams, spatial_shapes)

        value = self.value_proj(value).view(b * n, value.shape[1], m, c // m)  # (B*N, S, M, C/M)
        locations = pts.locations.flatten(0, 1)  # (B, N, Q, M, L, P, 2) -> (B*N, Q, M, L, P, 2)
        # (B, Q, M, L, P) -> (B, N, Q, M, L, P) -> (B*N, Q, M, L, P)
        weights = pts.weights[:, None].expand(b, n, q, m, lv, p).flatten(0, 1)
        sampled = multi_scale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights)
        sampled = sampled.view(b, n, q, c)  # (B*N, Q, C) -> (B, N, Q, C)

        mask = pts.valid[..., None].to(sampled.dtype)  # (B, N, Q, 1)
        count = mask.sum(1)  # (B, Q, 1) cameras that see each point
        fused = (sampled * mask).sum(1) / count.clamp(min=1.0)  # (B, Q, C)
        out = self.output_proj(fused) * (count > 0).to(fused.dtype)  # unseen: no bias either
        return identity + self.dropout(out)

    def _check_inputs(
        self, query: Tensor, value: Tensor, ref: Tensor, spatial_shapes: Tensor, cams: CameraGeometry
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
        if spatial_shapes.shape != (self.num_levels, 2):
            raise ValueError(
                f"spatial_shapes must be (L={self.num_levels}, 2), got shape {tuple(spatial_shapes.shape)}"
            )
