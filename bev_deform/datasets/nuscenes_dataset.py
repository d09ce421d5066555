"""mmdet3d's ``NuScenesDataset`` with what multi-camera detection needs and nothing else."""

from __future__ import annotations

from collections.abc import Sequence

from mmdet3d.datasets import NuScenesDataset
from mmengine.fileio import exists

from bev_deform.registry import DATASETS

from .checks import fix_hint
from .transforms.loading import NUSCENES_CAMERAS, check_cameras


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

    Args:
        data_root: dataset root; relative ``ann_file`` and ``data_prefix`` are joined to it.
        ann_file: mmdet3d v2 info file (``nuscenes_infos_{train,val}.pkl``).
        cameras: the cameras every sample must have (checked only with ``modality.use_camera``).
        **kwargs: everything else :class:`NuScenesDataset` accepts (pipeline, modality,
            metainfo, data_prefix, test_mode, ...).
    """

    def __init__(
        self, data_root: str, ann_file: str, cameras: Sequence[str] = NUSCENES_CAMERAS, **kwargs
    ) -> None:
        self.cameras = tuple(cameras)
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
        return super().load_data_list()

    def parse_data_info(self, info: dict) -> dict | list[dict]:
        """Check the cameras of one raw info, then parse it as mmdet3d does."""
        if self.modality.get("use_camera", False):
            sample = f"{info.get('token', info.get('sample_idx'))} of {self.ann_file}"
            check_cameras(info.get("images", {}), self.cameras, sample)
        return super().parse_data_info(info)
