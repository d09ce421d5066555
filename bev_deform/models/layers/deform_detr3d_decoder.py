"""The query decoder: self-attention, multi-view 3D deformable cross-attention and FFN per layer,
with iterative refinement of the 3D reference points between layers."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmdet.models.layers import inverse_sigmoid
from mmengine.model import BaseModule
from torch import Tensor, nn

from bev_deform.geometry import CameraGeometry, FeatureLevels
from bev_deform.models.attention.multiview_deform_attn_3d import MultiViewDeformableAttention3D
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS


@MODELS.register_module()
class DeformDETR3DDecoderLayer(BaseModule):
    """Post-norm decoder layer: self-attn -> norm -> 3D deformable cross-attn -> norm -> FFN -> norm.

    Config dict (embed_dims, num_levels and pc_range are passed down by the decoder)::

        dict(type='DeformDETR3DDecoderLayer',
             self_attn_cfg=dict(num_heads=8, attn_drop=0.1,
                                dropout_layer=dict(type='Dropout', drop_prob=0.1)),
             cross_attn_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
             ffn_cfg=dict(feedforward_channels=512, ffn_drop=0.1))

    Args:
        embed_dims: channels C.
        num_levels: feature levels L (for the cross-attention).
        pc_range: (x0, y0, z0, x1, y1, z1) metres (for the cross-attention).
        self_attn_cfg: kwargs of mmcv's ``MultiheadAttention`` (batch first).
        cross_attn_cfg: config of the cross-attention; type defaults to
            ``MultiViewDeformableAttention3D``.
        ffn_cfg: kwargs of mmcv's ``FFN``.
        norm_cfg: mmcv norm config of the three norms.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_levels: int = 4,
        pc_range: Sequence[float] | None = None,
        self_attn_cfg: dict | None = None,
        cross_attn_cfg: dict | None = None,
        ffn_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        self.embed_dims = embed_dims
        if self_attn_cfg is None:
            self_attn_cfg = dict(
                num_heads=8, attn_drop=0.1, dropout_layer=dict(type="Dropout", drop_prob=0.1)
            )
        self.self_attn = MultiheadAttention(
            **with_shared(self_attn_cfg, "self_attn_cfg", embed_dims=embed_dims, batch_first=True)
        )
        cross = {"type": MultiViewDeformableAttention3D, **(cross_attn_cfg or {})}
        self.cross_attn = MODELS.build(
            with_shared(
                cross, "cross_attn_cfg", embed_dims=embed_dims, num_levels=num_levels, pc_range=pc_range
            )
        )
        ffn_cfg = dict(feedforward_channels=4 * embed_dims, ffn_drop=0.1) if ffn_cfg is None else ffn_cfg
        self.ffn = FFN(**with_shared(ffn_cfg, "ffn_cfg", embed_dims=embed_dims))
        norm_cfg = dict(type="LN") if norm_cfg is None else norm_cfg
        self.norms = nn.ModuleList([build_norm_layer(norm_cfg, embed_dims)[1] for _ in range(3)])

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        value: Tensor,
        ref_points: Tensor,
        levels: FeatureLevels,
        cams: CameraGeometry,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """One decoder layer.

        Args:
            query: (B, Q, C); query_pos: (B, Q, C).
            value: (B*N, S, C) camera-batched flattened levels.
            ref_points: (B, Q, 3) normalised in pc_range.
            levels: the feature levels.
            cams: the batch's cameras.
            attn_mask: (Q, Q) bool self-attention mask, True where query i must not see query j
                (denoising groups), or None.
            key_padding_mask: (B, Q) bool, True for queries no other query may see (padding), or None.

        Returns:
            (B, Q, C) updated queries.
        """
        query = self.self_attn(
            query, query_pos=query_pos, attn_mask=attn_mask, key_padding_mask=key_padding_mask
        )
        query = self.norms[0](query)
        query = self.cross_attn(query, value, ref_points, levels, cams, query_pos=query_pos)
        query = self.norms[1](query)
        return self.norms[2](self.ffn(query))


