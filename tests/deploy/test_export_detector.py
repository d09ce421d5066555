"""The detector's ONNX export: stock ONNX Runtime gives PyTorch's pre-top-k scores and codes within
1e-4 and the same detections; the cameras are graph inputs (other matrices give other boxes, as
in PyTorch); the graph has no data-dependent shape; the TensorRT form has one plugin node per
decoder layer. Slow: the CPU config through tools/deploy/export_onnx.py and verify_onnx.py on
three synthetic val samples."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from bev_deform.registry import MODELS

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bev_deform.deploy import (  # noqa: E402
    DEBUG_OUTPUT_NAMES,
    INPUT_NAMES,
    OUTPUT_NAMES,
    compare_with_pytorch,
    export_onnx,
    ort_session,
    run_session,
)

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py"
IMG_HW, PAD_HW = (64, 112), (64, 128)
NUM_LAYERS, NUM_QUERY, MAX_NUM = 2, 20, 15
DATA_DEPENDENT_OPS = {"NonZero", "Loop", "If", "Scan", "Compress", "Unique"}


def tiny_detector(query_groups: int = 1, yaw_frame: str = "ego") -> torch.nn.Module:
    """The test_detector.py model: ResNet-18 (16 base channels) + FPN (4 levels, 32 channels),
    20 queries, 2 layers, coder with a post-centre range; ``query_groups`` and ``yaw_frame`` for
    the head."""
    head = dict(
        type="DeformDETR3DHead",
        num_classes=10,
        pc_range=[-51.2, -51.2, -5.0, 51.2, 51.2, 3.0],
        embed_dims=32,
        num_query=NUM_QUERY,
        num_levels=4,
        decoder=dict(
            num_layers=NUM_LAYERS,
            layer_cfg=dict(
                self_attn_cfg=dict(num_heads=4),
                cross_attn_cfg=dict(num_heads=4, num_points=2),
                ffn_cfg=dict(feedforward_channels=64),
            ),
        ),
        bbox_coder=dict(type="NMSFreeCoder", max_num=MAX_NUM, post_center_range=[-30, -30, -10, 30, 30, 10]),
        query_groups=query_groups,
        yaw_frame=yaw_frame,
    )
    cfg = dict(
        type="DeformDETR3D",
        img_backbone=dict(
            type="mmdet.ResNet", depth=18, base_channels=16, out_indices=(1, 2, 3), style="pytorch"
        ),
        img_neck=dict(
            type="mmdet.FPN",
            in_channels=[32, 64, 128],
            out_channels=32,
            add_extra_convs="on_output",
            num_outs=4,
        ),
        bbox_head=head,
    )
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def pytorch_outputs(detector, images: torch.Tensor, lidar2img: np.ndarray):
    """The detector's own path (CPU kernel, metainfo dicts): last layer's sigmoid scores (Q, K),
    codes (Q, 10) and ``decode``'s detections."""
    meta = dict(lidar2img=lidar2img, img_shape=IMG_HW, batch_input_shape=PAD_HW)
    with torch.no_grad():
        outs = detector.bbox_head(detector.extract_feat(dict(imgs=images)), [meta])
    cls_scores, codes = outs["all_cls_scores"][-1][0], outs["all_bbox_preds"][-1][0]
    return cls_scores.sigmoid(), codes, detector.bbox_head.bbox_coder.decode(cls_scores, codes)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    detector = tiny_detector()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    report = export_onnx(detector, str(path), IMG_HW, PAD_HW, debug_outputs=True)
    return detector, path, report


