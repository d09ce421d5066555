"""The object-query decoder on the BEV: self-attention, 2D multi-scale deformable cross-attention
around each query's BEV reference point and FFN per layer, with iterative refinement of the 3D
reference points (x, y sample the BEV; z is regressed and refined as BEVFormer does). Optionally
(``history_attn``) each layer also samples an earlier frame's camera features around each query's
3D reference point, projected into that frame's images, and (``history_match``) matches what the
current frame's cameras see at each query's point against that frame's cameras around where a
static point would have been, to find where the object was."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmdet.models.layers import inverse_sigmoid
from mmengine.model import BaseModule, constant_init
from torch import Tensor, nn
from torch.nn import functional as F

from bev_deform.geometry import CameraGeometry, FeatureLevels, denormalize_points, moved_back, project_points
from bev_deform.models.attention.msdeform_attn_2d import MSDeformAttn
from bev_deform.models.attention.multiview_deform_attn_3d import MultiViewDeformableAttention3D
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS, VELOCITY_SLOTS
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
        gap: (B,) seconds from that frame to the current one (0 for a sample without it), or None
            where the metainfo has no timestamps; read by ``history_match``'s loss only.
        fine: (B*N, S_f, C_f) that frame's finer backbone level, flattened (the detector's
            ``fine_level``), or None; read by a ``history_match`` with ``level='fine'`` only.
        fine_levels: its one level's geometry, or None.
    """

    value: Tensor
    levels: FeatureLevels
    cams: CameraGeometry
    gap: Tensor | None = None
    fine: Tensor | None = None
    fine_levels: FeatureLevels | None = None


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


def _bilinear_rows(table: Tensor, rows: Tensor, xy: Tensor) -> Tensor:
    """Bilinear reads of feature maps at cell coordinates, zero outside the map.

    Args:
        table: (I, H, W, D) feature maps.
        rows: (K,) long, the map each read is from.
        xy: (K, 2) (x, y) in cell units, cell centres at integers (pixel / stride - 0.5).

    Returns:
        (K, D) the reads.
    """
    _, h, w, d = table.shape
    flat = table.reshape(-1, d)
    base = xy.floor()
    frac = xy - base
    x0, y0 = base[:, 0].long(), base[:, 1].long()
    out = table.new_zeros(rows.shape[0], d)
    for dy in (0, 1):
        wy = frac[:, 1] if dy else 1 - frac[:, 1]
        yi = y0 + dy
        for dx in (0, 1):
            wx = frac[:, 0] if dx else 1 - frac[:, 0]
            xi = x0 + dx
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = (rows * h + yi.clamp(0, h - 1)) * w + xi.clamp(0, w - 1)
            out = out + flat.index_select(0, idx) * (wx * wy * inside)[:, None]
    return out


