"""Query selection from the image side (DINO's mixed query selection in 3D): the aux head's
centre peaks, lifted to 3D with their depth and ``lidar2img``, become the reference points of the
first k queries."""

from __future__ import annotations

import math

import pytest
import torch
from mmengine.registry import DefaultScope
from test_detector import _data, detector_cfg  # the tiny DETR3D-style detector and its batch

from bev_deform.geometry import CameraGeometry, normalize_points, project_points, unproject_pixels
from bev_deform.models.heads import ImageCentreAuxHead
from bev_deform.registry import MODELS

PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
IMG_HW, PAD_HW = (90, 160), (96, 160)


def test_a_peak_at_the_principal_point_lifts_to_the_point_on_the_optical_axis(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    l2i = torch.from_numpy(rig.lidar2img())  # (6, 4, 4)
    fx, fy, cx, cy = rig.intrinsics(0)
    point = unproject_pixels(torch.tensor([cx, cy]).double(), torch.tensor(10.0).double(), l2i[0])
    expected = torch.as_tensor(rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0]))
    torch.testing.assert_close(point, expected.double(), atol=1e-6, rtol=0)  # 1 µm
    # and back: project_points returns the pixel and the depth
    uv, valid, depth = project_points(point[None, None], l2i[None], IMG_HW)
    assert valid[0, 0, 0] and depth[0, 0, 0] == pytest.approx(10.0)
    torch.testing.assert_close(
        uv[0, 0, 0] * torch.tensor([160.0, 90.0]).double(), torch.tensor([cx, cy]).double()
    )


def test_the_selected_points_follow_the_image_evidence(nuscenes_rig, monkeypatch):
    """Two objects: 15 m ahead in CAM_FRONT and 8 m in CAM_BACK, at cell centres of a stride-8
    level: a heatmap peak at each, with their log depths, selects exactly their 3D centres, the
    stronger first; a weaker peak next to a stronger one is suppressed."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    l2i = torch.from_numpy(rig.lidar2img()).float()
    cams = CameraGeometry(l2i[None], torch.tensor(IMG_HW).float().expand(1, 6, 2), PAD_HW)
    h, w = 12, 20  # stride 8 of 96x160
    heat = torch.full((1, 6, 3, h, w), -10.0)
    reg = torch.zeros(1, 6, 6, h, w)
    objects = [(0, 5, 9, 15.0, 0.9), (3, 6, 4, 8.0, 0.7)]  # camera, row, column, depth, score
    expected = []
    for cam, row, col, depth, score in objects:
        heat[0, cam, 1, row, col] = math.log(score / (1 - score))
        reg[0, cam, 0, row, col] = math.log(depth)
        uv = torch.tensor([(col + 0.5) * 8, (row + 0.5) * 8]).double()
        fx, fy, cx, cy = rig.intrinsics(cam)
        cam_pt = [(uv[0].item() - cx) / fx * depth, (uv[1].item() - cy) / fy * depth, depth]
        expected.append(
            normalize_points(torch.as_tensor(rig.cam_point_in_lidar(cam, cam_pt)).double(), PC_RANGE)
        )
    heat[0, 0, 2, 5, 10] = math.log(0.5 / 0.5)  # a weaker neighbour of the first peak: not a peak
    head = ImageCentreAuxHead(num_classes=3, in_channels=8)
    monkeypatch.setattr(head, "forward", lambda feat: (heat.requires_grad_(), reg.requires_grad_()))
    refs, scores = head.select_reference_points(torch.zeros(1, 6, 8, h, w), cams, 3, PC_RANGE)
    assert not refs.requires_grad and not scores.requires_grad  # selection passes no gradient
    torch.testing.assert_close(refs[0, :2].double(), torch.stack(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores[0, :2], torch.tensor([0.9, 0.7]))
    assert scores[0, 2] < 0.01  # the suppressed neighbour is not selected


def _selecting_detector(k: int):
    cfg = detector_cfg()
    cfg.update(aux_head=dict(type="ImageCentreAuxHead", level=0), query_selection=k)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg)
    model.init_weights()
    return model


def test_the_detector_gives_the_first_k_queries_the_selected_reference_points(nuscenes_rig):
    model = _selecting_detector(4)
    seen = []
    decoder_forward = model.bbox_head.decoder.forward

    def spy(query, query_pos, value, ref_points, *args, **kwargs):
        seen.append(ref_points)
        return decoder_forward(query, query_pos, value, ref_points, *args, **kwargs)

    model.bbox_head.decoder.forward = spy
    data = model.data_preprocessor(_data(nuscenes_rig, 2), training=True)
    losses = model(**data, mode="loss")
    total, _ = model.parse_losses(losses)
    total.backward()
    assert torch.isfinite(total)
    metas = [s.metainfo for s in data["data_samples"]]
    with torch.no_grad():
        feats = model.extract_feat(data["inputs"], metas)
        refs, _ = model.aux_head.select_reference_points(
            feats[0], CameraGeometry.from_metas(metas, "cpu"), 4, model.bbox_head.pc_range
        )
        learned = model.bbox_head.reference_points(model.bbox_head._split_queries(2)[0]).sigmoid()
    # GridMask differs between the two forward passes: compare the layout, not the values
    assert seen[0].shape == (2, 20, 3)
    torch.testing.assert_close(seen[0][:, 4:], learned[:, 4:])
    model.eval()
    data = model.data_preprocessor(_data(nuscenes_rig, 1), training=False)
    with torch.no_grad():
        model(**data, mode="predict")  # inference selects too
        metas = [s.metainfo for s in data["data_samples"]]
        feats = model.extract_feat(data["inputs"], metas)
        refs, _ = model.aux_head.select_reference_points(
            feats[0], CameraGeometry.from_metas(metas, "cpu"), 4, model.bbox_head.pc_range
        )
    torch.testing.assert_close(seen[1][:, :4], refs)


def test_query_selection_needs_an_aux_head_and_at_most_num_query_points():
    cfg = dict(detector_cfg(), query_selection=4)
    with (
        DefaultScope.overwrite_default_scope("bev_deform"),
        pytest.raises(ValueError, match="query_selection must be"),
    ):
        MODELS.build(cfg)
    cfg.update(aux_head=dict(type="ImageCentreAuxHead", level=0), query_selection=21)
    with DefaultScope.overwrite_default_scope("bev_deform"), pytest.raises(ValueError, match="num_query=20"):
        MODELS.build(cfg)
