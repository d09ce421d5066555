"""mmdet3d's ``NuScenesDataset`` with what multi-camera detection needs and nothing else."""

from __future__ import annotations

import copy
import json
import os.path as osp
from collections.abc import Sequence
from numbers import Integral

import numpy as np
import torch
from mmdet3d.datasets import NuScenesDataset
from mmengine.fileio import exists

from bev_deform.geometry import lidar2global
from bev_deform.registry import DATASETS

from .checks import fix_hint
from .transforms.loading import NUSCENES_CAMERAS, check_cameras
from .transforms.packing import PACK_META_KEYS, TEMPORAL_META_KEYS  # noqa: F401 (their public home was here)


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
    (``TEMPORAL_META_KEYS``; pack them with
    :class:`~bev_deform.datasets.transforms.PackMultiViewInputs`):
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
        queue_length: T frames per training sample (BEVFormer's queue): the sample and T - 1
            earlier frames of its scene, drawn at random (in time order) from the ``queue_range``
            frames before it. Each frame goes through the pipeline; the images are concatenated
            ahead of the sample's own, ``(T*N, 3, H, W)``, and the frames' metainfo is the
            sample's ``queue`` (a list of T - 1 dicts, earliest first, each with ``pad``). Near a
            scene start there are fewer earlier frames: the queue is padded at the front with
            zero images and ``pad=True``, so that every sample of a batch has T frames. Earlier
            frames never come from another scene. 1 (default): no queue. Not used in test mode.
        queue_range: how many frames back the queue draws from (default ``queue_length``,
            BEVFormer's: T - 1 of the T frames before the sample).
        queue_stride: the queue draws from every ``queue_stride``-th frame before the sample
            (default 1: every frame): with ``queue_range=T - 1`` the frames ``s``, ``2 s``, ...
            ``(T - 1) s`` before it, a history ``s`` frame gaps old (the detector's
            ``history_stride`` must match at test time).
        **kwargs: everything else :class:`NuScenesDataset` accepts (pipeline, modality,
            metainfo, data_prefix, test_mode, ...).
    """

    def __init__(
        self,
        data_root: str,
        ann_file: str,
        cameras: Sequence[str] = NUSCENES_CAMERAS,
        scene_info: bool | None = None,
        queue_length: int = 1,
        queue_range: int | None = None,
        queue_stride: int = 1,
        **kwargs,
    ) -> None:
        queue_range = queue_length if queue_range is None else queue_range
        if queue_length < 1 or queue_range < queue_length - 1:
            raise ValueError(
                f"queue_length must be >= 1 and queue_range >= queue_length - 1, got {queue_length} and "
                f"{queue_range}"
            )
        if isinstance(queue_stride, bool) or not isinstance(queue_stride, Integral) or queue_stride < 1:
            raise ValueError(f"queue_stride must be an integer >= 1, got {queue_stride!r}")
        self.cameras = tuple(cameras)
        self.scene_info = True if queue_length > 1 and scene_info is None else scene_info
        self.queue_length, self.queue_range = int(queue_length), int(queue_range)
        self.queue_stride = int(queue_stride)
        self._scene_of: dict[str, str] | None = None
        self._scene_frames: dict[str, list[int]] = {}  # scene -> dataset indices in time order
        self._position: list[tuple[str, int]] = []  # index -> (scene, position in its scene)
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

    def full_init(self) -> None:
        """mmengine's initialisation, then (with a queue) the scenes' frames in time order."""
        if self._fully_initialized:
            return
        super().full_init()
        if self.queue_length > 1:
            scenes: dict[str, list[tuple[float, int]]] = {}
            for i in range(len(self)):
                info = self.get_data_info(i)
                scenes.setdefault(info["scene_token"], []).append((float(info["timestamp"]), i))
            self._scene_frames = {s: [i for _, i in sorted(v)] for s, v in scenes.items()}
            self._position = [("", -1)] * len(self)
            for scene, frames in self._scene_frames.items():
                for k, i in enumerate(frames):
                    self._position[i] = (scene, k)

    def queue_indices(self, index: int, rng: np.random.Generator | None = None) -> list[int | None]:
        """The T - 1 earlier frames of sample ``index``'s queue, earliest first; None for padding."""
        scene, k = self._position[index]
        frames, s = self._scene_frames[scene], self.queue_stride
        # every s-th frame before k, at most queue_range of them, earliest first
        candidates = frames[k - s :: -s][: self.queue_range][::-1] if k >= s else []
        want = self.queue_length - 1
        if len(candidates) > want:
            rng = np.random.default_rng(np.random.randint(2**31)) if rng is None else rng
            picked = np.sort(rng.choice(len(candidates), want, replace=False))
            candidates = [candidates[j] for j in picked]
        return [None] * (want - len(candidates)) + list(candidates)

    def prepare_data(self, index: int) -> dict | None:
        """mmdet3d's sample, with its queue of earlier frames when ``queue_length > 1``."""
        current = super().prepare_data(index)
        if current is None or self.queue_length == 1 or self.test_mode:
            return current
        own = current["inputs"]["img"]  # (N, 3, H, W)
        imgs, metas = [], []
        for i in self.queue_indices(index):
            if i is None:
                imgs.append(torch.zeros_like(own))
                metas.append(dict(pad=True))
                continue
            frame = copy.deepcopy(self.get_data_info(i))
            frame.update(box_type_3d=self.box_type_3d, box_mode_3d=self.box_mode_3d)
            packed = self.pipeline(frame)
            if tuple(packed["inputs"]["img"].shape) != tuple(own.shape):
                raise ValueError(
                    f"queue frame {i} has images of shape {tuple(packed['inputs']['img'].shape)}, sample "
                    f"{index} {tuple(own.shape)}: the training pipeline must give every frame one size"
                )
            imgs.append(packed["inputs"]["img"])
            metas.append(dict(packed["data_samples"].metainfo, pad=False))
        current["inputs"]["img"] = torch.cat([*imgs, own])  # (T*N, 3, H, W), earliest first
        current["data_samples"].set_metainfo(dict(queue=metas))
        return current

    def parse_data_info(self, info: dict) -> dict | list[dict]:
        """Check the cameras of one raw info, then parse it as mmdet3d does."""
        if self.modality.get("use_camera", False):
            sample = f"{info.get('token', info.get('sample_idx'))} of {self.ann_file}"
            check_cameras(info.get("images", {}), self.cameras, sample)
        if self._scene_of is not None:
            if info["token"] not in self._scene_of and self.scene_info:
                raise ValueError(
                    f"sample {info['token']} of {self.ann_file} is not in the nuScenes table sample.json "
                    f"under {self.data_root}: the info file and the tables are of different versions"
                )
            info["scene_token"] = self._scene_of.get(info["token"])  # None: not in the table (auto mode)
            info["lidar2global"] = lidar2global(
                np.asarray(info["lidar_points"]["lidar2ego"], dtype=np.float64),
                np.asarray(info["ego2global"], dtype=np.float64),
            )
        return super().parse_data_info(info)
