"""Test-time velocity from a detection's own earlier detections: constant-velocity voting.

A detector's video test sees each frame's detections; an object moving at constant velocity v was
at ``p - v * tau`` a time ``tau`` earlier, where the earlier frames' detections of its class should
be. :class:`VelocityRefiner` keeps the last ``num_frames`` frames' detections in the global frame
and, for every detection of the classes it refines, scores velocity hypotheses on a grid around the
head's own velocity by how close each earlier frame's nearest detection lies to where the
hypothesis puts the object (score-weighted Gaussian, ``sigma`` metres), takes the best one where
its support reaches ``min_support`` and beats the head's velocity by ``min_gain``, and refines it
by the least-squares slope of the supporting detections (the object's track). Nothing is learned;
a frame that does not continue the sequence (another scene, a time gap) starts it again.

The walkers of the synthetic data move 0.45-0.8 m per frame against a 0.9 m position error: one
earlier frame cannot tell their direction, eight (4 s) can (``tools/analysis/track_direction.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class _Frame(NamedTuple):
    """One earlier frame's detections: global (x, y) (M, 2) float64, scores (M,), labels (M,)."""

    xy: Tensor
    scores: Tensor
    labels: Tensor
    timestamp: float


class VelocityRefiner:
    """Constant-velocity voting over a detection's earlier detections (see the module docstring).

    Config dict (the ``velocity_refine`` of :class:`BEVFormer`)::

        dict(class_names=class_names, classes=dict(car=3.0, pedestrian=2.0), num_frames=8)

    Args:
        class_names: the label order of the detections (the dataset's classes).
        classes: name -> radius (m/s) of the hypothesis grid around the head's velocity, for the
            classes to refine; the others keep the head's velocity.
        num_frames: earlier frames kept (8 at 2 Hz: 4 s).
        step: grid step (m/s).
        sigma: metres; the Gaussian of an earlier detection's support.
        min_support: the best hypothesis's support (sum over frames of score x Gaussian) needed.
        min_gain: by how much it must beat the support of the head's own velocity.
        min_score: earlier detections below this score are not kept.
    """

    def __init__(
        self,
        class_names: list[str] | tuple[str, ...],
        classes: dict[str, float],
        num_frames: int = 8,
        step: float = 0.25,
        sigma: float = 1.0,
        min_support: float = 2.0,
        min_gain: float = 0.75,
        min_score: float = 0.05,
    ) -> None:
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise ValueError(f"velocity_refine classes {unknown} are not in class_names {list(class_names)}")
        if not classes or any(r <= 0 for r in classes.values()):
            raise ValueError(f"velocity_refine classes must map class names to radii > 0 m/s, got {classes}")
        if num_frames < 1 or step <= 0 or sigma <= 0:
            raise ValueError(
                "velocity_refine needs num_frames >= 1, step > 0 and sigma > 0, got "
                f"{num_frames}, {step}, {sigma}"
            )
        self.radius = {list(class_names).index(name): float(r) for name, r in classes.items()}
        self.num_frames = int(num_frames)
        self.step, self.sigma = float(step), float(sigma)
        self.min_support, self.min_gain = float(min_support), float(min_gain)
        self.min_score = float(min_score)
        self.frames: list[_Frame] = []
        self.num_refined = 0  # detections whose velocity was replaced, over the refiner's life

    def reset(self) -> None:
        """Forget the earlier frames (the next one starts a sequence)."""
        self.frames = []

    def __call__(
        self, boxes: Tensor, scores: Tensor, labels: Tensor, lidar2global: Tensor, timestamp: float
    ) -> Tensor:
        """One frame's boxes (N, 9) (LiDAR frame, velocity in columns 7:9), scores (N,), labels
        (N,), its ``lidar2global`` (4, 4) and timestamp (s) -> the boxes (N, 9) with the refined
        velocities (the others bit for bit the input's). The frame is kept for the next ones."""
        pose = lidar2global.to(torch.float64).cpu()
        rot = pose[:2, :2]  # (2, 2): (vx, vy, 0) in LiDAR -> global (x, y)
        xy = boxes[:, :2].detach().to(torch.float64).cpu() @ rot.T + pose[:2, 3]  # (N, 2) global
        vel = boxes[:, 7:9].detach().to(torch.float64).cpu() @ rot.T  # (N, 2) global
        scores64, labels = scores.detach().to(torch.float64).cpu(), labels.detach().cpu()
        out = boxes.clone()
        for label, radius in self.radius.items():
            idx = (labels == label).nonzero().flatten()
            # the frames kept only their detections of score >= min_score
            earlier = [
                (timestamp - f.timestamp, f.xy[keep], f.scores[keep])
                for f in self.frames
                for keep in [f.labels == label]
                if keep.any()
            ]
            if len(idx) == 0 or not earlier:
                continue
            new_vel, changed = self.vote(xy[idx], vel[idx], earlier, radius)
            if changed.any():
                lidar_vel = torch.linalg.solve(rot, new_vel[changed].T).T  # (K, 2) global -> LiDAR
                out[idx[changed].to(out.device), 7:9] = lidar_vel.to(out)
                self.num_refined += int(changed.sum())
        keep = scores64 >= self.min_score
        self.frames = [*self.frames, _Frame(xy[keep], scores64[keep], labels[keep], timestamp)]
        self.frames = self.frames[-self.num_frames :]
        return out

    def _support(self, xy: Tensor, hyps: Tensor, earlier: list[tuple[float, Tensor, Tensor]]) -> Tensor:
        """(N, H) support of the hypotheses ``hyps`` (N, H, 2) for the objects at ``xy`` (N, 2):
        over the earlier frames, the best score x exp(-d^2 / (2 sigma^2)) of a detection at
        distance d from where the hypothesis puts the object then."""
        support = xy.new_zeros(hyps.shape[:2])
        for tau, q, w in earlier:
            then = (xy[:, None] - hyps * tau).flatten(0, 1)  # (N * H, 2) where each puts the object
            d2 = torch.cdist(then, q).square_().unflatten(0, hyps.shape[:2])  # (N, H, M)
            # max_m w_m exp(-d2 / (2 sigma^2)) = exp(max_m (log w_m - d2 / (2 sigma^2))): one exp per (N, H)
            support += d2.mul_(-0.5 / self.sigma**2).add_(w.log()).amax(-1).exp_()
        return support

    def vote(
        self, xy: Tensor, vel: Tensor, earlier: list[tuple[float, Tensor, Tensor]], radius: float
    ) -> tuple[Tensor, Tensor]:
        """Global (x, y) (N, 2) and head velocities (N, 2) of one class's detections, the earlier
        frames' ``(tau, xy (M, 2), scores (M,))`` of that class -> (velocities (N, 2), changed (N,)
        bool): the voted velocity where it is supported (see the class docstring), else the head's."""
        n = round(radius / self.step)
        axis = torch.arange(-n, n + 1, dtype=torch.float64) * self.step
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)  # (H, 2)
        hyps = vel[:, None] + grid  # (N, H, 2); hypothesis (2 n + 1) n + n is the head's, offset (0, 0)
        # (N, H), 32 objects at a time: (32 * H, M) distances per earlier frame
        support = torch.cat(
            [self._support(xy[i : i + 32], hyps[i : i + 32], earlier) for i in range(0, len(xy), 32)]
        )
        head = support[:, (2 * n + 1) * n + n]  # (N,) the head's own velocity
        best, arg = support.max(1)
        changed = (best >= self.min_support) & (best - head >= self.min_gain)
        out = vel.clone()
        for i in changed.nonzero().flatten().tolist():
            out[i] = self._track_slope(xy[i], hyps[i, arg[i]], earlier)
        return out, changed

    def _track_slope(self, xy: Tensor, v: Tensor, earlier: list[tuple[float, Tensor, Tensor]]) -> Tensor:
        """(2,) least-squares velocity of the object at ``xy`` (2,) and each earlier frame's nearest
        detection within 2 sigma of where velocity ``v`` puts it; ``v`` with fewer than 3 points."""
        times, points = [0.0], [xy]
        for tau, q, _ in earlier:
            d2 = ((xy - v * tau - q) ** 2).sum(-1)  # (M,)
            m = int(d2.argmin())
            if d2[m] < (2 * self.sigma) ** 2:
                times.append(-tau)
                points.append(q[m])
        if len(times) < 3:
            return v
        t = torch.tensor(times, dtype=torch.float64)
        p = torch.stack(points)  # (K, 2)
        tc = t - t.mean()
        return (tc[:, None] * (p - p.mean(0))).sum(0) / (tc**2).sum()
