"""3D contrastive denoising queries (DINO's CDN on 3D boxes, as Sparse4D v3 and StreamPETR adapt it).

In training, every ground-truth box of a sample gives, in each of ``num_groups`` groups, a
*positive* query (its box with noise inside the noise scale, to be reconstructed) and a *negative*
query (noise between one and two noise scales, to be classified as background). The queries sit
after the head's matching queries, ``[matching (Q) | group 0 | group 1 | ...]``, each group laid out
``[positives (n) | negatives (n)]`` with ``n`` the largest number of boxes of a sample in the batch
(mmdet's ``CdnQueryGenerator`` layout); a sample's slots beyond its own boxes are padding.

Noise, per box, with ``r`` drawn per component with ``|r|`` uniform in [0, 1) for positives and in
[1, 2) for negatives, random sign, times ``box_noise_scale``:

- centre: ``r`` times half the box's size along its own axes (length along the heading, width
  across it, height), so a positive centre stays inside the box scaled by the noise scale;
- log sizes: ``r * LOG_SIZE_NOISE`` each;
- yaw: ``r * YAW_NOISE``;
- label: replaced by a uniformly drawn class with probability ``label_noise_ratio``.

A denoising query's reference point is its noised centre normalised in pc_range, its content the
embedding of its (noised) label, and its positional query an MLP of its noised box; its target is
the box it was made from (positives) or background (negatives). The self-attention mask keeps the
matching queries from seeing any denoising query and each group from seeing the other groups
(:func:`denoising_attn_mask`); padding slots are hidden from every query by the key padding mask.
With the decoder's ``dynamic_query_pos`` every positional query, these included, is re-encoded from
its reference point, which replaces the box encoding: only the centre and label noise then reach
the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from bev_deform.geometry import normalize_points
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS, CODE_SIZE
from bev_deform.registry import MODELS

LOG_SIZE_NOISE = 0.5  # log-size noise of one noise scale: sizes within a factor e^0.5 ~ 1.65
YAW_NOISE = math.pi / 4  # yaw noise of one noise scale, radians
SIZE_SLOTS = (3, 2, 5)  # log l, log w, log h in the code (the box's own x, y, z axes)
BOX_FEATURES = 8  # what the positional MLP reads: normalised centre (3), log w, l, h (3), sin, cos


class DenoisingQueries(NamedTuple):
    """The denoising queries of one training batch and their targets (D = groups * 2 * n).

    Attributes:
        query: (B, D, C) content queries (label embeddings).
        query_pos: (B, D, C) positional queries (MLP of the noised boxes).
        ref_points: (B, D, 3) noised centres normalised in pc_range, clamped to [0, 1].
        attn_mask: (Q + D, Q + D) bool self-attention mask over ``[matching | denoising]``, True
            where a query must not see a key (:func:`denoising_attn_mask`).
        key_padding_mask: (B, Q + D) bool, True for the padding slots.
        labels: (B, D) long targets: the box's label for positives, K (background) for negatives
            and padding.
        label_weights: (B, D) float, 1 for real queries, 0 for padding.
        code_targets: (B, D, 10) the box's code for positives, 0 elsewhere.
        code_weights: (B, D, 10) 1 for real positives, 0 elsewhere.
    """

    query: Tensor
    query_pos: Tensor
    ref_points: Tensor
    attn_mask: Tensor
    key_padding_mask: Tensor
    labels: Tensor
    label_weights: Tensor
    code_targets: Tensor
    code_weights: Tensor

    @property
    def num_queries(self) -> int:
        """D."""
        return self.query.shape[1]


def denoising_attn_mask(
    num_matching: int, num_groups: int, group_size: int, device: torch.device | str = "cpu"
) -> Tensor:
    """The self-attention mask over ``[matching (Q) | group 0 | ... | group G-1]``, each group
    ``group_size`` queries long.

    Returns:
        (Q + G * group_size, Q + G * group_size) bool, True where query i (row) must not see key j:
        matching queries never see a denoising query, a denoising query sees the matching queries
        and its own group only.
    """
    if min(num_matching, num_groups, group_size) < 1:
        raise ValueError(
            "num_matching, num_groups and group_size must be >= 1, "
            f"got {num_matching}, {num_groups}, {group_size}"
        )
    q, d = num_matching, num_groups * group_size
    mask = torch.zeros(q + d, q + d, dtype=torch.bool, device=device)
    mask[:q, q:] = True
    group = torch.arange(num_groups, device=device).repeat_interleave(group_size)  # (D,)
    mask[q:, q:] = group[:, None] != group[None, :]  # (D, 1) != (1, D)
    return mask


@MODELS.register_module()
class Denoising3D(BaseModule):
    """Builds the 3D contrastive denoising queries of a training batch (see the module docstring).

    Config dict (num_classes, embed_dims and pc_range are passed down by the head)::

        dict(type='Denoising3D', num_groups=5, box_noise_scale=1.0, label_noise_ratio=0.25,
             loss_weight=1.0)

    Args:
        num_classes: K classes.
        embed_dims: channels C.
        pc_range: (x0, y0, z0, x1, y1, z1) metres.
        num_groups: denoising groups G.
        box_noise_scale: the noise scale (1.0 as DINO); 0 gives noiseless positives and negatives.
        label_noise_ratio: probability that a query's label is replaced by a random class (0.25
            as mmdet's DINO, whose ``label_noise_scale=0.5`` flips with half that probability).
        loss_weight: factor of the denoising losses, read by the head.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dims: int,
        pc_range: Sequence[float],
        num_groups: int = 5,
        box_noise_scale: float = 1.0,
        label_noise_ratio: float = 0.25,
        loss_weight: float = 1.0,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        if box_noise_scale < 0 or not 0 <= label_noise_ratio <= 1:
            raise ValueError(
                "box_noise_scale must be >= 0 and label_noise_ratio in [0, 1], got "
                f"{box_noise_scale} and {label_noise_ratio}"
            )
        self.num_classes, self.embed_dims, self.pc_range = num_classes, embed_dims, list(pc_range)
        self.num_groups, self.box_noise_scale = num_groups, float(box_noise_scale)
        self.label_noise_ratio, self.loss_weight = float(label_noise_ratio), float(loss_weight)
        self.label_embedding = nn.Embedding(num_classes, embed_dims)
        self.box_encoder = nn.Sequential(
            nn.Linear(BOX_FEATURES, embed_dims),
            nn.LayerNorm(embed_dims),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims),
        )

    def forward(
        self, gt_codes: Sequence[Tensor], gt_labels: Sequence[Tensor], num_matching: int
    ) -> DenoisingQueries | None:
        """Denoising queries for a batch.

        Args:
            gt_codes: B tensors (G_b, 10), each sample's boxes as the head's code (centre in metres).
            gt_labels: B tensors (G_b,) long.
            num_matching: Q, the head's matching queries (for the attention mask).

        Returns:
            The queries and targets, or None when no sample of the batch has a box.
        """
        if len(gt_codes) != len(gt_labels) or len(gt_codes) == 0:
            raise ValueError(
                "gt_codes and gt_labels must have one entry per sample, "
                f"got {len(gt_codes)} and {len(gt_labels)}"
            )
        n = max(len(c) for c in gt_codes)
        if n == 0:
            return None
        b, g = len(gt_codes), self.num_groups
        codes, labels, valid = self._pad(gt_codes, gt_labels, n)  # (B, n, 10), (B, n), (B, n)
        # (B, n, ...) -> (B, G, 2, n, ...): groups x [positives, negatives] x boxes
        codes = codes[:, None, None].expand(b, g, 2, n, CODE_SIZE)
        labels, valid = (t[:, None, None].expand(b, g, 2, n) for t in (labels, valid))
        negative = torch.arange(2, device=codes.device).view(1, 1, 2, 1, 1)  # 0 positives, 1 negatives
        sign = torch.randint(0, 2, (b, g, 2, n, 7), device=codes.device) * 2 - 1
        r = (torch.rand(b, g, 2, n, 7, device=codes.device) + negative) * sign * self.box_noise_scale
        box = self._noised_boxes(codes, r)  # (B, G, 2, n, 8)
        flip = torch.rand(b, g, 2, n, device=codes.device) < self.label_noise_ratio
        noised_labels = torch.where(flip, torch.randint_like(labels, self.num_classes), labels)
        noised_labels = torch.where(valid, noised_labels, 0)  # padding: any class, its query is zeroed
        is_pos = (negative[..., 0] == 0) & valid  # (B, G, 2, n)
        # (B, G, 2, n, ...) -> (B, D, ...) in the layout [group][positives | negatives][box]
        keep = valid.reshape(b, -1, 1).to(codes.dtype)  # (B, D, 1)
        targets = torch.where(is_pos, labels, self.num_classes)
        return DenoisingQueries(
            query=self.label_embedding(noised_labels.reshape(b, -1)) * keep,
            query_pos=self.box_encoder(box.reshape(b, -1, BOX_FEATURES)) * keep,
            ref_points=box[..., :3].reshape(b, -1, 3),
            attn_mask=denoising_attn_mask(num_matching, g, 2 * n, codes.device),
            key_padding_mask=torch.cat([valid.new_zeros(b, num_matching), ~valid.reshape(b, -1)], 1),
            labels=targets.reshape(b, -1),
            label_weights=keep[..., 0],
            code_targets=(codes * is_pos[..., None]).reshape(b, -1, CODE_SIZE),
            code_weights=is_pos[..., None].expand_as(codes).reshape(b, -1, CODE_SIZE).to(codes.dtype),
        )

    def _pad(
        self, gt_codes: Sequence[Tensor], gt_labels: Sequence[Tensor], n: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """B samples' boxes padded to n: codes (B, n, 10), labels (B, n) (K in the padding), valid (B, n)."""
        like = next(c for c in gt_codes if len(c))
        b = len(gt_codes)
        codes = like.new_zeros(b, n, CODE_SIZE)
        labels = torch.full((b, n), self.num_classes, dtype=torch.long, device=like.device)
        valid = torch.zeros(b, n, dtype=torch.bool, device=like.device)
        for i, (c, lab) in enumerate(zip(gt_codes, gt_labels)):
            if c.dim() != 2 or c.shape[1] != CODE_SIZE or lab.shape != c.shape[:1]:
                raise ValueError(
                    f"gt_codes[{i}] must be (G, {CODE_SIZE}) with gt_labels[{i}] (G,), got "
                    f"{tuple(c.shape)} and {tuple(lab.shape)}"
                )
            codes[i, : len(c)] = c.to(like)
            labels[i, : len(c)] = lab.to(like.device)
            valid[i, : len(c)] = True
        return codes, labels, valid

    def _noised_boxes(self, codes: Tensor, r: Tensor) -> Tensor:
        """(..., 10) codes and (..., 7) noise in noise scales (centre along the box's l, w, h axes,
        log l, w, h, yaw) -> the noised boxes as the MLP's features (..., 8): centre normalised in
        pc_range and clamped to [0, 1], log w, log l, log h, sin yaw, cos yaw."""
        yaw = torch.atan2(codes[..., 6], codes[..., 7])
        half = codes[..., list(SIZE_SLOTS)].exp() / 2  # (..., 3) l / 2, w / 2, h / 2
        along, across, up = (r[..., :3] * half).unbind(-1)  # offsets in the box's frame
        cos, sin = yaw.cos(), yaw.sin()
        offset = torch.stack([cos * along - sin * across, sin * along + cos * across, up], -1)  # (..., 3)
        centre = codes[..., list(CENTER_SLOTS)] + offset
        log_wlh = codes[..., [2, 3, 5]] + r[..., [4, 3, 5]] * LOG_SIZE_NOISE  # noise of w, l, h
        yaw = yaw + r[..., 6] * YAW_NOISE
        ref = normalize_points(centre, self.pc_range).clamp(0.0, 1.0)
        return torch.cat([ref, log_wlh, yaw.sin()[..., None], yaw.cos()[..., None]], -1)
