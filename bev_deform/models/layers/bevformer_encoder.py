"""The BEV encoder: BEV queries on a grid over pc_range, refined by layers of temporal
self-attention on the BEV and spatial cross-attention into the cameras (BEVFormer)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmdet.models.layers import LearnedPositionalEncoding
from mmengine.model import BaseModule
from torch import Tensor, nn

from bev_deform.geometry import (
    CAM_NAMES,
    EGO_MOTION_DIMS,
    BEVGrid,
    CameraGeometry,
    FeatureLevels,
    no_ego_motion,
)
from bev_deform.models.attention.spatial_cross_attn import (
    PillarProjection,
    SpatialCrossAttention,
    project_pillars,
)
from bev_deform.models.attention.temporal_self_attn import TemporalSelfAttention
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS

HISTORY_FUSIONS = (None, "conv")  # BEVFormerEncoder's history_fusion


class CameraValues(NamedTuple):
    """What the spatial cross-attention of every encoder layer reads from the cameras.

    Attributes:
        value: (B*N, S, C) flattened feature levels (camera index fastest), with the camera and
            level embeddings added.
        levels: the feature levels.
        padding: (B*N, S) bool, True for the cells in a camera's padding.
        pillars: the BEV cells' pillars projected into every camera, (B, N, Q, D).
    """

    value: Tensor
    levels: FeatureLevels
    padding: Tensor
    pillars: PillarProjection


class BEVQueries(NamedTuple):
    """The BEV side of every encoder layer.

    Attributes:
        pos: (B, Q, C) positional encoding of the cells.
        ref_2d: (B, Q, 2) normalised BEV coordinates of the cell centres.
        levels: the BEV as one MSDA level.
        history: (B, Q, C) history BEV aligned with this frame's grid, or None (the current BEV).
        history_ref: (B, Q, 2) reference points in the history, or None (``ref_2d``).
        history_valid: (B, Q) bool, where the aligned history has a previous cell, or None.
    """

    pos: Tensor
    ref_2d: Tensor
    levels: FeatureLevels
    history: Tensor | None = None
    history_ref: Tensor | None = None
    history_valid: Tensor | None = None


class HistoryConvFusion(nn.Module):
    """BEVDet4D's temporal fusion on our BEV: the BEV plus a residual of two 3x3 convolutions over
    the concatenation ``[BEV, aligned history, validity]`` on the (H_bev, W_bev) grid.

    ``conv1`` (2C + 1 -> C, 3x3) reads both frames and the validity channel (1 where the aligned
    history has a previous cell; the history is zero elsewhere and for a sample without one),
    ReLU, ``conv2`` (C -> C, 3x3) writes the residual. A moving object appears at two places one
    velocity times the time gap apart, and the two convolutions (a 5x5-cell window) compare them
    densely, where TSA's offsets would have to find them. ``conv2`` starts at zero, so the fusion
    starts as the identity.

    Args:
        embed_dims: channels C.
        bev_hw: (H_bev, W_bev) of the grid whose cells the (B, H*W, C) inputs hold, row-major.
    """

    def __init__(self, embed_dims: int, bev_hw: tuple[int, int]) -> None:
        super().__init__()
        self.bev_hw = tuple(bev_hw)
        self.conv1 = nn.Conv2d(2 * embed_dims + 1, embed_dims, 3, padding=1)
        self.conv2 = nn.Conv2d(embed_dims, embed_dims, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform ``conv1`` (PyTorch's default) and a zero ``conv2``: the identity."""
        self.conv1.reset_parameters()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, bev: Tensor, history: Tensor | None, history_valid: Tensor | None) -> Tensor:
        """(B, H*W, C) BEV, (B, H*W, C) aligned history or None (no sample has one), (B, H*W)
        bool validity or None (valid everywhere a history is given) -> (B, H*W, C) fused BEV."""
        b, q, c = bev.shape
        h, w = self.bev_hw
        if q != h * w:
            raise ValueError(f"bev must be (B, H*W={h * w}, C) for the {h}x{w} grid, got {tuple(bev.shape)}")
        if history is None:
            history, valid = torch.zeros_like(bev), bev.new_zeros(b, q, 1)
        elif history.shape != bev.shape:
            raise ValueError(f"history must be (B, H*W, C)={tuple(bev.shape)}, got {tuple(history.shape)}")
        else:
            valid = bev.new_ones(b, q, 1) if history_valid is None else history_valid[..., None].to(bev.dtype)
            history = history * valid  # zero where the history has no previous cell
        x = torch.cat([bev, history, valid], dim=-1)  # (B, H*W, 2C+1)
        x = x.transpose(1, 2).reshape(b, 2 * c + 1, h, w)  # (B, H*W, 2C+1) -> (B, 2C+1, H, W)
        residual = self.conv2(torch.relu(self.conv1(x)))  # (B, C, H, W)
        return bev + residual.flatten(2).transpose(1, 2)  # (B, C, H*W) -> (B, H*W, C)


