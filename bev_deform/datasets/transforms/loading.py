"""Loading the six camera images of a nuScenes sample, failing loudly on bad data.

mmdet3d's :class:`LoadMultiViewImageFromFiles` takes the views in whatever order the info
dict holds them, raises a bare ``FileNotFoundError`` for a missing file and an
``AttributeError`` on ``None`` for an undecodable one, and does not compose ``lidar2img``.
:class:`LoadMultiViewImages` keeps its interface and output keys and adds exactly that:
the views in a fixed camera order, an error naming the file and the fix, and
``lidar2img = cam2img @ lidar2cam`` per view.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import mmcv
import numpy as np
from mmdet3d.datasets.transforms import LoadMultiViewImageFromFiles
from mmengine.fileio import exists, get

from bev_deform.geometry import CAM_NAMES as NUSCENES_CAMERAS
from bev_deform.registry import TRANSFORMS

FIX_HINT = (
    "check that the config's data_root and data_prefix point at the nuScenes root that holds "
    "samples/<CAMERA>/; re-download the file (real nuScenes) or regenerate the data "
    "(`python tools/create_data.py synthetic --out <root> --overwrite`)"
)


def pad_to_4x4(mat) -> np.ndarray:
    """(3, 3) or (4, 4) matrix (nested list or array) -> (4, 4) float64 array, identity outside."""
    mat = np.asarray(mat, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] > 4 or mat.shape[1] > 4:
        raise ValueError(f"expected a (3, 3) or (4, 4) matrix, got shape {mat.shape}")
    out = np.eye(4)
    out[: mat.shape[0], : mat.shape[1]] = mat
    return out


def check_cameras(images: dict, cameras: Sequence[str], sample: str) -> None:
    """Raise ``ValueError`` naming ``sample`` and the missing cameras unless every camera in
    ``cameras`` has an entry with ``img_path``, ``cam2img`` and ``lidar2cam`` in ``images``."""
    missing = [cam for cam in cameras if cam not in images]
    if missing:
        raise ValueError(
            f"sample {sample} has no image for camera(s) {missing} (it has {sorted(images)}); every "
            f"sample needs all of {list(cameras)}. Fix: regenerate the info files from a complete "
            f"dataset, or remove the sample from the info file"
        )
    for cam in cameras:
        lacking = [k for k in ("img_path", "cam2img", "lidar2cam") if k not in images[cam]]
        if lacking:
            raise ValueError(
                f"sample {sample}, camera {cam}: the info entry lacks {lacking}. Fix: regenerate the "
                f"info files with bev_deform's create_infos (mmdet3d v2 info format)"
            )


def read_image(path: str, color_type: str, backend_args: dict | None, what: str) -> np.ndarray:
    """Read and decode one image; ``FileNotFoundError`` / ``ValueError`` naming ``path`` and the fix.

    Returns:
        (H, W, C) uint8 array (BGR for ``color_type='color'``).
    """
    if not exists(path, backend_args=backend_args):
        raise FileNotFoundError(f"{what}: image file {path} does not exist. Fix: {FIX_HINT}")
    content = get(path, backend_args=backend_args)
    img = mmcv.imfrombytes(content, flag=color_type) if content else None
    if img is None:
        raise ValueError(
            f"{what}: image file {path} is empty or corrupt ({len(content)} bytes could not be decoded as "
            f"an image). Fix: re-download or regenerate this file ({FIX_HINT})"
        )
    return img


@TRANSFORMS.register_module()
class LoadMultiViewImages(LoadMultiViewImageFromFiles):
    """Load one image per camera in a fixed order and compose ``lidar2img``.

    Required keys: ``images`` (camera -> dict with ``img_path``, ``cam2img`` (3, 3),
    ``lidar2cam`` (4, 4)), as produced by mmdet3d's nuScenes infos and ``NuScenesDataset``.

    Added keys (one entry per camera, in ``cameras`` order): ``img`` list of (H, W, 3) arrays,
    ``filename`` / ``img_path`` list of paths, ``cam2img`` / ``ori_cam2img`` / ``lidar2cam`` /
    ``lidar2img`` lists of (4, 4) float64 arrays, ``img_shape`` / ``ori_shape`` / ``pad_shape``
    (H, W), ``scale_factor`` 1.0, ``img_norm_cfg``, ``num_views``, ``num_ref_frames`` (-1).

    Args:
        to_float32: convert the images to float32.
        color_type: mmcv decode flag; 'color' gives 3-channel BGR.
        backend_args: mmengine file backend arguments.
        cameras: camera names to load, in this order; every sample must have all of them.
    """

    def __init__(
        self,
        to_float32: bool = False,
        color_type: str = "color",
        backend_args: dict | None = None,
        cameras: Sequence[str] = NUSCENES_CAMERAS,
    ) -> None:
        if len(cameras) == 0 or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be a non-empty list of distinct names, got {list(cameras)}")
        super().__init__(
            to_float32=to_float32, color_type=color_type, backend_args=backend_args, num_views=len(cameras)
        )
        self.cameras = tuple(cameras)

    def transform(self, results: dict) -> dict:
        """Load the views of ``results['images']``; see the class docstring for the keys."""
        sample = results.get("token", results.get("sample_idx", "?"))
        images = results.get("images")
        if not isinstance(images, dict):
            raise KeyError(
                f"sample {sample}: results has no 'images' dict (camera -> info); got keys {sorted(results)}"
            )
        check_cameras(images, self.cameras, sample)
        infos = [images[cam] for cam in self.cameras]
        imgs = [
            read_image(info["img_path"], self.color_type, self.backend_args, f"sample {sample}, camera {cam}")
            for cam, info in zip(self.cameras, infos)
        ]
        shapes = {img.shape for img in imgs}
        if len(shapes) != 1:
            sizes = {cam: img.shape for cam, img in zip(self.cameras, imgs)}
            raise ValueError(f"sample {sample}: all camera images must have one shape, got {sizes}")
        if self.to_float32:
            imgs = [img.astype(np.float32) for img in imgs]
        cam2img = [pad_to_4x4(info["cam2img"]) for info in infos]
        lidar2cam = [pad_to_4x4(info["lidar2cam"]) for info in infos]
        results["filename"] = results["img_path"] = [info["img_path"] for info in infos]
        results["cam2img"], results["ori_cam2img"] = cam2img, copy.deepcopy(cam2img)
        results["lidar2cam"] = lidar2cam
        results["lidar2img"] = [k @ e for k, e in zip(cam2img, lidar2cam)]
        results["img"] = imgs
        results["img_shape"] = results["ori_shape"] = results["pad_shape"] = imgs[0].shape[:2]
        results["scale_factor"] = 1.0
        channels = imgs[0].shape[2] if imgs[0].ndim == 3 else 1
        results["img_norm_cfg"] = dict(
            mean=np.zeros(channels, dtype=np.float32), std=np.ones(channels, dtype=np.float32), to_rgb=False
        )
        results["num_views"] = len(self.cameras)
        results["num_ref_frames"] = -1
        return results

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(to_float32={self.to_float32}, color_type={self.color_type!r}, "
            f"cameras={list(self.cameras)})"
        )
