"""The object-query decoder on the BEV: self-attention, 2D multi-scale deformable cross-attention
around each query's BEV reference point and FFN per layer, with iterative refinement of the 3D
reference points (x, y sample the BEV; z is regressed and refined as BEVFormer does). Optionally
(``history_attn``) each layer also samples an earlier frame's camera features around each query's
3D reference point, projected into that frame's images."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmdet.models.layers import inverse_sigmoid
from mmengine.model import BaseModule, constant_init
from torch import Tensor, nn

from bev_deform.geometry import CameraGeometry, FeatureLevels
from bev_deform.models.attention.msdeform_attn_2d import MSDeformAttn
from bev_deform.models.attention.multiview_deform_attn_3d import MultiViewDeformableAttention3D
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS


class PastCameras(NamedTuple):
    """An earlier frame's cameras as the decoder's history attention reads them.

    Attributes:
        value: (B*N, S, C) that frame's flattened neck levels (camera index fastest).
        levels: its feature levels.
        cams: its cameras, with ``lidar2img`` mapping the *current* frame's LIDAR_TOP points into
            its images (:func:`bev_deform.geometry.earlier_lidar2img`: where a static point was
            seen then); all zeros for a sample without that frame, whose points no camera sees.
    """

    value: Tensor
    levels: FeatureLevels
    cams: CameraGeometry


@MODELS.register_module()
class HistoryCameraAttention(MultiViewDeformableAttention3D):
    """:class:`MultiViewDeformableAttention3D` into an earlier frame's cameras (the decoder's
    ``history_attn``): each query's 3D reference point, projected into the earlier frame's images
    as a static point would have been seen there, with the query's offsets around it, so that a
    head whose points land where the object *was* tells its motion apart from a static one.

    Its output projection starts at zero (the layer starts as the one without it), and its
    parameters are drawn from forked generators, in ``__init__`` and ``init_weights`` alike, so
    that every other parameter of a model, and the training's random stream after the
    initialisation, are the same with and without it: a model that never gets an earlier frame
    (single-frame training) trains exactly as the one without the module.
    """

    def __init__(self, *args, **kwargs) -> None:
        with torch.random.fork_rng(devices=[]):
            super().__init__(*args, **kwargs)
            constant_init(self.output_proj, val=0.0, bias=0.0)

    def init_weights(self) -> None:
        """The base's initialisation from a forked generator, the output projection zero (unless
        an ``init_cfg``, e.g. Pretrained, gives the weights)."""
        with torch.random.fork_rng(devices=[]):
            super().init_weights()
        if self.init_cfg is None:
            constant_init(self.output_proj, val=0.0, bias=0.0)


@MODELS.register_module()
class BEVFormerDecoderLayer(BaseModule):
    """Post-norm decoder layer: self-attn -> norm -> deformable cross-attn on the BEV -> norm ->
    FFN -> norm; ``attentions.0`` is mmcv's ``MultiheadAttention``, ``attentions.1`` an
    :class:`MSDeformAttn` with one level, the BEV (the official state-dict layout).

    Config dict (embed_dims is passed down by the decoder)::

        dict(type='BEVFormerDecoderLayer',
             self_attn_cfg=dict(num_heads=8, attn_drop=0.1),
             cross_attn_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
             ffn_cfg=dict(feedforward_channels=512, ffn_drop=0.1))

    Args:
        embed_dims: channels C.
        self_attn_cfg: kwargs of mmcv's ``MultiheadAttention`` (batch first).
        cross_attn_cfg: config of the BEV cross-attention; type defaults to ``MSDeformAttn``
            (``num_levels=1`` is set here).
        ffn_cfg: kwargs of mmcv's ``FFN``.
        norm_cfg: mmcv norm config of the three norms.
        history_attn_cfg: optional config of the attention into an earlier frame's cameras
            (:class:`HistoryCameraAttention`, the type by default; it needs ``num_levels`` and
            ``pc_range``, which the decoder passes down): after the BEV cross-attention and its
            norm, a residual without a norm, run only when :meth:`forward` gets ``past``; its
            module is ``history_attn``, outside the official state-dict layout. None: none.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        self_attn_cfg: dict | None = None,
        cross_attn_cfg: dict | None = None,
        ffn_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        history_attn_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if self_attn_cfg is None:
            self_attn_cfg = dict(
                num_heads=8, attn_drop=0.1, dropout_layer=dict(type="Dropout", drop_prob=0.1)
            )
        cross = {"type": MSDeformAttn, **(cross_attn_cfg or {})}
        self.attentions = nn.ModuleList(
            [
                MultiheadAttention(
                    **with_shared(self_attn_cfg, "self_attn_cfg", embed_dims=embed_dims, batch_first=True)
                ),
                MODELS.build(with_shared(cross, "cross_attn_cfg", embed_dims=embed_dims, num_levels=1)),
            ]
        )
        ffn_cfg = dict(feedforward_channels=2 * embed_dims, ffn_drop=0.1) if ffn_cfg is None else ffn_cfg
        self.ffns = nn.ModuleList([FFN(**with_shared(ffn_cfg, "ffn_cfg", embed_dims=embed_dims))])
        norm_cfg = dict(type="LN") if norm_cfg is None else norm_cfg
        self.norms = nn.ModuleList([build_norm_layer(norm_cfg, embed_dims)[1] for _ in range(3)])
        self.history_attn = None
        if history_attn_cfg is not None:
            history = {"type": HistoryCameraAttention, **history_attn_cfg}
            self.history_attn = MODELS.build(with_shared(history, "history_attn_cfg", embed_dims=embed_dims))

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        bev: Tensor,
        ref_points: Tensor,
        bev_levels: FeatureLevels,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        past: PastCameras | None = None,
    ) -> Tensor:
        """One decoder layer.

        Args:
            query: (B, Q, C); query_pos: (B, Q, C).
            bev: (B, H*W, C) the encoder's BEV.
            ref_points: (B, Q, 3) normalised in pc_range; (x, y) are the BEV locations.
            bev_levels: the BEV as one MSDA level.
            attn_mask: (Q, Q) bool self-attention mask, True where query i must not see query j
                (denoising groups), or None.
            key_padding_mask: (B, Q) bool, True for queries no other query may see (padding), or None.
            past: an earlier frame's cameras for ``history_attn``, or None (the layer then runs as
                one without it).

        Returns:
            (B, Q, C) updated queries.
        """
        query = self.attentions[0](
            query, query_pos=query_pos, attn_mask=attn_mask, key_padding_mask=key_padding_mask
        )
        query = self.norms[0](query)
        query = self.attentions[1](
            query,
            bev,
            ref_points[..., :2],
            bev_levels.spatial_shapes,
            bev_levels.level_start_index,
            query_pos=query_pos,
        )
        query = self.norms[1](query)
        if past is not None and self.history_attn is not None:
            query = self.history_attn(
                query, past.value, ref_points, past.levels, past.cams, query_pos=query_pos
            )
        return self.norms[2](self.ffns[0](query))