@MODELS.register_module()
class BEVFormerEncoderLayer(BaseModule):
    """Post-norm encoder layer, BEVFormer's operation order:
    TSA -> norm -> SCA -> norm -> FFN -> norm; ``attentions.0`` is the temporal self-attention,
    ``attentions.1`` the spatial cross-attention (the official state-dict layout).

    Config dict (embed_dims, num_levels and num_points_in_pillar are passed down by the encoder)::

        dict(type='BEVFormerEncoderLayer',
             tsa_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
             sca_cfg=dict(num_heads=8, num_points=8, dropout=0.1),
             ffn_cfg=dict(feedforward_channels=512, ffn_drop=0.1))

    Args:
        embed_dims: channels C.
        num_levels: camera feature levels L (for SCA).
        num_points_in_pillar: D anchors per pillar (for SCA).
        tsa_cfg: config of the temporal self-attention; type defaults to ``TemporalSelfAttention``.
        sca_cfg: config of the spatial cross-attention; type defaults to ``SpatialCrossAttention``.
        ffn_cfg: kwargs of mmcv's ``FFN``.
        norm_cfg: mmcv norm config of the three norms.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_levels: int = 4,
        num_points_in_pillar: int = 4,
        tsa_cfg: dict | None = None,
        sca_cfg: dict | None = None,
        ffn_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        tsa = {"type": TemporalSelfAttention, **(tsa_cfg or {})}
        sca = {"type": SpatialCrossAttention, **(sca_cfg or {})}
        self.attentions = nn.ModuleList(
            [
                MODELS.build(with_shared(tsa, "tsa_cfg", embed_dims=embed_dims)),
                MODELS.build(
                    with_shared(
                        sca,
                        "sca_cfg",
                        embed_dims=embed_dims,
                        num_levels=num_levels,
                        num_points_in_pillar=num_points_in_pillar,
                    )
                ),
            ]
        )
        ffn_cfg = dict(feedforward_channels=2 * embed_dims, ffn_drop=0.1) if ffn_cfg is None else ffn_cfg
        self.ffns = nn.ModuleList([FFN(**with_shared(ffn_cfg, "ffn_cfg", embed_dims=embed_dims))])
        norm_cfg = dict(type="LN") if norm_cfg is None else norm_cfg
        self.norms = nn.ModuleList([build_norm_layer(norm_cfg, embed_dims)[1] for _ in range(3)])

    def forward(self, query: Tensor, bev: BEVQueries, cams: CameraValues) -> Tensor:
        """(B, Q, C) BEV queries -> (B, Q, C) refined by one layer."""
        query = self.attentions[0](
            query,
            bev.ref_2d,
            bev.levels,
            query_pos=bev.pos,
            history=bev.history,
            history_ref=bev.history_ref,
            history_valid=bev.history_valid,
        )
        query = self.norms[0](query)
        query = self.attentions[1](
            query, cams.value, cams.pillars, cams.levels, key_padding_mask=cams.padding
        )
        query = self.norms[1](query)
        return self.norms[2](self.ffns[0](query))


@MODELS.register_module()
class BEVFormerEncoder(BaseModule):
    """The BEV encoder: camera features (and a history BEV) -> the BEV, (B, H*W, C).

    It owns what BEVFormer spreads over its head and transformer: the learned BEV queries
    ``bev_embedding`` (H*W, C), their learned positional encoding ``positional_encoding``
    (mmdet's ``LearnedPositionalEncoding``: column then row halves), and the camera and level
    embeddings ``cams_embeds`` (N, C) and ``level_embeds`` (L, C) added to the value maps. The
    pillars of the grid's cells are projected once per forward pass, for all layers.

    With ``ego_motion_embed`` the BEV queries also get an embedding of the ego motion since the
    history frame, ``ego_motion_mlp`` of :func:`ego_motion_features` (translation, yaw change,
    time gap; all zero without history) added to every cell, as BEVFormer adds its CAN-bus MLP
    to its BEV queries. Ours is computed from the info files' poses, so nothing needs CAN-bus
    data, and it has the time gap, which a queue of randomly drawn earlier frames varies (the
    displacement of a moving object in the history is its velocity times that gap).

    With ``history_fusion='conv'`` the encoder's output BEV also gets BEVDet4D's fusion with
    the aligned history (:class:`HistoryConvFusion`, ``history_fusion``), after the layers: the
    BEV the decoder reads, and the next frame's history, is the fused one.

    Config dict (embed_dims, num_levels and pc_range are passed down by the head)::

        dict(type='BEVFormerEncoder', bev_h=200, bev_w=200, num_layers=6, num_points_in_pillar=4,
             layer_cfg=dict(...), ego_motion_embed=False, history_fusion=None)

    Args:
        bev_h: BEV rows H (along y).
        bev_w: BEV columns W (along x).
        num_layers: number of layers.
        layer_cfg: config of each layer; type defaults to ``BEVFormerEncoderLayer``.
        num_points_in_pillar: D anchors per pillar, evenly spaced in pc_range's z
            (:meth:`BEVGrid.pillar_heights`).
        num_cams: cameras N (rows of ``cams_embeds``), in ``CAM_NAMES`` order.
        embed_dims: channels C.
        num_levels: camera feature levels L.
        pc_range: (x0, y0, z0, x1, y1, z1) metres, the extent of the grid.
        ego_motion_embed: add the ego-motion embedding to the BEV queries (``ego_motion_mlp``:
            Linear(6, C/2), ReLU, Linear(C/2, C), ReLU, LayerNorm, BEVFormer's CAN-bus MLP on our
            six features).
        history_fusion: None (TSA alone reads the history), or ``'conv'``: add
            :class:`HistoryConvFusion` after the layers.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        bev_h: int = 200,
        bev_w: int = 200,
        num_layers: int = 6,
        layer_cfg: dict | None = None,
        num_points_in_pillar: int = 4,
        num_cams: int = len(CAM_NAMES),
        embed_dims: int = 256,
        num_levels: int = 4,
        pc_range: Sequence[float] | None = None,
        ego_motion_embed: bool = False,
        history_fusion: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if history_fusion not in HISTORY_FUSIONS:
            raise ValueError(f"history_fusion must be one of {HISTORY_FUSIONS}, got {history_fusion!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if pc_range is None:
            raise ValueError("pc_range must be (x0, y0, z0, x1, y1, z1), got None")
        if embed_dims % 2 != 0:
            raise ValueError(f"embed_dims must be even (half column, half row encoding), got {embed_dims}")
        self.grid = BEVGrid(bev_h, bev_w, tuple(pc_range))
        self.num_layers, self.embed_dims, self.num_points_in_pillar = (
            num_layers,
            embed_dims,
            num_points_in_pillar,
        )
        layer = {"type": BEVFormerEncoderLayer, **(layer_cfg or {})}
        layer = with_shared(
            layer,
            "layer_cfg",
            embed_dims=embed_dims,
            num_levels=num_levels,
            num_points_in_pillar=num_points_in_pillar,
        )
        self.layers = nn.ModuleList([MODELS.build(copy.deepcopy(layer)) for _ in range(num_layers)])
        self.bev_embedding = nn.Embedding(self.grid.num_cells, embed_dims)
        self.positional_encoding = LearnedPositionalEncoding(
            embed_dims // 2, row_num_embed=bev_h, col_num_embed=bev_w
        )
        self.cams_embeds = nn.Parameter(torch.empty(num_cams, embed_dims).normal_())
        self.level_embeds = nn.Parameter(torch.empty(num_levels, embed_dims).normal_())
        self.ego_motion_mlp = (
            nn.Sequential(
                nn.Linear(EGO_MOTION_DIMS, embed_dims // 2),
                nn.ReLU(inplace=True),
                nn.Linear(embed_dims // 2, embed_dims),
                nn.ReLU(inplace=True),
                nn.LayerNorm(embed_dims),
            )
            if ego_motion_embed
            else None
        )
        self.history_fusion = (
            HistoryConvFusion(embed_dims, self.grid.shape) if history_fusion == "conv" else None
        )

    def init_weights(self) -> None:
        """Children's own initialisation; normal camera and level embeddings (BEVFormer's)."""
        super().init_weights()
        nn.init.normal_(self.cams_embeds)
        nn.init.normal_(self.level_embeds)
        if self.history_fusion is not None:
            self.history_fusion.reset_parameters()

    def forward(
        self,
        value: Tensor,
        levels: FeatureLevels,
        cams: CameraGeometry,
        history: Tensor | None = None,
        history_ref: Tensor | None = None,
        history_valid: Tensor | None = None,
        ego_motion: Tensor | None = None,
    ) -> Tensor:
        """Encode the cameras into the BEV.

        Args:
            value: (B*N, S, C) camera-batched flattened feature levels (camera index fastest).
            levels: the camera feature levels.
            cams: the batch's cameras.
            history: (B, H*W, C) history BEV aligned with this frame's grid; None for the current
                BEV (a first frame, as BEVFormer does without a previous BEV).
            history_ref: (B, H*W, 2) normalised reference points of the cells in the history;
                None for the cell centres.
            history_valid: (B, H*W) bool, where the aligned history has a previous cell
                (:meth:`BEVGrid.align_history`); None: everywhere.
            ego_motion: (B, 6) :func:`ego_motion_features` since the history frame (zeros for a
                sample without history), or None: no sample has history. Read only with
                ``ego_motion_embed``.

        Returns:
            (B, H*W, C) the BEV, cells in flat (row-major) order.
        """
        b, n = cams.lidar2img.shape[:2]
        if n != self.cams_embeds.shape[0] or value.shape[0] != b * n:
            raise ValueError(
                f"value must be (B*N, S, C) for N={self.cams_embeds.shape[0]} cameras (cams_embeds), got "
                f"value of shape {tuple(value.shape)} and {n} cameras per sample"
            )
        device, dtype = value.device, value.dtype
        h, w = self.grid.shape
        bev_query = self.bev_embedding.weight.to(dtype)[None].expand(b, -1, -1)  # (H*W, C) -> (B, H*W, C)
        if self.ego_motion_mlp is not None:
            if ego_motion is None:
                ego_motion = no_ego_motion(b, device=device)
            if ego_motion.shape != (b, EGO_MOTION_DIMS):
                raise ValueError(
                    f"ego_motion must be (B={b}, {EGO_MOTION_DIMS}) ego_motion_features, got shape "
                    f"{tuple(ego_motion.shape)}"
                )
            mlp_dtype = self.ego_motion_mlp[0].weight.dtype
            bev_query = (
                bev_query + self.ego_motion_mlp(ego_motion.to(mlp_dtype)).to(dtype)[:, None]
            )  # (B, 1, C)
        # (B, C, H, W) -> (B, C, H*W) -> (B, H*W, C), row-major as the cells
        bev_pos = self.positional_encoding(value.new_zeros(b, h, w)).to(dtype).flatten(2).transpose(1, 2)
        ref_2d = self.grid.cell_locations(device)[None].expand(b, -1, -1)  # (B, H*W, 2)
        bev = BEVQueries(bev_pos, ref_2d, self.grid.levels(device), history, history_ref, history_valid)
        pillars = project_pillars(self.grid, self.num_points_in_pillar, cams)
        padding = levels.padding_mask(cams.img_hw.flatten(0, 1))  # (B*N, S)
        cam_values = CameraValues(self._embed_values(value, levels, n), levels, padding, pillars)
        query = bev_query
        for layer in self.layers:
            query = layer(query, bev, cam_values)
        if self.history_fusion is not None:
            query = self.history_fusion(query, history, history_valid)
        return query

    def _embed_values(self, value: Tensor, levels: FeatureLevels, n: int) -> Tensor:
        """(B*N, S, C) + camera embedding of each row + level embedding of each cell."""
        sizes = torch.tensor([h * w for h, w in levels.shapes], device=value.device)  # (L,)
        level_of = torch.repeat_interleave(
            torch.arange(levels.num_levels, device=value.device), sizes
        )  # (S,)
        bs = value.shape[0] // n
        # (B*N, S, C) -> (B, N, S, C) + (1, N, 1, C) + (1, 1, S, C)
        value = value.view(bs, n, *value.shape[1:]) + self.cams_embeds.to(value.dtype)[None, :, None]
        value = value + self.level_embeds.to(value.dtype)[level_of][None, None]
        return value.flatten(0, 1)  # (B, N, S, C) -> (B*N, S, C)
