"""The dense BEV head (``BEVCentreAuxHead``, ``BEVFormerHead(bev_aux=...)``, issue 14): heatmap
peaks and regression targets on known cells of a non-square grid, the loss reading the centre
cells it should, and in the head: its losses, its gradient into the encoder, and nothing else
changed (same initial values, same predictions)."""

from __future__ import annotations

import math

import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.structures import InstanceData
from test_bevformer import CAR_AHEAD, PED_LEFT, _build, _feats, _samples, head_cfg

from bev_deform.geometry import BEVGrid
from bev_deform.models.heads import BEVCentreAuxHead

# 2 m cells: 6 rows along y over [-6, 6], 10 columns along x over [-10, 10]
GRID = BEVGrid(6, 10, (-10.0, -6.0, -5.0, 10.0, 6.0, 3.0))
CAR, PED = 0, 2


def _gt(rows, labels, box_dim=9) -> InstanceData:
    boxes = torch.tensor(rows, dtype=torch.float32).view(-1, box_dim)
    return InstanceData(
        bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=box_dim),
        labels_3d=torch.tensor(labels, dtype=torch.long),
    )


def _head(**kw) -> BEVCentreAuxHead:
    return BEVCentreAuxHead(num_classes=3, embed_dims=8, grid=GRID, **kw)


def test_targets_mark_the_centre_cell_with_its_offset_and_velocity():
    """A car at (1, -3) m is in column 5 (x in [0, 2]) and row 1 (y in [-4, -2]), at (0.5, 0.5) of
    its cell; a pedestrian at (-9.5, 5.5) in column 0, row 5 at (0.25, 0.75); a car at x = 12 is
    off the grid: no peak, no target."""
    head = _head()
    gts = [
        _gt(
            [
                [1.0, -3.0, -1.0, 4.5, 1.9, 1.6, 0.0, 2.0, -1.0],
                [-9.5, 5.5, -1.0, 0.7, 0.7, 1.8, 0.0, 0.0, 1.2],
                [12.0, 0.0, -1.0, 4.5, 1.9, 1.6, 0.0, 5.0, 0.0],
            ],
            [CAR, PED, CAR],
        ),
        _gt([], []),
    ]
    heat, reg, index = head.targets(gts)
    assert heat.shape == (2, 3, 6, 10)
    assert index.tolist() == [[0, 1, 5], [0, 5, 0]]  # (b, row, column)
    torch.testing.assert_close(reg, torch.tensor([[0.5, 0.5, 2.0, -1.0], [0.25, 0.75, 0.0, 1.2]]))
    assert heat[0, CAR, 1, 5] == 1.0 and heat[0, PED, 5, 0] == 1.0
    # radius 1 (the minimum: gaussian_radius of a 2.25 x 0.95-cell car is 0), sigma 1/2: exp(-2)
    # one cell away, exp(-4) diagonally, nothing two cells away
    assert heat[0, CAR, 1, 6].item() == pytest.approx(math.exp(-2), rel=1e-5)
    assert heat[0, CAR, 2, 6].item() == pytest.approx(math.exp(-4), rel=1e-5)
    assert heat[0, CAR, 1, 7] == 0.0 and heat[0, CAR, 3, 5] == 0.0
    assert heat[0, CAR].count_nonzero() == 9 and heat[0, 1].count_nonzero() == 0
    assert heat[1].count_nonzero() == 0  # the sample without boxes
    # a larger minimum radius widens the peak
    assert _head(min_radius=2).targets(gts)[0][0, CAR, 1, 7] > 0.0


