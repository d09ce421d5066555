"""Multi-view loading and resize/crop: known answers for lidar2img and the image content, and
errors that name the bad file and the fix."""

import copy

import cv2
import numpy as np
import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes

from bev_deform.datasets.transforms import (
    NUSCENES_CAMERAS,
    LoadMultiViewImages,
    MultiViewResizeCrop,
    crop_with_padding,
    image_aug_matrix,
)
from bev_deform.geometry import project_points

H, W = 180, 320  # original image size of the hand-made rig
FOCAL = 200.0
# yaw of each camera's optical axis in the LiDAR frame (x forward, y left), nuScenes order
CAM_YAWS_DEG = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)


def make_rig():
    """(6, 4, 4) cam2img and lidar2cam for six cameras at the origin looking along CAM_YAWS_DEG."""
    cam2img, lidar2cam = [], []
    for yaw in np.deg2rad(CAM_YAWS_DEG):
        fwd = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        ext = np.eye(4)
        ext[:3, :3] = np.stack([right, down, fwd])  # rows: camera x (right), y (down), z (forward)
        k = np.eye(4)
        k[:3, :3] = [[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1]]
        cam2img.append(k)
        lidar2cam.append(ext)
    return np.stack(cam2img), np.stack(lidar2cam)


def project(points, lidar2img_list):
    """(Q, 3) points -> (6, Q, 2) pixels and (6, Q) depth with the shared projection function."""
    l2i = torch.as_tensor(np.stack(lidar2img_list))[None]  # (1, 6, 4, 4)
    pts = torch.as_tensor(points, dtype=torch.float64)[None]  # (1, Q, 3)
    uv, _, depth = project_points(pts, l2i, (1.0, 1.0))  # img_hw (1, 1): uv are pixels
    return uv[0].numpy(), depth[0].numpy()


def box_corners_in_view():
    """(8 * 6, 3) corners of one box 12 m along each camera's axis."""
    centres = [[12 * np.cos(np.deg2rad(y)), 12 * np.sin(np.deg2rad(y)), -0.5] for y in CAM_YAWS_DEG]
    boxes = LiDARInstance3DBoxes(torch.tensor([[*c, 4.0, 2.0, 1.5, 0.3] for c in centres]))
    return boxes.corners.reshape(-1, 3).numpy()  # (6, 8, 3) -> (48, 3)


def make_results(blobs=None):
    """A results dict as LoadMultiViewImages leaves it: black (H, W, 3) float32 images, or, with
    ``blobs`` (6, 2) pixels (u, v), a Gaussian blob (sigma 3 px) centred on blob i in view i."""
    cam2img, lidar2cam = make_rig()
    imgs = [np.zeros((H, W, 3), np.float32) for _ in range(6)]
    if blobs is not None:
        ys, xs = np.mgrid[:H, :W] + 0.5  # pixel centres: pixel i covers [i, i + 1)
        for img, (u, v) in zip(imgs, blobs):
            img[:] = (250 * np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / 18.0))[..., None]
    return dict(
        img=imgs,
        cam2img=list(cam2img),
        lidar2img=[k @ e for k, e in zip(cam2img, lidar2cam)],
        img_shape=(H, W),
    )


def test_lidar2img_after_resize_crop_equals_scaled_and_shifted_projection():
    corners = box_corners_in_view()
    results = make_results()
    before, depth_before = project(corners, results["lidar2img"])
    out = MultiViewResizeCrop(
        final_size=(80, 144), scale_range=(0.5, 0.5), bottom_crop_range=(0.1, 0.1), test_mode=True
    )(copy.deepcopy(results))
    after, depth_after = project(corners, out["lidar2img"])
    # resized 90 x 160; crop bottom at int(0.9 * 90) = 81 -> y0 = 81 - 80 = 1;
    # centred x0 = (160 - 144) // 2 = 8
    assert out["img_crop_offset"] == (8, 1) and out["scale_factor"] == (0.5, 0.5)
    expected = before * 0.5 - np.array([8.0, 1.0])
    in_front = depth_before > 0.1  # (6, 48); view i has box i's corners 8i..8i+7 in front
    assert all(in_front[i, 8 * i : 8 * i + 8].all() for i in range(6))
    np.testing.assert_allclose(after[in_front], expected[in_front], atol=1e-9)
    np.testing.assert_allclose(depth_after, depth_before, atol=1e-12)
    # the same holds for cam2img: lidar2img == cam2img @ lidar2cam after the transform
    _, lidar2cam = make_rig()
    for k, e, m in zip(out["cam2img"], lidar2cam, out["lidar2img"]):
        np.testing.assert_allclose(k @ e, m, atol=1e-9)
    # a corner of the front box, by hand: the optical axis of CAM_FRONT maps (160, 90) -> (72, 44)
    axis_pix, _ = project(np.array([[10.0, 0.0, 0.0]]), out["lidar2img"])
    np.testing.assert_allclose(axis_pix[0, 0], [72.0, 44.0], atol=1e-9)
    assert [img.shape for img in out["img"]] == [(80, 144, 3)] * 6 and out["img_shape"] == (80, 144)


