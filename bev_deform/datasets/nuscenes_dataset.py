"""mmdet3d's ``NuScenesDataset`` with what multi-camera detection needs and nothing else."""

from __future__ import annotations

import json
import os.path as osp
from collections.abc import Sequence

import numpy as np
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.datasets.transforms import Pack3DDetInputs
from mmengine.fileio import exists

from bev_deform.registry import DATASETS

from .checks import fix_hint
from .transforms.loading import NUSCENES_CAMERAS, check_cameras

# what temporal models read from a sample's metainfo, on top of mmdet3d's default meta keys
TEMPORAL_META_KEYS = ("scene_token", "timestamp", "lidar2global")
PACK_META_KEYS = tuple(Pack3DDetInputs.__init__.__defaults__[0]) + TEMPORAL_META_KEYS


def load_scene_tokens(data_root: str, version: str) -> dict[str, str]:
    """Sample token -> scene token, from the devkit table ``{data_root}/{version}/sample.json``
    (mmdet3d's v2 info files do not keep the scene)."""
    path = osp.join(data_root, version, "sample.json")
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"scene_info needs the nuScenes table {path} (sample token -> scene), which is missing. Fix: "
            f"keep {version}/ of the nuScenes download under data_root, or set scene_info=False"
        )
    with open(path) as f:
        return {row["token"]: row["scene_token"] for row in json.load(f)}


@DATASETS.register_module()
class BevNuScenesDataset(NuScenesDataset):
    """nuScenes for multi-camera detection on mmdet3d v2 info files.

    On top of :class:`mmdet3d.datasets.NuScenesDataset` it

    - checks, when the data list is loaded, that ``data_root`` and ``ann_file`` exist and
      otherwise raises ``FileNotFoundError`` naming the path and the fix;
    - checks, for camera modality, that every sample has every camera of ``cameras`` with
      ``img_path``, ``cam2img`` and ``lidar2cam`` (``ValueError`` naming the sample token,
      the missing camera and the info file), so that bad infos fail at construction and
      not hours into training.

    ``lidar2img`` is composed by :class:`~bev_deform.datasets.transforms.LoadMultiViewImages`
    (the one place it is computed) and then kept up to date by every image transform.

    With scene info (``scene_info=True``, or by default where the devkit tables are there) every
    sample also carries what temporal models need
    (``TEMPORAL_META_KEYS``; pack them with ``Pack3DDetInputs(meta_keys=PACK_META_KEYS)``):
    ``scene_token`` (from the devkit's ``sample.json`` under ``data_root/version``),
    ``timestamp`` (seconds) and ``lidar2global`` (4, 4) = ``ego2global @ lidar2ego``, the
    LIDAR_TOP pose from which the ego motion between frames is exact (no CAN bus).

    Args:
        data_root: dataset root; relative ``ann_file`` and ``data_prefix`` are joined to it.
        ann_file: mmdet3d v2 info file (``nuscenes_infos_{train,val}.pkl``).
        cameras: the cameras every sample must have (checked only with ``modality.use_camera``).
        scene_info: add ``scene_token`` and ``lidar2global`` to every sample: True (the table
            ``{data_root}/{version}/sample.json`` must exist), False, or None (default: where that
            table exists; video testing and ``SceneSequentialSampler`` then say what is missing).
        **kwargs: everything else :class:`NuScenesDataset` accepts (pipeline, modality,
            metainfo, data_prefix, test_mode, ...).
    """

    def __init__(
        self,
        data_root: str,
        ann_file: str,
        cameras: Sequence[str] = NUSCENES_CAMERAS,
        scene_info: bool | None = None,
        **kwargs,
    ) -> None:
        self.cameras = tuple(cameras)
        self.scene_info = scene_info
        self._scene_of: dict[str, str] | None = None
        super().__init__(data_root=data_root, ann_file=ann_file, **kwargs)

    def load_data_list(self) -> list[dict]:
        """Check that the files exist, then load as mmdet3d does."""
        version = self.metainfo.get("version", "v1.0-trainval")
        if self.data_root and not exists(self.data_root, backend_args=self.backend_args):
            raise FileNotFoundError(
                f"nuScenes data_root {self.data_root} does not exist. Fix: set data_root in the config to "
                f"your nuScenes root, or {fix_hint(self.data_root, version)}"
            )
        if not exists(self.ann_file, backend_args=self.backend_args):
            raise FileNotFoundError(
                f"info file {self.ann_file} does not exist. Fix: create the mmdet3d v2 info files with "
                f"`python tools/create_data.py nuscenes --root {self.data_root or '<nuScenes root>'} "
                f"--version {version}` (synthetic data: `python tools/create_data.py synthetic` writes them)"
            )
        table = osp.join(self.data_root or "", version, "sample.json")
        if self.scene_info or (self.scene_info is None and osp.isfile(table)):
            self._scene_of = load_scene_tokens(self.data_root, version)
        return super().load_data_list()

    def parse_data_info(self, info: dict) -> dict | list[dict]:
        """Check the cameras of one raw info, then parse it as mmdet3d does."""
        if self.modality.get("use_camera", False):
            sample = f"{info.get('token', info.get('sample_idx'))} of {self.ann_file}"
            check_cameras(info.get("images", {}), self.cameras, sample)
        if self._scene_of is not None:
            if info["token"] not in self._scene_of:
                raise ValueError(
                    f"sample {info['token']} of {self.ann_file} is not in the nuScenes table sample.json "
                    f"under {self.data_root}: the info file and the tables are of different versions"
                )
            info["scene_token"] = self._scene_of[info["token"]]
            lidar2ego = np.asarray(info["lidar_points"]["lidar2ego"], dtype=np.float64)
            info["lidar2global"] = np.asarray(info["ego2global"], dtype=np.float64) @ lidar2ego
        return super().parse_data_info(info)