def test_loss_reads_the_prediction_at_each_centre_cell():
    """The regression loss is the L1 between the targets and the prediction at (row, column) of
    the (B, 4, H, W) output: computed here by hand at those cells."""
    torch.manual_seed(0)
    head = _head()
    head.init_weights()
    gts = [
        _gt([[1.0, -3.0, -1.0, 4.5, 1.9, 1.6, 0.0, 2.0, -1.0]], [CAR]),
        _gt([[-9.5, 5.5, -1.0, 0.7, 0.7, 1.8, 0.0, 0.0, 1.2]], [PED]),
    ]
    bev = torch.randn(2, 6 * 10, 8)
    _, reg = head(bev)
    pred = torch.stack([reg[0, :, 1, 5], reg[1, :, 5, 0]])  # (2, 4)
    target = torch.tensor([[0.5, 0.5, 2.0, -1.0], [0.25, 0.75, 0.0, 1.2]])
    losses = head.loss(bev, gts)
    assert set(losses) == {"bev_aux_loss_heatmap", "bev_aux_loss_reg"}
    torch.testing.assert_close(losses["bev_aux_loss_reg"], (pred - target).abs().mean())
    assert torch.isfinite(losses["bev_aux_loss_heatmap"]) and losses["bev_aux_loss_heatmap"] > 0
    # the cell layout is row-major over (H, W): the BEV's cell 1 * 10 + 5 is what the car's cell sees
    bev2 = bev.clone()
    bev2[0, 1 * 10 + 5] += 1.0
    assert (head(bev2)[1][0, :, 1, 5] - reg[0, :, 1, 5]).abs().max() > 0
    # no box anywhere: finite losses (the heatmap loss of an all-zero target, a zero regression loss)
    empty = head.loss(bev, [_gt([], []), _gt([], [])])
    assert empty["bev_aux_loss_reg"] == 0.0 and torch.isfinite(empty["bev_aux_loss_heatmap"])


def test_bad_inputs_are_named():
    head = _head()
    with pytest.raises(
        ValueError, match=r"bev must be \(B, H\*W=60, C\) for the 6x10 grid, got \(1, 59, 8\)"
    ):
        head(torch.zeros(1, 59, 8))
    with pytest.raises(ValueError, match="bev_aux needs the boxes' velocity .* got 7 values per box"):
        head.targets([_gt([[1.0, -3.0, -1.0, 4.5, 1.9, 1.6, 0.0]], [CAR], box_dim=7)])
    with pytest.raises(ValueError, match=r"BEVCentreAuxHead: labels_3d must be in \[0, 3\), got \[-1, 3\]"):
        head.targets([_gt([[1.0, -3.0, -1.0, 4.5, 1.9, 1.6, 0.0, 0.0, 0.0]] * 3, [CAR, -1, 3])])
    with pytest.raises(ValueError, match="min_radius >= 0"):
        _head(min_radius=-1)
    with pytest.raises(ValueError, match=r"bev_aux must not set \['num_classes'\]"):
        _build(head_cfg(bev_aux=dict(num_classes=3)))


def test_bevformer_head_adds_its_losses_trains_the_encoder_and_changes_nothing_else(nuscenes_rig):
    torch.manual_seed(0)
    head = _build(head_cfg(bev_aux=dict()))
    head.init_weights()
    torch.manual_seed(0)
    plain = _build(head_cfg())
    plain.init_weights()
    aux_keys = {k for k in head.state_dict() if k.startswith("bev_aux.")}
    assert aux_keys and head.bev_aux.grid == head.grid
    # built and initialised last: every other parameter starts as without it
    shared = plain.state_dict()
    for k, v in head.state_dict().items():
        if k not in aux_keys:
            torch.testing.assert_close(v, shared[k], rtol=0, atol=0, msg=k)
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([], [])])
    losses = head.loss(_feats(2), samples)
    plain_losses = plain.loss(_feats(2), samples)
    assert set(losses) == set(plain_losses) | {"bev_aux_loss_heatmap", "bev_aux_loss_reg"}
    for k, v in plain_losses.items():
        torch.testing.assert_close(losses[k], v)
    (losses["bev_aux_loss_heatmap"] + losses["bev_aux_loss_reg"]).backward()
    grads = [
        p.grad
        for n, p in head.named_parameters()
        if n.startswith("transformer.encoder.") and p.grad is not None
    ]
    assert grads and sum(g.abs().sum() for g in grads) > 0  # the dense targets reach the encoder
    assert all(p.grad is None for n, p in head.named_parameters() if n.startswith("transformer.decoder."))
    # inference ignores it
    head.eval()
    plain.eval()
    with torch.no_grad():
        ours = head(_feats(1), [s.metainfo for s in samples[:1]])
        theirs = plain(_feats(1), [s.metainfo for s in samples[:1]])
    torch.testing.assert_close(ours["all_bbox_preds"], theirs["all_bbox_preds"])
