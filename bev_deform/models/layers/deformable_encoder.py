"""The Deformable DETR encoder: multi-scale deformable self-attention over the flattened levels of
an image, FFN, post-norm, stacked ``num_layers`` times.

Module names follow mmdet's ``DeformableDetrTransformerEncoder`` (``layers.{i}.self_attn``,
``.ffn``, ``.norms``), so its state dict loads into :class:`DeformableEncoder` as it is; the
self-attention is our :class:`MSDeformAttn`, which samples with ``bev_deform.ops`` (our CPU kernel
on CPU, mmcv's op on GPU).
"""

from __future__ import annotations

import copy

from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmdet.models.layers.transformer.deformable_detr_layers import DeformableDetrTransformerEncoder
from mmengine.model import BaseModule
from torch import Tensor, nn

from bev_deform.geometry import FeatureLevels
from bev_deform.models.attention.msdeform_attn_2d import MSDeformAttn
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS


@MODELS.register_module()
class DeformableEncoderLayer(BaseModule):
    """Post-norm encoder layer: deformable self-attn -> norm -> FFN -> norm (Deformable DETR's).

    Config dict (embed_dims and num_levels are passed down by the encoder)::

        dict(type='DeformableEncoderLayer',
             self_attn_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
             ffn_cfg=dict(feedforward_channels=1024, ffn_drop=0.1))

    Args:
        embed_dims: channels C.
        num_levels: feature levels L.
        self_attn_cfg: config of the self-attention; type defaults to ``MSDeformAttn``.
        ffn_cfg: kwargs of mmcv's ``FFN``; 4 C hidden channels and dropout 0.1 by default.
        norm_cfg: mmcv norm config of the two norms; LayerNorm by default.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_levels: int = 4,
        self_attn_cfg: dict | None = None,
        ffn_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        self.embed_dims = embed_dims
        attn = {"type": MSDeformAttn, **(self_attn_cfg or {})}
        self.self_attn = MODELS.build(
            with_shared(attn, "self_attn_cfg", embed_dims=embed_dims, num_levels=num_levels)
        )
        ffn_cfg = dict(feedforward_channels=4 * embed_dims, ffn_drop=0.1) if ffn_cfg is None else ffn_cfg
        self.ffn = FFN(**with_shared(ffn_cfg, "ffn_cfg", embed_dims=embed_dims))
        norm_cfg = dict(type="LN") if norm_cfg is None else norm_cfg
        self.norms = nn.ModuleList([build_norm_layer(norm_cfg, embed_dims)[1] for _ in range(2)])

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        levels: FeatureLevels,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """One encoder layer; every cell of every level is a query and a value.

        Args:
            query: (K, S, C) flattened levels of K images.
            query_pos: (K, S, C) positional and level embeddings.
            reference_points: (K, S, L, 2) normalised per level.
            levels: the feature levels (S = ``levels.num_values``).
            key_padding_mask: (K, S) bool, True for padding cells (never sampled), or None.

        Returns:
            (K, S, C) updated cells.
        """
        query = self.self_attn(
            query,
            query,
            reference_points,
            levels.spatial_shapes,
            levels.level_start_index,
            query_pos=query_pos,
            key_padding_mask=key_padding_mask,
        )
        query = self.norms[0](query)
        return self.norms[1](self.ffn(query))


@MODELS.register_module()
class DeformableEncoder(BaseModule):
    """A stack of :class:`DeformableEncoderLayer` with Deformable DETR's reference points.

    Every cell is a query whose reference point is its own centre, ``((j + 0.5) / W_l,
    (i + 0.5) / H_l)`` on its level, carried to the other levels through the valid ratios
    (mmdet's ``DeformableDetrTransformerEncoder.get_encoder_reference_points``, which this calls),
    so that in a padded image it points at the same place of the real image on every level.

    Config dict (embed_dims and num_levels are passed down by the neck)::

        dict(type='DeformableEncoder', num_layers=6, layer_cfg=dict(...))  # see DeformableEncoderLayer

    Args:
        num_layers: number of layers.
        layer_cfg: config of each layer; type defaults to ``DeformableEncoderLayer``.
        embed_dims: channels C.
        num_levels: feature levels L.
        init_cfg: mmengine init config; Deformable DETR's initialisation when None (xavier-uniform
            FFN weights, the attention's own initialisation).
    """

    def __init__(
        self,
        num_layers: int = 6,
        layer_cfg: dict | None = None,
        embed_dims: int = 256,
        num_levels: int = 4,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layer = {"type": DeformableEncoderLayer, **(layer_cfg or {})}
        layer = with_shared(layer, "layer_cfg", embed_dims=embed_dims, num_levels=num_levels)
        self.layers = nn.ModuleList([MODELS.build(copy.deepcopy(layer)) for _ in range(num_layers)])
        self.num_layers, self.embed_dims, self.num_levels = num_layers, embed_dims, num_levels

    def init_weights(self) -> None:
        """Children's own initialisation; without an ``init_cfg``, xavier-uniform FFN weights as
        Deformable DETR (which initialises every matrix of its encoder so, then the attention)."""
        super().init_weights()
        if self.init_cfg is None:
            for layer in self.layers:
                for p in layer.ffn.parameters():
                    if p.dim() > 1:
                        nn.init.xavier_uniform_(p)

    @staticmethod
    def reference_points(levels: FeatureLevels, valid_ratios: Tensor) -> Tensor:
        """(K, L, 2) valid ratios (w, h) -> (K, S, L, 2) reference points normalised per level."""
        return DeformableDetrTransformerEncoder.get_encoder_reference_points(
            levels.spatial_shapes, valid_ratios, device=valid_ratios.device
        ).to(valid_ratios.dtype)

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        levels: FeatureLevels,
        valid_ratios: Tensor,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Encode the flattened levels of K images.

        Args:
            query: (K, S, C) flattened levels.
            query_pos: (K, S, C) positional and level embeddings.
            levels: the feature levels.
            valid_ratios: (K, L, 2) (w, h) fraction of each level's columns and rows in the real
                image.
            key_padding_mask: (K, S) bool, True for padding cells, or None.

        Returns:
            (K, S, C) encoded cells.
        """
        k, s, c = query.shape
        if s != levels.num_values or c != self.embed_dims or levels.num_levels != self.num_levels:
            raise ValueError(
                f"query must be (K, S={levels.num_values}, C={self.embed_dims}) over L={self.num_levels} "
                f"levels, got shape {tuple(query.shape)} over {levels.num_levels} levels"
            )
        if valid_ratios.shape != (k, self.num_levels, 2):
            raise ValueError(
                f"valid_ratios must be (K={k}, L={self.num_levels}, 2), got {tuple(valid_ratios.shape)}"
            )
        ref = self.reference_points(levels, valid_ratios)  # (K, S, L, 2)
        for layer in self.layers:
            query = layer(query, query_pos, ref, levels, key_padding_mask)
        return query
