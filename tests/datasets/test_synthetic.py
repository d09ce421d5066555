"""The synthetic nuScenes generator: the real devkit reads it, and its images, lidar and tables agree
with each other and with the rig (known answers, not just "it runs")."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.geometry_utils import BoxVisibility, view_points
from nuscenes.utils.splits import mini_train, mini_val
from PIL import Image

from bev_deform.datasets.synthetic import PRESETS, Preset, generate_synthetic_nuscenes
from bev_deform.datasets.synthetic.classes import CLASS_RGB, DETECTION_CLASSES, MEAN_SIZE_LWH
from bev_deform.datasets.synthetic.lidar import cast_lidar
from bev_deform.datasets.synthetic.raycast import BoxSet
from bev_deform.datasets.synthetic.render import render_camera
from bev_deform.datasets.synthetic.rig import RIG, scaled_intrinsics, yaw_pose
from bev_deform.geometry import CAM_NAMES

matplotlib.use("Agg")
CAMERAS = CAM_NAMES


@pytest.fixture(scope="module")
def nusc(synthetic_nuscenes_tiny):
    return NuScenes(version="v1.0-mini", dataroot=str(synthetic_nuscenes_tiny), verbose=False)


def _val_samples(nusc):
    val_scenes = {s["token"] for s in nusc.scene if s["name"] in mini_val}
    return [s for s in nusc.sample if s["scene_token"] in val_scenes]


def test_devkit_loads_the_tiny_preset_with_mini_split_scenes(nusc, synthetic_nuscenes_tiny):
    assert [s["name"] for s in nusc.scene] == ["scene-0061", "scene-0103"]
    assert nusc.scene[0]["name"] in mini_train and nusc.scene[1]["name"] in mini_val
    assert len(nusc.sample) == 12
    for sample in nusc.sample:
        assert set(sample["data"]) == {*CAMERAS, "LIDAR_TOP"}
        for channel in CAMERAS:
            record = nusc.get("sample_data", sample["data"][channel])
            with Image.open(synthetic_nuscenes_tiny / record["filename"]) as image:
                assert image.size == (record["width"], record["height"]) == (160, 90)
        points = np.fromfile(nusc.get_sample_data_path(sample["data"]["LIDAR_TOP"]), dtype=np.float32)
        assert points.size % 5 == 0 and points.size > 5 * 1000
    # every log is listed by a map record whose PNG exists (the eval and render_egoposes_on_map need it)
    for log in nusc.log:
        map_record = nusc.get("map", log["map_token"])
        assert (synthetic_nuscenes_tiny / map_record["filename"]).is_file()
    names = {category_to_detection_name(a["category_name"]) for a in nusc.sample_annotation}
    assert names == set(DETECTION_CLASSES)


def test_devkit_render_sample_draws_a_sample(nusc, tmp_path):
    out = tmp_path / "sample.png"
    nusc.render_sample(nusc.sample[8]["token"], out_path=str(out), verbose=False)
    with Image.open(out) as image:
        assert image.size[0] > 500 and np.asarray(image.convert("L")).std() > 10


def test_calibration_is_the_real_rig_with_scaled_intrinsics(nusc):
    for record in nusc.calibrated_sensor:
        channel = nusc.get("sensor", record["sensor_token"])["channel"]
        assert record["translation"] == list(RIG[channel].translation)
        assert record["rotation"] == list(RIG[channel].rotation)
    front = next(
        r for r in nusc.calibrated_sensor if r["camera_intrinsic"] and r["camera_intrinsic"][0][0] > 120
    )
    # CAM_FRONT 1266.42 / 816.27 / 491.51 at 1600x900, scaled by 160 / 1600
    np.testing.assert_allclose(
        front["camera_intrinsic"], [[126.642, 0, 81.627], [0, 126.642, 49.151], [0, 0, 1]]
    )


def _nearest_class_by_chroma(rgb: np.ndarray) -> str:
    chroma = lambda c: np.asarray(c, dtype=np.float64) / max(float(np.sum(c)), 1.0)  # noqa: E731
    return min(CLASS_RGB, key=lambda name: np.abs(chroma(rgb) - chroma(CLASS_RGB[name])).sum())


def _side_view_candidates(nusc, root: Path):
    """(class, pixel rgb) at the projected centre of fully visible boxes seen side-on, 4-25 m away."""
    for sample in nusc.sample:
        for channel in CAMERAS:
            path, boxes, k = nusc.get_sample_data(sample["data"][channel], box_vis_level=BoxVisibility.ALL)
            image = np.asarray(Image.open(path).convert("RGB"))
            for box in boxes:
                ann = nusc.get("sample_annotation", box.token)
                heading = box.orientation.rotation_matrix[:, 0]
                side_on = abs(heading @ box.center / np.linalg.norm(box.center)) < 0.3
                u, v = view_points(box.center[:, None], k, normalize=True)[:2, 0]
                if ann["visibility_token"] == "4" and side_on and 4 < box.center[2] < 25:
                    yield category_to_detection_name(ann["category_name"]), image[int(v), int(u)]


def test_box_centre_projects_through_the_rig_onto_its_class_colour(nusc, synthetic_nuscenes_tiny):
    """The devkit projects each box with the tables' ego pose, calibration and intrinsics; the JPEG
    pixel there has the chroma of the box's class colour (shading only scales it)."""
    found = list(_side_view_candidates(nusc, synthetic_nuscenes_tiny))
    assert len(found) >= 5
    for cls, rgb in found:
        assert _nearest_class_by_chroma(rgb) == cls, (cls, rgb)


