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

from bev_deform.datasets import create_infos
from bev_deform.datasets.checks import (
    MissingFilesError,
    check_nuscenes_root,
    check_samples,
    find_missing_files,
)
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
    with pytest.raises(
        MissingFilesError,
        match=rf"^1 missing file\(s\) .*{image.name} \(CAM_FRONT_LEFT of sample .*--overwrite",
    ):
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


# Partial downloads. In the tiny set (scene-0061: train, scene-0103: val, 6 keyframes each), file names
# sort by time within a scene, and a keyframe's LIDAR_TOP sweeps are the keyframes before it.
def _scene_files(root: Path, channel: str, scene_index: int) -> list[Path]:
    return sorted((root / "samples" / channel).glob(f"n-synth-seed0-{scene_index:02d}__*"))


def _tokens_of(root: Path, files: list[Path]) -> list[str]:
    """Sample tokens of keyframe files, by the sample_data table."""
    by_name = {
        r["filename"]: r["sample_token"]
        for r in json.loads((root / "v1.0-mini/sample_data.json").read_text())
    }
    return [by_name[str(f.relative_to(root))] for f in files]


def test_missing_files_give_one_error_that_counts_them_and_names_the_first_five(copy_of_tiny):
    gone = _scene_files(copy_of_tiny, "CAM_FRONT_LEFT", 0) + _scene_files(copy_of_tiny, "CAM_BACK", 1)[3:4]
    for path in gone:
        path.unlink()
    with pytest.raises(MissingFilesError) as err:
        create_nuscenes_infos(copy_of_tiny, "v1.0-mini")
    message = str(err.value)
    assert message.startswith(f"7 missing file(s) under {copy_of_tiny}: 7 of the 12 samples (in 2 scene(s))")
    named = [p.name for p in gone if p.name in message]
    assert named == [p.name for p in gone[:5]] and "; and 2 more." in message
    assert "--skip-missing" in message and "write the infos of the 5 complete samples" in message
    assert list(err.value.missing) == _tokens_of(copy_of_tiny, gone)
    assert not list(copy_of_tiny.glob("*.pkl")) and not list(copy_of_tiny.glob(".infos-tmp-*"))


@pytest.mark.parametrize("max_sweeps, dropped", [(0, [3]), (1, [3, 4]), (10, [3, 4, 5])])
def test_a_missing_point_cloud_also_breaks_the_samples_that_list_it_as_a_sweep(
    copy_of_tiny, max_sweeps, dropped
):
    lidar = _scene_files(copy_of_tiny, "LIDAR_TOP", 1)
    lidar[3].unlink()
    nusc = NuScenes(version="v1.0-mini", dataroot=str(copy_of_tiny), verbose=False)
    missing = find_missing_files(nusc, max_sweeps=max_sweeps)
    assert list(missing) == _tokens_of(copy_of_tiny, [lidar[i] for i in dropped])
    filename = str(lidar[3].relative_to(copy_of_tiny))
    whats = [
        what.split(" of sample ")[0] for files in missing.values() for name, what in files if name == filename
    ]
    assert whats == ["LIDAR_TOP"] + [f"LIDAR_TOP sweep {k}" for k in range(1, len(dropped))]
    with pytest.raises(
        MissingFilesError, match=rf"^1 missing file\(s\) .*: {len(dropped)} of the 12 samples"
    ) as err:
        check_samples(nusc, max_sweeps=max_sweeps)
    if len(dropped) > 1:  # the samples that lack only sweeps would be complete without sweeps
        assert f"for the {len(dropped) - 1} samples that lack only sweeps, --max-sweeps 0" in str(err.value)


def _infos(path: Path) -> list[str]:
    return [info["token"] for info in mmengine.load(path)["data_list"]]


