"""The real nuScenes sensor rig (DESIGN.md) and the small rigid-transform helpers the generator uses.

Conventions: quaternions are (w, x, y, z) as in the nuScenes tables; a pose is a 4x4 matrix that
maps points of the child frame into the parent frame (``cam2ego``, ``ego2global``); camera frames
are OpenCV-like (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bev_deform.geometry import CAM_NAMES as CAMERA_CHANNELS

NATIVE_WH = (1600, 900)
LIDAR_CHANNEL = "LIDAR_TOP"


@dataclass(frozen=True)
class SensorCalib:
    """One calibrated_sensor record: translation (3,) and rotation (w, x, y, z) in the ego frame;
    for cameras also the native 1600x900 pinhole (f, cx, cy)."""

    channel: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    f: float = 0.0
    cx: float = 0.0
    cy: float = 0.0


RIG = {
    c.channel: c
    for c in (
        SensorCalib(
            "CAM_FRONT",
            (1.70079, 0.01595, 1.51096),
            (0.49980, -0.50303, 0.49978, -0.49737),
            1266.42,
            816.27,
            491.51,
        ),
        SensorCalib(
            "CAM_FRONT_RIGHT",
            (1.55085, -0.49340, 1.49575),
            (0.20603, -0.20269, 0.68245, -0.67136),
            1260.85,
            807.97,
            495.33,
        ),
        SensorCalib(
            "CAM_FRONT_LEFT",
            (1.52388, 0.49463, 1.50933),
            (0.67573, -0.67363, 0.21214, -0.21123),
            1272.60,
            826.62,
            479.75,
        ),
        SensorCalib(
            "CAM_BACK",
            (0.02833, 0.00345, 1.57910),
            (0.50379, -0.49740, -0.49419, 0.50455),
            809.22,
            829.22,
            481.78,
        ),
        SensorCalib(
            "CAM_BACK_LEFT",
            (1.03569, 0.48480, 1.59097),
            (0.69242, -0.70316, -0.11648, 0.11203),
            1256.74,
            792.11,
            492.78,
        ),
        SensorCalib(
            "CAM_BACK_RIGHT",
            (1.01488, -0.48057, 1.56240),
            (0.12281, -0.13240, -0.70043, 0.69050),
            1259.51,
            807.25,
            501.20,
        ),
        SensorCalib("LIDAR_TOP", (0.943713, 0.0, 1.84023), (0.7077955, -0.0064922, 0.0106462, -0.7063073)),
    )
}


def normalize_quat(q) -> np.ndarray:
    """(4,) (w, x, y, z) -> unit quaternion; the table values are rounded to ~1e-5."""
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q)


def quat_to_rotmat(q) -> np.ndarray:
    """(w, x, y, z) -> (3, 3) rotation matrix (normalised first)."""
    w, x, y, z = normalize_quat(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def yaw_to_quat(yaw: float) -> list[float]:
    """Rotation about +z by ``yaw`` radians as [w, x, y, z] (the devkit's yaw_pitch_roll[0] returns it)."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def pose_matrix(rotation, translation) -> np.ndarray:
    """(w, x, y, z) quaternion + (3,) translation -> (4, 4) child-to-parent transform."""
    mat = np.eye(4)
    mat[:3, :3] = quat_to_rotmat(rotation)
    mat[:3, 3] = translation
    return mat


def yaw_pose(yaw: float, translation) -> np.ndarray:
    """(4, 4) transform of a frame rotated by ``yaw`` about +z and placed at ``translation`` (3,)."""
    return pose_matrix(yaw_to_quat(yaw), translation)


def scaled_intrinsics(channel: str, image_wh: tuple[int, int]) -> np.ndarray:
    """(3, 3) pinhole matrix of ``channel`` for an image of ``image_wh`` = (W, H).

    The native 1600x900 intrinsics are scaled by W / 1600; H must keep the 16:9 aspect ratio so
    that one scale fits both axes (the real rig has square pixels).
    """
    if channel not in CAMERA_CHANNELS:
        raise ValueError(f"channel must be one of {CAMERA_CHANNELS}, got {channel!r}")
    w, h = image_wh
    if w <= 0 or h <= 0 or abs(w * NATIVE_WH[1] - h * NATIVE_WH[0]) > NATIVE_WH[0]:
        raise ValueError(f"image_wh must be positive with the 16:9 aspect ratio of 1600x900, got {image_wh}")
    calib = RIG[channel]
    scale = w / NATIVE_WH[0]
    return np.array(
        [[calib.f * scale, 0.0, calib.cx * scale], [0.0, calib.f * scale, calib.cy * scale], [0.0, 0.0, 1.0]]
    )


def sensor2ego(channel: str) -> np.ndarray:
    """(4, 4) sensor-to-ego transform of ``channel`` from the rig table."""
    calib = RIG[channel]
    return pose_matrix(calib.rotation, calib.translation)
