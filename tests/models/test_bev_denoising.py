"""3D contrastive denoising in the BEVFormer head (shared with the DETR3D-style head through
``QueryHeadBase``): nothing changes at inference, the dn losses of every layer reach every
parameter, noiseless positives start at their box centre on the BEV, the matching queries cannot
see the denoising queries, and the detector's queue training gets the dn losses too."""

from __future__ import annotations

import torch
from test_bev_temporal import _queue_batch
from test_bevformer import CAR_AHEAD, PC_RANGE, PED_LEFT, _build, _feats, _samples, detector_cfg, head_cfg

from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS

Q = 24  # head_cfg's num_query
TRUCK = [20.0, -10.0, -1.5, 8.0, 2.5, 3.0, 2.5, 0.0, 0.0]
DN_KEYS = {"dn_loss_cls", "dn_loss_bbox", "d0.dn_loss_cls", "d0.dn_loss_bbox"}
MATCHING_KEYS = {"loss_cls", "loss_bbox", "d0.loss_cls", "d0.loss_bbox"}


def _dn_head(**denoising):
    torch.manual_seed(0)
    head = _build(head_cfg(denoising=dict(num_groups=2, **denoising)))
    head.init_weights()
    return head


def _inputs(samples):
    return [s.metainfo for s in samples], [s.gt_instances_3d for s in samples]


def test_eval_outputs_and_predictions_are_identical_with_denoising_on_and_off(nuscenes_rig):
    with_dn = _dn_head()
    without = _build(head_cfg())
    missing, unexpected = without.load_state_dict(with_dn.state_dict(), strict=False)
    assert missing == [] and unexpected and all(k.startswith("denoising.") for k in unexpected)
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([TRUCK], [1])])
    metas, gts = _inputs(samples)
    feats = _feats(2)
    with_dn.eval()
    without.eval()
    with torch.no_grad():
        a, b = with_dn(feats, metas, gts), without(feats, metas, gts)  # ground truth given, unused
        assert set(a) == {"bev_embed", "all_cls_scores", "all_bbox_preds"}
        for key in a:
            assert torch.equal(a[key], b[key]), key
        for x, y in zip(with_dn.predict(feats, samples), without.predict(feats, samples)):
            assert torch.equal(x.bboxes_3d.tensor, y.bboxes_3d.tensor)
            assert torch.equal(x.scores_3d, y.scores_3d) and torch.equal(x.labels_3d, y.labels_3d)


def test_training_gives_dn_losses_of_every_layer_and_a_gradient_to_every_parameter(nuscenes_rig):
    """A batch of a sample with 2 boxes and one with none: 2 groups x (2 positives, 2 negatives)
    denoising queries per sample, all padding in the second."""
    head = _dn_head()
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([], [])])
    head.train()
    outs = head(_feats(2), *_inputs(samples))
    assert outs["dn_cls_scores"].shape == (2, 2, 2 * 2 * 2, 3) and outs["all_cls_scores"].shape[2] == Q
    assert outs["dn"].key_padding_mask[1, Q:].all() and not outs["dn"].key_padding_mask[0].any()
    losses = head.loss(_feats(2), samples)
    assert set(losses) == MATCHING_KEYS | DN_KEYS
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(losses[k] > 0 for k in DN_KEYS)
    sum(losses.values()).backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    for name in ("denoising.label_embedding.weight", "denoising.box_encoder.0.weight"):
        assert head.get_parameter(name).grad.abs().sum() > 0, name


def test_batch_without_any_box_gives_finite_zero_dn_losses(nuscenes_rig):
    head = _dn_head(loss_weight=2.0)
    samples = _samples(nuscenes_rig, [([], []), ([], [])])
    head.train()
    assert "dn" not in head(_feats(2), *_inputs(samples))
    losses = head.loss(_feats(2), samples)
    assert set(losses) == MATCHING_KEYS | DN_KEYS
    assert all(losses[k] == 0 for k in DN_KEYS) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert head.denoising.label_embedding.weight.grad is not None


