"""Object queries carried from an earlier frame (StreamPETR's and Sparse4D's propagation, on the
BEV decoder): the earlier frame's top-k decoded queries, moved into the current frame by the
exact ego motion from the poses, start the last k matching queries of the current frame, and the
displacement of each such query's box since then, over the time gap, is blended into its
velocity.

The query is its own association: it was decoded as one object in the earlier frame, starts
where that object was and is refined by the current frame's decoder to where the object is now,
so ``(now - then) / gap`` is a velocity measured on one object, with no nearest-neighbour match
to break on a crowd of walkers. That is the idea; on the temporal CPU config (1800 iterations,
session 27) a carried query did not stay on its object and the gate closed (the config's
docstring has the rows and the probe).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from bev_deform.geometry import normalize_points
from bev_deform.models.layers.history_track import motion_since
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS, VELOCITY_SLOTS, with_velocity
from bev_deform.registry import MODELS


class PastQueries(NamedTuple):
    """An earlier frame's top-k decoded queries, in the current frame.

    Attributes:
        hidden: (B, K, C) their last decoder layer's outputs.
        centres: (B, K, 3) their box centres moved into the current LIDAR_TOP frame, metres.
        gap: (B,) seconds from that frame to the current one (1 where invalid).
        valid: (B,) bool, whether the sample has that frame (the others keep their learned queries).
    """

    hidden: Tensor
    centres: Tensor
    gap: Tensor
    valid: Tensor


def past_queries(
    cls_logits: Tensor,
    bbox_preds: Tensor,
    hidden: Tensor,
    metas: Sequence[dict | None],
    cur_metas: Sequence[dict],
    top_k: int,
) -> PastQueries:
    """Build :class:`PastQueries` from one decoded earlier frame.

    Args:
        cls_logits: (B, Q, C) the earlier frame's last-layer logits.
        bbox_preds: (B, Q, 10) its last-layer codes (centre in that frame's LIDAR_TOP metres).
        hidden: (B, Q, C') its last-layer query outputs.
        metas: per sample the earlier frame's metainfo (``lidar2global``, ``timestamp``), None
            where the sample does not continue from it.
        cur_metas: the current frame's metainfo per sample (``lidar2global``, ``timestamp``).
        top_k: K queries kept (by their highest class probability).
    """
    bsz, nq = cls_logits.shape[:2]
    if bbox_preds.shape[:2] != (bsz, nq) or hidden.shape[:2] != (bsz, nq):
        raise ValueError(
            f"past_queries needs (B, Q, .) logits, codes and query outputs of one shape, got "
            f"{tuple(cls_logits.shape)}, {tuple(bbox_preds.shape)} and {tuple(hidden.shape)}"
        )
    if len(metas) != bsz or len(cur_metas) != bsz:
        raise ValueError(
            f"past_queries needs {bsz} earlier and current metas, got {len(metas)} and {len(cur_metas)}"
        )
    if not 1 <= top_k <= nq:
        raise ValueError(f"top_k must be in [1, {nq}] (the earlier frame's queries), got {top_k}")
    idx = cls_logits.sigmoid().amax(-1).topk(top_k, dim=-1).indices  # (B, K)
    rows = torch.arange(bsz, device=idx.device)[:, None]
    kept = hidden[rows, idx]  # (B, K, C')
    centres = bbox_preds[rows, idx][..., list(CENTER_SLOTS)].clone()  # (B, K, 3)
    gap = bbox_preds.new_ones(bsz)
    valid = torch.zeros(bsz, dtype=torch.bool, device=idx.device)
    for b, (meta, cur) in enumerate(zip(metas, cur_metas)):
        since = motion_since(meta, cur, centres)
        if since is None:
            continue
        motion, dt = since
        centres[b] = centres[b] @ motion[:3, :3].T + motion[:3, 3]
        gap[b], valid[b] = dt, True
    return PastQueries(kept, centres, gap, valid)


@MODELS.register_module()
class QueryPropagation(nn.Module):
    """The earlier frame's queries as the last ``top_k`` matching queries, and their displacement
    in the velocity.

    A propagated query's content is an MLP of its earlier output, its position an MLP of its moved
    centre (normalised in pc_range), and that centre its initial reference point. After the
    decoder, each propagated query's velocity (in every layer) becomes ``v + g (d / gap - v)``
    with ``d`` the (x, y) displacement of its box centre from the moved centre (detached: the
    velocity does not move the box) and ``g`` a gate read from its output (a linear layer, zero
    weights: 0.5 for every query at first). Samples without the earlier frame keep their learned
    queries and velocities.

    Args:
        embed_dims: C of the queries.
        top_k: K queries carried (they replace the last K of the head's matching queries).
        pc_range: the head's point cloud range.
    """

    def __init__(self, embed_dims: int, pc_range: Sequence[float], top_k: int = 100) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.embed_dims, self.top_k = embed_dims, int(top_k)
        self.pc_range = [float(v) for v in pc_range]
        c = embed_dims
        self.content = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, c), nn.LayerNorm(c))
        self.position = nn.Sequential(nn.Linear(3, c), nn.ReLU(inplace=True), nn.Linear(c, c))
        self.gate = nn.Linear(c, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def _check(self, past: PastQueries, bsz: int, nq: int) -> None:
        if self.top_k > nq:
            raise ValueError(f"query_propagation.top_k={self.top_k} must not exceed the head's {nq} queries")
        shape = (bsz, self.top_k, self.embed_dims)
        if tuple(past.hidden.shape) != shape or tuple(past.centres.shape) != (bsz, self.top_k, 3):
            raise ValueError(
                f"past queries must be hidden {shape} and centres {(bsz, self.top_k, 3)}, got "
                f"{tuple(past.hidden.shape)} and {tuple(past.centres.shape)}"
            )

    def queries(
        self, query: Tensor, query_pos: Tensor, ref_points: Tensor, past: PastQueries
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(B, Q, C) content, (B, Q, C) position, (B, Q, 3) normalised reference points of the
        matching queries -> the same with the last K replaced, for the samples with the frame."""
        bsz, nq = query.shape[:2]
        self._check(past, bsz, nq)
        k = self.top_k
        refs = normalize_points(past.centres.to(ref_points.dtype), self.pc_range).clamp(0.0, 1.0)
        content = self.content(past.hidden.to(query.dtype))
        pos = self.position(refs.to(query_pos.dtype))
        keep = past.valid[:, None, None]  # (B, 1, 1)

        def swap(x: Tensor, new: Tensor) -> Tensor:
            return torch.cat([x[:, : nq - k], torch.where(keep, new, x[:, nq - k :])], 1)

        return swap(query, content), swap(query_pos, pos), swap(ref_points, refs)

    def velocity(self, hidden: Tensor, bbox_preds: Tensor, past: PastQueries) -> Tensor:
        """(num_layers, B, Q', C) decoder outputs and (num_layers, B, Q, 10) codes of the matching
        queries -> the codes with the propagated queries' velocities blended (see the class)."""
        nq, k = bbox_preds.shape[2], self.top_k
        h = hidden[:, :, nq - k : nq]  # (num_layers, B, K, C)
        box = bbox_preds[:, :, nq - k :]  # (num_layers, B, K, 10)
        vel = box[..., list(VELOCITY_SLOTS)]
        disp = box[..., :2].detach() - past.centres[None, ..., :2].to(box.dtype)
        measured = disp / past.gap[None, :, None, None].to(box.dtype)
        g = self.gate(h).sigmoid() * past.valid[None, :, None, None].to(box.dtype)
        vel = vel + g * (measured - vel)
        box = with_velocity(box, vel)
        return torch.cat([bbox_preds[:, :, : nq - k], box], 2)
