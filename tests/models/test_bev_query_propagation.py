"""An earlier frame's decoded queries carried into the current frame
(``BEVFormerHead(query_propagation=...)``, :class:`QueryPropagation`): the top-k queries moved
into the current frame by the ego motion from the poses, the last k matching queries replaced by
them only for the samples with that frame, the displacement of each one's box since then blended
into its velocity (and not into its box), and in the detector the same earlier queries in queue
training and in video testing."""

from __future__ import annotations

import math

import pytest
import torch
from test_bev_history_attn import assert_plain_without_an_earlier_frame
from test_bev_temporal import _pose, _queue_batch, queue_plan_run, video_plan_run
from test_bevformer import _build, detector_cfg

from bev_deform.models.layers.query_propagation import PastQueries, QueryPropagation, past_queries

RANGE = [-10.0, -10.0, -2.0, 10.0, 10.0, 2.0]


def _code(x: float, y: float, z: float = 0.5, vx: float = 0.0, vy: float = 0.0) -> list[float]:
    return [x, y, 0.0, 0.0, z, 0.0, 0.0, 1.0, vx, vy]


def test_past_queries_move_the_earlier_queries_into_the_current_frame():
    """The ego drives 4 m along global x and turns 90 degrees left in 0.5 s: the query whose box
    stood at (10, 2, 0.5) in the earlier LIDAR_TOP frame (the global one) is at (2, -6, 0.5) now;
    the top 2 of 3 by score, in order, with their outputs."""
    logits = torch.tensor([[[3.0, -9.0], [-5.0, -9.0], [-9.0, 1.0]]])  # (1, 3, 2)
    boxes = torch.tensor([[_code(10.0, 2.0), _code(0.0, 0.0), _code(-4.0, 0.0, z=-1.0)]])
    hidden = torch.arange(12.0).reshape(1, 3, 4)
    earlier = dict(lidar2global=_pose(0.0, 0.0, 0.0), timestamp=1.0)
    cur = dict(lidar2global=_pose(math.pi / 2, 4.0, 0.0), timestamp=1.5)
    past = past_queries(logits, boxes, hidden, [earlier], [cur], top_k=2)
    torch.testing.assert_close(past.centres, torch.tensor([[[2.0, -6.0, 0.5], [0.0, 8.0, -1.0]]]))
    assert torch.equal(past.hidden, hidden[:, [0, 2]])
    assert past.valid.tolist() == [True] and past.gap.tolist() == [0.5]
    # a sample without that frame, or a frame that is not earlier, is not valid
    for meta in (None, dict(earlier, timestamp=1.5)):
        past = past_queries(logits, boxes, hidden, [meta], [cur], top_k=2)
        assert past.valid.tolist() == [False] and past.gap.tolist() == [1.0]
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 3\]"):
        past_queries(logits, boxes, hidden, [earlier], [cur], top_k=4)
    with pytest.raises(ValueError, match="1 earlier and current metas"):
        past_queries(logits, boxes, hidden, [earlier, earlier], [cur], top_k=2)
    with pytest.raises(ValueError, match="of one shape"):
        past_queries(logits, boxes, hidden[:, :2], [earlier], [cur], top_k=2)


def _module(top_k: int = 2) -> QueryPropagation:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return QueryPropagation(embed_dims=8, pc_range=RANGE, top_k=top_k)


def _past(valid: list[bool]) -> PastQueries:
    """2 samples, 2 queries each: centres (5, -5, 0) and (15, 0, 0) (outside the range), 2 s."""
    centres = torch.tensor([[5.0, -5.0, 0.0], [15.0, 0.0, 0.0]]).expand(2, 2, 3)
    return PastQueries(torch.randn(2, 2, 8), centres, torch.tensor([2.0, 1.0]), torch.tensor(valid))


def test_propagated_queries_take_the_last_k_slots_of_the_samples_with_the_frame():
    """Q = 5, k = 2: sample 0 (with the frame) gets its last 2 queries from the earlier outputs,
    their positions from the centres and those centres (normalised in pc_range, clamped into it)
    as reference points; its first 3 queries and the whole of sample 1 (without it) are as given."""
    prop, past = _module(), _past([True, False])
    query, pos, refs = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.rand(2, 5, 3)
    new_q, new_pos, new_refs = prop.queries(query, pos, refs, past)
    expected_refs = torch.tensor([[0.75, 0.25, 0.5], [1.0, 0.5, 0.5]])
    torch.testing.assert_close(new_refs[0, 3:], expected_refs)
    torch.testing.assert_close(new_q[0, 3:], prop.content(past.hidden[0]))
    torch.testing.assert_close(new_pos[0, 3:], prop.position(expected_refs))
    for new, old in ((new_q, query), (new_pos, pos), (new_refs, refs)):
        assert torch.equal(new[0, :3], old[0, :3]) and torch.equal(new[1], old[1])
    with pytest.raises(ValueError, match="must not exceed the head's 1 queries"):
        prop.queries(query[:, :1], pos[:, :1], refs[:, :1], past)
    with pytest.raises(ValueError, match=r"hidden \(2, 2, 8\)"):
        prop.queries(query, pos, refs, past._replace(hidden=torch.randn(2, 3, 8)))


