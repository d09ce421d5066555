"""LIDAR_TOP: a 32-beam spinning lidar cast against the same ground and boxes as the cameras, so that
num_lidar_pts is the number of returns an object really gives (0 when it is hidden)."""

from __future__ import annotations

import numpy as np

from .classes import CLASS_INTENSITY
from .raycast import BoxSet, ray_box, ray_ground
from .world import MATERIAL_INTENSITY, ground_material

ELEVATION_DEG = (10.0, -30.0)  # top and bottom beam, like a Velodyne HDL-32E
MAX_RANGE = 70.0  # metres
RANGE_NOISE = 0.01  # metres, std of the range noise added to every return


def beam_directions(num_beams: int, num_azimuth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ray directions in the lidar frame.

    Returns:
        dirs: (num_beams * num_azimuth, 3), beam-major; ring: (R,) beam index 0 (top) .. num_beams - 1;
        azimuth: (num_azimuth,) radians in [-pi, pi) of the columns.
    """
    elev = np.deg2rad(np.linspace(ELEVATION_DEG[0], ELEVATION_DEG[1], num_beams))  # (B,)
    azimuth = -np.pi + (np.arange(num_azimuth) + 0.5) * (2 * np.pi / num_azimuth)  # (A,)
    ce, se = np.cos(elev)[:, None], np.sin(elev)[:, None]
    dirs = np.stack(
        [
            ce * np.cos(azimuth)[None],
            ce * np.sin(azimuth)[None],
            np.broadcast_to(se, (num_beams, num_azimuth)),
        ],
        axis=-1,
    )  # (B, A, 3)
    ring = np.repeat(np.arange(num_beams), num_azimuth)
    return dirs.reshape(-1, 3), ring, azimuth  # (B, A, 3) -> (B*A, 3)


def _columns_facing(corners_lidar: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """(8, 3) lidar-frame corners of a box -> (A,) bool, the azimuth columns that may hit it."""
    az = np.arctan2(corners_lidar[:, 1], corners_lidar[:, 0])  # (8,)
    centre = np.arctan2(corners_lidar[:, 1].mean(), corners_lidar[:, 0].mean())
    rel = np.angle(np.exp(1j * (az - centre)))  # (8,) wrapped to (-pi, pi]
    step = 2 * np.pi / len(azimuth)
    rel_cols = np.angle(np.exp(1j * (azimuth - centre)))  # (A,)
    return (rel_cols >= rel.min() - step) & (rel_cols <= rel.max() + step)


def cast_lidar(
    lidar2global: np.ndarray,
    num_beams: int,
    num_azimuth: int,
    boxes: BoxSet,
    classes: list,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One sweep.

    Args:
        lidar2global: (4, 4) sensor pose; boxes: the K boxes in range; classes: (K,) their class names.
        rng: the scene's generator (range noise).

    Returns:
        points: (N, 5) float32 (x, y, z, intensity, ring) in the lidar frame, returns within MAX_RANGE.
        num_pts: (K,) int, returns per box.
    """
    dirs_l, ring, azimuth = beam_directions(num_beams, num_azimuth)
    origin, rot = lidar2global[:3, 3], lidar2global[:3, :3]
    dirs = dirs_l @ rot.T  # (R, 3) global
    depth = ray_ground(origin, dirs)
    owner = np.full(len(dirs), -1)
    global2lidar = np.linalg.inv(lidar2global)
    for i in range(len(boxes)):
        corners = boxes.corners(i) @ global2lidar[:3, :3].T + global2lidar[:3, 3]  # (8, 3)
        cols = np.flatnonzero(_columns_facing(corners, azimuth))
        idx = (np.arange(num_beams)[:, None] * num_azimuth + cols[None, :]).ravel()  # (P,) rays
        t, _ = ray_box(origin, dirs[idx], boxes.centres[i], boxes.yaws[i], boxes.sizes[i])
        closer = t < depth[idx]
        depth[idx[closer]], owner[idx[closer]] = t[closer], i
    keep = depth < MAX_RANGE
    num_pts = np.bincount(owner[keep & (owner >= 0)], minlength=len(boxes))
    hit = origin + depth[keep, None] * dirs[keep]  # (N, 3) global
    box_intensity = np.array([CLASS_INTENSITY[c] for c in classes] + [0.0])  # owner -1 -> last (unused)
    ground_intensity = MATERIAL_INTENSITY[ground_material(hit[:, 0], hit[:, 1])]
    intensity = np.where(owner[keep] >= 0, box_intensity[owner[keep]], ground_intensity)
    rng_noise = rng.normal(0.0, RANGE_NOISE, size=int(keep.sum()))
    xyz = (depth[keep] + rng_noise)[:, None] * dirs_l[keep]  # (N, 3) lidar frame
    points = np.concatenate([xyz, intensity[:, None], ring[keep, None].astype(np.float64)], axis=1)
    return points.astype(np.float32), num_pts
