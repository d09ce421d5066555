"""Camera rendering by ray casting: one ray per pixel centre against the textured ground and the boxes,
nearest hit wins (an exact depth buffer), so occlusion is correct and the visible pixels of every box
are counted (nuScenes visibility).

Pixel convention: pixel (i, j) covers [i, i + 1) x [j, j + 1) in the intrinsics' coordinates, its
ray goes through (i + 0.5, j + 0.5); this is the convention of bev_deform.geometry / mmcv sampling.
"""

from __future__ import annotations

import numpy as np

from .classes import CLASS_RGB
from .raycast import BACK_FACE, FRONT_FACE, BoxSet, box_local_points, ray_box, ray_ground
from .world import SKY_HORIZON_RGB, ground_rgb, sky_rgb

LIGHT_DIR = np.array([0.35, 0.25, 0.9]) / np.linalg.norm([0.35, 0.25, 0.9])
FOG_DISTANCE = 400.0  # metres; colour blends 1 - exp(-depth / FOG_DISTANCE) towards the horizon
NEAR_PLANE = 0.1
EDGE_WIDTH = 0.08  # metres of darkened rim on every face, so that box shapes read clearly


def pixel_rays(k: np.ndarray, cam2global: np.ndarray, wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rays through every pixel centre.

    Args:
        k: (3, 3) intrinsics; cam2global: (4, 4) camera pose; wh: (W, H).

    Returns:
        origin (3,) and dirs (H * W, 3) in the global frame, row-major; each dir has camera-frame
        z = 1, so a ray parameter t is the camera depth.
    """
    w, h = wh
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # (H, W) each
    pix = np.stack([u.ravel(), v.ravel(), np.ones(w * h)], axis=1)  # (H*W, 3)
    dirs_cam = pix @ np.linalg.inv(k).T  # (H*W, 3), z = 1
    return cam2global[:3, 3].copy(), dirs_cam @ cam2global[:3, :3].T


def _box_rect(
    corners_cam: np.ndarray, k: np.ndarray, wh: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (x0, y0, x1, y1), exclusive ends, that contains a box, from its (8, 3) camera-frame
    corners; None if the box is entirely behind the camera or outside the image."""
    w, h = wh
    z = corners_cam[:, 2]
    if (z <= NEAR_PLANE).all():
        return None
    if (z <= NEAR_PLANE).any():  # straddles the camera plane: its projection is unbounded
        return 0, 0, w, h
    uv = corners_cam[:, :2] / z[:, None] * np.array([k[0, 0], k[1, 1]]) + k[:2, 2]  # (8, 2)
    x0, y0 = np.floor(uv.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return None if x0 >= x1 or y0 >= y1 else (x0, y0, x1, y1)


def shade_box(
    face: np.ndarray, local: np.ndarray, size: np.ndarray, yaw: float, rgb: np.ndarray
) -> np.ndarray:
    """Colour of M hits on one box: face (M,), local (M, 3) box-frame hit points, size (3,), rgb (3,)
    -> (M, 3) float. Lambert shading; the front face (heading) is light with a dark band across its
    middle, the back face dark; a dark rim outlines every face."""
    axis = face // 2
    normal_local = np.zeros((len(face), 3))
    normal_local[np.arange(len(face)), axis] = np.where(face % 2 == 0, 1.0, -1.0)
    c, s = np.cos(yaw), np.sin(yaw)
    normal = normal_local @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T  # (M, 3)
    light = 0.55 + 0.45 * np.clip(normal @ LIGHT_DIR, 0.0, 1.0)  # (M,)
    base = np.repeat(rgb[None].astype(np.float64), len(face), axis=0)  # (M, 3)
    front, back = face == FRONT_FACE, face == BACK_FACE
    base[front] = base[front] * 0.4 + 255.0 * 0.6
    band = front & (np.abs(local[:, 2]) < 0.12 * size[2])
    base[band] *= 0.25
    base[back] *= 0.5
    half = np.asarray(size) / 2
    rim = np.abs(local) > half - np.minimum(EDGE_WIDTH, 0.15 * half)  # (M, 3)
    rim[np.arange(len(face)), axis] = False
    base[rim.any(axis=1)] *= 0.45
    return base * light[:, None]


def _background(origin: np.ndarray, dirs: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground or sky behind every ray: (R,) depth (inf for sky) and (R, 3) float colour."""
    depth = ray_ground(origin, dirs)
    ground = np.isfinite(depth)
    rgb = np.empty((len(dirs), 3))
    hit = origin + depth[ground, None] * dirs[ground]  # (G, 3)
    rgb[ground] = ground_rgb(hit[:, 0], hit[:, 1], noise)
    unit_z = dirs[~ground, 2] / np.linalg.norm(dirs[~ground], axis=1)
    rgb[~ground] = sky_rgb(unit_z)
    return depth, rgb


def render_camera(
    k: np.ndarray,
    cam2global: np.ndarray,
    wh: tuple[int, int],
    boxes: BoxSet,
    classes: list,
    tints: np.ndarray,
    noise: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one camera image.

    Args:
        k: (3, 3) intrinsics; cam2global: (4, 4) pose; wh: (W, H).
        boxes: the K boxes to draw; classes: (K,) class names; tints: (K,) brightness factors.
        noise: (T, T) ground texture table in [-1, 1].

    Returns:
        image: (H, W, 3) uint8 RGB.
        visible: (K,) number of pixels where box k is the nearest surface.
        silhouette: (K,) number of pixels whose ray hits box k at all (occluded or not).
    """
    w, h = wh
    origin, dirs = pixel_rays(k, cam2global, wh)
    depth, rgb = _background(origin, dirs, noise)
    owner = np.full(len(dirs), -1)
    silhouette = np.zeros(len(boxes), dtype=np.int64)
    world2cam = np.linalg.inv(cam2global)
    for i in range(len(boxes)):
        corners_cam = boxes.corners(i) @ world2cam[:3, :3].T + world2cam[:3, 3]  # (8, 3)
        rect = _box_rect(corners_cam, k, wh)
        if rect is None:
            continue
        x0, y0, x1, y1 = rect
        idx = (np.arange(y0, y1)[:, None] * w + np.arange(x0, x1)[None, :]).ravel()  # (P,) pixels in rect
        t, face = ray_box(origin, dirs[idx], boxes.centres[i], boxes.yaws[i], boxes.sizes[i])
        silhouette[i] = np.isfinite(t).sum()
        closer = t < depth[idx]
        if not closer.any():
            continue
        px = idx[closer]
        depth[px], owner[px] = t[closer], i
        local = box_local_points(origin, dirs[px], t[closer], boxes.centres[i], boxes.yaws[i])
        colour = np.asarray(CLASS_RGB[classes[i]], dtype=np.float64) * tints[i]
        rgb[px] = shade_box(face[closer], local, boxes.sizes[i], boxes.yaws[i], colour)
    fog = 1.0 - np.exp(-np.where(np.isfinite(depth), depth, 0.0) / FOG_DISTANCE)  # (R,)
    rgb = rgb * (1 - fog[:, None]) + SKY_HORIZON_RGB * fog[:, None]
    visible = np.bincount(owner[owner >= 0], minlength=len(boxes))
    image = np.clip(rgb, 0, 255).round().astype(np.uint8).reshape(h, w, 3)  # (H*W, 3) -> (H, W, 3)
    return image, visible, silhouette
