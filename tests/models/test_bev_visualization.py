"""The sampling-point recorder, visualiser and test hook for the BEVFormer-style detector: where the
decoder sampled on the BEV, where the encoder's spatial cross-attention sampled in each camera for
the BEV cells under the chosen boxes."""

from __future__ import annotations

from pathlib import Path

import mmcv
import numpy as np
import torch
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from bev_deform.geometry import BEVGrid, CameraGeometry, FeatureLevels
from bev_deform.models.attention import SpatialCrossAttention, project_pillars
from bev_deform.registry import DATASETS, MODELS
from bev_deform.runtime import set_data_root
from bev_deform.visualization import (
    BEVLayerRecord,
    PillarRecord,
    SamplingPointsVisualizer,
    SamplingRecorder,
    cells_under_boxes,
    draw_data_sample,
)

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py"
PC_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
IMG_HW, PAD_HW = (90, 160), (96, 160)


def _boxes(rows) -> LiDARInstance3DBoxes:
    return LiDARInstance3DBoxes(torch.tensor(rows, dtype=torch.float32).view(-1, 9), box_dim=9)


def test_cells_under_boxes_are_those_whose_centre_the_footprint_holds():
    """50x50 cells of 2.048 m: a 4 x 2 m car at (1, 10) heading along x covers the centre of cell
    (29, 25) only; turned by 90 degrees it also covers (30, 25); a pedestrian smaller than a cell
    gets the cell of its centre."""
    grid = BEVGrid(50, 50, PC_RANGE)
    car = [1.0, 10.0, -1.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]
    turned = [1.0, 10.0, -1.0, 4.0, 2.0, 1.5, np.pi / 2, 0.0, 0.0]
    ped = [0.1, 0.1, -1.0, 0.7, 0.7, 1.8, 0.3, 0.0, 0.0]
    assert cells_under_boxes(grid, _boxes(car)).tolist() == [29 * 50 + 25]
    assert cells_under_boxes(grid, _boxes(turned)).tolist() == [29 * 50 + 25, 30 * 50 + 25]
    assert cells_under_boxes(grid, _boxes(ped)).tolist() == [25 * 50 + 25]
    assert cells_under_boxes(grid, _boxes([car, ped])).tolist() == [25 * 50 + 25, 29 * 50 + 25]


def test_recorded_sca_of_a_cell_on_the_front_axis_sampled_the_principal_point(nuscenes_rig):
    """An SCA layer recorded during its forward: the chosen cell's middle anchor is drawn at
    CAM_FRONT's principal point, and with zero offsets its points are there too, in no other camera."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    _, _, cx, cy = rig.intrinsics(0)
    x, y, z = rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0])
    grid = BEVGrid(3, 3, (x - 3, y - 3, z - 2, x + 3, y + 3, z + 2))  # centre cell on the axis point
    attn = SpatialCrossAttention(
        embed_dims=8, num_heads=2, num_levels=1, num_points=3, num_points_in_pillar=3
    )
    with torch.no_grad():
        attn.deformable_attention.sampling_offsets.bias.zero_()
    l2i = torch.from_numpy(rig.lidar2img()).float()
    cams = CameraGeometry(l2i[None], torch.tensor(IMG_HW).float().expand(1, 6, 2), PAD_HW)
    levels = FeatureLevels.from_shapes([(12, 20)], PAD_HW)
    pillars = project_pillars(grid, 3, cams)
    records = []
    method = type(attn).sampling_points.__get__(attn)

    def recorded(query, pills, lv):
        pts = method(query, pills, lv)
        records.append(PillarRecord(grid, pills, pts, lv, attn.deformable_attention.locations))
        return pts

    attn.sampling_points = recorded
    with torch.no_grad():
        attn(torch.zeros(1, 9, 8), torch.randn(6, 240, 8), pillars, levels)
    record = records[0].select(0, torch.tensor([4]))
    assert record.valid[0, :, 0].tolist() == [True, False, False, False, False, False]
    principal = torch.tensor([cx, cy])
    assert torch.allclose(record.ref_pixels[0, 0, 0, 1], principal, atol=1e-4)
    assert torch.allclose(
        record.pixels[0, 0, 0, :, 0, 1], principal.expand(2, 2), atol=1e-3
    )  # point 1: anchor 1
    vis = SamplingPointsVisualizer(name="test_bev_vis_axis")
    drawing = vis.draw_camera(np.zeros((*IMG_HW, 3), np.uint8), 0, record, {"lidar2img": l2i.numpy()}, {})
    assert drawing.num_refs == 3 and drawing.num_points > 0


def _tiny_bev_model_and_batch(root):
    cfg = Config.fromfile(str(CPU_CONFIG))
    set_data_root(cfg, str(root))
    cfg.test_dataloader.dataset.pipeline[1].update(final_size=(96, 160))
    cfg.model.bbox_head.num_query = 40
    cfg.model.bbox_head.encoder.update(bev_h=20, bev_w=20)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg.model).eval()
        data = pseudo_collate([DATASETS.build(cfg.test_dataloader.dataset)[0]])
    return cfg, model, data


def test_recording_the_bev_detector_changes_no_prediction_and_draws_a_mosaic(
    synthetic_nuscenes_tiny, tmp_path
):
    cfg, model, data = _tiny_bev_model_and_batch(synthetic_nuscenes_tiny)
    with torch.no_grad():
        (plain,) = model.test_step(data)
        with SamplingRecorder(model) as rec:
            (recorded,) = model.test_step(data)
    a, b = plain.pred_instances_3d, recorded.pred_instances_3d
    assert torch.equal(a.bboxes_3d.tensor, b.bboxes_3d.tensor) and torch.equal(a.scores_3d, b.scores_3d)
    head = cfg.model.bbox_head
    assert len(rec.layers) == head.decoder.num_layers and len(rec.encoder_layers) == head.encoder.num_layers
    assert all(isinstance(r, BEVLayerRecord) for r in rec.layers)
    assert rec.layers[0].points.shape == (1, 40, 4, 1, 4, 2)  # (B, Q, M, L=1, P, 2) metres on the BEV
    assert rec.encoder_layers[0].pillars.valid.shape == (1, 6, 400)

    paths = draw_data_sample(
        SamplingPointsVisualizer(name="test_bev_vis_files"),
        rec.layers,
        0,
        data["inputs"]["img"][0],
        recorded,
        str(tmp_path),
        queries="top-5",
        encoder_layers=rec.encoder_layers,
    )
    assert {"mosaic", "CAM_FRONT", "CAM_BACK"} <= set(paths)
    mosaic = mmcv.imread(paths["mosaic"])[..., ::-1]  # RGB
    red = (mosaic[..., 0] > 200) & (mosaic[..., 1] < 60) & (mosaic[..., 2] < 100)  # BEV samples
    assert red.sum() > 20