def _two_boxes_in_a_row(with_front: bool) -> BoxSet:
    """A car 10 m ahead of the ego and a pedestrian 20 m ahead, straight behind it."""
    centres, yaws, sizes = [[20.0, 0.0, 0.9]], [0.0], [MEAN_SIZE_LWH["pedestrian"]]
    if with_front:
        centres, yaws, sizes = [[10.0, 0.0, 1.0], *centres], [0.0, *yaws], [(4.6, 2.0, 2.0), *sizes]
    return BoxSet(np.array(centres), np.array(yaws), np.array(sizes, dtype=np.float64), np.arange(len(yaws)))


def _forward_camera() -> np.ndarray:
    """(4, 4) cam2global of a camera at (1.7, 0, 1.5) looking along +x (x right, y down, z forward)."""
    cam = np.eye(4)
    cam[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    cam[:3, 3] = [1.7, 0.0, 1.5]
    return cam


def test_hidden_object_gets_no_lidar_points_and_no_pixels():
    lidar2global = yaw_pose(0.0, RIG["LIDAR_TOP"].translation)
    k = scaled_intrinsics("CAM_FRONT", (160, 90))
    rng = np.random.default_rng(0)
    hidden = _two_boxes_in_a_row(with_front=True)
    _, num_pts = cast_lidar(lidar2global, 32, 720, hidden, ["car", "pedestrian"], rng)
    _, visible, silhouette = render_camera(
        k, _forward_camera(), (160, 90), hidden, ["car", "pedestrian"], np.ones(2), np.zeros((4, 4))
    )
    assert num_pts[0] > 50 and num_pts[1] == 0
    assert visible[1] == 0 and silhouette[1] > 0 and visible[0] == silhouette[0] > 0
    # the same pedestrian alone is hit by the lidar and fully visible
    alone = _two_boxes_in_a_row(with_front=False)
    _, num_pts = cast_lidar(lidar2global, 32, 720, alone, ["pedestrian"], rng)
    _, visible, silhouette = render_camera(
        k, _forward_camera(), (160, 90), alone, ["pedestrian"], np.ones(1), np.zeros((4, 4))
    )
    assert num_pts[0] > 5 and visible[0] == silhouette[0] > 0


def test_all_ten_classes_are_seen_by_the_lidar_in_val(nusc):
    seen = {
        category_to_detection_name(nusc.get("sample_annotation", tok)["category_name"])
        for sample in _val_samples(nusc)
        for tok in sample["anns"]
        if nusc.get("sample_annotation", tok)["num_lidar_pts"] > 0
    }
    assert seen == set(DETECTION_CLASSES)


def test_velocity_is_finite_and_equals_displacement_over_half_a_second(nusc):
    moving = 0
    for ann in nusc.sample_annotation:
        velocity = nusc.box_velocity(ann["token"])
        assert np.isfinite(velocity).all()
        if ann["next"]:
            nxt = nusc.get("sample_annotation", ann["next"])
            displacement = np.subtract(nxt["translation"], ann["translation"]) / 0.5
            np.testing.assert_allclose(velocity, displacement, atol=1e-6)
        speed = np.linalg.norm(velocity[:2])
        moving += speed > 0.2
        attributes = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
        cls = category_to_detection_name(ann["category_name"])
        if cls in ("traffic_cone", "barrier"):
            assert attributes == []
        else:
            assert len(attributes) == 1
            assert attributes[0].endswith(("moving", "with_rider")) == (speed > 0.2), (cls, attributes, speed)
    assert moving > 20


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    small = Preset("t", (160, 90), ("scene-0061",), ("scene-0103",), 2, lidar_azimuth=180)
    first = _digest(generate_synthetic_nuscenes(tmp_path / "a", small, seed=3, progress=False))
    again = _digest(generate_synthetic_nuscenes(tmp_path / "b", small, seed=3, progress=False))
    other = _digest(generate_synthetic_nuscenes(tmp_path / "c", small, seed=4, progress=False))
    first.pop("synthetic_meta.json"), again.pop("synthetic_meta.json")  # it names the output folder
    assert first == again
    assert sum(name.endswith(".jpg") for name in first) == 2 * 2 * 6
    jpgs = sorted(name for name in first if name.endswith(".jpg"))
    assert [first[n] for n in jpgs] != [other.get(n) for n in jpgs]


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="preset must be one of"):
        generate_synthetic_nuscenes(tmp_path, "huge")
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        generate_synthetic_nuscenes(tmp_path, "tiny", seed=-1)
    bad = Preset("bad", (160, 90), ("scene-0103",), (), 2)
    with pytest.raises(ValueError, match="train_scenes must come from mini_train"):
        generate_synthetic_nuscenes(tmp_path, bad)
    with pytest.raises(ValueError, match="16:9"):
        scaled_intrinsics("CAM_FRONT", (160, 120))


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    small = Preset("t", (160, 90), ("scene-0061",), ("scene-0103",), 2, lidar_azimuth=180)
    root = generate_synthetic_nuscenes(tmp_path / "d", small, seed=0, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthetic_nuscenes(root, small, seed=0, progress=False)
    generate_synthetic_nuscenes(root, small, seed=1, overwrite=True, progress=False)
    (root / "synthetic_meta.json").unlink()  # now it looks like somebody else's data
    with pytest.raises(FileExistsError, match="did not write"):
        generate_synthetic_nuscenes(root, small, seed=0, overwrite=True, progress=False)


def test_learn_preset_matches_the_issue():
    learn = PRESETS["learn"]
    assert learn.train_scenes == tuple(mini_train) and learn.val_scenes == tuple(mini_val)
    assert learn.image_wh[0] >= 400 and learn.image_wh[1] >= 225


def test_native_preset_has_nuscenes_image_size_and_both_splits():
    native = PRESETS["native"]
    assert native.image_wh == (1600, 900)
    assert len(native.train_scenes) == len(native.val_scenes) == 1 and native.samples_per_scene >= 2


def _footprint_polygon(track, t: float):
    from shapely.geometry import Polygon

    length, width, _ = track.size
    c, s = np.cos(track.yaw), np.sin(track.yaw)
    corners = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, width / 2]  # (4, 2) box frame
    return Polygon(corners @ np.array([[c, s], [-s, c]]) + track.centre(t)[:2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objects_never_overlap_each_other_or_the_ego(seed):
    from bev_deform.datasets.synthetic.scene import EGO_LANE_D, sample_scene

    layout = sample_scene(np.random.default_rng(seed), num_samples=40)
    assert {t.cls for t in layout.tracks} == set(DETECTION_CLASSES)
    for t in np.arange(0.0, layout.duration + 0.1, 2.5):
        polygons = [_footprint_polygon(track, t) for track in layout.tracks]
        ego_xy, _ = layout.ego_pose(t)
        assert np.isclose(
            layout.road.to_world(layout.ego_s0 + layout.ego_speed * t, EGO_LANE_D), ego_xy[:2]
        ).all()
        ego = _footprint_polygon(
            type(layout.tracks[0])(
                "car", (4.7, 1.9, 1.7), layout.road.yaw, tuple(ego_xy[:2]), (0.0, 0.0), 1.0
            ),
            0.0,
        )
        for i, poly in enumerate(polygons):
            assert poly.intersection(ego).area == 0.0, (t, layout.tracks[i])
            for j in range(i + 1, len(polygons)):
                if poly.distance(polygons[j]) == 0.0:
                    assert poly.intersection(polygons[j]).area < 1e-9, (t, layout.tracks[i], layout.tracks[j])
