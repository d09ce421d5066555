"""Group DETR's query groups in the query heads (``query_groups``): the attention mask's blocks,
groups that cannot see each other, matching per group with losses averaged over the groups, and
inference that decodes group 0 alone."""

from __future__ import annotations

import pytest
import torch
from test_denoising_3d import CAR_AHEAD, PED_LEFT, TRUCK, Q, _build, _feats, _samples, head_cfg

from bev_deform.models.heads import denoising_attn_mask
from bev_deform.models.heads.query_head_base import group_attn_mask
from bev_deform.registry import MODELS


def _grouped_cfg(groups: int, denoising: dict | None = None) -> dict:
    return dict(head_cfg(denoising), query_groups=groups)


def test_group_mask_blocks_for_two_groups_of_two_queries_and_denoising():
    """[g0 g0 | g1 g1 | dn0 dn0 | dn1 dn1] with a 2-group denoising mask of one box (x = blocked)."""
    dn_mask = denoising_attn_mask(2, 2, 2)  # over [matching (2) | 2 groups of 2]
    got = group_attn_mask(2, 2, dn_mask).int()
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 1, 1, 1, 1],  # group 0 sees group 0 only
            [0, 0, 1, 1, 1, 1, 1, 1],
            [1, 1, 0, 0, 1, 1, 1, 1],  # group 1 sees group 1 only
            [1, 1, 0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 0, 0, 1, 1],  # denoising group 0: group 0 and itself
            [0, 0, 1, 1, 0, 0, 1, 1],
            [0, 0, 1, 1, 1, 1, 0, 0],  # denoising group 1: group 0 and itself
            [0, 0, 1, 1, 1, 1, 0, 0],
        ]
    )
    assert torch.equal(got, expected)
    assert torch.equal(group_attn_mask(2, 1, dn_mask), dn_mask)  # one group: the denoising mask
    assert not group_attn_mask(3, 1).any()
    with pytest.raises(ValueError, match="dn_mask must be"):
        group_attn_mask(7, 2, dn_mask)  # fewer rows than the matching queries
    with pytest.raises(ValueError, match="dn_mask must be"):
        group_attn_mask(2, 2, dn_mask[:, :5])  # not square
    with pytest.raises(ValueError, match="num_query and num_groups must be >= 1"):
        group_attn_mask(3, 0)


def test_groups_do_not_see_each_other_in_training(nuscenes_rig):
    """Group 0's outputs do not change when the other groups' queries do, and equal the outputs of
    the same head without groups (same weights), with and without denoising queries."""
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([TRUCK], [1])])
    metas, gts = [s.metainfo for s in samples], [s.gt_instances_3d for s in samples]
    feats = _feats(2)
    for denoising in (None, dict(num_groups=2)):
        grouped = _build(_grouped_cfg(3, denoising))
        single = MODELS.build(head_cfg(denoising))
        missing, unexpected = single.load_state_dict(grouped.state_dict(), strict=False)
        assert missing == [] and unexpected == ["group_query_embedding.weight"]
        grouped.train(), single.train()  # no dropout in this config
        with torch.no_grad():
            torch.manual_seed(3)  # the same denoising noise for both
            a = grouped(feats, metas, gts)
            torch.manual_seed(3)
            b = single(feats, metas, gts)
            assert a["all_cls_scores"].shape == (2, 2, 3 * Q, 3) and b["all_cls_scores"].shape == (2, 2, Q, 3)
            for key in ("all_cls_scores", "all_bbox_preds"):
                torch.testing.assert_close(a[key][:, :, :Q], b[key], atol=1e-5, rtol=1e-5)
            if denoising is not None:  # the denoising queries see group 0 only
                torch.testing.assert_close(a["dn_cls_scores"], b["dn_cls_scores"], atol=1e-5, rtol=1e-5)
            grouped.group_query_embedding.weight.add_(1.0)
            torch.manual_seed(3)
            c = grouped(feats, metas, gts)
        got, before = c["all_cls_scores"], a["all_cls_scores"]
        torch.testing.assert_close(got[:, :, :Q], before[:, :, :Q], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(c["all_cls_scores"][:, :, Q:], a["all_cls_scores"][:, :, Q:])


def test_each_group_is_matched_on_its_own_and_losses_average_over_groups(nuscenes_rig):
    """Three groups that are copies of group 0 give the loss of one group: each copy is matched
    to every box (one query per box and group), and the mean over the groups is the one group's."""
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([TRUCK], [1])])
    grouped = _build(_grouped_cfg(3))
    single = MODELS.build(head_cfg())
    single.load_state_dict(grouped.state_dict(), strict=False)
    with torch.no_grad():
        grouped.group_query_embedding.weight.copy_(grouped.query_embedding.weight.repeat(2, 1))
    grouped.train(), single.train()
    a, b = grouped.loss(_feats(2), samples), single.loss(_feats(2), samples)
    assert set(a) == set(b) == {"loss_cls", "loss_bbox", "d0.loss_cls", "d0.loss_bbox"}
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    # the matching targets: every group has one positive query per box of each sample
    outs = grouped(_feats(2), [s.metainfo for s in samples], [s.gt_instances_3d for s in samples])
    for i, (n_boxes, gt) in enumerate(zip((2, 1), [s.gt_instances_3d for s in samples])):
        for g in range(3):
            sl = slice(g * Q, (g + 1) * Q)
            labels, _, weights = grouped._targets_single(
                outs["all_cls_scores"][-1, i, sl], outs["all_bbox_preds"][-1, i, sl], gt
            )
            assert int(weights[:, 0].sum()) == n_boxes and int((labels < 3).sum()) == n_boxes


