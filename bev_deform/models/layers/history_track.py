"""Velocity from the objects' own past: each query's current centre associated with the detections
the same model made in earlier frames, and the displacement since then blended into its velocity.

The detections of a frame 1 s or 2 s before, moved into the current LIDAR_TOP frame by the exact
ego motion from the poses, say where things were; where a query's object stands now minus where
it stood then, over the time gap, is its velocity, as a tracker would measure it, but associated
softly (no threshold, no track to break at a missed detection) and blended in by a learned gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bev_deform.geometry import lidar_motion, meta_matrix
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS, VELOCITY_SLOTS
from bev_deform.registry import MODELS


class PastDetections(NamedTuple):
    """Earlier frames' detections in the current frame, F frames per sample, most recent first.

    Attributes:
        centres: (B, F, K, 2) their (x, y) in the current LIDAR_TOP frame, metres.
        forecast: (B, F, K, 2) where each would stand now by its own predicted velocity.
        probs: (B, F, K, C) their class probabilities.
        gap: (B, F) seconds from each frame to the current one (1 where invalid).
        valid: (B, F) bool, whether the sample has that frame.
    """

    centres: Tensor
    forecast: Tensor
    probs: Tensor
    gap: Tensor
    valid: Tensor


def motion_since(meta: dict | None, cur: dict, like: Tensor) -> tuple[Tensor, float] | None:
    """The (4, 4) transform from an earlier frame's LIDAR_TOP (metainfo ``meta``: ``lidar2global``,
    ``timestamp``) to the current one's (``cur``), computed in float64 and returned on ``like``'s
    device and dtype, and the time gap, seconds; None where there is no earlier frame (``meta``
    None) or it is not earlier."""
    if meta is None:
        return None
    dt = float(cur["timestamp"]) - float(meta["timestamp"])
    if dt <= 0:
        return None
    motion = lidar_motion(meta_matrix(meta), meta_matrix(cur))
    return motion.to(device=like.device, dtype=like.dtype), dt


def past_detections(
    frames: Sequence[tuple[Tensor, Tensor, Sequence[dict | None]]],
    cur_metas: Sequence[dict],
    num_frames: int,
    top_k: int,
) -> PastDetections:
    """Build :class:`PastDetections` from decoded earlier frames.

    Args:
        frames: most recent first, each ``(cls_logits (B, Q, C), bbox_preds (B, Q, 10), metas)``:
            the last decoder layer's outputs for one earlier frame (codes with the centre in that
            frame's LIDAR_TOP metres) and per sample its metainfo (``lidar2global``,
            ``timestamp``), None where the sample does not have that frame.
        cur_metas: the current frame's metainfo per sample (``lidar2global``, ``timestamp``).
        num_frames: F; frames beyond it are dropped, missing ones are invalid.
        top_k: K detections kept per frame (by their highest class probability).
    """
    if not frames:
        raise ValueError("past_detections needs at least one decoded earlier frame, got none")
    like_cls, like_box, _ = frames[0]
    bsz, nq, ncls = like_cls.shape
    k = min(top_k, nq)
    dev = like_box.device
    centres = like_box.new_zeros(bsz, num_frames, k, 2)
    forecast = like_box.new_zeros(bsz, num_frames, k, 2)
    probs = like_box.new_zeros(bsz, num_frames, k, ncls)
    gap = like_box.new_ones(bsz, num_frames)
    valid = torch.zeros(bsz, num_frames, dtype=torch.bool, device=dev)
    for f, (cls_logits, bbox, metas) in enumerate(frames[:num_frames]):
        if len(metas) != bsz or cls_logits.shape != (bsz, nq, ncls) or bbox.shape[:2] != (bsz, nq):
            raise ValueError(
                f"every earlier frame needs (B, Q, C) logits, (B, Q, 10) codes and B metas like the first "
                f"{(bsz, nq, ncls)}, got {tuple(cls_logits.shape)}, {tuple(bbox.shape)} and {len(metas)}"
            )
        p = cls_logits.sigmoid()
        idx = p.amax(-1).topk(k, dim=-1).indices  # (B, K)
        for b, meta in enumerate(metas):
            since = motion_since(meta, cur_metas[b], bbox)
            if since is None:
                continue
            motion, dt = since
            box = bbox[b, idx[b]]  # (K, 10)
            xyz = torch.cat([box[:, list(CENTER_SLOTS)], box.new_ones(k, 1)], dim=-1)  # (K, 4) homogeneous
            xy = (xyz @ motion.T)[:, :2]
            vel = box[:, list(VELOCITY_SLOTS)] @ motion[:2, :2].T  # velocities rotate with the axes
            centres[b, f], forecast[b, f] = xy, xy + vel * dt
            probs[b, f] = p[b, idx[b]]
            gap[b, f], valid[b, f] = dt, True
    return PastDetections(centres, forecast, probs, gap, valid)


@MODELS.register_module()
class HistoryTrack(nn.Module):
    """Each query's velocity blended with the displacement from its object's earlier detections.

    For each earlier frame f (of :class:`PastDetections`) a query at (x, y) now with class
    probabilities s weighs the frame's K detections by ``-|forecast_k - (x, y)|^2 / (2 sigma^2) +
    log(s . p_k + eps)`` in a softmax with one more "none" entry (a learned logit); its velocity
    from that frame is the weighted ``((x, y) - centre_k) / gap_f`` and its confidence the weight
    not on "none". A gate (an MLP of every frame's velocity, confidence and speed, the class
    probabilities and the head's speed, its last layer zero: the head's velocity unchanged at
    initialisation; nothing from a frame the sample lacks) mixes them in:
    ``v = v_head + sum_f a_f (v_f - v_head)``.

    One learned ``sigma`` (metres) for every class and gap favours what the earlier detection's own
    velocity already forecasts well: a walker predicted standing, 2.5 m on 2 s later, stays with
    "none". With ``speed_sigma`` the scale is per class and grows with the gap, ``sigma_c * gap``
    (``sigma_c`` in m/s, one learned per class, all starting at ``speed_sigma``; a query's
    ``sigma^2`` is the mean of the ``sigma_c^2`` weighted by its class probabilities). With
    ``conditional`` a frame's velocity is the displacement given an association, the weighted
    displacement divided by the weight not on "none" (at least ``MIN_CONFIDENCE``), instead of
    shrunk towards zero by it; the confidence still goes to the gate.

    Args:
        num_classes: C.
        num_frames: F earlier frames read (most recent first).
        top_k: K detections kept per earlier frame.
        sigma: initial association scale, metres (learned); not used with ``speed_sigma``.
        hidden: the gate's hidden width.
        speed_sigma: initial per-class association scale per second of gap, m/s (learned), or
            None for the one ``sigma``.
        conditional: the velocity given an association (see above).
    """

    MIN_CONFIDENCE = 0.05  # below it, a conditional velocity shrinks towards zero with the confidence

    def __init__(
        self,
        num_classes: int,
        num_frames: int = 2,
        top_k: int = 100,
        sigma: float = 1.5,
        hidden: int = 64,
        speed_sigma: float | None = None,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        if num_frames < 1 or top_k < 1 or sigma <= 0 or hidden < 1:
            raise ValueError(
                f"num_frames, top_k and hidden must be >= 1 and sigma > 0, got {num_frames}, {top_k}, "
                f"{hidden} and {sigma}"
            )
        if speed_sigma is not None and not speed_sigma > 0:
            raise ValueError(f"speed_sigma must be > 0 m/s (or None for one sigma), got {speed_sigma}")
        self.num_classes, self.num_frames, self.top_k = num_classes, num_frames, top_k
        self.conditional = conditional
        if speed_sigma is None:
            self.log_sigma = nn.Parameter(torch.tensor(float(np.log(sigma))))
            self.log_speed_sigma = None
        else:
            self.log_speed_sigma = nn.Parameter(torch.full((num_classes,), float(np.log(speed_sigma))))
        self.none_logit = nn.Parameter(torch.tensor(-2.0))
        self.gate = nn.Sequential(
            nn.Linear(num_frames * 4 + num_classes + 1, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_frames),
        )
        nn.init.zeros_(self.gate[2].weight)
        nn.init.zeros_(self.gate[2].bias)

    def associate(self, xy: Tensor, probs: Tensor, past: PastDetections) -> tuple[Tensor, Tensor]:
        """(B, Q, 2) current centres, (B, Q, C) class probabilities -> per frame velocities
        (B, Q, F, 2) and confidences (B, Q, F) (zero for a frame the sample does not have)."""
        d2 = (past.forecast[:, None] - xy[:, :, None, None]).square().sum(-1)  # (B, Q, F, K)
        affinity = torch.einsum("bqc,bfkc->bqfk", probs, past.probs).clamp_min(1e-6).log()
        logits = -d2 / (2 * self.sigma2(probs, past.gap)) + affinity
        none = self.none_logit.expand(*logits.shape[:-1], 1)
        w = torch.cat([logits, none], dim=-1).softmax(-1)  # (B, Q, F, K + 1)
        disp = xy[:, :, None, None] - past.centres[:, None]  # (B, Q, F, K, 2)
        conf = 1 - w[..., -1]  # (B, Q, F)
        vel = (w[..., :-1, None] * disp).sum(-2) / past.gap[:, None, :, None]
        if self.conditional:
            vel = vel / conf.clamp_min(self.MIN_CONFIDENCE)[..., None]
        valid = past.valid[:, None].to(vel)  # (B, 1, F)
        return vel * valid[..., None], conf * valid

    def sigma2(self, probs: Tensor, gap: Tensor) -> Tensor:
        """The association variance, m^2: the one learned ``sigma^2`` (a scalar), or with
        ``speed_sigma`` per query and frame, (B, Q, F, 1), from (B, Q, C) class probabilities and
        (B, F) gaps, seconds."""
        if self.log_speed_sigma is None:
            return (2 * self.log_sigma).exp()
        weights = probs.clamp_min(1e-6)
        weights = weights / weights.sum(-1, keepdim=True)
        per_second = weights @ (2 * self.log_speed_sigma).exp()  # (B, Q), (m/s)^2
        return (per_second[:, :, None] * gap[:, None].square())[..., None]

    def forward(self, xy: Tensor, probs: Tensor, velocity: Tensor, past: PastDetections) -> Tensor:
        """(B, Q, 2) centres, (B, Q, C) class probabilities (both as the caller wants them
        detached), (B, Q, 2) the head's velocities -> (B, Q, 2) blended velocities."""
        if past.centres.shape[1] != self.num_frames or probs.shape[-1] != self.num_classes:
            raise ValueError(
                f"history_track reads {self.num_frames} earlier frames of {self.num_classes} classes, got "
                f"{past.centres.shape[1]} frames and {probs.shape[-1]} classes"
            )
        vel, conf = self.associate(xy, probs, past)
        speed = vel.norm(dim=-1)  # (B, Q, F)
        head_speed = velocity.detach().norm(dim=-1, keepdim=True)
        feats = torch.cat([vel.flatten(2), conf, speed, probs, head_speed], dim=-1)
        a = self.gate(feats) * past.valid[:, None].to(vel)  # (B, Q, F): nothing from a missing frame
        return velocity + (a[..., None] * (vel - velocity[:, :, None])).sum(2)
