"""2D multi-scale deformable attention (Deformable DETR) on top of ``bev_deform.ops``.

Same semantics and initialisation as Deformable DETR / mmcv's ``MultiScaleDeformableAttention``
(offsets start on a rotated grid around the reference point, attention weights start uniform),
but it samples with our op, so CPU users get the fast kernel instead of mmcv's fallback.
"""

from __future__ import annotations

from torch import Tensor

from bev_deform.models.attention.deformable_base import DeformableAttentionBase, level_normalizer
from bev_deform.ops import multi_scale_deformable_attn
from bev_deform.registry import MODELS


@MODELS.register_module()
class MSDeformAttn(DeformableAttentionBase):
    """Multi-scale deformable attention for image-side encoders (batch first).

    Config dict::

        dict(type='MSDeformAttn', embed_dims=256, num_heads=8, num_levels=4, num_points=4, dropout=0.1)

    Args: those of :class:`DeformableAttentionBase`.
    """

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        query_pos: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        identity: Tensor | None = None,
    ) -> Tensor:
        """Attend from every query to P points per head around its reference point on each level.

        Args:
            query: (B, Q, C).
            value: (B, S, C) flattened levels, S = sum of H_l * W_l.
            reference_points: (B, Q, L, 2) normalised (x, y) in [0, 1] per level, or (B, Q, 2)
                shared by all levels.
            spatial_shapes: (L, 2) long, (H_l, W_l) per level.
            level_start_index: (L,) long, start of each level in S.
            query_pos: (B, Q, C) added to the query for predicting offsets and weights.
            key_padding_mask: (B, S) bool, True where the value is padding (its value is zeroed).
            identity: (B, Q, C) residual; ``query`` when None.

        Returns:
            (B, Q, C): ``identity + dropout(output_proj(sampled))``.
        """
        self._check_inputs(query, value, reference_points, spatial_shapes)
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        b = query.shape[0]
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(b, value.shape[1], self.num_heads, -1)  # (B, S, C) -> (B, S, M, C/M)
        locations, weights = self.sampling_points(query, reference_points, spatial_shapes)
        out = multi_scale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights)
        return identity + self.dropout(self.output_proj(out))  # (B, Q, C)

    def sampling_points(
        self, query: Tensor, reference_points: Tensor, spatial_shapes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Where each query samples and with which weights (also what a recorder needs).

        Args:
            query: (B, Q, C), ``query_pos`` already added.
            reference_points: (B, Q, L, 2) or (B, Q, 2), normalised per level.
            spatial_shapes: (L, 2) long, (H_l, W_l) per level.

        Returns:
            locations (B, Q, M, L, P, 2) normalised per level, and weights (B, Q, M, L, P)
            (softmax over L * P per head).
        """
        b, q, _ = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(b, q, m, lv, p, 2)  # (B, Q, M, L, P, 2)
        # (B, Q, M*L*P) -> (B, Q, M, L*P): softmax over the levels and points of each head
        weights = self.attention_weights(query).view(b, q, m, lv * p).softmax(-1)
        weights = weights.view(b, q, m, lv, p)  # (B, Q, M, L*P) -> (B, Q, M, L, P)
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None].expand(b, q, lv, 2)  # (B, Q, L, 2)
        # (B, Q, 1, L, 1, 2) + (B, Q, M, L, P, 2) / (1, 1, 1, L, 1, 2) -> (B, Q, M, L, P, 2)
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / level_normalizer(spatial_shapes, offsets)[None, None, None, :, None, :]
        )
        return locations, weights

    def _check_inputs(self, query: Tensor, value: Tensor, ref: Tensor, spatial_shapes: Tensor) -> None:
        b, c = query.shape[0], self.embed_dims
        if query.dim() != 3 or query.shape[-1] != c:
            raise ValueError(f"query must be (B, Q, C={c}), got shape {tuple(query.shape)}")
        if value.dim() != 3 or value.shape[0] != b or value.shape[-1] != c:
            raise ValueError(f"value must be (B={b}, S, C={c}), got shape {tuple(value.shape)}")
        if spatial_shapes.shape != (self.num_levels, 2):
            raise ValueError(
                f"spatial_shapes must be (L={self.num_levels}, 2), got shape {tuple(spatial_shapes.shape)}"
            )
        ok_shapes = [(b, query.shape[1], 2), (b, query.shape[1], self.num_levels, 2)]
        if tuple(ref.shape) not in ok_shapes:
            raise ValueError(
                f"reference_points must be (B, Q, 2) or (B, Q, L, 2) = {ok_shapes}, got {tuple(ref.shape)}"
            )