def test_onnxruntime_matches_pytorch_before_and_after_top_k(exported, nuscenes_rig):
    detector, path, _ = exported
    session = ort_session(path)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(1, 6, 3, *PAD_HW, generator=gen)
    lidar2img = nuscenes_rig((IMG_HW[1], IMG_HW[0])).lidar2img().astype(np.float32)
    out = run_session(session, images, lidar2img[None])
    scores, codes, pred = pytorch_outputs(detector, images, lidar2img)

    np.testing.assert_allclose(out["cls_scores"][0], scores.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["bbox_codes"][0], codes.numpy(), atol=1e-4, rtol=0)
    valid = out["valid"][0]
    assert 0 < valid.sum() < MAX_NUM  # the post-centre range drops some: the mask is exercised
    # matched by (query, class): ties may reorder the top-k
    onnx_keys = list(zip(out["query_ids"][0][valid].tolist(), out["labels"][0][valid].tolist()))
    torch_keys = list(zip(pred.query_ids.tolist(), pred.labels_3d.tolist()))
    assert sorted(onnx_keys) == sorted(torch_keys)
    order = [onnx_keys.index(key) for key in torch_keys]
    np.testing.assert_allclose(
        out["boxes"][0][valid][order], pred.bboxes_3d.tensor.numpy(), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(out["scores"][0][valid][order], pred.scores_3d.numpy(), atol=1e-4, rtol=0)


def test_a_head_with_query_groups_exports_group_0_only(tmp_path, nuscenes_rig):
    """Group DETR's extra groups are training-only: the export of a head with 3 groups decodes
    NUM_QUERY queries and gives the scores and codes of the same weights without groups."""
    grouped = tiny_detector(query_groups=3)
    single = tiny_detector()
    missing, unexpected = single.load_state_dict(grouped.state_dict(), strict=False)
    assert missing == [] and unexpected == ["bbox_head.group_query_embedding.weight"]
    path = tmp_path / "grouped.onnx"
    export_onnx(grouped, str(path), IMG_HW, PAD_HW, debug_outputs=True)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(1, 6, 3, *PAD_HW, generator=gen)
    lidar2img = nuscenes_rig((IMG_HW[1], IMG_HW[0])).lidar2img().astype(np.float32)
    out = run_session(ort_session(path), images, lidar2img[None])
    scores, codes, _ = pytorch_outputs(single, images, lidar2img)
    assert out["cls_scores"].shape == (1, NUM_QUERY, 10)
    np.testing.assert_allclose(out["cls_scores"][0], scores.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["bbox_codes"][0], codes.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("yaw_frame", ["ray", "ego+ray"])
def test_a_head_with_ray_relative_yaw_exports_and_matches_pytorch(tmp_path, nuscenes_rig, yaw_frame):
    """``yaw_frame='ray'`` and ``'ego+ray'`` rotate a heading by the centre's azimuth without atan2:
    ONNX Runtime gives PyTorch's codes and boxes, and they differ from the same weights' in the ego
    frame (so the rotation is in the graph)."""
    detector = tiny_detector(yaw_frame=yaw_frame)
    for branch in detector.bbox_head.ray_yaw_branches or []:  # 'ego+ray' starts as 'ego'
        torch.nn.init.constant_(branch.bias, 0.5)
    path = tmp_path / "yaw.onnx"
    export_onnx(detector, str(path), IMG_HW, PAD_HW, debug_outputs=True)
    images = torch.randn(1, 6, 3, *PAD_HW, generator=torch.Generator().manual_seed(2))
    lidar2img = nuscenes_rig((IMG_HW[1], IMG_HW[0])).lidar2img().astype(np.float32)
    out = run_session(ort_session(path), images, lidar2img[None])
    _, codes, pred = pytorch_outputs(detector, images, lidar2img)
    np.testing.assert_allclose(out["bbox_codes"][0], codes.numpy(), atol=1e-4, rtol=0)
    valid = out["valid"][0]
    by_query = dict(zip(out["query_ids"][0][valid].tolist(), out["boxes"][0][valid]))
    for query, box in zip(pred.query_ids.tolist(), pred.bboxes_3d.tensor.numpy()):
        np.testing.assert_allclose(by_query[query], box, atol=1e-4, rtol=0)
    _, ego_codes, _ = pytorch_outputs(tiny_detector(), images, lidar2img)  # same weights (seed 0)
    assert np.abs(ego_codes[:, 6:8].numpy() - codes[:, 6:8].numpy()).max() > 0.1


def test_cameras_are_graph_inputs_not_constants(exported, nuscenes_rig):
    """Swapping the cameras' matrices (front <-> back) changes the boxes in ONNX Runtime exactly as
    in PyTorch; a trace that froze lidar2img would give the same boxes for both."""
    detector, path, _ = exported
    session = ort_session(path)
    images = torch.randn(1, 6, 3, *PAD_HW, generator=torch.Generator().manual_seed(1))
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0])).lidar2img().astype(np.float32)
    swapped = rig[[3, 4, 5, 0, 1, 2]]
    first = run_session(session, images, rig[None])["bbox_codes"][0]
    second = run_session(session, images, swapped[None])["bbox_codes"][0]
    assert np.abs(first - second).max() > 1e-2
    np.testing.assert_allclose(
        second, pytorch_outputs(detector, images, swapped)[1].numpy(), atol=1e-4, rtol=0
    )


