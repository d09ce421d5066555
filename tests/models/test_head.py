"""The query head and its decoder on tiny inputs: losses with known values, reference-point
refinement, and NMS-free predictions as LiDARInstance3DBoxes."""

from __future__ import annotations

import math

import pytest
import torch
from mmdet.models.layers import inverse_sigmoid
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from bev_deform.geometry import CameraGeometry, denormalize_points
from bev_deform.models.heads import DeformDETR3DHead
from bev_deform.models.layers import DeformDETR3DDecoder
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS, with_velocity
from bev_deform.registry import MODELS, TASK_UTILS

PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
IMG_HW = (64, 112)
LEVEL_HW = [(8, 14), (4, 7)]


def head_cfg(**overrides) -> dict:
    layer = dict(
        self_attn_cfg=dict(num_heads=4, attn_drop=0.0),
        cross_attn_cfg=dict(num_heads=4, num_points=2, dropout=0.0),
        ffn_cfg=dict(feedforward_channels=64, ffn_drop=0.0),
    )
    cfg = dict(
        type="DeformDETR3DHead",
        num_classes=3,
        pc_range=PC_RANGE,
        embed_dims=32,
        num_query=24,
        num_levels=2,
        decoder=dict(num_layers=2, layer_cfg=layer),
        bbox_coder=dict(type="NMSFreeCoder", max_num=10),
    )
    cfg.update(overrides)
    return cfg


def _boxes(rows) -> LiDARInstance3DBoxes:
    return LiDARInstance3DBoxes(torch.tensor(rows, dtype=torch.float32).view(-1, 9), box_dim=9)


def _samples(rig, gts) -> list[Det3DDataSample]:
    l2i = rig((IMG_HW[1], IMG_HW[0])).lidar2img()
    samples = []
    for rows, labels in gts:
        s = Det3DDataSample(metainfo=dict(lidar2img=l2i, img_shape=IMG_HW, batch_input_shape=IMG_HW))
        s.gt_instances_3d = InstanceData(
            bboxes_3d=_boxes(rows), labels_3d=torch.tensor(labels, dtype=torch.long)
        )
        samples.append(s)
    return samples


def _feats(batch: int) -> list[torch.Tensor]:
    return [torch.randn(batch, 6, 32, h, w) for h, w in LEVEL_HW]


CAR_AHEAD = [0.5, 12.0, -1.8, 4.5, 1.9, 1.6, 0.2, 1.0, 0.0]
PED_LEFT = [-6.0, 8.0, -1.7, 0.7, 0.7, 1.8, -1.0, 0.0, 0.5]