def test_the_velocity_of_a_propagated_query_is_its_displacement_over_the_gap():
    """A propagated query whose box is at (3, 0) now, 2 s after its object stood at (5, -5): the
    measured velocity is (-1, 2.5) m/s. With the gate open (bias 30) the velocity is that; at
    initialisation (gate 0.5) half of it and half of the head's; the first Q - k queries, sample 1
    (without the frame), every other slot and the box's gradient from the velocity are untouched;
    the gate trains."""
    prop, past = _module(), _past([True, False])
    hidden = torch.randn(2, 2, 6, 8)  # (num_layers, B, Q' = Q + 1 denoising query, C)
    box = torch.randn(2, 2, 5, 10)
    box[:, :, 3, :2] = torch.tensor([3.0, 0.0])
    box.requires_grad_(True)
    head_vel = box[:, 0, 3, 8:10].detach()
    out = prop.velocity(hidden, box, past)
    torch.testing.assert_close(out[:, 0, 3, 8:10], 0.5 * head_vel + 0.5 * torch.tensor([-1.0, 2.5]))
    assert torch.equal(out[:, 0, :3], box[:, 0, :3]) and torch.equal(out[:, 1], box[:, 1])
    assert torch.equal(out[..., :8], box[..., :8])
    out[..., 8:10].sum().backward()
    assert box.grad[..., :8].abs().sum() == 0  # the velocity does not move the box
    assert prop.gate.weight.grad.abs().sum() > 0  # and it trains the gate
    with torch.no_grad():
        prop.gate.bias.fill_(30.0)
        out = prop.velocity(hidden, box, past)
    torch.testing.assert_close(out[:, 0, 3, 8:10], torch.tensor([[-1.0, 2.5]] * 2))


def _prop_cfg(**cfg) -> dict:
    model = detector_cfg()
    model["bbox_head"].update(query_propagation=dict(top_k=8))
    return dict(model, grid_mask=None, **cfg)


def test_a_model_without_an_earlier_frame_is_the_model_without_query_propagation(nuscenes_rig):
    """12 tensors of query_propagation (content 6, position 4, gate 2); every other parameter
    and the random stream are the same, and so are the predictions without an earlier frame.
    Video testing with the recurrent history (which decodes no earlier frame) is refused."""
    assert_plain_without_an_earlier_frame(
        nuscenes_rig, _prop_cfg(), "query_propagation", 12, lambda layer: None
    )
    with pytest.raises(ValueError, match="decodes only with history_depth"):
        _build(_prop_cfg(video_test=True))
    with pytest.raises(ValueError, match="top_k=30 must not exceed num_query=24"):
        model = detector_cfg()
        model["bbox_head"].update(query_propagation=dict(top_k=30))
        _build(model)


def test_queue_training_and_video_testing_propagate_the_same_earlier_queries(nuscenes_rig):
    """history_depth=2, history_stride=2: video testing decodes frame 4's chain, frame 0 (no
    queries of its own) then frame 2 (frame 0's queries, 1 s before), and frame 4 starts from
    frame 2's; queue training of frames 0, 2 -> 4 decodes the same two frames (in eval mode) and
    hands the same queries to the sample's frame, and the module trains; a queue whose frame 2 is
    padding hands none, one whose frame 0 is padding hands frame 2's."""
    cfg = _prop_cfg(video_test=True, history_depth=2, history_stride=2)
    video, plan, seen = video_plan_run(nuscenes_rig, cfg, "past_queries")
    # per frame: its chain's frames decoded (the first without queries), then the frame itself;
    # frames 0, 1 and the scene start of "b" have no chain and start from the learned queries
    assert [p is None for p in seen] == [
        True, True,  # frames 0, 1
        True, False,  # frame 2: chain [0]
        True, False,  # frame 3: chain [1]
        True, False, False,  # frame 4: chain [0, 2]
        True, False, False,  # frame 5: chain [1, 3]
        True,  # scene b
    ]  # fmt: skip
    frame2, frame4 = seen[7], seen[8]
    assert frame4.gap.tolist() == [1.0] and frame4.valid.tolist() == [True]

    trainee, got = queue_plan_run(nuscenes_rig, video, cfg, plan, "past_queries")
    assert len(got) == 3 and got[0] is None  # frames 0 and 2 decoded, then frame 4
    for mine, theirs in ((got[1], frame2), (got[2], frame4)):
        for name in ("hidden", "centres", "gap"):
            torch.testing.assert_close(getattr(mine, name), getattr(theirs, name), atol=1e-4, rtol=1e-4)
    prop = trainee.bbox_head.query_propagation
    # (the gate trains through the velocity of a matched propagated query, see above)
    assert prop.content[0].weight.grad.abs().sum() > 0 and prop.position[0].weight.grad.abs().sum() > 0

    got.clear()
    data, _, _ = _queue_batch(nuscenes_rig, trainee, [plan[0], plan[2], plan[4]], pad_first=2)
    trainee(**data, mode="loss")
    assert got[-1] is None
    got.clear()
    data, _, _ = _queue_batch(nuscenes_rig, trainee, [plan[0], plan[2], plan[4]], pad_first=1)
    trainee(**data, mode="loss")
    assert got[1] is None and got[-1].valid.tolist() == [True]
