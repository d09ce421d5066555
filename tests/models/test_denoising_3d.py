"""3D contrastive denoising (DINO's CDN on 3D boxes) in the DETR3D-style head: the attention mask,
the noise ranges, noiseless positives that regress to their own box, batches with different and
zero numbers of boxes, and no effect on the matching queries."""

from __future__ import annotations

import math

import pytest
import torch
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.structures import InstanceData

from bev_deform.geometry import denormalize_points
from bev_deform.models.heads import Denoising3D, denoising_attn_mask
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS, NMSFreeCoder
from bev_deform.registry import MODELS

PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
IMG_HW = (64, 112)
LEVEL_HW = [(8, 14), (4, 7)]
Q = 24
CAR_AHEAD = [0.5, 12.0, -1.8, 4.5, 1.9, 1.6, 0.2, 1.0, 0.0]
PED_LEFT = [-6.0, 8.0, -1.7, 0.7, 0.7, 1.8, -1.0, 0.0, 0.5]
TRUCK = [20.0, -10.0, -1.5, 8.0, 2.5, 3.0, 2.5, 0.0, 0.0]


def head_cfg(denoising: dict | None = None) -> dict:
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
        num_query=Q,
        num_levels=2,
        decoder=dict(num_layers=2, layer_cfg=layer),
        bbox_coder=dict(type="NMSFreeCoder", max_num=10),
    )
    if denoising is not None:
        cfg["denoising"] = denoising
    return cfg


def _build(cfg: dict):
    torch.manual_seed(0)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def _boxes(rows) -> LiDARInstance3DBoxes:
    return LiDARInstance3DBoxes(torch.tensor(rows, dtype=torch.float32).view(-1, 9), box_dim=9)


def _gt(rows, labels) -> InstanceData:
    return InstanceData(bboxes_3d=_boxes(rows), labels_3d=torch.tensor(labels, dtype=torch.long))


def _samples(rig, gts) -> list[Det3DDataSample]:
    l2i = rig((IMG_HW[1], IMG_HW[0])).lidar2img()
    samples = []
    for rows, labels in gts:
        s = Det3DDataSample(metainfo=dict(lidar2img=l2i, img_shape=IMG_HW, batch_input_shape=IMG_HW))
        s.gt_instances_3d = _gt(rows, labels)
        samples.append(s)
    return samples


def _feats(batch: int) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(batch, 6, 32, h, w) for h, w in LEVEL_HW]


def test_attention_mask_for_two_groups_of_three_boxes():
    """4 matching queries, then group 0 (3 positives, 3 negatives), then group 1; x = blocked."""
    picture = [
        "....xxxxxxxxxxxx",  # matching queries: see the matching queries only
        "....xxxxxxxxxxxx",
        "....xxxxxxxxxxxx",
        "....xxxxxxxxxxxx",
        "..........xxxxxx",  # group 0: the matching queries and its own 6 queries
        "..........xxxxxx",
        "..........xxxxxx",
        "..........xxxxxx",
        "..........xxxxxx",
        "..........xxxxxx",
        "....xxxxxx......",  # group 1: the matching queries and its own 6 queries
        "....xxxxxx......",
        "....xxxxxx......",
        "....xxxxxx......",
        "....xxxxxx......",
        "....xxxxxx......",
    ]
    expected = torch.tensor([[c == "x" for c in row] for row in picture])
    mask = denoising_attn_mask(num_matching=4, num_groups=2, group_size=2 * 3)
    assert mask.dtype == torch.bool and torch.equal(mask, expected)


def test_head_layout_and_targets_for_two_groups_and_different_numbers_of_boxes():
    dn = Denoising3D(num_classes=3, embed_dims=32, pc_range=PC_RANGE, num_groups=2)
    coder = NMSFreeCoder()
    codes = [coder.encode(_boxes([CAR_AHEAD, PED_LEFT, TRUCK])), coder.encode(_boxes([PED_LEFT]))]
    out = dn(codes, [torch.tensor([0, 2, 1]), torch.tensor([2])], num_matching=Q)
    assert out.num_queries == 2 * 2 * 3 and out.attn_mask.shape == (Q + 12, Q + 12)
    assert torch.equal(out.attn_mask, denoising_attn_mask(Q, 2, 6))
    # per group [pos car, pos ped, pos truck, neg x 3]; sample 1 has its pedestrian in slot 0 only
    bg = 3
    assert out.labels[0].tolist() == [0, 2, 1, bg, bg, bg] * 2
    assert out.labels[1].tolist() == [2, bg, bg, bg, bg, bg] * 2
    assert out.label_weights[1].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0] * 2
    assert out.key_padding_mask[1].tolist() == [False] * Q + [False, True, True, False, True, True] * 2
    assert not out.key_padding_mask[0].any()
    assert out.code_weights[..., 0].tolist() == [
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0] * 2,
        [1.0] + [0.0] * 5 + [1.0] + [0.0] * 5,
    ]
    torch.testing.assert_close(out.code_targets[0, 7], codes[0][1])  # group 1's positive pedestrian
    assert out.code_targets[0, 3:6].abs().max() == 0  # negatives have no box target
    assert out.query[1, 1].abs().max() == 0 and out.query_pos[1, 1].abs().max() == 0  # padding