def test_losses_of_every_layer_are_finite_and_reach_every_branch(nuscenes_rig):
    torch.manual_seed(0)
    head = MODELS.build(head_cfg())
    head.init_weights()
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([], [])])  # second: no GT
    losses = head.loss(_feats(2), samples)
    assert set(losses) == {"loss_cls", "loss_bbox", "d0.loss_cls", "d0.loss_bbox"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in (
        "query_embedding",
        "reference_points",
        "cls_branches.0",
        "reg_branches.1",
        "decoder.layers.0",
    ):
        grads = [p.grad for n, p in head.named_parameters() if n.startswith(name) and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


def test_loss_values_on_a_known_matching():
    """One GT, three queries: query 1 predicts the GT's box with cx off by 1 m and a confident
    class; it is matched, so loss_bbox = 0.25 * 1 m and loss_cls is focal loss summed / 1 match."""
    head = MODELS.build(head_cfg())
    gt_box = _boxes(CAR_AHEAD)
    code = head.bbox_coder.encode(gt_box)  # (1, 10)
    preds = torch.zeros(3, 10)
    preds[:, 0] = torch.tensor([30.0, 0.0, -30.0])
    preds[1] = code[0]
    preds[1, 0] += 1.0
    logits = torch.tensor([[-2.0, -2.0, -2.0], [3.0, -1.0, -2.0], [-2.0, -2.0, 0.5]])
    gt = InstanceData(bboxes_3d=gt_box, labels_3d=torch.tensor([0]))
    losses = head.loss_by_feat(logits[None, None], preds[None, None], [gt])

    assert losses["loss_bbox"].item() == pytest.approx(0.25 * 1.0, abs=1e-6)
    p = torch.sigmoid(logits)
    target = torch.zeros(3, 3)
    target[1, 0] = 1.0
    alpha, gamma = 0.25, 2.0
    focal = -(
        alpha * (1 - p) ** gamma * p.log() * target + (1 - alpha) * p**gamma * (1 - p).log() * (1 - target)
    )
    assert losses["loss_cls"].item() == pytest.approx(2.0 * focal.sum().item(), rel=1e-5)


def test_without_any_ground_truth_only_the_classification_loss_remains(nuscenes_rig):
    torch.manual_seed(0)
    head = MODELS.build(head_cfg())
    losses = head.loss(_feats(1), _samples(nuscenes_rig, [([], [])]))
    assert losses["loss_bbox"].item() == 0.0 and losses["d0.loss_bbox"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0


def test_decoder_refines_reference_points_from_each_layers_regression(nuscenes_rig):
    torch.manual_seed(0)
    head = MODELS.build(head_cfg())
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])
    feats = _feats(1)
    cams = CameraGeometry.from_metas([s.metainfo for s in samples], "cpu")
    value, levels = head._flatten_levels(feats, cams.pad_hw)
    pos, query = head.query_embedding.weight.split(32, dim=1)
    ref0 = head.reference_points(pos[None]).sigmoid()
    hidden, refs, raw_codes = head.decoder(
        query[None], pos[None], value, ref0, levels, cams, head.reg_branches
    )
    assert hidden.shape == (2, 1, 24, 32) and refs.shape == (2, 1, 24, 3)
    assert torch.equal(refs[0], ref0)
    torch.testing.assert_close(raw_codes[0], head.reg_branches[0](hidden[0]))  # returned, not recomputed
    delta = head.reg_branches[0](hidden[0])[..., list(CENTER_SLOTS)]
    assert torch.allclose(refs[1], (inverse_sigmoid(ref0) + delta).sigmoid(), atol=1e-6)
    # detached between layers: no gradient reaches layer 0's regression through refs[1]
    grads = torch.autograd.grad(refs[1].sum(), list(head.reg_branches[0].parameters()), allow_unused=True)
    assert all(g is None for g in grads)

    outs = head(feats, [s.metainfo for s in samples])
    raw = head.reg_branches[1](hidden[1])
    center = denormalize_points((raw[..., list(CENTER_SLOTS)] + inverse_sigmoid(refs[1])).sigmoid(), PC_RANGE)
    assert torch.allclose(outs["all_bbox_preds"][1][..., list(CENTER_SLOTS)], center, atol=1e-4)
    assert torch.allclose(outs["all_bbox_preds"][1][..., 5:], raw[..., 5:], atol=1e-5)


def test_dynamic_query_pos_follows_each_layers_reference_points(nuscenes_rig):
    torch.manual_seed(0)
    layer = head_cfg()["decoder"]["layer_cfg"]
    head = MODELS.build(head_cfg(decoder=dict(num_layers=2, layer_cfg=layer, dynamic_query_pos=True)))
    seen = []  # the query_pos each layer's self-attention was given
    for lyr in head.decoder.layers:
        lyr.self_attn.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append(kwargs["query_pos"]), with_kwargs=True
        )
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])
    cams = CameraGeometry.from_metas([s.metainfo for s in samples], "cpu")
    value, levels = head._flatten_levels(_feats(1), cams.pad_hw)
    pos, query = head.query_embedding.weight.split(32, dim=1)
    ref0 = head.reference_points(pos[None]).sigmoid()
    _, refs, _ = head.decoder(query[None], pos[None], value, ref0, levels, cams, head.reg_branches)
    assert len(seen) == 2 and not torch.allclose(refs[0], refs[1])
    for i in range(2):
        torch.testing.assert_close(seen[i], head.decoder.query_pos_encoder(refs[i]))
    assert not torch.allclose(seen[0], pos[None])  # the fixed learned position is not used


def test_look_forward_twice_trains_the_previous_layers_offset_with_the_same_outputs(nuscenes_rig):
    """DINO's look forward twice: the same boxes and reference points; layer 1's box loss reaches
    layer 0's regression branch only with it (without it layer 1 decodes against a detached point)."""
    layer = head_cfg()["decoder"]["layer_cfg"]
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])
    cams = CameraGeometry.from_metas([s.metainfo for s in samples], "cpu")
    feats = _feats(1)
    got = {}
    for lft in (False, True):
        torch.manual_seed(0)
        decoder = dict(num_layers=2, layer_cfg=layer, look_forward_twice=lft)
        head = MODELS.build(head_cfg(decoder=decoder))
        value, levels = head._flatten_levels(feats, cams.pad_hw)
        pos, query = head.query_embedding.weight.split(32, dim=1)
        ref0 = head.reference_points(pos[None]).sigmoid()
        _, refs, raw = head.decoder(query[None], pos[None], value, ref0, levels, cams, head.reg_branches)
        codes = head._to_code(raw, refs)  # (2, 1, Q, 10)
        codes[1, ..., :2].sum().backward()  # layer 1's centre only
        branch0 = head.reg_branches[0][-1].weight.grad
        got[lft] = (codes.detach(), refs.detach(), None if branch0 is None else branch0.abs().sum())
    torch.testing.assert_close(got[True][0], got[False][0])
    torch.testing.assert_close(got[True][1], got[False][1])
    assert got[False][2] is None or got[False][2] == 0
    assert got[True][2] > 0


