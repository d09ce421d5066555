"""mmdet3d v2 info files (``{prefix}_infos_{train,val}.pkl``) for nuScenes-format data, real or synthetic,
made by mmdet3d 1.4's own converter functions (no rewrite of them).

The converter ships with the mmdet3d pip package under ``mmdet3d/.mim/tools/dataset_converters/``
(``nuscenes_converter.py`` for the v1 infos, ``update_infos_to_v2.py`` for the v2 format); it is not an
importable package, so each file is loaded by path into a private module of its own.

Two traps of that code are handled here, with explicit paths and without touching the process state:

- ``update_nuscenes_infos`` re-opens the devkit at the hard-coded ``./data/nuscenes``. Our private copy
  of that module gets a ``NuScenes`` that returns the instance already loaded from ``root`` (this also
  avoids loading the tables twice, a minute for v1.0-trainval). No chdir, no symlink.
- ``create_nuscenes_infos`` writes its v1 pkl files into the data root. We call the converter's
  ``get_available_scenes`` and ``_fill_trainval_infos`` ourselves and keep the v1 files in a
  temporary folder, so only the final v2 files land in ``out_dir``.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from types import ModuleType

import mmengine
from nuscenes.nuscenes import NuScenes

from .checks import check_nuscenes_root, check_samples

SPLIT_NAMES = {
    "v1.0-trainval": ("train", "val"),
    "v1.0-mini": ("mini_train", "mini_val"),
    "v1.0-test": ("test", None),
}


def converter_dir() -> Path:
    """The folder of mmdet3d's dataset converters inside the installed mmdet3d package."""
    import mmdet3d

    return Path(mmdet3d.__file__).parent / ".mim" / "tools" / "dataset_converters"


def load_converter(name: str) -> ModuleType:
    """Load ``<mmdet3d>/.mim/tools/dataset_converters/<name>.py`` as a fresh private module."""
    path = converter_dir() / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"mmdet3d's converter {path} is missing. Fix: install the mmdet3d 1.4 pip package, which ships "
            "it under mmdet3d/.mim/tools (pip install --force-reinstall mmdet3d==1.4.0)"
        )
    spec = importlib.util.spec_from_file_location(f"bev_deform._mmdet3d_converters.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split_scene_tokens(converter: ModuleType, nusc, version: str) -> tuple[set, set]:
    """Scene tokens of the train and val (or test) split among the scenes present, as mmdet3d's
    ``create_nuscenes_infos`` selects them; raises if a scene belongs to neither split (the converter
    would silently put it into val)."""
    from nuscenes.utils import splits

    train_name, val_name = SPLIT_NAMES[version]
    available = {s["name"]: s["token"] for s in converter.get_available_scenes(nusc)}
    if not available:
        raise FileNotFoundError(
            f"no scene of {nusc.dataroot} has its LIDAR_TOP files; check samples/LIDAR_TOP"
        )
    train_names = set(getattr(splits, train_name))
    val_names = set(getattr(splits, val_name)) if val_name else set()
    stray = sorted(set(available) - train_names - val_names)
    if stray:
        raise ValueError(
            f"scenes {stray} of {nusc.dataroot} are in neither the {train_name} nor the {val_name} split of "
            f"the devkit for {version}. Fix: pass the version the data belongs to (--version)"
        )
    train = {tok for name, tok in available.items() if name in train_names}
    return train, {tok for name, tok in available.items() if name in val_names}


def _reuse(nusc):
    """A stand-in for ``NuScenes(version, dataroot, verbose)`` that returns the loaded ``nusc``."""

    def factory(version: str, dataroot: str = "", verbose: bool = True):
        if version != nusc.version:
            raise ValueError(
                f"the v1 infos say version {version!r} but the data was loaded as {nusc.version!r}"
            )
        return nusc

    return factory


def create_nuscenes_infos(
    root: str | Path,
    version: str,
    out_dir: str | Path | None = None,
    prefix: str = "nuscenes",
    max_sweeps: int = 10,
    decode_images: bool = False,
) -> dict:
    """Write mmdet3d v2 info files for the nuScenes-format data at ``root``.

    Args:
        root: nuScenes dataroot (holds ``samples/`` and ``<version>/``).
        version: 'v1.0-trainval', 'v1.0-mini' (also the synthetic sets) or 'v1.0-test'.
        out_dir: where to write the pkl files; default ``root``.
        prefix: file name prefix: ``{prefix}_infos_{train,val}.pkl`` (``_test`` for v1.0-test).
        max_sweeps: lidar sweeps per sample, passed to mmdet3d's converter.
        decode_images: also decode every camera image (catches corrupt files; slow on v1.0-trainval).

    Returns:
        {'train': path, 'val': path} (or {'test': path}).
    """
    root = check_nuscenes_root(root, version)
    out_dir = Path(out_dir).absolute() if out_dir is not None else root
    out_dir.mkdir(parents=True, exist_ok=True)
    converter, updater = load_converter("nuscenes_converter"), load_converter("update_infos_to_v2")
    nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    check_samples(nusc, decode_images=decode_images)
    train, val = _split_scene_tokens(converter, nusc, version)
    test = version == "v1.0-test"
    train_infos, val_infos = converter._fill_trainval_infos(nusc, train, val, test, max_sweeps=max_sweeps)
    updater.NuScenes = _reuse(nusc)  # the private module only: see the module docstring
    parts = {"test": train_infos} if test else {"train": train_infos, "val": val_infos}
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split, infos in parts.items():
            v1_path = Path(tmp) / f"{prefix}_infos_{split}.pkl"
            mmengine.dump(dict(infos=infos, metadata=dict(version=version)), v1_path)
            updater.update_nuscenes_infos(pkl_path=str(v1_path), out_dir=str(out_dir))
            outputs[split] = out_dir / v1_path.name
    return outputs