def test_noise_keeps_positives_inside_the_noise_scale_and_negatives_between_one_and_two():
    torch.manual_seed(0)
    scale = 0.5
    dn = Denoising3D(num_classes=3, embed_dims=32, pc_range=PC_RANGE, num_groups=200, box_noise_scale=scale)
    box = _boxes([TRUCK])
    out = dn([NMSFreeCoder().encode(box)], [torch.tensor([1])], num_matching=Q)
    centre = denormalize_points(out.ref_points[0], PC_RANGE).view(200, 2, 3)  # (G, pos | neg, 3)
    offset = centre - box.gravity_center[0]
    yaw = TRUCK[6]  # back into the truck's frame: along its heading, across it, up
    along = offset[..., 0] * math.cos(yaw) + offset[..., 1] * math.sin(yaw)
    across = -offset[..., 0] * math.sin(yaw) + offset[..., 1] * math.cos(yaw)
    r = torch.stack([along / 4.0, across / 1.25, offset[..., 2] / 1.5], -1) / scale  # in half sizes
    pos, neg = r[:, 0].abs(), r[:, 1].abs()
    assert pos.max() < 1.0 and pos.max() > 0.9
    assert neg.min() >= 1.0 - 1e-4 and neg.max() < 2.0 and neg.min() < 1.1


def test_label_noise_flips_labels_and_none_without_it():
    torch.manual_seed(0)
    codes, labels = [NMSFreeCoder().encode(_boxes([CAR_AHEAD]))], [torch.tensor([2])]
    for ratio, expect_flips in ((0.0, False), (1.0, True)):
        dn = Denoising3D(
            num_classes=3, embed_dims=32, pc_range=PC_RANGE, num_groups=100, label_noise_ratio=ratio
        )
        out = dn(codes, labels, num_matching=Q)
        own = dn.label_embedding.weight[2]
        flipped = ~(out.query[0] == own).all(-1)  # (D,) content is not the own label's embedding
        assert bool(flipped.any()) == expect_flips
        assert out.labels[0, ::2].eq(2).all()  # positives keep their true label as the target


def test_noiseless_positive_query_regresses_to_its_own_box(nuscenes_rig):
    head = _build(head_cfg(dict(num_groups=2, box_noise_scale=0.0, label_noise_ratio=0.0)))
    with torch.no_grad():  # zero regression: every prediction's centre is its reference point
        for branch in head.reg_branches:
            branch[-1].weight.zero_()
            branch[-1].bias.zero_()
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2])])
    head.train()
    outs = head(_feats(1), [s.metainfo for s in samples], [s.gt_instances_3d for s in samples])
    dn = outs["dn"]
    box = _boxes([CAR_AHEAD, PED_LEFT])
    # group 1's positive pedestrian: slot 2 * 2 + 1
    j = 5
    centre = box.gravity_center[1]  # (x, y, bottom z + h / 2)
    expected_ref = (centre - torch.tensor(PC_RANGE[:3])) / torch.tensor([102.4, 102.4, 8.0])
    torch.testing.assert_close(dn.ref_points[0, j], expected_ref)
    torch.testing.assert_close(dn.code_targets[0, j], head.bbox_coder.encode(box)[1])
    assert dn.labels[0, j] == 2 and dn.code_weights[0, j].eq(1).all()
    pred_centre = outs["dn_bbox_preds"][:, 0, j][:, list(CENTER_SLOTS)]  # (num_layers, 3) metres
    torch.testing.assert_close(pred_centre, centre.expand(2, 3), atol=1e-4, rtol=0)