def test_predict_returns_top_k_lidar_boxes_with_velocity(nuscenes_rig):
    torch.manual_seed(0)
    head = MODELS.build(head_cfg()).eval()
    with torch.no_grad():
        results = head.predict(_feats(2), _samples(nuscenes_rig, [([CAR_AHEAD], [0]), ([], [])]))
    assert len(results) == 2
    for res in results:
        assert isinstance(res.bboxes_3d, LiDARInstance3DBoxes) and res.bboxes_3d.tensor.shape == (10, 9)
        assert res.scores_3d.shape == (10,) and bool((res.scores_3d[:-1] >= res.scores_3d[1:]).all())
        assert res.labels_3d.dtype == torch.long and int(res.labels_3d.max()) < 3
        assert torch.isfinite(res.bboxes_3d.tensor).all()


def test_shared_constants_are_passed_down_and_never_repeated():
    head = MODELS.build(head_cfg())
    attn = head.decoder.layers[1].cross_attn
    assert (attn.embed_dims, attn.num_levels, attn.pc_range) == (32, 2, PC_RANGE)
    bad = head_cfg(decoder=dict(num_layers=1, embed_dims=32))
    with pytest.raises(ValueError, match=r"decoder must not set \['embed_dims'\]"):
        MODELS.build(bad)
    bad = head_cfg()
    bad["decoder"] = dict(num_layers=1, layer_cfg=dict(cross_attn_cfg=dict(pc_range=PC_RANGE)))
    with pytest.raises(ValueError, match=r"cross_attn_cfg must not set \['pc_range'\]"):
        MODELS.build(bad)
    with pytest.raises(ValueError, match="code_weights must have 10 values"):
        MODELS.build(head_cfg(code_weights=[1.0] * 8))
    with pytest.raises(ValueError, match="mlvl_feats must have num_levels=2 levels"):
        head(_feats(1)[:1], [])
    assert math.isclose(head.code_weights[-1].item(), 0.2, rel_tol=1e-6)


def test_pure_python_configs_with_class_types_build_under_any_default_scope():
    cfg = head_cfg(decoder=dict(type=DeformDETR3DDecoder, num_layers=1), bbox_coder=None)
    cfg["type"] = DeformDETR3DHead  # the head's own defaults use class objects too
    with DefaultScope.overwrite_default_scope("mmdet3d"):
        head = MODELS.build(cfg)
    assert isinstance(head.decoder, DeformDETR3DDecoder) and head.decoder.num_layers == 1


def test_fp16_logits_match_exactly_as_their_fp32_copies(nuscenes_rig):
    """Under AMP the head's outputs are fp16; matching them must not crash and must give the same
    assignment and losses as their fp32 copies. Confident logits of +-12 are the trap: in fp16,
    sigmoid(12) rounds to 1 and mmdet's FocalLossCost takes log(1 - p + 1e-12) = log(0) = -inf."""
    torch.manual_seed(0)
    head = MODELS.build(head_cfg())
    gts = [s.gt_instances_3d for s in _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2])])]
    logits = torch.where(torch.rand(2, 1, 24, 3) > 0.5, 12.0, -12.0).half()  # (layers, B, Q, K)
    codes = torch.randn(2, 1, 24, 10).half()
    focal_cost = TASK_UTILS.build(dict(type="mmdet.FocalLossCost", weight=2.0))
    cost16 = focal_cost(InstanceData(scores=logits[0, 0]), InstanceData(labels=gts[0].labels_3d))
    assert torch.isinf(cost16).any()  # what the matching was given in fp16 (scipy rejects it)
    fp16 = head.loss_by_feat(logits, codes, gts)
    fp32 = head.loss_by_feat(logits.float(), codes.float(), gts)
    assert set(fp16) == set(fp32)
    for key in fp32:
        assert fp16[key].dtype == torch.float32 and torch.isfinite(fp16[key]), key
        assert torch.equal(fp16[key], fp32[key]), key


def test_with_velocity_replaces_only_the_velocity_slots():
    """(vx, vy) go to slots 8 and 9; the other eight slots stay as they were."""
    codes = torch.arange(20.0).reshape(2, 10)
    got = with_velocity(codes, torch.tensor([[-1.0, -2.0], [-3.0, -4.0]]))
    expected = codes.clone()
    expected[:, 8:] = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    assert torch.equal(got, expected)
