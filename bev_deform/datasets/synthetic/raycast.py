"""Exact ray casting against the ground plane z = 0 and yaw-rotated boxes (slab method): the one piece
of geometry the camera renderer and the lidar share, so images, occlusion and lidar points agree."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# faces of a box in its own frame: 0 +x (front, the heading), 1 -x, 2 +y, 3 -y, 4 +z (top), 5 -z
FRONT_FACE, BACK_FACE = 0, 1


@dataclass(frozen=True)
class BoxSet:
    """K boxes at one instant: centres (K, 3) global geometric centres, yaws (K,), sizes (K, 3) as
    (l, w, h), track (K,) index of each box's track in the scene."""

    centres: np.ndarray
    yaws: np.ndarray
    sizes: np.ndarray
    track: np.ndarray

    def __len__(self) -> int:
        return len(self.yaws)

    def corners(self, k: int) -> np.ndarray:
        """(8, 3) global corners of box k."""
        half = self.sizes[k] / 2
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])  # (8, 3)
        c, s = np.cos(self.yaws[k]), np.sin(self.yaws[k])
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return (signs * half) @ rot.T + self.centres[k]


def boxes_at(tracks: list, t: float, keep: np.ndarray | None = None) -> BoxSet:
    """The scene's tracks at time t as a BoxSet; ``keep`` (K_all,) bool selects tracks."""
    idx = np.arange(len(tracks)) if keep is None else np.flatnonzero(keep)
    centres = np.array([tracks[i].centre(t) for i in idx]).reshape(-1, 3)
    yaws = np.array([tracks[i].yaw for i in idx], dtype=np.float64)
    sizes = np.array([tracks[i].size for i in idx], dtype=np.float64).reshape(-1, 3)
    return BoxSet(centres, yaws, sizes, idx)


def ray_ground(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """origin (3,) above the ground, dirs (R, 3) -> (R,) ray parameter of the z = 0 hit (inf: none)."""
    dz = dirs[:, 2]
    t = np.full(len(dirs), np.inf)
    down = dz < -1e-9
    t[down] = -origin[2] / dz[down]
    return t


def _to_box_frame(origin: np.ndarray, dirs: np.ndarray, centre: np.ndarray, yaw: float):
    """origin (3,), dirs (R, 3) global -> origin (3,) and dirs (3, R) in the box frame."""
    c, s = np.cos(yaw), np.sin(yaw)
    to_local = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # global -> box rotation
    return to_local @ (origin - centre), to_local @ dirs.T  # (3,), (3, R)


def ray_box(
    origin: np.ndarray, dirs: np.ndarray, centre: np.ndarray, yaw: float, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Intersect rays from one origin with one box (slab method).

    Args:
        origin: (3,) global ray origin (outside the box).
        dirs: (R, 3) global ray directions (any length; t is in units of them).
        centre: (3,) box centre; yaw: heading about +z; size: (3,) (l, w, h).

    Returns:
        t: (R,) ray parameter of the entry point, inf where the ray misses.
        face: (R,) int entry face (0 +x front, 1 -x, 2 +y, 3 -y, 4 +z top, 5 -z), valid where t is finite.
    """
    o, d = _to_box_frame(origin, dirs, centre, yaw)
    half = np.asarray(size, dtype=np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o)[:, None] / d  # (3, R)
        t2 = (half - o)[:, None] / d
    near, far = np.fmin(t1, t2), np.fmax(t1, t2)  # (3, R) each
    t_near = np.maximum(np.maximum(near[0], near[1]), near[2])  # (R,)
    t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
    hit = (t_near <= t_far) & (t_near > 0)
    axis = np.where(near[0] >= t_near, 0, np.where(near[1] >= t_near, 1, 2))
    entering_negative = np.take_along_axis(d, axis[None], axis=0)[0] > 0  # entering through the -axis face
    return np.where(hit, t_near, np.inf), axis * 2 + entering_negative


def box_local_points(origin: np.ndarray, dirs: np.ndarray, t: np.ndarray, centre: np.ndarray, yaw: float):
    """Points origin + t * dirs (dirs (M, 3), t (M,)) in the frame of a box (centre (3,), yaw) -> (M, 3)."""
    o, d = _to_box_frame(origin, dirs, centre, yaw)
    return (o[:, None] + t[None] * d).T  # (3, M) -> (M, 3)