def test_sample_without_boxes_gets_no_denoising_queries_and_losses_stay_finite(nuscenes_rig):
    head = _build(head_cfg(dict(num_groups=3)))
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([], [])])
    head.train()
    outs = head(_feats(2), [s.metainfo for s in samples], [s.gt_instances_3d for s in samples])
    dn = outs["dn"]
    assert dn.num_queries == 3 * 2 * 2 and outs["dn_cls_scores"].shape == (2, 2, 12, 3)
    assert dn.label_weights[1].abs().max() == 0 and dn.code_weights[1].abs().max() == 0
    assert dn.key_padding_mask[1, Q:].all() and not dn.key_padding_mask[1, :Q].any()
    losses = head.loss(_feats(2), samples)
    dn_keys = {"dn_loss_cls", "dn_loss_bbox", "d0.dn_loss_cls", "d0.dn_loss_bbox"}
    assert dn_keys | {"loss_cls", "loss_bbox", "d0.loss_cls", "d0.loss_bbox"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["dn_loss_bbox"] > 0
    sum(losses.values()).backward()
    for p in (head.denoising.label_embedding.weight, head.denoising.box_encoder[0].weight):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_batch_without_any_box_gives_zero_denoising_losses(nuscenes_rig):
    head = _build(head_cfg(dict(num_groups=3, loss_weight=2.0)))
    samples = _samples(nuscenes_rig, [([], []), ([], [])])
    head.train()
    assert "dn" not in head(_feats(2), [s.metainfo for s in samples], [s.gt_instances_3d for s in samples])
    losses = head.loss(_feats(2), samples)
    assert {"dn_loss_cls", "dn_loss_bbox", "d0.dn_loss_cls", "d0.dn_loss_bbox"} <= set(losses)
    assert all(losses[k] == 0 for k in losses if "dn_" in k) and torch.isfinite(losses["loss_cls"])
    sum(losses.values()).backward()
    assert head.denoising.label_embedding.weight.grad is not None


def test_denoising_weight_scales_the_denoising_losses_only(nuscenes_rig):
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])
    got = {}
    for weight in (1.0, 3.0):
        head = _build(head_cfg(dict(num_groups=2, loss_weight=weight)))
        torch.manual_seed(5)  # the same noise for both
        got[weight] = head.loss(_feats(1), samples)
    for k in got[1.0]:
        factor = 3.0 if "dn_" in k else 1.0
        torch.testing.assert_close(got[3.0][k], factor * got[1.0][k])


def test_matching_queries_do_not_depend_on_denoising(nuscenes_rig):
    """Eval: identical predictions with denoising on and off (no denoising query is built).
    Training: the matching queries' outputs equal those without denoising (the mask hides the
    denoising queries from them), up to float rounding."""
    with_dn = _build(head_cfg(dict(num_groups=2)))
    without = MODELS.build(head_cfg())
    missing, unexpected = without.load_state_dict(with_dn.state_dict(), strict=False)
    assert missing == [] and unexpected and all(k.startswith("denoising.") for k in unexpected)
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([TRUCK], [1])])
    metas, gts = [s.metainfo for s in samples], [s.gt_instances_3d for s in samples]
    feats = _feats(2)
    with torch.no_grad():
        for head in (with_dn, without):
            head.eval()
        a, b = with_dn(feats, metas, gts), without(feats, metas, gts)
        assert set(a) == {"all_cls_scores", "all_bbox_preds"}
        assert torch.equal(a["all_cls_scores"], b["all_cls_scores"])
        assert torch.equal(a["all_bbox_preds"], b["all_bbox_preds"])
        pa, pb = with_dn.predict(feats, samples), without.predict(feats, samples)
        for x, y in zip(pa, pb):
            assert torch.equal(x.bboxes_3d.tensor, y.bboxes_3d.tensor) and torch.equal(
                x.scores_3d, y.scores_3d
            )
        for head in (with_dn, without):
            head.train()  # no dropout in this config
        a, b = with_dn(feats, metas, gts), without(feats, metas, gts)
        assert a["dn_cls_scores"].shape[2] == 2 * 2 * 2
        torch.testing.assert_close(a["all_cls_scores"], b["all_cls_scores"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a["all_bbox_preds"], b["all_bbox_preds"], atol=1e-5, rtol=1e-5)


def test_bad_denoising_config_raises():
    with pytest.raises(ValueError, match="num_groups must be >= 1"):
        Denoising3D(num_classes=3, embed_dims=32, pc_range=PC_RANGE, num_groups=0)
    with pytest.raises(ValueError, match="denoising must not set"):
        MODELS.build(head_cfg(dict(num_classes=3)))
