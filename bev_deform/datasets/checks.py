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


def check_samples(nusc, decode_images: bool = False, channels=(*CAMERA_CHANNELS, LIDAR_CHANNEL)) -> None:
    """Check every keyframe of a loaded ``nuscenes.NuScenes``: it has sample_data for every channel, the
    files exist, and (``decode_images``) every camera JPEG decodes with the size its record states.

    Raises:
        ValueError: a sample without a channel, or a corrupt / wrongly sized image (naming the file).
        FileNotFoundError: a missing file.
    """
    root = Path(nusc.dataroot)
    fix = fix_hint(root, nusc.version)
    for sample in nusc.sample:
        scene = nusc.get("scene", sample["scene_token"])["name"]
        missing = [c for c in channels if c not in sample["data"]]
        if missing:
            raise ValueError(
                f"sample {sample['token']} of {scene} has no sample_data for {missing} (it has "
                f"{sorted(sample['data'])}); every sample needs {list(channels)}. Fix: {fix}"
            )
        for channel in channels:
            record = nusc.get("sample_data", sample["data"][channel])
            path = root / record["filename"]
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} ({channel} of sample {sample['token']}, {scene}) is missing. Fix: {fix}"
                )
            if decode_images and channel in CAMERA_CHANNELS:
                hw = check_image_file(path, fix)
                if hw != (record["height"], record["width"]):
                    raise ValueError(
                        f"image {path} is {hw[1]}x{hw[0]} but its sample_data record says "
                        f"{record['width']}x{record['height']}. Fix: {fix}"
                    )
