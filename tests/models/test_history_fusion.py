"""BEVDet4D's concatenation fusion of the aligned history BEV (``BEVFormerEncoder(history_fusion=
'conv')``, issue 14): the identity at initialisation, the grid layout of what it reads (a known
shift), the invalid cells and the samples without history reading zeros, and its training in a
queue."""

from __future__ import annotations

import pytest
import torch
from test_bev_temporal import _queue_batch
from test_bevformer import _build, detector_cfg

from bev_deform.models.layers.bevformer_encoder import BEVFormerEncoder, HistoryConvFusion

C, H, W = 4, 3, 5  # a non-square grid: rows and columns cannot be swapped unnoticed


def _copy_history(fusion: HistoryConvFusion, tap: tuple[int, int] = (1, 1)) -> None:
    """conv1: channel k <- history channel k at kernel ``tap``; conv2: identity (centre tap), so
    the fusion adds ReLU(history read at the tap)."""
    with torch.no_grad():
        for conv in (fusion.conv1, fusion.conv2):
            conv.weight.zero_()
            conv.bias.zero_()
        for k in range(C):
            fusion.conv1.weight[k, C + k, tap[0], tap[1]] = 1.0
            fusion.conv2.weight[k, k, 1, 1] = 1.0


def test_fusion_starts_as_the_identity_and_adds_the_valid_history_cell_by_cell():
    torch.manual_seed(0)
    fusion = HistoryConvFusion(C, (H, W))
    bev, history = torch.randn(2, H * W, C), torch.randn(2, H * W, C)
    valid = torch.rand(2, H * W) > 0.3
    torch.testing.assert_close(fusion(bev, history, valid), bev, rtol=0, atol=0)  # conv2 is zero
    _copy_history(fusion)
    expected = bev + history.clamp(min=0) * valid[..., None]
    torch.testing.assert_close(fusion(bev, history, valid), expected)
    # no validity mask: the whole history counts; no history: zeros, the BEV is unchanged
    torch.testing.assert_close(fusion(bev, history, None), bev + history.clamp(min=0))
    torch.testing.assert_close(fusion(bev, None, None), bev, rtol=0, atol=0)


def test_fusion_reads_the_grid_row_major_a_right_neighbour_lands_one_column_left():
    fusion = HistoryConvFusion(C, (H, W))
    _copy_history(fusion, tap=(1, 2))  # read the history one column to the right (+x)
    bev, history = torch.zeros(1, H * W, C), torch.zeros(1, H * W, C)
    history[0, 1 * W + 3] = 2.0  # row 1, column 3
    out = fusion(bev, history, None)
    hit = out.abs().sum(-1)[0].nonzero().flatten().tolist()
    assert hit == [1 * W + 2]  # row 1, column 2
    assert out[0, 1 * W + 2].tolist() == [2.0] * C
    # one row down instead: the cell above the hit (row 0, column 3)
    _copy_history(fusion, tap=(2, 1))
    assert fusion(bev, history, None).abs().sum(-1)[0].nonzero().flatten().tolist() == [0 * W + 3]


def test_a_sample_without_history_gets_the_same_bev_whatever_its_batch_mate_has():
    torch.manual_seed(0)
    fusion = HistoryConvFusion(C, (H, W))
    torch.nn.init.normal_(fusion.conv2.weight)
    bev, history = torch.randn(2, H * W, C), torch.randn(2, H * W, C)
    valid = torch.tensor([[True] * (H * W), [False] * (H * W)])  # sample 1 has no history
    both = fusion(bev, history, valid)
    alone = fusion(bev[1:], None, None)
    torch.testing.assert_close(both[1:], alone)
    assert (both[0] - fusion(bev[:1], None, None)[0]).abs().max() > 1e-3  # sample 0 reads its own


def test_fusion_rejects_a_bev_of_another_grid_and_an_unknown_option():
    fusion = HistoryConvFusion(C, (H, W))
    with pytest.raises(ValueError, match=r"bev must be \(B, H\*W=15, C\) for the 3x5 grid, got \(1, 16, 4\)"):
        fusion(torch.zeros(1, 16, C), None, None)
    with pytest.raises(ValueError, match=r"history must be \(B, H\*W, C\)=\(1, 15, 4\), got \(1, 15, 3\)"):
        fusion(torch.zeros(1, 15, C), torch.zeros(1, 15, 3), None)
    with pytest.raises(ValueError, match=r"history_fusion must be one of \(None, 'conv'\), got 'concat'"):
        BEVFormerEncoder(pc_range=(-51.2, -51.2, -5.0, 51.2, 51.2, 3.0), history_fusion="concat")


def _fusion_cfg() -> dict:
    cfg = detector_cfg()
    cfg["bbox_head"]["encoder"]["history_fusion"] = "conv"
    return dict(cfg, grid_mask=None)


def test_detector_with_fusion_equals_the_plain_one_at_init_and_trains_it_in_a_queue(nuscenes_rig):
    torch.manual_seed(0)
    model = _build(_fusion_cfg())
    model.init_weights()
    keys = {k for k in model.state_dict() if "history_fusion" in k}
    conv1 = model.state_dict()["bbox_head.transformer.encoder.history_fusion.conv1.weight"]
    assert conv1.shape == (32, 2 * 32 + 1, 3, 3)  # [BEV, history, validity] of C=32 -> C
    plain = _build(dict(detector_cfg(), grid_mask=None))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in keys})
    assert not any("history_fusion" in k for k in plain.state_dict())  # earlier checkpoints still load
    plan = [("a", 0.0, 0.0), ("a", 0.5, 4.0), ("a", 1.0, 8.0)]
    model.train()
    plain.train()
    data, _, _ = _queue_batch(nuscenes_rig, model, plan)
    torch.manual_seed(1)
    losses = model(**data, mode="loss")
    torch.manual_seed(1)
    plain_losses = plain(**data, mode="loss")
    for k, v in plain_losses.items():  # conv2 starts at zero: the fusion is the identity
        torch.testing.assert_close(losses[k], v, rtol=1e-5, atol=1e-6)
    total, _ = model.parse_losses(losses)
    total.backward()
    assert model.bbox_head.transformer.encoder.history_fusion.conv2.weight.grad.abs().sum() > 0