def test_graph_io_is_static_and_free_of_data_dependent_ops(exported):
    _, path, report = exported
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES + DEBUG_OUTPUT_NAMES)
    dims = {
        v.name: [
            d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim
        ]
        for v in [*model.graph.input, *model.graph.output]
    }
    assert dims["images"] == [1, 6, 3, *PAD_HW] and dims["lidar2img"] == [1, 6, 4, 4]
    assert dims["boxes"] == [1, MAX_NUM, 9] and dims["valid"] == dims["scores"] == [1, MAX_NUM]
    assert dims["cls_scores"] == [1, NUM_QUERY, 10] and dims["bbox_codes"] == [1, NUM_QUERY, 10]
    ops = {n.op_type for n in model.graph.node}
    assert "GridSample" in ops and not ops & DATA_DEPENDENT_OPS
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    props = {p.key: p.value for p in model.metadata_props}
    assert props == {"img_shape": "64,112", "pad_shape": "64,128", "msda": "decomposed"}
    assert report.trace_warnings  # the level shapes were frozen (and reported), as intended


def test_trt_form_has_one_plugin_node_per_decoder_layer(exported, tmp_path):
    detector, _, _ = exported
    path = tmp_path / "tiny_trt.onnx"
    export_onnx(detector, str(path), IMG_HW, PAD_HW, msda="trt", opset=17)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MultiscaleDeformableAttnPlugin_TRT") == NUM_LAYERS and "GridSample" not in ops
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)


def test_verify_agrees_on_a_sample_and_rejects_another_image_size(exported, nuscenes_rig):
    from mmdet3d.structures import Det3DDataSample

    detector, path, _ = exported
    session = ort_session(path)
    lidar2img = nuscenes_rig((IMG_HW[1], IMG_HW[0])).lidar2img()
    meta = dict(lidar2img=lidar2img, img_shape=IMG_HW, batch_input_shape=PAD_HW)
    images = torch.randn(1, 6, 3, *PAD_HW, generator=torch.Generator().manual_seed(2))
    data = dict(inputs=dict(imgs=images), data_samples=[Det3DDataSample(metainfo=meta)])
    diff = compare_with_pytorch(detector, session, data)
    assert diff.ok(1e-4) and diff.num_matched == diff.num_torch == diff.num_onnx > 0
    assert diff.score_diff < 1e-5 and diff.code_diff < 1e-4
    data["data_samples"][0].set_metainfo(dict(img_shape=(60, 112)))
    with pytest.raises(
        ValueError, match=r"img_shape \(60,112\) differs from the exported model's \(64,112\)"
    ):
        compare_with_pytorch(detector, session, data)


def test_export_rejects_opsets_outside_16_to_19(exported, tmp_path):
    detector, _, _ = exported
    with pytest.raises(ValueError, match=r"opset must be one of \(16, 17, 18, 19\).*got 20"):
        export_onnx(detector, str(tmp_path / "x.onnx"), IMG_HW, PAD_HW, opset=20)


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_config_through_the_tools_on_three_synthetic_val_samples(synthetic_nuscenes_tiny, tmp_path):
    """Randomly initialised CPU config -> checkpoint -> export_onnx.py -> verify_onnx.py: pre-top-k
    scores and codes within 1e-4 and the same detections (up to near-ties at the k-th score)."""
    from mmengine.config import Config

    from bev_deform.deploy import build_detector

    torch.manual_seed(0)
    checkpoint = tmp_path / "random.pth"
    torch.save(
        {"state_dict": build_detector(Config.fromfile(str(CPU_CONFIG)), None).state_dict()}, checkpoint
    )
    model = tmp_path / "cpu.onnx"
    _tool("export_onnx").main([str(CPU_CONFIG), str(checkpoint), "--out", str(model), "--debug-outputs"])
    diffs = _tool("verify_onnx").main(
        [str(CPU_CONFIG), str(checkpoint), str(model), "--data-root", str(synthetic_nuscenes_tiny)]
    )
    assert len(diffs) == 3
    for d in diffs:
        assert d.score_diff <= 1e-4 and d.code_diff <= 1e-4
        assert d.num_unmatched == d.num_boundary and d.num_matched > 0.9 * d.num_torch
        assert d.box_diff <= 1e-4 and d.det_score_diff <= 1e-4
