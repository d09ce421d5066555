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
  ``_fill_trainval_infos`` ourselves and keep the v1 files in a temporary folder, so only the final
  v2 files land in ``out_dir``.

Partial downloads (some trainval blobs only) are checked before the converter runs, which would stop
at the first missing LIDAR_TOP file, list missing camera files and sweeps in the infos unnoticed, and
(``get_available_scenes``) silently move the samples of a scene whose first point cloud is missing
into val. Instead, one :class:`~.checks.MissingFilesError` counts the missing files and names the first
few; ``skip_missing=True`` writes the infos of the complete samples, each in its scene's split, and
says how many were dropped. The v2 files are written to a temporary folder next to ``out_dir`` and
moved into place only when every split is done, so a failed run leaves existing info files as they were.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType

import mmengine
from nuscenes.nuscenes import NuScenes

from .checks import (
    MAX_NAMED,
    MissingFilesError,
    check_nuscenes_root,
    check_samples,
    first_uses,
    missing_files_message,
)

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


def _split_scene_tokens(nusc, version: str) -> tuple[set, set]:
    """Scene tokens of the train and val (or test) split, by the devkit's split lists, as mmdet3d's
    ``create_nuscenes_infos`` selects them; raises if a scene belongs to neither split (the converter
    would silently put it into val)."""
    from nuscenes.utils import splits

    train_name, val_name = SPLIT_NAMES[version]
    scenes = {s["name"]: s["token"] for s in nusc.scene}
    train_names = set(getattr(splits, train_name))
    val_names = set(getattr(splits, val_name)) if val_name else set()
    stray = sorted(set(scenes) - train_names - val_names)
    if stray:
        raise ValueError(
            f"scenes {stray} of {nusc.dataroot} are in neither the {train_name} nor the {val_name} split of "
            f"the devkit for {version}. Fix: pass the version the data belongs to (--version)"
        )
    train = {tok for name, tok in scenes.items() if name in train_names}
    return train, {tok for name, tok in scenes.items() if name in val_names}


class _CompleteSamples:
    """The loaded ``NuScenes`` with ``sample`` narrowed to ``samples`` (what the converter iterates);
    every table, index and method is the original's, so annotations, sweeps and velocities of the
    kept samples are looked up as usual."""

    def __init__(self, nusc, samples: list) -> None:
        self._nusc = nusc
        self.sample = samples

    def __getattr__(self, name: str):
        return getattr(self._nusc, name)


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
    skip_missing: bool = False,
) -> dict:
    """Write mmdet3d v2 info files for the nuScenes-format data at ``root``.

    Args:
        root: nuScenes dataroot (holds ``samples/`` and ``<version>/``).
        version: 'v1.0-trainval', 'v1.0-mini' (also the synthetic sets) or 'v1.0-test'.
        out_dir: where to write the pkl files; default ``root``.
        prefix: file name prefix: ``{prefix}_infos_{train,val}.pkl`` (``_test`` for v1.0-test).
        max_sweeps: lidar sweeps per sample, passed to mmdet3d's converter (their files are checked too).
        decode_images: also decode every camera image (catches corrupt files; slow on v1.0-trainval).
        skip_missing: leave out the samples with a missing file (and print how many) instead of raising.

    Returns:
        {'train': path, 'val': path} (or {'test': path}); a split without any (complete) sample is
        left out and its file not written.

    Raises:
        MissingFilesError: files are missing (and not ``skip_missing``), or no sample is complete.
    """
    root = check_nuscenes_root(root, version)
    out_dir = Path(out_dir).absolute() if out_dir is not None else root
    converter, updater = load_converter("nuscenes_converter"), load_converter("update_infos_to_v2")
    nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    missing = check_samples(nusc, decode_images, max_sweeps=max_sweeps, skip_missing=skip_missing)
    train, val = _split_scene_tokens(nusc, version)
    test = version == "v1.0-test"
    source = nusc
    if missing:
        source = _CompleteSamples(nusc, [s for s in nusc.sample if s["token"] not in missing])
        print(_skipped_message(nusc, missing, source.sample, train, test))
    train_infos, val_infos = converter._fill_trainval_infos(source, train, val, test, max_sweeps=max_sweeps)
    updater.NuScenes = _reuse(nusc)  # the private module only: see the module docstring
    parts = {"test": train_infos} if test else {"train": train_infos, "val": val_infos}
    for split in [split for split, infos in parts.items() if not infos]:
        # mmdet3d's update_nuscenes_infos fails on an empty list (UnboundLocalError)
        print(f"no {split} sample: {prefix}_infos_{split}.pkl is not written (an existing one is kept)")
        del parts[split]
    return _write_v2_infos(updater, parts, out_dir, prefix, version)


def _skipped_message(nusc, missing: dict, kept: list, train: set, test: bool) -> str:
    """What ``skip_missing`` dropped and kept; raises MissingFilesError when nothing is left."""
    if not kept:
        raise MissingFilesError(
            f"none of the {len(nusc.sample)} samples has all its files, so there are no infos to write. "
            + missing_files_message(nusc, missing),
            missing,
        )
    first = [f"{name} ({what})" for name, what in list(first_uses(missing).items())[:MAX_NAMED]]
    message = (
        f"skip_missing: dropped {len(missing)} of {len(nusc.sample)} samples with missing files "
        f"(first: {'; '.join(first)}); the infos hold the other {len(kept)}"
    )
    if test:
        return message
    num_train = sum(s["scene_token"] in train for s in kept)
    dropped_val = sum(nusc.get("sample", t)["scene_token"] not in train for t in missing)
    message += f" (train: {num_train}, val: {len(kept) - num_train})"
    if dropped_val:
        message += (
            f". The nuScenes evaluation (devkit DetectionEval) needs every sample of the val split, so "
            f"evaluate on a complete val split: {dropped_val} val samples are missing here"
        )
    return message


def _write_v2_infos(updater: ModuleType, parts: dict, out_dir: Path, prefix: str, version: str) -> dict:
    """Convert each split's v1 infos to v2 in a temporary folder inside ``out_dir`` and move the files
    into ``out_dir`` only when all splits succeeded (an existing info file survives a failed run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".infos-tmp-") as tmp:
        v1_dir, v2_dir = Path(tmp) / "v1", Path(tmp) / "v2"
        v1_dir.mkdir()
        v2_dir.mkdir()
        for split, infos in parts.items():
            v1_path = v1_dir / f"{prefix}_infos_{split}.pkl"
            mmengine.dump(dict(infos=infos, metadata=dict(version=version)), v1_path)
            updater.update_nuscenes_infos(pkl_path=str(v1_path), out_dir=str(v2_dir))
            staged[split] = v2_dir / v1_path.name
            if not staged[split].is_file():
                raise FileNotFoundError(f"mmdet3d's update_nuscenes_infos wrote no {staged[split]}")
        outputs = {}
        for split, path in staged.items():
            outputs[split] = out_dir / path.name
            os.replace(path, outputs[split])  # same filesystem: atomic
    return outputs
