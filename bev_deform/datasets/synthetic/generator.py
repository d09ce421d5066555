"""generate_synthetic_nuscenes: a small dataset in the exact nuScenes v1.0-mini on-disk format
(13 JSON tables, six camera JPEGs and a LIDAR_TOP .pcd.bin per sample, a map PNG), rendered from
seeded synthetic scenes with the real camera rig.

Layout of the output (as nuScenes):

    <out>/v1.0-mini/*.json                              the 13 tables
    <out>/samples/CAM_*/<log>__CAM_*__<timestamp>.jpg   six cameras per sample
    <out>/samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin   float32 (x, y, z, intensity, ring)
    <out>/maps/<token>.png                              drivable area, 0.1 m / pixel
    <out>/synthetic_meta.json                           preset, seed and the command that made it
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from nuscenes.utils import splits
from tqdm import tqdm

from .classes import CATEGORY_OF_CLASS, attribute_of, visibility_token
from .lidar import cast_lidar
from .raycast import boxes_at
from .render import render_camera
from .rig import (
    CAMERA_CHANNELS,
    LIDAR_CHANNEL,
    NATIVE_WH,
    scaled_intrinsics,
    sensor2ego,
    yaw_pose,
    yaw_to_quat,
)
from .scene import SceneLayout, sample_scene
from .tables import NuScenesTables
from .world import drivable_area_png

VERSION = "v1.0-mini"
META_FILE = "synthetic_meta.json"
LOCATION = "synthetic-town"
DT = 0.5  # seconds between keyframes, as nuScenes samples
TIMESTAMP_START = 1_533_151_603_000_000  # microseconds (2018-08-01); scenes start one hour apart
ANN_RADIUS = 50.0  # objects within this xy distance of the ego are annotated
RENDER_RADIUS = 100.0  # objects within this distance are drawn
NOISE_TABLE = 256


@dataclass(frozen=True)
class Preset:
    """What one preset generates: image size (W, H), scene names (from the devkit's mini splits),
    keyframes per scene, lidar beams x azimuth steps, JPEG quality."""

    name: str
    image_wh: tuple[int, int]
    train_scenes: tuple[str, ...]
    val_scenes: tuple[str, ...]
    samples_per_scene: int
    lidar_beams: int = 32
    lidar_azimuth: int = 720
    jpeg_quality: int = 92


PRESETS = {
    "tiny": Preset("tiny", (160, 90), (splits.mini_train[0],), (splits.mini_val[0],), 6, lidar_azimuth=480),
    "learn": Preset("learn", (400, 225), tuple(splits.mini_train), tuple(splits.mini_val), 40),
    # nuScenes' own 1600x900 images, a few samples: runs the real configs' pipelines at full size
    "native": Preset("native", NATIVE_WH, (splits.mini_train[0],), (splits.mini_val[0],), 2),
}


@dataclass
class _SceneContext:
    """Everything the per-sample steps of one scene share."""

    root: Path
    preset: Preset
    tables: NuScenesTables
    layout: SceneLayout
    noise: np.ndarray
    rng: np.random.Generator
    name: str
    logfile: str
    calib_tokens: dict
    intrinsics: dict

    @property
    def num_samples(self) -> int:
        return self.preset.samples_per_scene

    def timestamp(self, i: int) -> int:
        return self.scene_start + int(round(i * DT * 1e6))

    @property
    def scene_start(self) -> int:
        return TIMESTAMP_START + self.scene_index * 3_600_000_000

    @property
    def scene_index(self) -> int:
        scenes = self.preset.train_scenes + self.preset.val_scenes
        return scenes.index(self.name)


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name ('tiny', 'learn', 'native') or a custom Preset passed through."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return PRESETS[preset]


def generate_synthetic_nuscenes(
    out_dir: str | Path,
    preset: str | Preset = "tiny",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the nuScenes v1.0-mini format and return its root.

    Args:
        out_dir: dataset root to create (``dataroot`` for the devkit).
        preset: 'tiny' (tests: 2 scenes x 6 samples, 160x90), 'learn' (8 train + 2 val scenes x 40
            samples, 400x225), 'native' (full-size checks: 2 scenes x 2 samples at nuScenes' 1600x900),
            or a custom :class:`Preset`.
        seed: non-negative int; the same seed gives identical tables, JPEGs and point clouds.
        overwrite: replace a dataset this generator wrote before in ``out_dir``.
        progress: show a tqdm progress bar.
    """
    preset = get_preset(preset)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _check_scene_names(preset)
    root = _prepare_out_dir(Path(out_dir), overwrite)
    tables = NuScenesTables(int(seed))
    noise = np.random.default_rng([int(seed), 2**32 - 1]).uniform(-1.0, 1.0, size=(NOISE_TABLE, NOISE_TABLE))
    scenes = preset.train_scenes + preset.val_scenes
    _write_map(root, tables, [tables.token("log", name) for name in scenes])
    total = len(scenes) * preset.samples_per_scene
    with tqdm(
        total=total, desc=f"synthetic nuScenes ({preset.name})", unit="sample", disable=not progress
    ) as bar:
        for index, name in enumerate(scenes):
            _generate_scene(root, preset, tables, noise, int(seed), index, name, bar)
    tables.write(root, VERSION)
    meta = dict(
        preset=asdict(preset),
        seed=int(seed),
        version=VERSION,
        command=f"python tools/create_data.py synthetic --out {root} --preset {preset.name} --seed {seed}",
    )
    (root / META_FILE).write_text(json.dumps(meta, indent=2))
    return root


def _check_scene_names(preset: Preset) -> None:
    allowed = set(splits.mini_train) | set(splits.mini_val)
    names = preset.train_scenes + preset.val_scenes
    bad = [n for n in names if n not in allowed]
    if bad or len(set(names)) != len(names):
        raise ValueError(
            f"preset scene names must be distinct names of the devkit's mini_train / mini_val, got {names}"
        )
    wrong_split = [n for n in preset.train_scenes if n not in splits.mini_train]
    wrong_split += [n for n in preset.val_scenes if n not in splits.mini_val]
    if wrong_split:
        raise ValueError(
            f"train_scenes must come from mini_train and val_scenes from mini_val, got {wrong_split}"
        )


def _prepare_out_dir(root: Path, overwrite: bool) -> Path:
    """Create the folders; refuse to clobber data unless it is ours and overwrite is set."""
    if (root / VERSION).exists():
        if not overwrite:
            raise FileExistsError(
                f"{root / VERSION} already exists; pass overwrite=True (--overwrite) to regenerate it, "
                "or choose another output folder"
            )
        if not (root / META_FILE).is_file():
            raise FileExistsError(
                f"{root} holds a nuScenes dataset this generator did not write (no {META_FILE}); "
                "refusing to overwrite it, choose another output folder"
            )
        for sub in (VERSION, "samples", "maps"):
            shutil.rmtree(root / sub, ignore_errors=True)
        for stale in (*root.glob("*_infos_*.pkl"), root / META_FILE):
            stale.unlink()
    for channel in (*CAMERA_CHANNELS, LIDAR_CHANNEL):
        (root / "samples" / channel).mkdir(parents=True, exist_ok=True)
    (root / "maps").mkdir(parents=True, exist_ok=True)
    return root


def _write_map(root: Path, tables: NuScenesTables, log_tokens: list) -> None:
    """One map record (the town's drivable area) listing every log, and its PNG."""
    token = tables.token("map", LOCATION)
    filename = f"maps/{token}.png"
    if not cv2.imwrite(str(root / filename), drivable_area_png()):
        raise OSError(f"could not write the map PNG {root / filename}")
    tables.add("map", category="semantic_prior", token=token, filename=filename, log_tokens=log_tokens)


def _generate_scene(root, preset, tables, noise, seed: int, index: int, name: str, bar) -> None:
    """Sample one scene's layout, render its keyframes and add its log, scene, samples and annotations."""
    rng = np.random.default_rng([seed, index])
    layout = sample_scene(rng, preset.samples_per_scene, DT)
    logfile = f"n-synth-seed{seed}-{index:02d}"
    log_token = tables.add(
        "log",
        token=tables.token("log", name),
        logfile=logfile,
        vehicle="n-synth",
        date_captured="2018-08-01",
        location=LOCATION,
    )
    intrinsics = {c: scaled_intrinsics(c, preset.image_wh) for c in CAMERA_CHANNELS}
    ctx = _SceneContext(
        root,
        preset,
        tables,
        layout,
        noise,
        rng,
        name,
        logfile,
        tables.add_calibrated_sensors(name, intrinsics),
        intrinsics,
    )
    stats = {}
    for i in range(preset.samples_per_scene):
        stats.update(_render_sample(ctx, i))
        bar.update(1)
    _add_annotations(ctx, _annotated_samples(layout, preset.samples_per_scene), stats)
    n = preset.samples_per_scene
    tables.add(
        "scene",
        token=tables.token("scene", name),
        log_token=log_token,
        nbr_samples=n,
        first_sample_token=tables.token("sample", name, 0),
        last_sample_token=tables.token("sample", name, n - 1),
        name=name,
        description=f"synthetic: {len(layout.tracks)} objects, ego at {layout.ego_speed:.1f} m/s",
    )


def _render_sample(ctx: _SceneContext, i: int) -> dict:
    """Render keyframe i (six JPEGs + one point cloud), add its sample, sample_data and ego_pose records.

    Returns {(track index, i): (num_lidar_pts, visible fraction)} for every object drawn.
    """
    t, timestamp = i * DT, ctx.timestamp(i)
    ego_xyz, ego_yaw = ctx.layout.ego_pose(t)
    ego2global = yaw_pose(ego_yaw, ego_xyz)
    xy = (
        np.array([trk.xy0 for trk in ctx.layout.tracks])
        + np.array([trk.velocity for trk in ctx.layout.tracks]) * t
    )
    boxes = boxes_at(ctx.layout.tracks, t, keep=np.linalg.norm(xy - ego_xyz[:2], axis=1) < RENDER_RADIUS)
    classes = [ctx.layout.tracks[k].cls for k in boxes.track]
    tints = np.array([ctx.layout.tracks[k].tint for k in boxes.track])
    sample = ctx.tables.chain("sample", ctx.name, index=i, length=ctx.num_samples)
    ctx.tables.add(
        "sample",
        token=sample["token"],
        timestamp=timestamp,
        prev=sample["prev"],
        next=sample["next"],
        scene_token=ctx.tables.token("scene", ctx.name),
    )
    visible, silhouette = np.zeros(len(boxes)), np.zeros(len(boxes))
    for channel in CAMERA_CHANNELS:
        image, vis, sil = render_camera(
            ctx.intrinsics[channel],
            ego2global @ sensor2ego(channel),
            ctx.preset.image_wh,
            boxes,
            classes,
            tints,
            ctx.noise,
        )
        visible, silhouette = visible + vis, silhouette + sil
        filename = f"samples/{channel}/{ctx.logfile}__{channel}__{timestamp}.jpg"
        params = [cv2.IMWRITE_JPEG_QUALITY, ctx.preset.jpeg_quality]
        if not cv2.imwrite(
            str(ctx.root / filename), np.ascontiguousarray(image[..., ::-1]), params
        ):  # RGB -> BGR
            raise OSError(f"could not write {ctx.root / filename}")
        _add_sample_data(ctx, channel, i, filename, ego_xyz, ego_yaw)
    points, num_pts = cast_lidar(
        ego2global @ sensor2ego(LIDAR_CHANNEL),
        ctx.preset.lidar_beams,
        ctx.preset.lidar_azimuth,
        boxes,
        classes,
        ctx.rng,
    )
    filename = f"samples/{LIDAR_CHANNEL}/{ctx.logfile}__{LIDAR_CHANNEL}__{timestamp}.pcd.bin"
    points.tofile(ctx.root / filename)
    _add_sample_data(ctx, LIDAR_CHANNEL, i, filename, ego_xyz, ego_yaw)
    fraction = np.divide(visible, silhouette, out=np.zeros(len(boxes)), where=silhouette > 0)
    return {(int(k), i): (int(num_pts[j]), float(fraction[j])) for j, k in enumerate(boxes.track)}


def _add_sample_data(
    ctx: _SceneContext, channel: str, i: int, filename: str, ego_xyz, ego_yaw: float
) -> None:
    """One keyframe sample_data record of ``channel`` and its own ego_pose record (as nuScenes)."""
    timestamp, tables = ctx.timestamp(i), ctx.tables
    ego_token = tables.add(
        "ego_pose",
        token=tables.token("ego_pose", ctx.name, channel, i),
        timestamp=timestamp,
        rotation=yaw_to_quat(ego_yaw),
        translation=[float(v) for v in ego_xyz],
    )
    is_camera = channel != LIDAR_CHANNEL
    width, height = ctx.preset.image_wh if is_camera else (0, 0)
    link = tables.chain("sample_data", ctx.name, channel, index=i, length=ctx.num_samples)
    tables.add(
        "sample_data",
        token=link["token"],
        sample_token=tables.token("sample", ctx.name, i),
        ego_pose_token=ego_token,
        calibrated_sensor_token=ctx.calib_tokens[channel],
        timestamp=timestamp,
        fileformat="jpg" if is_camera else "pcd",
        is_key_frame=True,
        height=height,
        width=width,
        filename=filename,
        prev=link["prev"],
        next=link["next"],
    )


def _annotated_samples(layout: SceneLayout, num_samples: int) -> dict:
    """track index -> (first, last) keyframe of its annotations: the keyframes where it is within
    ANN_RADIUS of the ego, made contiguous, and at least two long so that its velocity is defined."""
    times = np.arange(num_samples) * DT  # (S,)
    ego_xy = np.stack([layout.ego_pose(t)[0][:2] for t in times])  # (S, 2)
    ranges = {}
    for k, track in enumerate(layout.tracks):
        xy = np.asarray(track.xy0)[None] + np.asarray(track.velocity)[None] * times[:, None]  # (S, 2)
        near = np.flatnonzero(np.linalg.norm(xy - ego_xy, axis=1) < ANN_RADIUS)
        if len(near) == 0:
            continue
        first, last = int(near[0]), int(near[-1])
        if first == last:
            first, last = (first, last + 1) if last + 1 < num_samples else (first - 1, last)
        ranges[k] = (first, last)
    return ranges


def _add_annotations(ctx: _SceneContext, ranges: dict, stats: dict) -> None:
    """sample_annotation records (linked prev / next) and one instance record per annotated track."""
    tables, name = ctx.tables, ctx.name
    for k, (first, last) in sorted(ranges.items()):
        track = ctx.layout.tracks[k]
        count = last - first + 1
        attribute = attribute_of(track.cls, track.speed)
        attribute_tokens = [] if attribute is None else [tables.token("attribute", attribute)]
        length, width, height = track.size
        for j in range(count):
            i = first + j
            num_pts, fraction = stats.get((k, i), (0, 0.0))
            tables.add(
                "sample_annotation",
                **tables.chain("sample_annotation", name, k, index=j, length=count),
                sample_token=tables.token("sample", name, i),
                instance_token=tables.token("instance", name, k),
                visibility_token=visibility_token(fraction),
                attribute_tokens=attribute_tokens,
                translation=[float(v) for v in track.centre(i * DT)],
                size=[width, length, height],
                rotation=yaw_to_quat(track.yaw),
                num_lidar_pts=num_pts,
                num_radar_pts=0,
            )
        tables.add(
            "instance",
            token=tables.token("instance", name, k),
            category_token=tables.token("category", CATEGORY_OF_CLASS[track.cls]),
            nbr_annotations=count,
            first_annotation_token=tables.token("sample_annotation", name, k, 0),
            last_annotation_token=tables.token("sample_annotation", name, k, count - 1),
        )
