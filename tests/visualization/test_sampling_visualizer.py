"""Known answers for the sampling-point visualiser and the recorder (issue 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from mmengine.structures import InstanceData

from bev_deform.geometry import CameraGeometry, FeatureLevels, normalize_points
from bev_deform.models.attention import MultiViewDeformableAttention3D
from bev_deform.visualization import (
    SamplingPointsVisualizer,
    SamplingRecorder,
    draw_data_sample,
    select_queries,
)

PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
IMG_HW, PAD_HW = (180, 320), (192, 320)
SHAPES = torch.tensor([[24, 40], [12, 20]])  # strides 8 and 16 of the padded input
HEADS, LEVELS, POINTS = 2, 2, 2


def _setup(rig_factory, points_cam0):
    """An attention module, the rig's cameras, and reference points given in CAM_FRONT's frame."""
    rig = rig_factory((IMG_HW[1], IMG_HW[0]))
    attn = MultiViewDeformableAttention3D(
        embed_dims=16, num_heads=HEADS, num_levels=LEVELS, num_points=POINTS, pc_range=PC_RANGE
    ).eval()
    l2i = torch.from_numpy(rig.lidar2img()).float()  # (6, 4, 4)
    cams = CameraGeometry(
        lidar2img=l2i[None], img_hw=torch.tensor(IMG_HW).float().expand(1, 6, 2), pad_hw=PAD_HW
    )
    pts = torch.tensor(np.stack([rig.cam_point_in_lidar(0, p) for p in points_cam0])).float()
    ref = normalize_points(pts, PC_RANGE)[None]  # (1, Q, 3)
    levels = FeatureLevels.from_shapes(SHAPES.tolist(), PAD_HW)
    value = torch.randn(6, levels.num_values, 16, generator=torch.Generator().manual_seed(0))
    query = torch.randn(1, len(points_cam0), 16, generator=torch.Generator().manual_seed(1))
    meta = {"lidar2img": l2i.numpy(), "batch_input_shape": PAD_HW, "sample_idx": 7}
    return rig, attn, (query, value, ref, levels, cams), meta


def _magenta_centroid(img: np.ndarray) -> tuple[float, float]:
    mask = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] > 200)
    ys, xs = np.nonzero(mask)
    assert len(xs) > 10, "no reference-point disc drawn"
    return float(xs.mean()), float(ys.mean())


def test_reference_point_on_optical_axis_is_drawn_on_the_principal_point(nuscenes_rig):
    rig, attn, args, meta = _setup(nuscenes_rig, [[0.0, 0.0, 10.0]])
    with SamplingRecorder(attn) as rec:
        attn(*args)
    record = rec.layers[0].select(0, torch.tensor([0]))
    vis = SamplingPointsVisualizer(name="test_vis_axis")
    drawing = vis.draw_camera(np.zeros((*IMG_HW, 3), np.uint8), 0, record, meta, {})
    _, _, cx, cy = rig.intrinsics(0)
    u, v = _magenta_centroid(drawing.image)
    # drawn at (cx, cy) in edge coordinates: pixel index cx - 0.5 (mmcv's half-pixel convention)
    assert u == pytest.approx(cx - 0.5, abs=0.75) and v == pytest.approx(cy - 0.5, abs=0.75)
    # every one of the M * L * P samples of the one query is inside CAM_FRONT and drawn
    assert drawing.num_points == HEADS * LEVELS * POINTS and drawing.num_refs == 1
    scattered = sum(len(c.get_offsets()) for c in vis.ax_save.collections if isinstance(c, PathCollection))
    assert scattered == drawing.num_points
    # the back camera does not see a point ahead: nothing drawn there
    back = vis.draw_camera(np.zeros((*IMG_HW, 3), np.uint8), 3, record, meta, {})
    assert back.num_points == 0 and back.num_refs == 0 and not back.image.any()


def test_drawn_samples_equal_valid_samples_for_points_near_the_border(nuscenes_rig):
    # a point ahead (all samples inside), one near the right edge (some samples leave the image),
    # and one behind CAM_FRONT (no sample in CAM_FRONT)
    _, _, cx, _ = nuscenes_rig((IMG_HW[1], IMG_HW[0])).intrinsics(0)
    f = nuscenes_rig((IMG_HW[1], IMG_HW[0])).intrinsics(0)[0]
    x_edge = (IMG_HW[1] - 0.3 - cx) / f * 10.0  # 0.3 px inside the right border at 10 m
    rig, attn, args, meta = _setup(nuscenes_rig, [[0.0, 0.0, 10.0], [x_edge, 0.0, 10.0], [0.0, 0.0, -10.0]])
    with torch.no_grad():
        attn.sampling_offsets.bias.mul_(3.0)  # spread the samples so some cross the border
    with SamplingRecorder(attn) as rec:
        attn(*args)
    record = rec.layers[0].select(0, torch.arange(3))
    drawing = SamplingPointsVisualizer(name="test_vis_border").draw_camera(
        np.zeros((*IMG_HW, 3), np.uint8), 0, record, meta, {}
    )
    loc = record.pixels[0, 0]  # (K, M, L, P, 2) image pixels
    inside = (loc[..., 0] >= 0) & (loc[..., 0] <= IMG_HW[1]) & (loc[..., 1] >= 0) & (loc[..., 1] <= IMG_HW[0])
    expected = int(inside[0].sum() + inside[1].sum())  # query 2 is behind the camera: none
    assert 0 < int(inside[1].sum()) < HEADS * LEVELS * POINTS, "the border query should lose some samples"
    assert drawing.num_points == expected and drawing.num_refs == 2


def test_recording_does_not_change_outputs(nuscenes_rig):
    _, attn, args, _ = _setup(nuscenes_rig, [[0.0, 0.0, 10.0], [1.0, 0.5, 20.0]])
    plain = attn(*args)
    with SamplingRecorder(attn) as rec:
        recorded = attn(*args)
    again = attn(*args)
    assert torch.equal(plain, recorded) and torch.equal(plain, again)
    assert len(rec.layers) == 1 and rec.layers[0].pixels.shape == (1, 6, 2, HEADS, LEVELS, POINTS, 2)
    assert "sampling_points" not in vars(attn), "the recorder must restore the module"


def test_mosaic_and_camera_files_are_written(nuscenes_rig, tmp_path):
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes

    rig, attn, args, meta = _setup(nuscenes_rig, [[0.0, 0.0, 10.0], [1.0, 0.5, 20.0]])
    with SamplingRecorder(attn) as rec:
        attn(*args)
    sample = Det3DDataSample(metainfo=meta)
    box = rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0])
    boxes = LiDARInstance3DBoxes(torch.tensor([[*box, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]]).float(), box_dim=9)
    sample.pred_instances_3d = InstanceData(
        bboxes_3d=boxes,
        scores_3d=torch.tensor([0.9]),
        labels_3d=torch.tensor([0]),
        query_ids=torch.tensor([0]),
    )
    imgs = torch.full((6, 3, *IMG_HW), 90, dtype=torch.uint8)
    paths = draw_data_sample(
        SamplingPointsVisualizer(name="test_vis_files"), rec.layers, 0, imgs, sample, str(tmp_path)
    )
    assert set(paths) == {
        "mosaic",
        "CAM_FRONT",
        "CAM_FRONT_RIGHT",
        "CAM_FRONT_LEFT",
        "CAM_BACK",
        "CAM_BACK_LEFT",
        "CAM_BACK_RIGHT",
    }
    import mmcv

    mosaic, front = mmcv.imread(paths["mosaic"]), mmcv.imread(paths["CAM_FRONT"])
    assert mosaic.shape[0] > IMG_HW[0] * 2 and mosaic.shape[1] > IMG_HW[1] * 3
    assert front.shape[:2] == IMG_HW
    # the predicted box (blue wireframe) is drawn in CAM_FRONT: blue-dominant pixels exist
    assert ((front[..., 0] > 150) & (front[..., 2] < 120)).sum() > 20


def test_select_queries_top_k_and_ids():
    pred = InstanceData(scores_3d=torch.tensor([0.1, 0.9, 0.5, 0.8]), query_ids=torch.tensor([4, 2, 7, 2]))
    assert select_queries(pred, "top-2", 20).tolist() == [2, 7]
    assert select_queries(pred, [5, 1], 20).tolist() == [5, 1]
    # a query's second-best class comes after other queries' predictions: drawn once, not twice
    pred = InstanceData(
        scores_3d=torch.tensor([0.9, 0.7, 0.6, 0.5, 0.4]), query_ids=torch.tensor([2, 5, 2, 7, 5])
    )
    assert select_queries(pred, "top-3", 20).tolist() == [2, 5, 7]
    assert select_queries(pred, "top-10", 20).tolist() == [2, 5, 7]
    with pytest.raises(ValueError, match="queries must be 'top-k'"):
        select_queries(pred, "best", 20)


def test_recording_a_whole_detector_changes_no_prediction(synthetic_nuscenes_tiny):
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    from bev_deform.registry import DATASETS, MODELS
    from bev_deform.runtime import set_data_root

    repo = Path(__file__).resolve().parents[2]
    cfg = Config.fromfile(str(repo / "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py"))
    set_data_root(cfg, str(synthetic_nuscenes_tiny))
    cfg.test_dataloader.dataset.pipeline[1].update(final_size=(96, 160))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg.model).eval()
        data = pseudo_collate([DATASETS.build(cfg.test_dataloader.dataset)[0]])
    with torch.no_grad():
        (plain,) = model.test_step(data)
        with SamplingRecorder(model) as rec:
            (recorded,) = model.test_step(data)
    a, b = plain.pred_instances_3d, recorded.pred_instances_3d
    assert torch.equal(a.bboxes_3d.tensor, b.bboxes_3d.tensor) and torch.equal(a.scores_3d, b.scores_3d)
    num_layers = cfg.model.bbox_head.decoder.num_layers
    assert len(rec.layers) == num_layers  # one record per decoder layer, in order
    q = cfg.model.bbox_head.num_query
    assert rec.layers[0].valid.shape == (1, 6, q) and rec.layers[-1].weights.shape[:2] == (1, q)