def test_skip_missing_writes_the_complete_samples_and_says_how_many_were_dropped(copy_of_tiny, capsys):
    """With --max-sweeps 1: the train scene's first point cloud (also the sweep of train sample 1), a
    val camera image (val sample 2), a val point cloud (val sample 4, the sweep of val sample 5)."""
    train_lidar, val_lidar = (
        _scene_files(copy_of_tiny, "LIDAR_TOP", 0),
        _scene_files(copy_of_tiny, "LIDAR_TOP", 1),
    )
    gone = [train_lidar[0], _scene_files(copy_of_tiny, "CAM_FRONT", 1)[2], val_lidar[4]]
    for path in gone:
        path.unlink()
    capsys.readouterr()
    cli = _cli()
    args = ["nuscenes", "--root", str(copy_of_tiny), "--version", "v1.0-mini", "--max-sweeps", "1"]
    assert cli.main([*args, "--skip-missing"]) == 0
    out = capsys.readouterr().out
    assert "dropped 5 of 12 samples with missing files" in out
    assert (
        "the infos hold the other 7 (train: 4, val: 3)" in out
        and "needs every sample of the val split" in out
    )
    assert all(path.name in out for path in gone)
    # mmdet3d's get_available_scenes would drop the train scene (its first point cloud is missing) and
    # its converter would then file the scene's other samples under val: they stay in train
    assert _infos(copy_of_tiny / "nuscenes_infos_train.pkl") == _tokens_of(copy_of_tiny, train_lidar[2:])
    assert _infos(copy_of_tiny / "nuscenes_infos_val.pkl") == _tokens_of(
        copy_of_tiny, [val_lidar[i] for i in (0, 1, 3)]
    )
    sweeps = 0
    for split in ("train", "val"):  # every file the written infos point at exists
        for info in mmengine.load(copy_of_tiny / f"nuscenes_infos_{split}.pkl")["data_list"]:
            assert (copy_of_tiny / "samples/LIDAR_TOP" / info["lidar_points"]["lidar_path"]).is_file()
            for sweep in info.get("lidar_sweeps", []):  # the key is left out where there is none
                assert Path(sweep["lidar_points"]["lidar_path"]).is_file()
                sweeps += 1
            for cam, image in info["images"].items():
                assert (copy_of_tiny / "samples" / cam / image["img_path"]).is_file()
    assert sweeps == 4 + 2  # one per kept sample that is not the first of its scene


def test_a_split_without_complete_samples_is_not_written(copy_of_tiny, capsys):
    for path in _scene_files(copy_of_tiny, "CAM_BACK", 0) + _scene_files(copy_of_tiny, "CAM_BACK", 1)[1:]:
        path.unlink()  # no complete train sample, one val sample
    outputs = create_nuscenes_infos(copy_of_tiny, "v1.0-mini", skip_missing=True)
    assert outputs == {"val": copy_of_tiny / "nuscenes_infos_val.pkl"} and len(_infos(outputs["val"])) == 1
    assert "no train sample: nuscenes_infos_train.pkl is not written" in capsys.readouterr().out
    assert not (copy_of_tiny / "nuscenes_infos_train.pkl").exists()


def test_skip_missing_with_no_complete_sample_is_an_error(copy_of_tiny):
    for path in (copy_of_tiny / "samples" / "CAM_BACK").glob("*.jpg"):
        path.unlink()
    with pytest.raises(
        MissingFilesError, match=r"^none of the 12 samples has all its files.*12 missing file"
    ):
        create_nuscenes_infos(copy_of_tiny, "v1.0-mini", skip_missing=True)


def test_a_failed_run_leaves_existing_info_files_as_they_were(
    copy_of_tiny, synthetic_nuscenes_tiny, monkeypatch, capsys
):
    for split in ("train", "val"):
        shutil.copy(synthetic_nuscenes_tiny / f"nuscenes_infos_{split}.pkl", copy_of_tiny)
    before = {p.name: p.read_bytes() for p in copy_of_tiny.glob("*.pkl")}
    for path in (
        _scene_files(copy_of_tiny, "CAM_BACK_RIGHT", 0)[1:] + _scene_files(copy_of_tiny, "CAM_BACK", 1)[1:]
    ):
        path.unlink()  # leaves one complete sample per split, which keeps the conversion below short
    cli = _cli()
    assert cli.main(["nuscenes", "--root", str(copy_of_tiny), "--version", "v1.0-mini"]) == 2
    assert capsys.readouterr().err.startswith("error: 10 missing file(s)")
    # the check passes, but mmdet3d's v2 update fails on the second split: the first is not replaced
    real_load = create_infos.load_converter

    def failing_update(name):
        module = real_load(name)
        if name == "update_infos_to_v2":
            update = module.update_nuscenes_infos

            def update_or_fail(pkl_path, out_dir):
                if pkl_path.endswith("_val.pkl"):
                    raise OSError("No space left on device")
                return update(pkl_path=pkl_path, out_dir=out_dir)

            module.update_nuscenes_infos = update_or_fail
        return module

    monkeypatch.setattr(create_infos, "load_converter", failing_update)
    with pytest.raises(OSError, match="No space left"):
        create_nuscenes_infos(copy_of_tiny, "v1.0-mini", skip_missing=True)
    assert {p.name: p.read_bytes() for p in copy_of_tiny.glob("*.pkl")} == before
    assert not list(copy_of_tiny.glob(".infos-tmp-*"))