@MODELS.register_module()
class DeformDETR3DDecoder(BaseModule):
    """A stack of decoder layers that refines the 3D reference points after every layer.

    After layer i, the head's regression branch i predicts a centre offset (logits) that moves the
    reference point: ``ref_{i+1} = sigmoid(inverse_sigmoid(ref_i) + delta_i[..., (0, 1, 4)])``,
    detached so that each layer learns its own correction (Deformable DETR's box refinement).

    With ``dynamic_query_pos``, the positional query of every layer is re-encoded from the layer's
    reference point by one shared MLP, ``query_pos_i = MLP(ref_i)`` (DAB-DETR's anchor encoding,
    Sparse4D's anchor embedding), instead of the head's fixed learned ``query_pos``: the
    self-attention then compares where the queries are now, not where they started.

    With ``look_forward_twice`` (DINO's "look forward twice"), the reference point that layer i's
    box is decoded against in the loss is layer i-1's refined point before the detach, so that
    layer i's box loss also trains layer i-1's offset (and layer i-1's queries); the next layer
    still samples at the detached point. The forward values are the same as without it; only the
    gradients differ.

    Config dict (embed_dims, num_levels and pc_range are passed down by the head)::

        dict(type='DeformDETR3DDecoder', num_layers=6, layer_cfg=dict(...))  # layer_cfg: see
        # DeformDETR3DDecoderLayer

    Args:
        num_layers: number of layers.
        layer_cfg: config of each layer; type defaults to ``DeformDETR3DDecoderLayer``.
        embed_dims: channels C.
        num_levels: feature levels L.
        pc_range: (x0, y0, z0, x1, y1, z1) metres.
        dynamic_query_pos: re-encode the positional query from each layer's reference points.
        look_forward_twice: return, as each layer's reference point, the previous layer's refined
            point with its gradient (DINO); False (default): the detached point it sampled at.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        num_layers: int = 6,
        layer_cfg: dict | None = None,
        embed_dims: int = 256,
        num_levels: int = 4,
        pc_range: Sequence[float] | None = None,
        dynamic_query_pos: bool = False,
        look_forward_twice: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layer = {"type": DeformDETR3DDecoderLayer, **(layer_cfg or {})}
        layer = with_shared(
            layer, "layer_cfg", embed_dims=embed_dims, num_levels=num_levels, pc_range=pc_range
        )
        self.layers = nn.ModuleList([MODELS.build(copy.deepcopy(layer)) for _ in range(num_layers)])
        self.num_layers, self.embed_dims = num_layers, embed_dims
        self.look_forward_twice = look_forward_twice
        self.query_pos_encoder = None
        if dynamic_query_pos:
            self.query_pos_encoder = nn.Sequential(
                nn.Linear(3, embed_dims),
                nn.LayerNorm(embed_dims),
                nn.ReLU(inplace=True),
                nn.Linear(embed_dims, embed_dims),
            )

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        value: Tensor,
        ref_points: Tensor,
        levels: FeatureLevels,
        cams: CameraGeometry,
        reg_branches: Sequence[nn.Module],
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run every layer, refining the reference points in between.

        Args:
            query: (B, Q, C).
            query_pos: (B, Q, C) positional query; with ``dynamic_query_pos`` it is replaced by
                the encoding of each layer's reference points.
            value: (B*N, S, C) camera-batched flattened levels.
            ref_points: (B, Q, 3) initial reference points normalised in pc_range.
            levels: the feature levels.
            cams: the batch's cameras.
            reg_branches: one regression branch per layer, (B, Q, C) -> (B, Q, code_size).
            attn_mask: (Q, Q) bool self-attention mask (True: blocked), or None.
            key_padding_mask: (B, Q) bool, True for queries that no query may see, or None.

        Returns:
            hidden: (num_layers, B, Q, C) output of every layer.
            refs: (num_layers, B, Q, 3) the reference points each layer used (its input); with
                ``look_forward_twice`` the same values with the previous layer's gradient.
            raw_codes: (num_layers, B, Q, code_size) each layer's regression branch output, computed
                once here for the refinement and returned so that the head does not run it again.
        """
        if len(reg_branches) != self.num_layers:
            raise ValueError(
                f"reg_branches must have num_layers={self.num_layers} entries, got {len(reg_branches)}"
            )
        hidden, refs, raw_codes = [], [], []
        ref_for_loss = ref_points  # with look_forward_twice: the refined point before the detach
        for layer, reg_branch in zip(self.layers, reg_branches):
            refs.append(ref_for_loss if self.look_forward_twice else ref_points)
            if self.query_pos_encoder is not None:
                query_pos = self.query_pos_encoder(ref_points)  # (B, Q, 3) -> (B, Q, C)
            query = layer(query, query_pos, value, ref_points, levels, cams, attn_mask, key_padding_mask)
            hidden.append(query)
            raw_codes.append(reg_branch(query))  # (B, Q, code_size)
            delta = raw_codes[-1][..., list(CENTER_SLOTS)]  # (B, Q, 3) centre logits
            ref_for_loss = (inverse_sigmoid(ref_points) + delta).sigmoid()
            ref_points = ref_for_loss.detach()
        return torch.stack(hidden), torch.stack(refs), torch.stack(raw_codes)
