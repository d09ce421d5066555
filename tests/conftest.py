"""Shared test settings and fixtures: CUDA-marked tests are skipped visibly (reported as SKIPPED
with a reason) where there is no GPU, never silently passed; the real nuScenes camera rig
(DESIGN.md) as ``lidar2img`` matrices for any image size; the tiny synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyquaternion import Quaternion


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


# channel: translation, rotation (w, x, y, z) in the ego frame, and (f, cx, cy) at 1600x900
CAMERAS = {
    "CAM_FRONT": (
        [1.70079, 0.01595, 1.51096],
        [0.49980, -0.50303, 0.49978, -0.49737],
        (1266.42, 816.27, 491.51),
    ),
    "CAM_FRONT_RIGHT": (
        [1.55085, -0.49340, 1.49575],
        [0.20603, -0.20269, 0.68245, -0.67136],
        (1260.85, 807.97, 495.33),
    ),
    "CAM_FRONT_LEFT": (
        [1.52388, 0.49463, 1.50933],
        [0.67573, -0.67363, 0.21214, -0.21123],
        (1272.60, 826.62, 479.75),
    ),
    "CAM_BACK": (
        [0.02833, 0.00345, 1.57910],
        [0.50379, -0.49740, -0.49419, 0.50455],
        (809.22, 829.22, 481.78),
    ),
    "CAM_BACK_LEFT": (
        [1.03569, 0.48480, 1.59097],
        [0.69242, -0.70316, -0.11648, 0.11203],
        (1256.74, 792.11, 492.78),
    ),
    "CAM_BACK_RIGHT": (
        [1.01488, -0.48057, 1.56240],
        [0.12281, -0.13240, -0.70043, 0.69050],
        (1259.51, 807.25, 501.20),
    ),
}
LIDAR = ([0.943713, 0.0, 1.84023], [0.7077955, -0.0064922, 0.0106462, -0.7063073])
NATIVE_WH = (1600, 900)


def _pose(t, q) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Quaternion(q).rotation_matrix
    m[:3, 3] = t
    return m


class NuScenesRig:
    """The six nuScenes cameras, in nuScenes order, with images resized to ``(W, H)``."""

    channels = tuple(CAMERAS)

    def __init__(self, img_wh: tuple[int, int] = NATIVE_WH) -> None:
        self.img_wh = img_wh
        self.lidar2ego = _pose(*LIDAR)
        self.cam2ego = [_pose(t, q) for t, q, _ in CAMERAS.values()]

    def intrinsics(self, idx: int) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) of camera ``idx`` at this image size."""
        f, cx, cy = list(CAMERAS.values())[idx][2]
        sx, sy = self.img_wh[0] / NATIVE_WH[0], self.img_wh[1] / NATIVE_WH[1]
        return f * sx, f * sy, cx * sx, cy * sy

    def lidar2img(self) -> np.ndarray:
        """(6, 4, 4) float64 ``cam2img @ lidar2cam``."""
        mats = []
        for idx, cam2ego in enumerate(self.cam2ego):
            fx, fy, cx, cy = self.intrinsics(idx)
            cam2img = np.array([[fx, 0, cx, 0], [0, fy, cy, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
            mats.append(cam2img @ np.linalg.inv(cam2ego) @ self.lidar2ego)
        return np.stack(mats)

    def cam_point_in_lidar(self, idx: int, p_cam) -> np.ndarray:
        """A point given in camera ``idx``'s frame (x right, y down, z forward) -> (3,) LIDAR_TOP."""
        ego = self.cam2ego[idx] @ np.append(np.asarray(p_cam, dtype=np.float64), 1.0)
        return (np.linalg.inv(self.lidar2ego) @ ego)[:3]


@pytest.fixture
def nuscenes_rig():
    """A factory: ``nuscenes_rig((W, H))`` -> :class:`NuScenesRig`."""
    return NuScenesRig


@pytest.fixture(scope="session")
def synthetic_nuscenes_tiny(tmp_path_factory):
    """Root (pathlib.Path) of the ``tiny`` synthetic nuScenes dataset, seed 0, with its mmdet3d v2
    info files ``nuscenes_infos_{train,val}.pkl`` (version 'v1.0-mini': scene-0061 for train and
    scene-0103 for val, 6 samples each, 160x90 images). Made once per test session (~3 s);
    tests must not modify it (copy it with shutil.copytree first)."""
    from bev_deform.datasets.create_infos import create_nuscenes_infos
    from bev_deform.datasets.synthetic import generate_synthetic_nuscenes

    root = generate_synthetic_nuscenes(
        tmp_path_factory.mktemp("synthetic") / "nuscenes", "tiny", 0, progress=False
    )
    create_nuscenes_infos(root, "v1.0-mini", decode_images=True)
    return root