@MODELS.register_module()
class BEVFormerDecoder(BaseModule):
    """A stack of BEV decoder layers that refines the 3D reference points after every layer:
    ``ref_{i+1} = sigmoid(inverse_sigmoid(ref_i) + delta_i[..., (0, 1, 4)])`` from the head's
    regression branch i, detached (the same refinement as ``DeformDETR3DDecoder``; the head turns
    the outputs into boxes the same way).

    Config dict (embed_dims is passed down by the head)::

        dict(type='BEVFormerDecoder', num_layers=6, layer_cfg=dict(...))  # see BEVFormerDecoderLayer

    Args:
        num_layers: number of layers.
        layer_cfg: config of each layer; type defaults to ``BEVFormerDecoderLayer``.
        embed_dims: channels C.
        look_forward_twice: return, as each layer's reference point, the previous layer's refined
            point with its gradient (DINO; ``DeformDETR3DDecoder`` has the same option); False
            (default): the detached point it sampled at. Same forward values either way.
        history_attn: optional config of every layer's attention into an earlier frame's cameras
            (``history_attn_cfg`` of :class:`BEVFormerDecoderLayer`, e.g. ``dict(num_heads=4,
            num_points=4, dropout=0.0)``), to which ``num_levels`` and ``pc_range`` are passed
            down; None (default): none.
        num_levels: camera feature levels L (passed down by the transformer; read by ``history_attn``).
        pc_range: (x0, y0, z0, x1, y1, z1) metres (passed down; read by ``history_attn``).
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        num_layers: int = 6,
        layer_cfg: dict | None = None,
        embed_dims: int = 256,
        look_forward_twice: bool = False,
        history_attn: dict | None = None,
        num_levels: int = 4,
        pc_range: Sequence[float] | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        shared = dict(embed_dims=embed_dims)
        if history_attn is not None:
            if pc_range is None:
                raise ValueError(
                    "history_attn needs pc_range (passed down by BEVFormerTransformer), got None"
                )
            shared["history_attn_cfg"] = with_shared(
                history_attn, "history_attn", num_levels=num_levels, pc_range=list(pc_range)
            )
        layer = with_shared({"type": BEVFormerDecoderLayer, **(layer_cfg or {})}, "layer_cfg", **shared)
        self.layers = nn.ModuleList([MODELS.build(copy.deepcopy(layer)) for _ in range(num_layers)])
        self.num_layers, self.embed_dims = num_layers, embed_dims
        self.look_forward_twice = look_forward_twice
        self.reads_past = history_attn is not None

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        bev: Tensor,
        ref_points: Tensor,
        bev_levels: FeatureLevels,
        reg_branches: nn.ModuleList,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        past: PastCameras | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run every layer, refining the reference points in between.

        Args:
            query: (B, Q, C); query_pos: (B, Q, C).
            bev: (B, H*W, C) the encoder's BEV.
            ref_points: (B, Q, 3) initial reference points normalised in pc_range.
            bev_levels: the BEV as one MSDA level.
            reg_branches: one regression branch per layer, (B, Q, C) -> (B, Q, code_size).
            attn_mask: (Q, Q) bool self-attention mask (True: blocked), or None.
            key_padding_mask: (B, Q) bool, True for queries that no query may see, or None.
            past: an earlier frame's cameras for the layers' ``history_attn``, or None.

        Returns:
            hidden (num_layers, B, Q, C), refs (num_layers, B, Q, 3) the reference points each
            layer used, raw_codes (num_layers, B, Q, code_size) each layer's regression output.
        """
        if len(reg_branches) != self.num_layers:
            raise ValueError(
                f"reg_branches must have num_layers={self.num_layers} entries, got {len(reg_branches)}"
            )
        hidden, refs, raw_codes = [], [], []
        ref_for_loss = ref_points  # with look_forward_twice: the refined point before the detach
        for layer, reg_branch in zip(self.layers, reg_branches):
            refs.append(ref_for_loss if self.look_forward_twice else ref_points)
            query = layer(query, query_pos, bev, ref_points, bev_levels, attn_mask, key_padding_mask, past)
            hidden.append(query)
            raw_codes.append(reg_branch(query))  # (B, Q, code_size)
            delta = raw_codes[-1][..., list(CENTER_SLOTS)]  # (B, Q, 3) centre logits
            ref_for_loss = (inverse_sigmoid(ref_points) + delta).sigmoid()
            ref_points = ref_for_loss.detach()
        return torch.stack(hidden), torch.stack(refs), torch.stack(raw_codes)
