"""Info files through mmdet3d's own nuScenes converter, and the errors for bad input data."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import mmengine
import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes

from bev_deform.datasets.checks import check_nuscenes_root, check_samples
from bev_deform.datasets.create_infos import converter_dir, create_nuscenes_infos
from bev_deform.geometry import CAM_NAMES

CAMERAS = CAM_NAMES
REPO = Path(__file__).resolve().parents[2]


def test_the_converter_is_mmdet3ds_shipped_file():
    assert (converter_dir() / "nuscenes_converter.py").is_file()
    assert (converter_dir() / "update_infos_to_v2.py").is_file()
    assert converter_dir().parts[-4:] == ("mmdet3d", ".mim", "tools", "dataset_converters")


def test_v2_infos_have_every_sample_camera_and_instance(synthetic_nuscenes_tiny):
    nusc = NuScenes(version="v1.0-mini", dataroot=str(synthetic_nuscenes_tiny), verbose=False)
    for split, scene in (("train", "scene-0061"), ("val", "scene-0103")):
        infos = mmengine.load(synthetic_nuscenes_tiny / f"nuscenes_infos_{split}.pkl")
        assert infos["metainfo"]["version"] == "v1.0-mini" and infos["metainfo"]["dataset"] == "nuscenes"
        assert len(infos["data_list"]) == 6
        for info in infos["data_list"]:
            sample = nusc.get("sample", info["token"])
            assert nusc.get("scene", sample["scene_token"])["name"] == scene
            assert set(info["images"]) == set(CAMERAS)
            for cam in CAMERAS:
                image = info["images"][cam]
                assert (synthetic_nuscenes_tiny / "samples" / cam / image["img_path"]).is_file()
                assert np.asarray(image["cam2img"]).shape == (3, 3) and np.asarray(
                    image["lidar2cam"]
                ).shape == (4, 4)
            assert len(info["instances"]) == len(sample["anns"])
            for inst, token in zip(info["instances"], sample["anns"]):
                ann = nusc.get("sample_annotation", token)
                assert inst["num_lidar_pts"] == ann["num_lidar_pts"]
                assert inst["bbox_3d_isvalid"] == (ann["num_lidar_pts"] > 0)
                assert 0 <= inst["bbox_label_3d"] < 10 and np.isfinite(inst["velocity"]).all()
                assert len(inst["bbox_3d"]) == 7


def test_info_geometry_projects_a_box_like_the_devkit(synthetic_nuscenes_tiny):
    """cam2img @ lidar2cam from the infos maps a GT centre (lidar frame) to the pixel where the devkit's
    own chain (lidar -> ego -> global -> ego -> camera -> intrinsics) puts it."""
    nusc = NuScenes(version="v1.0-mini", dataroot=str(synthetic_nuscenes_tiny), verbose=False)
    info = mmengine.load(synthetic_nuscenes_tiny / "nuscenes_infos_val.pkl")["data_list"][2]
    sample = nusc.get("sample", info["token"])
    _, boxes, k = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
    by_token = {b.token: b for b in boxes}
    image = info["images"]["CAM_FRONT"]
    lidar2img = np.eye(4)
    lidar2img[:3, :3] = image["cam2img"]
    lidar2img = lidar2img @ np.asarray(image["lidar2cam"])
    checked = 0
    for inst, token in zip(info["instances"], sample["anns"]):
        if token not in by_token or by_token[token].center[2] < 1.0:
            continue
        centre = np.asarray(inst["bbox_3d"][:3])  # the v1->v2 converter keeps the geometric centre here
        uvw = lidar2img @ np.append(centre, 1.0)
        expected = k @ by_token[token].center
        np.testing.assert_allclose(uvw[:2] / uvw[2], expected[:2] / expected[2], atol=1e-3)
        checked += 1
    assert checked >= 3


def test_mmdet3d_nuscenes_dataset_loads_the_infos(synthetic_nuscenes_tiny):
    from mmdet3d.datasets import NuScenesDataset

    dataset = NuScenesDataset(
        data_root=str(synthetic_nuscenes_tiny),
        ann_file="nuscenes_infos_val.pkl",
        pipeline=[],
        modality=dict(use_camera=True, use_lidar=False),
        data_prefix=dict(pts="samples/LIDAR_TOP", **{cam: f"samples/{cam}" for cam in CAMERAS}),
        metainfo=dict(version="v1.0-mini"),
        test_mode=False,
    )
    assert len(dataset) == 6
    info = dataset.get_data_info(0)
    assert Path(info["images"]["CAM_BACK"]["img_path"]).is_file()
    labels = np.concatenate(
        [dataset.get_data_info(i)["ann_info"]["gt_labels_3d"] for i in range(len(dataset))]
    )
    assert set(labels.tolist()) == set(range(10))  # all 10 classes in val, after mmdet3d's valid-flag filter


def test_infos_go_to_out_dir_and_never_into_the_data_root(synthetic_nuscenes_tiny, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_nuscenes_tiny, root, ignore=shutil.ignore_patterns("*.pkl"))
    outputs = create_nuscenes_infos(root, "v1.0-mini", out_dir=tmp_path / "infos", prefix="synth")
    assert outputs == {
        "train": tmp_path / "infos/synth_infos_train.pkl",
        "val": tmp_path / "infos/synth_infos_val.pkl",
    }
    assert not list(root.glob("*.pkl"))


@pytest.fixture
def copy_of_tiny(synthetic_nuscenes_tiny, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_nuscenes_tiny, root, ignore=shutil.ignore_patterns("*.pkl"))
    return root


def _first_image(root: Path, channel: str = "CAM_FRONT_LEFT") -> Path:
    return sorted((root / "samples" / channel).glob("*.jpg"))[0]


def test_missing_dataroot_names_it_and_the_fix(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"dataroot .*nowhere does not exist.*create_data.py synthetic"
    ):
        check_nuscenes_root(tmp_path / "nowhere", "v1.0-mini")
    with pytest.raises(ValueError, match="version must be one of"):
        check_nuscenes_root(tmp_path, "v2.0")


def test_wrong_version_or_missing_table_names_the_path(copy_of_tiny):
    with pytest.raises(FileNotFoundError, match=r"no v1.0-trainval/ table folder \(found \['v1.0-mini'\]\)"):
        check_nuscenes_root(copy_of_tiny, "v1.0-trainval")
    (copy_of_tiny / "v1.0-mini" / "ego_pose.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"v1.0-mini/ego_pose.json.*--overwrite"):
        check_nuscenes_root(copy_of_tiny, "v1.0-mini")


def test_missing_image_names_the_file_and_the_fix(copy_of_tiny):
    image = _first_image(copy_of_tiny)
    image.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{image.name} \(CAM_FRONT_LEFT of sample .*--overwrite"):
        create_nuscenes_infos(copy_of_tiny, "v1.0-mini")


def test_corrupt_image_names_the_file_and_the_fix(copy_of_tiny):
    image = _first_image(copy_of_tiny, "CAM_BACK")
    image.write_bytes(b"not a jpeg")
    nusc = NuScenes(version="v1.0-mini", dataroot=str(copy_of_tiny), verbose=False)
    check_samples(nusc)  # existence only: passes
    with pytest.raises(ValueError, match=rf"image .*{image.name} is corrupt.*--overwrite"):
        check_samples(nusc, decode_images=True)


def test_sample_missing_a_camera_names_sample_and_camera(copy_of_tiny):
    table = copy_of_tiny / "v1.0-mini" / "sample_data.json"
    records = json.loads(table.read_text())
    dropped = next(r for r in records if "__CAM_BACK__" in r["filename"])
    table.write_text(json.dumps([r for r in records if r is not dropped]))
    with pytest.raises(
        ValueError,
        match=rf"sample {dropped['sample_token']} of scene-0061 has no sample_data for \['CAM_BACK'\]",
    ):
        create_nuscenes_infos(copy_of_tiny, "v1.0-mini")


def _cli():
    spec = importlib.util.spec_from_file_location("create_data_cli", REPO / "tools" / "create_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    cli = _cli()
    assert cli.main(["nuscenes", "--root", str(tmp_path / "missing"), "--version", "v1.0-mini"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nuScenes dataroot") and "missing" in err
