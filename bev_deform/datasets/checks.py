"""Checks of a nuScenes-format dataset root (real or synthetic) that fail early with an error naming
the file and the fix, instead of a KeyError or a None image deep inside a converter or a data loader."""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from .synthetic.generator import META_FILE
from .synthetic.rig import CAMERA_CHANNELS, LIDAR_CHANNEL
from .synthetic.tables import TABLE_NAMES

NUSCENES_VERSIONS = ("v1.0-trainval", "v1.0-test", "v1.0-mini")


def fix_hint(root: str | Path, version: str) -> str:
    """How to (re)create the data at ``root``: the generator's own command for a synthetic root,
    the nuScenes download otherwise."""
    meta = Path(root) / META_FILE
    if meta.is_file():
        command = json.loads(meta.read_text()).get("command", "python tools/create_data.py synthetic")
        return f"regenerate the synthetic dataset with `{command} --overwrite`"
    return (
        f"download and extract nuScenes {version} (https://www.nuscenes.org/download) so that {root} holds "
        f"samples/ and {version}/, or generate a synthetic set there with "
        f"`python tools/create_data.py synthetic --out {root}`"
    )


def check_nuscenes_root(root: str | Path, version: str) -> Path:
    """Check that ``root`` is a nuScenes dataroot of ``version``: the folder, ``<version>/`` with the 13
    tables and ``samples/``. Returns the absolute root.

    Raises:
        ValueError: unknown version.
        FileNotFoundError: naming the first missing path and the fix.
    """
    if version not in NUSCENES_VERSIONS:
        raise ValueError(f"version must be one of {NUSCENES_VERSIONS}, got {version!r}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"nuScenes dataroot {root} does not exist. Fix: {fix_hint(root, version)}")
    if not (root / version).is_dir():
        found = sorted(p.name for p in root.glob("v1.0-*") if p.is_dir())
        raise FileNotFoundError(
            f"{root} has no {version}/ table folder (found {found or 'none'}). Fix: pass the version whose "
            f"folder exists (--version), or {fix_hint(root, version)}"
        )
    missing = [
        f"{version}/{name}.json" for name in TABLE_NAMES if not (root / version / f"{name}.json").is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{root} lacks the nuScenes table(s) {missing}. Fix: {fix_hint(root, version)}"
        )
    if not (root / "samples").is_dir():
        raise FileNotFoundError(f"{root} has no samples/ folder. Fix: {fix_hint(root, version)}")
    return root


def check_image_file(path: str | Path, fix: str) -> tuple[int, int]:
    """Decode one image; returns its (H, W). FileNotFoundError / ValueError name ``path`` and ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist. Fix: {fix}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"image {path} is corrupt or not an image ({path.stat().st_size} bytes). Fix: {fix}")
    return image.shape[:2]


MAX_NAMED = 5  # missing files named in the error; the rest are counted


class MissingFilesError(FileNotFoundError):
    """Files that a dataset's infos would point at are missing (typically a partial download).

    Attributes:
        missing: {sample token: [(filename relative to the dataroot, description), ...]} for every
            sample with at least one missing file, in ``nusc.sample`` order.
    """

    def __init__(self, message: str, missing: dict) -> None:
        super().__init__(message)
        self.missing = missing


def sample_files(nusc, sample: dict, channels, max_sweeps: int) -> list[tuple[str, str]]:
    """The files the infos of one keyframe point at, as (filename relative to the dataroot, what it
    is): one per channel, then, when LIDAR_TOP is among ``channels``, the ``max_sweeps`` LIDAR_TOP
    records before it along ``prev`` (the sweeps mmdet3d's converter lists; fewer at a scene start)."""
    files = [(nusc.get("sample_data", sample["data"][c])["filename"], c) for c in channels]
    if LIDAR_CHANNEL not in channels:
        return files
    record = nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])
    for k in range(1, max_sweeps + 1):
        if not record["prev"]:
            break
        record = nusc.get("sample_data", record["prev"])
        files.append((record["filename"], f"{LIDAR_CHANNEL} sweep {k}"))
    return files