@MODELS.register_module()
class HistoryMatch(BaseModule):
    """Where was each query's object one history frame ago? A correlation search (the decoder's
    ``history_match``): the current frame's features at the query's 3D reference point are compared
    with the earlier frame's features at a grid of candidate points around it (G x G, spaced over
    +-``radius`` metres in x and y, at the point's height), each projected into the earlier frame's
    images where a static point there would have been seen (the cameras of :class:`PastCameras`).
    Per head, a softmax over the candidates of the cosine similarity of the two (one key projection
    for both frames, so that the same object matches itself from the first step) gives the expected
    displacement (where the object was, in units of ``radius``: minus its motion) and the peak
    probability; an MLP turns them into a residual of the query, which the regression branches read.

    Deformable attention cannot search: its offsets and weights come from the query alone, so its
    points land where the query expects the object, not where the object is. This is a search.

    A read is the mean over the cameras that see the point, bilinear in one camera feature level
    (``level``, the neck's finest by default; ``'fine'``: the backbone's stride-4 level that a
    detector with ``fine_level=True`` keeps beside the neck's, of ``fine_dims`` channels, where a
    walker 30 m away spans two cells instead of less than one). A query whose point no camera
    sees now, or none of whose candidates any earlier camera sees (a sample without an earlier
    frame: all-zero ``lidar2img``), gets its input back exactly. The MLP's last layer starts at
    zero and the parameters come from forked generators (as :class:`HistoryCameraAttention`): a
    model that never gets an earlier frame trains exactly as the one without the module.

    Args:
        embed_dims: channels C of queries and camera features.
        match_dims: channels of the key projection; divisible by ``num_heads``.
        num_heads: heads, each with its own slice of the key channels and its own softmax.
        radius: the candidates span [-radius, radius] metres in x and y around the point.
        grid: G candidates per axis (>= 2), G * G in all.
        level: the camera feature level read (an index of the neck's levels), or ``'fine'``: the
            frames' ``fine`` level (:class:`PastCameras`).
        fine_dims: channels of the ``'fine'`` level (the key projection's input there); ignored
            for a neck level.
        num_levels: camera feature levels L (passed down by the decoder).
        pc_range: (x0, y0, z0, x1, y1, z1) metres (passed down by the decoder).
        loss_weight: weight of :meth:`loss`, the search's own training on the ground truth (the
            head adds it in training with an earlier frame); 0 (default): none, the search learns
            only through the MLP.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        match_dims: int = 64,
        num_heads: int = 4,
        radius: float = 2.0,
        grid: int = 9,
        level: int | str = 0,
        num_levels: int = 4,
        pc_range: Sequence[float] | None = None,
        loss_weight: float = 0.0,
        fine_dims: int | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        if loss_weight < 0:
            raise ValueError(f"history_match's loss_weight must be >= 0, got {loss_weight}")
        if match_dims % num_heads != 0:
            raise ValueError(f"match_dims ({match_dims}) must be divisible by num_heads ({num_heads})")
        if grid < 2 or radius <= 0:
            raise ValueError(
                f"history_match needs grid >= 2 and radius > 0, got grid={grid}, radius={radius}"
            )
        in_dims = embed_dims
        if level == "fine":
            if fine_dims is None or fine_dims < 1:
                raise ValueError(f"history_match with level='fine' needs fine_dims >= 1, got {fine_dims}")
            in_dims = int(fine_dims)
        elif isinstance(level, str) or not 0 <= level < num_levels:
            raise ValueError(f"level must be 'fine' or in [0, num_levels={num_levels}), got {level!r}")
        if pc_range is None or len(pc_range) != 6:
            raise ValueError(f"history_match needs pc_range (x0, y0, z0, x1, y1, z1), got {pc_range}")
        with torch.random.fork_rng(devices=[]):
            super().__init__(init_cfg)
            self.key_proj = nn.Linear(in_dims, match_dims)
            self.embed = nn.Sequential(
                nn.Linear(3 * num_heads, embed_dims), nn.ReLU(inplace=True), nn.Linear(embed_dims, embed_dims)
            )
            constant_init(self.embed[-1], val=0.0, bias=0.0)
        # cosine similarities scaled by exp(logit_scale), 10 at the start (CLIP's parametrisation)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        steps = torch.linspace(-radius, radius, grid)
        gy, gx = torch.meshgrid(steps, steps, indexing="ij")
        self.register_buffer("offsets", torch.stack([gx, gy], -1).view(-1, 2), persistent=False)  # (J, 2)
        self.num_heads, self.radius, self.level, self.grid = num_heads, float(radius), level, grid
        self.pc_range = list(pc_range)
        self.loss_weight = float(loss_weight)

    def init_weights(self) -> None:
        """The default initialisation from a forked generator, the MLP's last layer zero (unless an
        ``init_cfg`` gives the weights)."""
        with torch.random.fork_rng(devices=[]):
            super().init_weights()
        if self.init_cfg is None:
            constant_init(self.embed[-1], val=0.0, bias=0.0)

    @property
    def reads_fine(self) -> bool:
        """Whether the search reads the frames' ``fine`` level."""
        return self.level == "fine"

    def _level(self, frame: PastCameras) -> tuple[Tensor, int, int, int]:
        """The frame's level read: (B*N, H_l * W_l, C) cells, H_l, W_l and the stride."""
        if self.reads_fine:
            if frame.fine is None or frame.fine_levels is None:
                raise ValueError(
                    "history_match with level='fine' reads the frames' fine level, got a frame without "
                    "one. Fix: BEVFormer(fine_level=True) with the backbone's stride-4 stage first in "
                    "its out_indices"
                )
            (h, w), stride = frame.fine_levels.shapes[0], frame.fine_levels.strides[0]
            return frame.fine, h, w, stride
        levels = frame.levels
        if levels.num_levels <= self.level:
            raise ValueError(f"history_match reads level {self.level}, the frame has {levels.num_levels}")
        h, w = levels.shapes[self.level]
        start = sum(hh * ww for hh, ww in levels.shapes[: self.level])
        return frame.value[:, start : start + h * w], h, w, levels.strides[self.level]

    def _keys(self, frame: PastCameras) -> tuple[Tensor, int]:
        """(B*N, H_l, W_l, D) the key projection of the frame's level read, and its stride."""
        cells, h, w, stride = self._level(frame)
        return self.key_proj(cells).view(cells.shape[0], h, w, -1), stride

    def _read(self, frame: PastCameras, points: Tensor) -> tuple[Tensor, Tensor]:
        """Mean over the cameras that see each point of the frame's keys there.

        Args:
            frame: the cameras read.
            points: (B, P, 3) metres in the current LIDAR_TOP frame.

        Returns:
            (B, P, D) reads, zero where no camera sees the point; (B, P) bool, some camera sees it.
        """
        keys, stride = self._keys(frame)
        uv, valid, _ = project_points(points, frame.cams.lidar2img, frame.cams.img_hw)  # (B, N, P, .)
        b, n, p = valid.nonzero(as_tuple=True)
        wh = frame.cams.img_hw.to(uv).flip(-1)  # (B, N, 2) (W, H)
        cells = uv[b, n, p] * wh[b, n] / stride - 0.5  # (K, 2)
        reads = _bilinear_rows(keys, b * valid.shape[1] + n, cells)  # (K, D)
        out = keys.new_zeros(points.shape[0], points.shape[1], keys.shape[-1])
        out = out.index_put((b, p), reads, accumulate=True)
        count = valid.sum(1)  # (B, P)
        return out / count.clamp(min=1)[..., None].to(out), count > 0

    def match(self, ref_points: Tensor, past: PastCameras, present: PastCameras) -> tuple[Tensor, Tensor]:
        """The search.

        Args:
            ref_points: (B, Q, 3) normalised in pc_range (not differentiated).
            past: the earlier frame's cameras (``lidar2img`` from the current LIDAR_TOP frame).
            present: the current frame's cameras.

        Returns:
            prob (B, Q, H, J) each head's softmax over the candidates (``offsets``, (J, 2) metres;
            a candidate no earlier camera sees gets none); usable (B, Q) bool, some camera sees the
            point now and some earlier camera one of its candidates.
        """
        centre = denormalize_points(ref_points.detach(), self.pc_range)  # (B, Q, 3)
        logits, seen_now, seen_then = self._search(centre, past, present)
        prob = logits.masked_fill(~seen_then[:, :, None], -1e4).softmax(-1)
        return prob, seen_now & seen_then.any(-1)

    def _search(
        self, centre: Tensor, past: PastCameras, present: PastCameras
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Logits (B, P, H, J) of the candidates around (B, P, 3) points in metres, whether some
        camera sees each point now (B, P) and each candidate then (B, P, J)."""
        bsz, nq, _ = centre.shape
        offsets = self.offsets.to(centre)
        num_cand = offsets.shape[0]
        cand = centre[:, :, None, :].repeat(1, 1, num_cand, 1)  # (B, Q, J, 3)
        cand[..., :2] = cand[..., :2] + offsets
        now, seen_now = self._read(present, centre)  # (B, Q, D)
        then, seen_then = self._read(past, cand.view(bsz, nq * num_cand, 3))  # (B, Q*J, D)
        h = self.num_heads
        now = F.normalize(now.view(bsz, nq, h, -1), dim=-1)
        then = F.normalize(then.view(bsz, nq, num_cand, h, -1), dim=-1)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * torch.einsum("bqhd,bqjhd->bqhj", now, then)  # (B, Q, H, J)
        return logits, seen_now, seen_then.view(bsz, nq, num_cand)

    def soft_targets(self, disp: Tensor) -> tuple[Tensor, Tensor]:
        """Displacements (P, 2) metres -> (P, J) bilinear weights on the candidate grid (summing to
        1) and (P,) bool, inside the searched square (reachable)."""
        g = self.grid
        pos = (disp + self.radius) / (2 * self.radius) * (g - 1)  # (P, 2) grid units
        inside = ((pos >= 0) & (pos <= g - 1)).all(-1)
        pos = pos.clamp(0, g - 1)
        base = pos.floor().clamp(max=g - 2)
        frac = pos - base
        base = base.long()
        target = disp.new_zeros(disp.shape[0], g * g)
        rows = torch.arange(disp.shape[0], device=disp.device)
        for dy in (0, 1):
            wy = frac[:, 1] if dy else 1 - frac[:, 1]
            for dx in (0, 1):
                wx = frac[:, 0] if dx else 1 - frac[:, 0]
                idx = (base[:, 1] + dy) * g + base[:, 0] + dx
                target = target.index_put((rows, idx), wx * wy, accumulate=True)
        return target, inside

    def loss(
        self, centres: Sequence[Tensor], velocities: Sequence[Tensor], past: PastCameras, present: PastCameras
    ) -> Tensor:
        """Train the search itself: at each ground-truth object's centre, every head's softmax over
        the candidates against where the object was (minus its velocity times ``past.gap``, the
        bilinear weights of :meth:`soft_targets`), cross-entropy averaged over the heads and the
        objects that count: seen now, the place they were inside the square and seen then (an
        object of a sample without an earlier frame never counts). Times ``loss_weight``.

        Args:
            centres: B tensors (n_i, 3), the objects' centres in metres (current LIDAR_TOP).
            velocities: B tensors (n_i, 2), their (vx, vy) m/s in the same frame.
            past, present: as :meth:`match`; ``past.gap`` is needed.

        Returns:
            the scalar loss (zero, still reaching the key projection, where no object counts).
        """
        if past.gap is None:
            raise ValueError(
                "history_match's loss needs the time gap of the earlier frame (past.gap), got None"
            )
        if len(centres) != len(velocities) or len(centres) != past.gap.shape[0]:
            raise ValueError(
                f"centres and velocities need one entry per sample ({past.gap.shape[0]}), got "
                f"{len(centres)} and {len(velocities)}"
            )
        counts = [len(c) for c in centres]
        width = max(max(counts, default=0), 1)
        pts = present.value.new_zeros(len(centres), width, 3)
        disp = present.value.new_zeros(len(centres), width, 2)
        real = torch.zeros(len(centres), width, dtype=torch.bool, device=pts.device)
        for i, (c, v) in enumerate(zip(centres, velocities)):
            pts[i, : len(c)] = c.to(pts)
            disp[i, : len(c)] = -v.to(pts) * past.gap[i].to(pts)
            real[i, : len(c)] = True
        logits, seen_now, seen_then = self._search(pts, past, present)
        logits = logits.float()
        known = torch.isfinite(disp).all(-1)  # a velocity that is not a number counts nothing
        target, inside = self.soft_targets(disp.masked_fill(~known[..., None], 0.0).view(-1, 2).float())
        target = target.view(*disp.shape[:2], -1)  # (B, P, J)
        # every candidate that carries target weight must be seen then
        reachable = (seen_then | (target == 0)).all(-1)
        counted = real & known & seen_now & inside.view(disp.shape[:2]) & reachable  # (B, P)
        logp = logits.masked_fill(~seen_then[:, :, None], -1e4).log_softmax(-1)  # (B, P, H, J)
        ce = -(target[:, :, None] * logp).sum(-1).mean(-1)  # (B, P)
        num = counted.sum()
        if num == 0:
            return logits.sum() * 0.0
        # the same sum as (ce * counted).sum() where every ce is a number
        return self.loss_weight * torch.where(counted, ce, 0.0).sum() / num

    def forward(self, query: Tensor, ref_points: Tensor, past: PastCameras, present: PastCameras) -> Tensor:
        """Add what the search found to the queries.

        Args:
            query: (B, Q, C).
            ref_points, past, present: as :meth:`match`.

        Returns:
            (B, Q, C) the queries plus the MLP of (expected displacement, peak) per head where
            ``usable``; the queries themselves elsewhere.
        """
        prob, usable = self.match(ref_points, past, present)
        disp = torch.einsum("bqhj,jk->bqhk", prob, self.offsets.to(prob) / self.radius)  # (B, Q, H, 2)
        feats = torch.cat([disp.flatten(2), prob.amax(-1)], -1)  # (B, Q, 3H)
        return query + self.embed(feats) * usable[..., None].to(query)


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
        history_match_cfg: optional config of the search for where each query's object was in the
            earlier frame (:class:`HistoryMatch`, the type by default; ``num_levels`` and
            ``pc_range`` passed down by the decoder): a residual after ``history_attn``, run only
            when :meth:`forward` gets ``past`` and ``present``; module ``history_match``. None: none.
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
        history_match_cfg: dict | None = None,
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
        self.history_match = None
        if history_match_cfg is not None:
            match = {"type": HistoryMatch, **history_match_cfg}
            self.history_match = MODELS.build(with_shared(match, "history_match_cfg", embed_dims=embed_dims))

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
        present: PastCameras | None = None,
        past_ref_points: Tensor | None = None,
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
            present: the current frame's cameras for ``history_match`` (which runs only with both).
            past_ref_points: (B, Q, 3) normalised in pc_range, where ``history_attn`` and
                ``history_match`` look in the earlier frame (the decoder's ``motion_compensation``:
                where the object was by its velocity so far), or None: ``ref_points``.

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
        then = ref_points if past_ref_points is None else past_ref_points
        if past is not None and self.history_attn is not None:
            query = self.history_attn(query, past.value, then, past.levels, past.cams, query_pos=query_pos)
        if past is not None and present is not None and self.history_match is not None:
            query = self.history_match(query, then, past, present)
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
        history_match: optional config of the layers' search for where each query's object was
            in the earlier frame (``history_match_cfg`` of :class:`BEVFormerDecoderLayer`, e.g.
            ``dict(radius=2.0, grid=9)``), plus ``layers``: the indices of the layers that search
            (negative from the end; default every layer); None (default): none.
        motion_compensation: where ``history_attn`` and ``history_match`` look in the earlier
            frame from the second layer on: True: each query's refined reference point moved back
            by the previous layer's velocity times the sample's time gap (``PastCameras.gap``):
            where the object was if it kept that velocity (Sparse4D's and StreamPETR's
            motion-compensated temporal reads), so that a car 12 m further on than 2 s ago is
            looked for where it was, not where it is; the first layer (no velocity yet), a sample
            without an earlier frame and the layers' BEV cross-attention read as without it. False
            (default): at the reference point (where a static object was).
        num_levels: camera feature levels L (passed down by the transformer; read by ``history_attn``
            and ``history_match``).
        pc_range: (x0, y0, z0, x1, y1, z1) metres (passed down; read by ``history_attn`` and
            ``history_match``).
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        num_layers: int = 6,
        layer_cfg: dict | None = None,
        embed_dims: int = 256,
        look_forward_twice: bool = False,
        history_attn: dict | None = None,
        history_match: dict | None = None,
        motion_compensation: bool = False,
        num_levels: int = 4,
        pc_range: Sequence[float] | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if motion_compensation and history_attn is None and history_match is None:
            raise ValueError(
                "motion_compensation moves where history_attn and history_match look; the decoder has "
                "neither. Fix: give it history_attn or history_match, or motion_compensation=False"
            )
        shared = dict(embed_dims=embed_dims)
        match_layers = set(range(num_layers))
        if history_match is not None:
            history_match = dict(history_match)
            chosen = history_match.pop("layers", None)
            if chosen is not None:
                if not chosen or any(not -num_layers <= i < num_layers for i in chosen):
                    raise ValueError(
                        f"history_match['layers'] must be layer indices in [-{num_layers}, {num_layers}), "
                        f"got {chosen}"
                    )
                match_layers = {i % num_layers for i in chosen}
        for name, cfg in (("history_attn", history_attn), ("history_match", history_match)):
            if cfg is None:
                continue
            if pc_range is None:
                raise ValueError(f"{name} needs pc_range (passed down by BEVFormerTransformer), got None")
            shared[f"{name}_cfg"] = with_shared(cfg, name, num_levels=num_levels, pc_range=list(pc_range))
        layer = with_shared({"type": BEVFormerDecoderLayer, **(layer_cfg or {})}, "layer_cfg", **shared)
        plain = {k: v for k, v in layer.items() if k != "history_match_cfg"}
        self.layers = nn.ModuleList(
            [MODELS.build(copy.deepcopy(layer if i in match_layers else plain)) for i in range(num_layers)]
        )
        self.num_layers, self.embed_dims = num_layers, embed_dims
        self.look_forward_twice = look_forward_twice
        self.motion_compensation = bool(motion_compensation)
        self.pc_range = None if pc_range is None else [float(v) for v in pc_range]
        self.reads_past = history_attn is not None or history_match is not None
        self.reads_present = history_match is not None
        # a search of the frames' fine level (the detector's fine_level)
        self.reads_fine = any(
            layer.history_match is not None and layer.history_match.reads_fine for layer in self.layers
        )

    def match_losses(
        self, batch_gt_instances_3d: Sequence, past: PastCameras, present: PastCameras
    ) -> dict[str, Tensor]:
        """The searching layers' :meth:`HistoryMatch.loss` at the ground-truth boxes' centres
        (``bboxes_3d``, box_dim 9: gravity centres and velocities), for those with a
        ``loss_weight``: ``loss_match`` for the last layer, ``d{i}.loss_match`` for the others."""
        centres = [g.bboxes_3d.gravity_center for g in batch_gt_instances_3d]
        velocities = [g.bboxes_3d.tensor[:, 7:9] for g in batch_gt_instances_3d]
        losses = {}
        for i, layer in enumerate(self.layers):
            match = layer.history_match
            if match is not None and match.loss_weight > 0:
                prefix = "" if i == self.num_layers - 1 else f"d{i}."
                losses[f"{prefix}loss_match"] = match.loss(centres, velocities, past, present)
        return losses

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
        present: PastCameras | None = None,
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
            past: an earlier frame's cameras for the layers' ``history_attn`` and
                ``history_match``, or None.
            present: the current frame's cameras for ``history_match``, or None.

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
        compensate = self.motion_compensation and past is not None
        if compensate and past.gap is None:
            raise ValueError(
                "motion_compensation needs the time gap of the earlier frame (past.gap), got None: the "
                "metainfo has no timestamps"
            )
        past_ref = None  # the first layer looks where a static object was
        for layer, reg_branch in zip(self.layers, reg_branches):
            refs.append(ref_for_loss if self.look_forward_twice else ref_points)
            query = layer(
                query,
                query_pos,
                bev,
                ref_points,
                bev_levels,
                attn_mask,
                key_padding_mask,
                past,
                present,
                past_ref,
            )
            hidden.append(query)
            raw_codes.append(reg_branch(query))  # (B, Q, code_size)
            delta = raw_codes[-1][..., list(CENTER_SLOTS)]  # (B, Q, 3) centre logits
            ref_for_loss = (inverse_sigmoid(ref_points) + delta).sigmoid()
            ref_points = ref_for_loss.detach()
            if compensate:
                velocity = raw_codes[-1][..., list(VELOCITY_SLOTS)].detach()  # (B, Q, 2) m/s
                past_ref = moved_back(ref_points, velocity, past.gap, self.pc_range)
        return torch.stack(hidden), torch.stack(refs), torch.stack(raw_codes)
