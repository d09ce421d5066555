"""The 13 nuScenes JSON tables of a synthetic dataset, record for record in the devkit's schema.

Tokens are 32 hex digits derived from the seed and a readable key (md5), so the same seed gives the
same tables byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .classes import ALL_CATEGORIES, ATTRIBUTES, VISIBILITY_LEVELS
from .rig import CAMERA_CHANNELS, LIDAR_CHANNEL, RIG

TABLE_NAMES = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)


class NuScenesTables:
    """Accumulates the records of all tables; ``write`` dumps them as ``<root>/<version>/<table>.json``."""

    def __init__(self, seed: int):
        self.seed = seed
        self.records = {name: [] for name in TABLE_NAMES}
        self._add_taxonomy()

    def token(self, *key) -> str:
        """Deterministic 32-hex-digit token for a readable key such as ('sample', 'scene-0061', 3)."""
        text = "/".join(str(k) for k in (self.seed, *key))
        return hashlib.md5(text.encode()).hexdigest()

    def add(self, table: str, **record) -> str:
        """Append one record (its 'token' must be given) and return the token."""
        self.records[table].append(record)
        return record["token"]

    def _add_taxonomy(self) -> None:
        for index, name in enumerate(ALL_CATEGORIES):
            self.add("category", token=self.token("category", name), name=name, description=name, index=index)
        for name in ATTRIBUTES:
            self.add("attribute", token=self.token("attribute", name), name=name, description=name)
        for token, level in VISIBILITY_LEVELS:
            self.add(
                "visibility", token=token, level=level, description=f"visibility of whole object is {level}"
            )
        for channel in (*CAMERA_CHANNELS, LIDAR_CHANNEL):
            modality = "lidar" if channel == LIDAR_CHANNEL else "camera"
            self.add("sensor", token=self.token("sensor", channel), channel=channel, modality=modality)

    def add_calibrated_sensors(self, scene: str, intrinsics: dict) -> dict:
        """One calibrated_sensor per channel for a scene (log); intrinsics: channel -> (3, 3).
        Returns channel -> token."""
        tokens = {}
        for channel in (*CAMERA_CHANNELS, LIDAR_CHANNEL):
            calib = RIG[channel]
            k = intrinsics.get(channel)
            tokens[channel] = self.add(
                "calibrated_sensor",
                token=self.token("calibrated_sensor", scene, channel),
                sensor_token=self.token("sensor", channel),
                translation=list(calib.translation),
                rotation=list(calib.rotation),
                camera_intrinsic=[] if k is None else np.asarray(k).tolist(),
            )
        return tokens

    def chain(self, kind: str, *key, index: int, length: int) -> dict:
        """token / prev / next of item ``index`` in a sequence of ``length`` records of ``kind`` identified
        by ``(kind, *key, index)``: tokens are deterministic, so links are known before the records."""

        def tok(i: int) -> str:
            return self.token(kind, *key, i) if 0 <= i < length else ""

        return {"token": tok(index), "prev": tok(index - 1), "next": tok(index + 1)}

    def write(self, root: Path, version: str) -> Path:
        """Dump every table to ``root/version/<table>.json``; returns that folder."""
        folder = Path(root) / version
        folder.mkdir(parents=True, exist_ok=True)
        for name in TABLE_NAMES:
            with open(folder / f"{name}.json", "w") as f:
                json.dump(self.records[name], f, indent=0)
        return folder