def bright_centroid(img):
    """Intensity-weighted centroid (u, v) of channel 0; pixel i covers [i, i + 1), its centre is i + 0.5."""
    weight = img[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]] + 0.5
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


@pytest.mark.parametrize("seed", range(6))
def test_image_content_moves_with_lidar2img_under_random_resize_crop_flip(seed):
    """A blob drawn where a 3D point projects is, after a random resize/crop/flip, centred where
    the new lidar2img projects that point, to 0.02 px in all six views (a half-pixel slip in
    the resize convention would be ~0.2 px, an off-by-one flip 1 px)."""
    results = make_results()
    # one 3D point per view, 12 m deep, projecting onto blobs[i] in view i
    blobs = np.array([[150.3 + 4 * i, 80.7 + 3 * i] for i in range(6)])  # (6, 2) as (u, v)
    points = np.stack(
        [(np.linalg.inv(m) @ [u * 12, v * 12, 12, 1])[:3] for m, (u, v) in zip(results["lidar2img"], blobs)]
    )
    np.testing.assert_allclose(
        np.stack([project(points, results["lidar2img"])[0][i, i] for i in range(6)]), blobs
    )
    results = make_results(blobs)
    np.random.seed(seed)
    out = MultiViewResizeCrop(final_size=(96, 176), scale_range=(0.55, 0.7), flip=True)(results)
    after, _ = project(points, out["lidar2img"])
    for i, img in enumerate(out["img"]):
        np.testing.assert_allclose(bright_centroid(img), after[i, i], atol=0.02)


def test_flip_is_drawn_both_ways_and_mirrors_u():
    results = make_results()
    point = np.array([[10.0, 1.0, 0.0]])  # left of CAM_FRONT's axis: u < cx
    flips = set()
    for seed in range(20):
        np.random.seed(seed)
        out = MultiViewResizeCrop(final_size=(90, 160), scale_range=(0.5, 0.5), flip=True)(
            copy.deepcopy(results)
        )
        flips.add(out["flip"])
        u_plain = project(point, results["lidar2img"])[0][0, 0, 0] * 0.5
        u_new = project(point, out["lidar2img"])[0][0, 0, 0]
        np.testing.assert_allclose(u_new, 160 - u_plain if out["flip"] else u_plain, atol=1e-9)
    assert flips == {True, False}
    np.random.seed(0)
    out = MultiViewResizeCrop(final_size=(90, 160), scale_range=(0.5, 0.5), flip=True, test_mode=True)(
        results
    )
    assert out["flip"] is False