def find_missing_files(nusc, channels=(*CAMERA_CHANNELS, LIDAR_CHANNEL), max_sweeps: int = 0) -> dict:
    """Every keyframe of a loaded ``nuscenes.NuScenes`` whose files (:func:`sample_files`) are not all
    on disk: {sample token: [(filename, "<what> of sample <token>, <scene>"), ...]} in ``nusc.sample``
    order; empty when nothing is missing. Each file is looked up once (sweeps are shared by samples).

    Raises:
        ValueError: a sample without sample_data for one of ``channels`` (a table problem, not a download).
    """
    root = Path(nusc.dataroot)
    on_disk = {}
    missing = {}
    for sample in nusc.sample:
        scene = nusc.get("scene", sample["scene_token"])["name"]
        absent = [c for c in channels if c not in sample["data"]]
        if absent:
            raise ValueError(
                f"sample {sample['token']} of {scene} has no sample_data for {absent} (it has "
                f"{sorted(sample['data'])}); every sample needs {list(channels)}. "
                f"Fix: {fix_hint(root, nusc.version)}"
            )
        gone = []
        for filename, what in sample_files(nusc, sample, channels, max_sweeps):
            if filename not in on_disk:
                on_disk[filename] = (root / filename).is_file()
            if not on_disk[filename]:
                gone.append((filename, f"{what} of sample {sample['token']}, {scene}"))
        if gone:
            missing[sample["token"]] = gone
    return missing


def first_uses(missing: dict) -> dict:
    """{filename: what it is for the first sample that needs it} over ``missing``
    (:func:`find_missing_files`), each missing file once, in sample order."""
    uses = {}
    for files in missing.values():
        for filename, what in files:
            uses.setdefault(filename, what)
    return uses


def missing_files_message(nusc, missing: dict) -> str:
    """One message for all of ``missing`` (:func:`find_missing_files`): how many files and samples, the
    first :data:`MAX_NAMED` files, and the fixes (the download, ``--skip-missing``, ``--max-sweeps 0``)."""
    root, num_samples = Path(nusc.dataroot), len(nusc.sample)
    first_use = first_uses(missing)
    num_files = len(first_use)
    scenes = {nusc.get("sample", token)["scene_token"] for token in missing}
    named = "; ".join(f"{name} ({what})" for name, what in list(first_use.items())[:MAX_NAMED])
    more = f"; and {num_files - MAX_NAMED} more" if num_files > MAX_NAMED else ""
    if (root / META_FILE).is_file():
        download = fix_hint(root, nusc.version)
    else:
        download = f"extract every nuScenes {nusc.version} blob (samples and sweeps) into {root}"
    sweeps_only = [t for t, files in missing.items() if all(" sweep " in what for _, what in files)]
    sweeps = ""
    if sweeps_only:
        sweeps = f"; or, for the {len(sweeps_only)} samples that lack only sweeps, --max-sweeps 0 (no sweeps)"
    return (
        f"{num_files} missing file(s) under {root}: {len(missing)} of the {num_samples} samples "
        f"(in {len(scenes)} scene(s)) lack some. Missing: {named}{more}. Fix: {download}; or pass "
        f"--skip-missing (skip_missing=True) to write the infos of the {num_samples - len(missing)} "
        f"complete samples only{sweeps}"
    )


def check_samples(
    nusc,
    decode_images: bool = False,
    channels=(*CAMERA_CHANNELS, LIDAR_CHANNEL),
    max_sweeps: int = 0,
    skip_missing: bool = False,
) -> dict:
    """Check every keyframe of a loaded ``nuscenes.NuScenes``: it has sample_data for every channel, its
    files (``max_sweeps`` LIDAR_TOP sweeps included) exist, and (``decode_images``) every camera JPEG
    decodes with the size its record states.

    Args:
        skip_missing: return the samples with missing files instead of raising.

    Returns:
        {sample token: [(filename, description), ...]} of the samples with missing files; empty unless
        ``skip_missing``.

    Raises:
        MissingFilesError: missing files (one error for all of them; unless ``skip_missing``).
        ValueError: a sample without a channel, or a corrupt / wrongly sized image (naming the file).
    """
    missing = find_missing_files(nusc, channels, max_sweeps)
    if missing and not skip_missing:
        raise MissingFilesError(missing_files_message(nusc, missing), missing)
    if decode_images:
        fix = fix_hint(nusc.dataroot, nusc.version)
        for sample in nusc.sample:
            if sample["token"] not in missing:
                _check_sample_images(nusc, sample, [c for c in channels if c in CAMERA_CHANNELS], fix)
    return missing


def _check_sample_images(nusc, sample: dict, cameras: list, fix: str) -> None:
    """Decode the ``cameras`` JPEGs of one sample; ValueError for a corrupt or wrongly sized one."""
    for channel in cameras:
        record = nusc.get("sample_data", sample["data"][channel])
        path = Path(nusc.dataroot) / record["filename"]
        hw = check_image_file(path, fix)
        if hw != (record["height"], record["width"]):
            raise ValueError(
                f"image {path} is {hw[1]}x{hw[0]} but its sample_data record says "
                f"{record['width']}x{record['height']}. Fix: {fix}"
            )