def test_groups_train_their_own_queries_and_inference_decodes_group_0(nuscenes_rig):
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])
    grouped = _build(_grouped_cfg(2, dict(num_groups=2)))
    grouped.train()
    sum(grouped.loss(_feats(1), samples).values()).backward()
    grad = grouped.group_query_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all()
    single = MODELS.build(head_cfg(dict(num_groups=2)))
    single.load_state_dict(grouped.state_dict(), strict=False)
    grouped.eval(), single.eval()
    with torch.no_grad():
        a, b = grouped(_feats(1), [samples[0].metainfo]), single(_feats(1), [samples[0].metainfo])
        assert a["all_cls_scores"].shape == (2, 1, Q, 3)
        assert torch.equal(a["all_cls_scores"], b["all_cls_scores"])
        assert torch.equal(a["all_bbox_preds"], b["all_bbox_preds"])


def test_no_group_parameters_without_groups_and_bad_groups_raise():
    assert not hasattr(_build(head_cfg()), "group_query_embedding")
    assert _build(_grouped_cfg(4)).group_query_embedding.weight.shape == (3 * Q, 64)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="query_groups must be an integer >= 1"):
            MODELS.build(_grouped_cfg(bad))


def test_bevformer_head_decodes_its_groups_in_training_and_group_0_at_inference(nuscenes_rig):
    """The BEV head shares the groups: 2 groups in training (group 0 as without groups, same
    weights and history), one at inference."""
    import test_bevformer as bev

    samples = bev._samples(nuscenes_rig, [([bev.CAR_AHEAD, bev.PED_LEFT], [0, 2])])
    metas, gts, feats = [s.metainfo for s in samples], [s.gt_instances_3d for s in samples], bev._feats(1)
    torch.manual_seed(0)
    grouped = bev._build(bev.head_cfg(query_groups=2))
    single = bev._build(bev.head_cfg())
    single.load_state_dict(grouped.state_dict(), strict=False)
    grouped.train(), single.train()
    with torch.no_grad():
        a, b = grouped(feats, metas, gts), single(feats, metas, gts)
        assert a["all_cls_scores"].shape == (2, 1, 48, 3)
        torch.testing.assert_close(a["all_cls_scores"][:, :, :24], b["all_cls_scores"], atol=1e-5, rtol=1e-5)
    losses = grouped.loss(feats, samples)
    assert all(torch.isfinite(v) for v in losses.values())
    grouped.eval()
    with torch.no_grad():
        assert grouped(feats, metas)["all_cls_scores"].shape == (2, 1, 24, 3)
