"""BEVFormer's temporal self-attention (TSA): deformable self-attention on the BEV over two queues,
the history BEV and the current BEV.

Offsets and weights of both queues are predicted from the concatenation ``[history, query +
query_pos]`` (hence the 2C-wide inputs of ``sampling_offsets`` and ``attention_weights``), each
queue is sampled around its own reference points on the (H_bev, W_bev) map with MSDA, and the two
results are averaged. Without a history (a first frame, or a model without temporal fusion) the
history is the current BEV, as BEVFormer does. A history aligned by ego motion
(:meth:`BEVGrid.align_history`) comes with a validity mask: a cell whose history came from outside
the previous grid (or a sample without a previous frame) is treated as a first frame's cell, the
current BEV standing in for its history, so that a sample gives the same result whatever the
other samples of its batch have.
"""

from __future__ import annotations

import torch
from mmengine.model import BaseModule, constant_init, xavier_init
from torch import Tensor, nn

from bev_deform.geometry import FeatureLevels
from bev_deform.models.attention.deformable_base import check_divisible, init_sampling_offsets
from bev_deform.ops import multi_scale_deformable_attn
from bev_deform.registry import MODELS

NUM_QUEUES = 2  # [history BEV, current BEV]


@MODELS.register_module()
class TemporalSelfAttention(BaseModule):
    """Deformable self-attention on the BEV with values ``[history BEV, current BEV]``.

    The current queue's values are the layer's input BEV (BEVFormer's first frame does the same;
    with a history, BEVFormer's current queue is the encoder's input BEV in every layer instead).
    Each sample pairs its own history with its own query (BEVFormer's concatenation takes
    ``value[:bs]``, which for a batch of more than one mixes the first sample's two queues into
    the others).

    Config dict (embed_dims is passed down by the encoder)::

        dict(type='TemporalSelfAttention', num_heads=8, num_points=4, dropout=0.1)

    Args:
        embed_dims: channels C; divisible by ``num_heads``.
        num_heads: attention heads M.
        num_points: sampling points P per head and queue.
        dropout: dropout on the output before the residual.
        init_cfg: mmengine init config.
    """

    num_levels = 1  # the BEV map is one level

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_points: int = 4,
        dropout: float = 0.1,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        check_divisible(embed_dims, num_heads)
        self.embed_dims, self.num_heads, self.num_points = embed_dims, num_heads, num_points
        t, lv = NUM_QUEUES, self.num_levels
        self.sampling_offsets = nn.Linear(t * embed_dims, num_heads * t * lv * num_points * 2)
        self.attention_weights = nn.Linear(t * embed_dims, num_heads * t * lv * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self._reset_parameters()

    def init_weights(self) -> None:
        """Deformable DETR's initialisation (per queue), or ``init_cfg`` when one is given."""
        if self.init_cfg is not None:
            super().init_weights()
        else:
            self._reset_parameters()

    def _reset_parameters(self) -> None:
        # the queues act as levels of the rotational offset bias: (M, T * L, P, 2) as BEVFormer
        init_sampling_offsets(
            self.sampling_offsets, self.num_heads, NUM_QUEUES * self.num_levels, self.num_points
        )
        constant_init(self.attention_weights, val=0.0, bias=0.0)
        xavier_init(self.value_proj, distribution="uniform", bias=0.0)
        xavier_init(self.output_proj, distribution="uniform", bias=0.0)

    def sampling_points(
        self, query: Tensor, history: Tensor, ref_2d: Tensor, history_ref: Tensor, bev_levels: FeatureLevels
    ) -> tuple[Tensor, Tensor]:
        """Where both queues sample.

        Args:
            query: (B, Q, C), ``query_pos`` already added.
            history: (B, Q, C) history BEV.
            ref_2d: (B, Q, 2) normalised BEV reference points of the current queue.
            history_ref: (B, Q, 2) those of the history queue.
            bev_levels: the BEV as one MSDA level.

        Returns:
            locations (B, T, Q, M, 1, P, 2) normalised on the BEV and weights (B, T, Q, M, 1, P),
            softmax over the P points of each head and queue; T = 2 queues (history, current).
        """
        b, q, _ = query.shape
        m, t, lv, p = self.num_heads, NUM_QUEUES, self.num_levels, self.num_points
        x = torch.cat([history, query], dim=-1)  # (B, Q, 2C)
        offsets = self.sampling_offsets(x).view(
            b, q, m, t, lv, p, 2
        )  # (B, Q, M*T*L*P*2) -> (B, Q, M, T, L, P, 2)
        # (B, Q, M*T*L*P) -> (B, Q, M, T, L*P): softmax over the points of each head and queue
        weights = self.attention_weights(x).view(b, q, m, t, lv * p).softmax(-1)
        weights = weights.view(b, q, m, t, lv, p).permute(0, 3, 1, 2, 4, 5)  # (B, T, Q, M, L, P)
        # (B, Q, M, T, L, P, 2) -> (B, T, Q, M, L, P, 2), in at least float32 (also under fp16 autocast)
        offsets = offsets.permute(0, 3, 1, 2, 4, 5, 6).to(torch.promote_types(offsets.dtype, torch.float32))
        refs = torch.stack([history_ref, ref_2d], dim=1).to(offsets.dtype)  # (B, T, Q, 2)
        norm = bev_levels.spatial_shapes.flip(-1).to(offsets.dtype)  # (1, 2) (W, H)
        # (B, T, Q, 1, 1, 1, 2) + (B, T, Q, M, L, P, 2) / (W, H)
        locations = refs[:, :, :, None, None, None, :] + offsets / norm.view(lv, 1, 2)
        return locations, weights

    def forward(
        self,
        query: Tensor,
        ref_2d: Tensor,
        bev_levels: FeatureLevels,
        query_pos: Tensor | None = None,
        history: Tensor | None = None,
        history_ref: Tensor | None = None,
        identity: Tensor | None = None,
        history_valid: Tensor | None = None,
    ) -> Tensor:
        """Attend from every BEV cell to P points per head in the history and the current BEV.

        Args:
            query: (B, Q, C) current BEV, Q = H_bev * W_bev; also the current queue's values.
            ref_2d: (B, Q, 2) normalised BEV reference points (:meth:`BEVGrid.cell_locations`).
            bev_levels: the BEV as one MSDA level (:meth:`BEVGrid.levels`).
            query_pos: (B, Q, C) added to the query for predicting offsets and weights.
            history: (B, Q, C) history BEV (aligned with this frame's grid); ``query`` when None.
            history_ref: (B, Q, 2) reference points in the history; ``ref_2d`` when None.
            identity: (B, Q, C) residual; ``query`` when None.
            history_valid: (B, Q) bool, False where the aligned history has no previous cell:
                there the current BEV stands in for the history, as for a first frame. None: all
                valid.

        Returns:
            (B, Q, C): ``identity + dropout(output_proj(mean over the two queues))``.
        """
        self._check_inputs(query, ref_2d, bev_levels, history, history_ref)
        if history_valid is not None and (history_valid.shape != query.shape[:2] or history is None):
            raise ValueError(
                f"history_valid must be a (B, Q)={tuple(query.shape[:2])} mask of a given history, got "
                f"{None if history_valid is None else tuple(history_valid.shape)} with history "
                f"{'None' if history is None else 'given'}"
            )
        identity = query if identity is None else identity
        if history is None:
            history = query
        elif history_valid is not None:
            history = torch.where(history_valid[..., None], history, query)  # (B, Q, C)
        history_ref = ref_2d if history_ref is None else history_ref
        b, q, c = query.shape
        m, t = self.num_heads, NUM_QUEUES
        value = self.value_proj(torch.stack([history, query], dim=1))  # (B, T, Q, C)
        value = value.view(b * t, q, m, c // m)  # (B, T, Q, C) -> (B*T, Q, M, C/M)
        q_pos = query if query_pos is None else query + query_pos
        locations, weights = self.sampling_points(q_pos, history, ref_2d, history_ref, bev_levels)
        out = multi_scale_deformable_attn(
            value,
            bev_levels.spatial_shapes,
            bev_levels.level_start_index,
            locations.flatten(0, 1),  # (B, T, Q, M, L, P, 2) -> (B*T, Q, M, L, P, 2)
            weights.flatten(0, 1),  # (B, T, Q, M, L, P) -> (B*T, Q, M, L, P)
            check_levels=False,
        )  # (B*T, Q, C)
        out = out.view(b, t, q, c).mean(1)  # (B*T, Q, C) -> (B, T, Q, C) -> (B, Q, C)
        return identity + self.dropout(self.output_proj(out))

    def _check_inputs(
        self,
        query: Tensor,
        ref_2d: Tensor,
        bev_levels: FeatureLevels,
        history: Tensor | None,
        history_ref: Tensor | None,
    ) -> None:
        c = self.embed_dims
        if query.dim() != 3 or query.shape[-1] != c:
            raise ValueError(f"query must be (B, Q, C={c}), got shape {tuple(query.shape)}")
        if bev_levels.num_levels != 1 or bev_levels.num_values != query.shape[1]:
            raise ValueError(
                f"bev_levels must be one level of Q = {query.shape[1]} cells (H_bev * W_bev), "
                f"got shapes {bev_levels.shapes}"
            )
        ref_shape = (*query.shape[:2], 2)
        for name, ref in (("ref_2d", ref_2d), ("history_ref", history_ref)):
            if ref is not None and tuple(ref.shape) != ref_shape:
                raise ValueError(f"{name} must be (B, Q, 2)={ref_shape}, got {tuple(ref.shape)}")
        if history is not None and history.shape != query.shape:
            raise ValueError(f"history must be (B, Q, C)={tuple(query.shape)}, got {tuple(history.shape)}")