def test_noiseless_positive_query_starts_at_its_box_centre_on_the_bev(nuscenes_rig):
    """box_noise_scale=0, label_noise_ratio=0: group 1's positive pedestrian has its box centre,
    normalised in pc_range, as its reference point; the BEV cross-attention of every layer samples
    at its (x, y), and with zero regression its predicted centre is the box centre."""
    head = _dn_head(box_noise_scale=0.0, label_noise_ratio=0.0)
    with torch.no_grad():  # zero regression: every prediction's centre is its reference point
        for branch in head.reg_branches:
            branch[-1].weight.zero_()
            branch[-1].bias.zero_()
    given = []  # the (B, Q + D, 2) BEV locations each decoder layer's cross-attention received
    for layer in head.transformer.decoder.layers:
        layer.attentions[1].register_forward_pre_hook(lambda m, args: given.append(args[2]))
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2])])
    head.train()
    outs = head(_feats(1), *_inputs(samples))
    dn = outs["dn"]
    j = 2 * 2 + 1  # group 1, positive slot 1
    centre = samples[0].gt_instances_3d.bboxes_3d.gravity_center[1]  # (x, y, bottom z + h / 2)
    expected_ref = (centre - torch.tensor(PC_RANGE[:3])) / torch.tensor([102.4, 102.4, 8.0])
    torch.testing.assert_close(dn.ref_points[0, j], expected_ref)
    assert dn.labels[0, j] == 2 and dn.code_weights[0, j].eq(1).all()
    torch.testing.assert_close(
        dn.code_targets[0, j], head.bbox_coder.encode(samples[0].gt_instances_3d.bboxes_3d)[1]
    )
    assert len(given) == 2
    for xy in given:
        torch.testing.assert_close(xy[0, Q + j], expected_ref[:2], atol=1e-5, rtol=0)
    pred_centre = outs["dn_bbox_preds"][:, 0, j][:, list(CENTER_SLOTS)]  # (num_layers, 3) metres
    torch.testing.assert_close(pred_centre, centre.expand(2, 3), atol=1e-4, rtol=0)


def test_matching_queries_cannot_see_the_denoising_queries(nuscenes_rig):
    """Training mode (no dropout in this config): other denoising queries (other boxes, other
    noise) leave the matching queries' outputs as they are, equal to those of the head without
    denoising; the denoising queries' own outputs do change."""
    head = _dn_head()
    without = _build(head_cfg())
    without.load_state_dict(head.state_dict(), strict=False)
    head.train()
    without.train()
    feats = _feats(2)
    first = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([TRUCK], [1])])
    other = _samples(nuscenes_rig, [([TRUCK, CAR_AHEAD], [1, 1]), ([PED_LEFT], [2])])
    with torch.no_grad():
        torch.manual_seed(1)
        a = head(feats, *_inputs(first))
        torch.manual_seed(2)
        b = head(feats, *_inputs(other))
        plain = without(feats, *_inputs(first))
    assert a["dn_cls_scores"].shape == b["dn_cls_scores"].shape == (2, 2, 2 * 2 * 2, 3)
    assert not torch.allclose(a["dn_cls_scores"], b["dn_cls_scores"], atol=1e-3)
    for key in ("all_cls_scores", "all_bbox_preds"):
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-6, msg=key)
        torch.testing.assert_close(a[key], plain[key], atol=1e-5, rtol=1e-5, msg=key)


def test_queue_training_of_the_detector_gets_the_dn_losses(nuscenes_rig):
    """The detector's queue path (history from the earlier frames) trains the head's denoising
    queries too."""
    torch.manual_seed(0)
    cfg = detector_cfg()
    cfg["bbox_head"] = dict(cfg["bbox_head"], denoising=dict(num_groups=2))
    model = _build(dict(cfg, grid_mask=None))
    model.init_weights()
    model.train()
    data, _, _ = _queue_batch(nuscenes_rig, model, [("a", 0.5, 4.0), ("a", 1.0, 8.0)])
    losses = model(**data, mode="loss")
    assert set(losses) >= DN_KEYS | MATCHING_KEYS
    assert all(torch.isfinite(losses[k]) and losses[k] > 0 and losses[k].requires_grad for k in DN_KEYS)
    (grad,) = torch.autograd.grad(losses["dn_loss_bbox"], model.bbox_head.denoising.box_encoder[0].weight)
    assert grad.abs().sum() > 0
