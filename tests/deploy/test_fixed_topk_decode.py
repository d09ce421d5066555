"""``NMSFreeCoder.decode_fixed``, the export's top-k: fixed-size outputs whose valid entries are,
in order and exactly, what ``decode`` returns; invalid are exactly the boxes the score threshold
or the post-centre range drop."""

from __future__ import annotations

import pytest
import torch

from bev_deform.models.task_modules import NMSFreeCoder

RANGE = [-10.0, -10.0, -4.0, 10.0, 10.0, 2.0]


def inputs(b: int = 2, q: int = 8, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Q, K) logits and (B, Q, 10) codes with centres spread over +-15 m (some outside RANGE)."""
    gen = torch.Generator().manual_seed(seed)
    cls_scores = torch.randn(b, q, k, generator=gen) * 2
    codes = torch.randn(b, q, 10, generator=gen)
    codes[..., [0, 1]] = torch.rand(b, q, 2, generator=gen) * 30 - 15
    return cls_scores, codes


def test_valid_entries_are_exactly_what_decode_returns():
    coder = NMSFreeCoder(max_num=12, score_threshold=0.3, post_center_range=RANGE)
    cls_scores, codes = inputs()
    det = coder.decode_fixed(cls_scores, codes)
    assert det.boxes.shape == (2, 12, 9) and det.valid.shape == det.scores.shape == (2, 12)
    for b in range(2):
        ref = coder.decode(cls_scores[b], codes[b])
        valid = det.valid[b]
        assert 0 < int(valid.sum()) < 12  # both filters drop something here
        torch.testing.assert_close(det.boxes[b][valid], ref.bboxes_3d.tensor, rtol=0, atol=0)
        torch.testing.assert_close(det.scores[b][valid], ref.scores_3d, rtol=0, atol=0)
        assert det.labels[b][valid].tolist() == ref.labels_3d.tolist()
        assert det.query_ids[b][valid].tolist() == ref.query_ids.tolist()


def test_invalid_entries_are_below_the_threshold_or_outside_the_range():
    coder = NMSFreeCoder(max_num=20, score_threshold=0.3, post_center_range=RANGE)
    cls_scores, codes = inputs(seed=1)
    det = coder.decode_fixed(cls_scores, codes)
    centre = torch.stack(
        [det.boxes[..., 0], det.boxes[..., 1], det.boxes[..., 2] + 0.5 * det.boxes[..., 5]], -1
    )
    lo, hi = torch.tensor(RANGE[:3]), torch.tensor(RANGE[3:])
    inside = ((centre >= lo) & (centre <= hi)).all(-1)
    expected = (det.scores > 0.3) & inside
    assert det.valid.tolist() == expected.tolist()
    assert (~inside).any() and (det.scores <= 0.3).any()  # both reasons occur
    assert (det.scores[:, :-1] >= det.scores[:, 1:]).all()  # by decreasing score


def test_k_is_max_num_or_all_pairs_and_without_filters_all_are_valid():
    cls_scores, codes = inputs(q=4, k=2)
    det = NMSFreeCoder(max_num=300).decode_fixed(cls_scores, codes)
    assert det.scores.shape == (2, 8) and bool(det.valid.all())
    assert sorted(det.query_ids[0].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_decode_fixed_rejects_unbatched_or_mismatched_inputs():
    coder = NMSFreeCoder(max_num=5)
    cls_scores, codes = inputs()
    with pytest.raises(ValueError, match=r"cls_scores must be \(B, Q, K\), got shape \(8, 3\)"):
        coder.decode_fixed(cls_scores[0], codes[0])
    with pytest.raises(ValueError, match=r"bbox_preds must be \(B, Q, 10\) = \(2, 8, 10\), got \(2, 7, 10\)"):
        coder.decode_fixed(cls_scores, codes[:, :7])
