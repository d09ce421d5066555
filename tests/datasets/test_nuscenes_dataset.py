"""BevNuScenesDataset on a hand-made mmdet3d v2 info file: bad roots, info files and samples fail
at construction with the path and the fix; a good sample runs through the camera pipeline."""

import cv2
import mmengine
import numpy as np
import pytest
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.datasets.transforms import Pack3DDetInputs

from bev_deform.datasets import BevNuScenesDataset
from bev_deform.datasets.transforms import NUSCENES_CAMERAS, LoadMultiViewImages, MultiViewResizeCrop

CLASSES = tuple(NuScenesDataset.METAINFO["classes"])  # mmdet3d's, in label order
DATA_PREFIX = {cam: f"samples/{cam}" for cam in NUSCENES_CAMERAS}
K = [[50.0, 0.0, 32.0], [0.0, 50.0, 18.0], [0.0, 0.0, 1.0]]


def make_root(tmp_path, drop_camera=None):
    """A data root with one sample: six 36x64 JPEGs under samples/CAM_*/ and an info file."""
    images = {}
    for i, cam in enumerate(NUSCENES_CAMERAS):
        (tmp_path / "samples" / cam).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "samples" / cam / "s0.jpg"), np.full((36, 64, 3), 20 * i, np.uint8))
        lidar2cam = np.eye(4)
        lidar2cam[0, 3] = i  # a distinct extrinsic per camera
        images[cam] = dict(
            img_path="s0.jpg", cam2img=K, lidar2cam=lidar2cam.tolist(), cam2ego=np.eye(4).tolist()
        )
    if drop_camera:
        del images[drop_camera]
    instance = dict(
        bbox_3d=[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0],
        bbox_label_3d=0,
        velocity=[1.0, 0.0],
        num_lidar_pts=5,
        num_radar_pts=0,
        bbox_3d_isvalid=True,
        attr_label=0,
    )
    info = dict(
        sample_idx=0,
        token="sample-token-0",
        timestamp=0.0,
        ego2global=np.eye(4).tolist(),
        images=images,
        lidar_points=dict(lidar_path="lidar.bin", num_pts_feats=5, lidar2ego=np.eye(4).tolist()),
        instances=[instance],
    )
    meta = dict(categories={c: i for i, c in enumerate(CLASSES)}, dataset="nuscenes", version="v1.0-mini")
    mmengine.dump(dict(metainfo=meta, data_list=[info]), str(tmp_path / "nuscenes_infos_val.pkl"))
    return tmp_path


def build(root, ann_file="nuscenes_infos_val.pkl", pipeline=(), test_mode=True):
    return BevNuScenesDataset(
        data_root=str(root),
        ann_file=ann_file,
        data_prefix=DATA_PREFIX,
        modality=dict(use_camera=True, use_lidar=False),
        metainfo=dict(classes=CLASSES, version="v1.0-mini"),
        pipeline=list(pipeline),
        test_mode=test_mode,
    )


def test_missing_data_root_names_path_and_fix(tmp_path):
    root = tmp_path / "no_such_root"
    with pytest.raises(
        FileNotFoundError,
        match=rf"data_root {root} does not exist\. Fix: .*create_data\.py synthetic --out {root}",
    ):
        build(root)


def test_missing_info_file_names_path_and_fix(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"info file .*_train\.pkl does not exist\. Fix: .*create_data\.py nuscenes --root .* "
        r"--version v1\.0-mini",
    ):
        build(make_root(tmp_path), ann_file="nuscenes_infos_train.pkl")


def test_sample_missing_a_camera_fails_at_construction(tmp_path):
    root = make_root(tmp_path, drop_camera="CAM_BACK_RIGHT")
    with pytest.raises(
        ValueError, match=r"sample sample-token-0 of .*nuscenes_infos_val\.pkl .*\['CAM_BACK_RIGHT'\].*Fix"
    ):
        build(root)


def test_missing_image_fails_at_load_time_naming_the_file(tmp_path):
    root = make_root(tmp_path)
    (root / "samples" / "CAM_FRONT_LEFT" / "s0.jpg").unlink()
    dataset = build(root, pipeline=[dict(type=LoadMultiViewImages)])
    with pytest.raises(FileNotFoundError, match=r"samples/CAM_FRONT_LEFT/s0\.jpg does not exist\. Fix"):
        dataset[0]


def test_camera_pipeline_packs_six_views_with_lidar2img(tmp_path):
    pipeline = [
        dict(type=LoadMultiViewImages),
        dict(type=MultiViewResizeCrop, final_size=(32, 48), scale_range=(1.0, 1.0), test_mode=True),
        dict(type=Pack3DDetInputs, keys=["img"]),
    ]
    dataset = build(make_root(tmp_path), pipeline=pipeline)
    assert len(dataset) == 1 and dataset.metainfo["version"] == "v1.0-mini"
    packed = dataset[0]
    assert tuple(packed["inputs"]["img"].shape) == (6, 3, 32, 48)
    meta = packed["data_samples"].metainfo
    assert meta["img_path"] == [str(tmp_path / "samples" / cam / "s0.jpg") for cam in NUSCENES_CAMERAS]
    # crop of 36x64 to 32x48 at the bottom, centred: x0 = 8, y0 = 4
    aug = np.eye(4)
    aug[0, 2], aug[1, 2] = -8, -4
    k4 = np.eye(4)
    k4[:3, :3] = K
    for i, lidar2img in enumerate(meta["lidar2img"]):
        lidar2cam = np.eye(4)
        lidar2cam[0, 3] = i
        np.testing.assert_allclose(lidar2img, aug @ k4 @ lidar2cam)
    gt = packed["data_samples"].eval_ann_info
    assert gt["gt_bboxes_3d"].tensor.shape == (1, 9) and list(gt["gt_labels_3d"]) == [0]
