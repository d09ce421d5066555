"""2D multi-scale deformable attention (Deformable DETR) on top of ``bev_deform.ops``.

Same semantics and initialisation as Deformable DETR / mmcv's ``MultiScaleDeformableAttention``
(offsets start on a rotated grid around the reference point, attention weights start uniform),
but it samples with our op, so CPU users get the fast kernel instead of mmcv's fallback.
"""

from __future__ import annotations

import math

import torch
from mmengine.model import BaseModule, constant_init, xavier_init
from torch import Tensor, nn

from bev_deform.ops import multi_scale_deformable_attn
from bev_deform.registry import MODELS


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
        xavier_init(self.value_proj, distribution="uniform", bias=0.0)
        xavier_init(self.output_proj, distribution="uniform", bias=0.0)


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
        b, q, _ = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(b, value.shape[1], m, -1)  # (B, S, C) -> (B, S, M, C/M)
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
        out = multi_scale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights)
        return identity + self.dropout(self.output_proj(out))  # (B, Q, C)

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