def test_image_aug_matrix_known_values():
    aug = image_aug_matrix((0.5, 0.25), (3, -2), None)
    np.testing.assert_array_equal(aug, [[0.5, 0, -3, 0], [0, 0.25, 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    flipped = image_aug_matrix((0.5, 0.25), (3, -2), flip_width=100)
    np.testing.assert_array_equal(flipped[0], [-0.5, 0, 103, 0])


def test_crop_with_padding_zero_fills_outside():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = crop_with_padding(img, x0=-1, y0=1, height=3, width=3)
    np.testing.assert_array_equal(out, [[0, 4, 5], [0, 8, 9], [0, 0, 0]])


def test_resize_crop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="final_size"):
        MultiViewResizeCrop(final_size=(0, 10))
    with pytest.raises(ValueError, match="scale_range"):
        MultiViewResizeCrop(final_size=(10, 10), scale_range=(0.8, 0.5))
    with pytest.raises(ValueError, match="bottom_crop_range"):
        MultiViewResizeCrop(final_size=(10, 10), bottom_crop_range=(0.0, 1.5))
    with pytest.raises(KeyError, match="LoadMultiViewImages"):
        MultiViewResizeCrop(final_size=(10, 10))(dict(img=[np.zeros((4, 4, 3))]))


# ---------------------------------------------------------------- loading


def write_sample(tmp_path, cameras=NUSCENES_CAMERAS, size=(36, 64)):
    """Six JPEGs of distinct brightness and the ``images`` dict of an mmdet3d v2 info."""
    cam2img, lidar2cam = make_rig()
    images = {}
    for i, cam in enumerate(cameras):
        path = tmp_path / f"{cam}.jpg"
        cv2.imwrite(str(path), np.full((*size, 3), 30 * i, np.uint8))
        images[cam] = dict(
            img_path=str(path), cam2img=cam2img[i, :3, :3].tolist(), lidar2cam=lidar2cam[i].tolist()
        )
    return dict(token="tok42", sample_idx=0, images=images)


def test_load_multiview_images_orders_views_and_composes_lidar2img(tmp_path):
    info = write_sample(tmp_path)
    # the info dict lists the cameras in a different order than NUSCENES_CAMERAS
    info["images"] = dict(reversed(list(info["images"].items())))
    out = LoadMultiViewImages()(info)
    assert out["img_path"] == [str(tmp_path / f"{cam}.jpg") for cam in NUSCENES_CAMERAS]
    assert [int(img.mean().round()) for img in out["img"]] == [0, 30, 60, 90, 120, 150]
    assert out["img_shape"] == out["ori_shape"] == (36, 64) and out["num_views"] == 6
    cam2img, lidar2cam = make_rig()
    np.testing.assert_allclose(np.stack(out["lidar2img"]), cam2img @ lidar2cam)
    np.testing.assert_allclose(np.stack(out["cam2img"]), cam2img)


def test_missing_camera_names_sample_camera_and_fix(tmp_path):
    info = write_sample(tmp_path)
    del info["images"]["CAM_BACK_LEFT"]
    with pytest.raises(
        ValueError, match=r"sample tok42 has no image for camera\(s\) \['CAM_BACK_LEFT'\].*Fix"
    ):
        LoadMultiViewImages()(info)


def test_missing_image_file_names_file_and_fix(tmp_path):
    info = write_sample(tmp_path)
    (tmp_path / "CAM_BACK.jpg").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"camera CAM_BACK: image file .*CAM_BACK\.jpg does not exist\. Fix"
    ):
        LoadMultiViewImages()(info)


@pytest.mark.parametrize("content", [b"", b"this is not a jpeg" * 10])
def test_corrupt_image_names_file_and_fix(tmp_path, content):
    info = write_sample(tmp_path)
    (tmp_path / "CAM_FRONT_RIGHT.jpg").write_bytes(content)
    with pytest.raises(ValueError, match=r"CAM_FRONT_RIGHT\.jpg is empty or corrupt.*Fix"):
        LoadMultiViewImages()(info)


def test_views_of_different_size_are_rejected(tmp_path):
    info = write_sample(tmp_path)
    cv2.imwrite(info["images"]["CAM_BACK"]["img_path"], np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="one shape"):
        LoadMultiViewImages()(info)


def test_loader_then_resize_crop_chain(tmp_path):
    """Loader + resize/crop on real files: six views of the final size, lidar2img == cam2img @ lidar2cam."""
    out = LoadMultiViewImages()(write_sample(tmp_path))
    out = MultiViewResizeCrop(final_size=(16, 32), scale_range=(0.5, 0.5), test_mode=True)(out)
    assert [img.shape for img in out["img"]] == [(16, 32, 3)] * 6
    for k, e, m in zip(out["cam2img"], out["lidar2cam"], out["lidar2img"]):
        np.testing.assert_allclose(k @ e, m, atol=1e-9)
