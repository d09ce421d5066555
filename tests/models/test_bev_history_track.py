"""The earlier frames' detections in each query's velocity (``BEVFormerHead(history_track=...)``,
:class:`HistoryTrack`): the detections moved into the current frame by the ego motion from the
poses, a query associated with where its object was (by place, its class and the earlier
detection's own velocity), the gate that blends the displacement in (nothing at initialisation,
nothing from a missing frame), and in the detector the same earlier detections in queue training
and in video testing."""

from __future__ import annotations

import math

import pytest
import torch
from test_bev_history_attn import assert_plain_without_an_earlier_frame
from test_bev_temporal import _pose, _queue_batch, queue_plan_run, video_plan_run
from test_bevformer import detector_cfg

from bev_deform.models.layers.history_track import HistoryTrack, PastDetections, past_detections


def _code(x: float, y: float, z: float = 0.5, vx: float = 0.0, vy: float = 0.0) -> list[float]:
    return [x, y, 0.0, 0.0, z, 0.0, 0.0, 1.0, vx, vy]


def test_past_detections_move_the_earlier_boxes_into_the_current_frame():
    """The ego drives 4 m along global x and turns 90 degrees left in 0.5 s: a box at (10, 2)
    moving at (1, 0) m/s in the earlier LIDAR_TOP frame (the global one) is at (2, -6) now, its
    velocity (0, -1), so that it should stand at (2, -6.5); the top 2 of 3 by score, in order."""
    logits = torch.tensor([[[3.0, -9.0], [-5.0, -9.0], [-9.0, 1.0]]])  # (1, 3, 2)
    boxes = torch.tensor([[_code(10.0, 2.0, vx=1.0), _code(0.0, 0.0), _code(-4.0, 0.0)]])
    earlier = dict(lidar2global=_pose(0.0, 0.0, 0.0), timestamp=1.0)
    cur = dict(lidar2global=_pose(math.pi / 2, 4.0, 0.0), timestamp=1.5)
    dets = past_detections([(logits, boxes, [earlier])], [cur], num_frames=2, top_k=2)
    torch.testing.assert_close(dets.centres[0, 0], torch.tensor([[2.0, -6.0], [0.0, 8.0]]))
    torch.testing.assert_close(dets.forecast[0, 0], torch.tensor([[2.0, -6.5], [0.0, 8.0]]))
    torch.testing.assert_close(dets.probs[0, 0], logits[0, [0, 2]].sigmoid())
    assert dets.valid.tolist() == [[True, False]] and dets.gap.tolist() == [[0.5, 1.0]]
    # a sample without that frame, or a frame that is not earlier, is not valid
    for meta in (None, dict(earlier, timestamp=1.5)):
        dets = past_detections([(logits, boxes, [meta])], [cur], num_frames=1, top_k=2)
        assert dets.valid.tolist() == [[False]] and dets.centres.abs().sum() == 0
    with pytest.raises(ValueError, match="at least one decoded earlier frame"):
        past_detections([], [cur], num_frames=1, top_k=2)
    with pytest.raises(ValueError, match="B metas"):
        past_detections([(logits, boxes, [earlier, earlier])], [cur], num_frames=1, top_k=2)


def _past(frames: list[list[tuple]], gaps: list[float], valid: list[bool]) -> PastDetections:
    """One sample; per frame its detections (x, y, vx, vy, class) on 2 classes."""
    k = max(len(f) for f in frames)
    centres, forecast = torch.zeros(1, len(frames), k, 2), torch.zeros(1, len(frames), k, 2)
    probs = torch.zeros(1, len(frames), k, 2)
    for f, dets in enumerate(frames):
        for i, (x, y, vx, vy, cls) in enumerate(dets):
            centres[0, f, i] = torch.tensor([x, y])
            forecast[0, f, i] = torch.tensor([x + vx * gaps[f], y + vy * gaps[f]])
            probs[0, f, i, cls] = 1.0
    return PastDetections(centres, forecast, probs, torch.tensor([gaps]), torch.tensor([valid]))


def _track(none_logit: float = -20.0) -> HistoryTrack:
    with torch.random.fork_rng(devices=[]):
        track = HistoryTrack(num_classes=2, num_frames=2, top_k=4, sigma=1.0)
    with torch.no_grad():
        track.none_logit.fill_(none_logit)
    return track


def test_history_track_finds_where_each_query_object_was():
    """A query of class 0 at (3, 0): 1 s before, its class stood at (2, 0) (a class-1 box nearer is
    not it), 2 s before at (1, 0) (another class-0 box far away): 1 m/s from both frames, confident.
    A class-0 query at (5, 10) matches the car that was at (-5, 10) doing 10 m/s (its forecast
    is where the query is): 10 m/s, though 10 m away. A large "none" logit: no confidence."""
    past = _past(
        [[(2.0, 0.0, 0.0, 0.0, 0), (3.0, 0.2, 0.0, 0.0, 1), (-5.0, 10.0, 10.0, 0.0, 0)],
         [(1.0, 0.0, 0.0, 0.0, 0), (30.0, 0.0, 0.0, 0.0, 0), (-15.0, 10.0, 10.0, 0.0, 0)]],
        gaps=[1.0, 2.0],
        valid=[True, True],
    )  # fmt: skip
    xy = torch.tensor([[[3.0, 0.0], [5.0, 10.0]]])
    probs = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    vel, conf = _track().associate(xy, probs, past)
    expected = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[10.0, 0.0], [10.0, 0.0]]]])
    torch.testing.assert_close(vel, expected, atol=1e-4, rtol=0)
    assert conf.min() > 0.999
    _, conf = _track(none_logit=20.0).associate(xy, probs, past)
    assert conf.max() < 1e-6
    # a frame the sample does not have gives nothing
    past = past._replace(valid=torch.tensor([[True, False]]))
    vel, conf = _track().associate(xy, probs, past)
    assert vel[:, :, 1].abs().sum() == 0 and conf[:, :, 1].abs().sum() == 0


def test_history_track_gate_starts_closed_and_blends_in_the_frames_it_opens():
    """At initialisation the head's velocity comes through unchanged; a gate of 1 on the 1 s frame
    gives that frame's velocity exactly, and nothing when the sample lacks that frame."""
    past = _past([[(2.0, 0.0, 0.0, 0.0, 0)], [(1.0, 0.0, 0.0, 0.0, 0)]], [1.0, 2.0], [True, True])
    xy, probs = torch.tensor([[[3.0, 0.0]]]), torch.tensor([[[1.0, 0.0]]])
    head = torch.tensor([[[-0.5, 0.25]]])
    track = _track()
    assert torch.equal(track(xy, probs, head, past), head)
    with torch.no_grad():
        track.gate[2].bias.copy_(torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(track(xy, probs, head, past), torch.tensor([[[1.0, 0.0]]]), atol=1e-4, rtol=0)
    missing = past._replace(valid=torch.tensor([[False, True]]))
    assert torch.equal(track(xy, probs, head, missing), head)
    with pytest.raises(ValueError, match="reads 2 earlier frames of 2 classes"):
        track(xy, torch.zeros(1, 1, 3), head, past)
    with pytest.raises(ValueError, match="sigma > 0"):
        HistoryTrack(num_classes=2, sigma=0.0)


def _walker_past() -> PastDetections:
    """A walker (class 1) predicted standing 2 s and 4 s before, 2.5 m and 5 m behind the query."""
    return _past([[(0.5, 0.0, 0.0, 0.0, 1)], [(-2.0, 0.0, 0.0, 0.0, 1)]], [2.0, 4.0], [True, True])


def _association(d: float, sigma: float, none_logit: float) -> float:
    """The weight one candidate of full class agreement at distance d gets against "none"."""
    return 1.0 / (1.0 + math.exp(none_logit + d**2 / (2 * sigma**2)))


def test_speed_sigma_and_conditional_find_a_walker_predicted_standing():
    """A walker at (3, 0) now walked at 1.25 m/s: it was at (0.5, 0) 2 s and (-2, 0) 4 s before,
    both times predicted standing. One sigma of 1 m keeps it with "none" (24 %, 0.003 %); a scale of
    1.5 m/s per second of gap (3 m, 6 m) associates it (84 %, 84 %); conditional gives the
    displacement over the gap, 1.25 m/s, from both frames, where the plain estimate is shrunk by
    the confidence."""
    past, xy, walker = _walker_past(), torch.tensor([[[3.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    plain = _track(none_logit=-2.0)
    vel, conf = plain.associate(xy, walker, past)
    expected = [_association(2.5, 1.0, -2.0), _association(5.0, 1.0, -2.0)]
    torch.testing.assert_close(conf[0, 0], torch.tensor(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(vel[0, 0, :, 0], 1.25 * torch.tensor(expected), atol=1e-5, rtol=0)
    with torch.random.fork_rng(devices=[]):
        track = HistoryTrack(num_classes=2, num_frames=2, top_k=4, speed_sigma=1.5, conditional=True)
    with torch.no_grad():
        track.none_logit.fill_(-2.0)
    vel, conf = track.associate(xy, walker, past)
    expected = [_association(2.5, 3.0, -2.0), _association(5.0, 6.0, -2.0)]
    torch.testing.assert_close(conf[0, 0], torch.tensor(expected), atol=1e-5, rtol=0)
    assert conf.min() > 0.8
    torch.testing.assert_close(vel[0, 0], torch.tensor([[1.25, 0.0], [1.25, 0.0]]), atol=1e-5, rtol=0)
    # below MIN_CONFIDENCE the conditional velocity shrinks with the confidence: nothing from nothing
    with torch.no_grad():
        track.none_logit.fill_(20.0)
    vel, conf = track.associate(xy, walker, past)
    assert conf.max() < 1e-8 and vel.abs().max() < 1e-6


def test_speed_sigma_is_learned_per_class_and_weighted_by_the_class_probabilities():
    """Class 0 at 0.5 m/s, class 1 at 1.5 m/s per second of gap: a query sure of class 0 gets
    (0.5 * 2 s)^2 = 1 m^2 on the 2 s frame and 4 m^2 on the 4 s one, one sure of class 1 9 and 36,
    an even one the mean of the two; the scales are parameters of their own, one per class."""
    with torch.random.fork_rng(devices=[]):
        track = HistoryTrack(num_classes=2, num_frames=2, speed_sigma=1.0)
    assert track.log_speed_sigma.shape == (2,) and not hasattr(track, "log_sigma")
    assert "log_speed_sigma" in dict(track.named_parameters())
    with torch.no_grad():
        track.log_speed_sigma.copy_(torch.tensor([0.5, 1.5]).log())
    probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    got = track.sigma2(probs, torch.tensor([[2.0, 4.0]]))
    expected = torch.tensor([[[1.0, 4.0], [9.0, 36.0], [5.0, 20.0]]])[..., None]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="speed_sigma must be > 0 m/s"):
        HistoryTrack(num_classes=2, speed_sigma=0.0)


def _track_cfg(**cfg) -> dict:
    model = detector_cfg()
    model["bbox_head"].update(history_track=dict(num_frames=2, top_k=8))
    return dict(model, grid_mask=None, **cfg)


def test_a_model_without_an_earlier_frame_is_the_model_without_history_track(nuscenes_rig):
    """6 tensors of history_track; every other parameter and the random stream are the same."""
    assert_plain_without_an_earlier_frame(nuscenes_rig, _track_cfg(), "history_track", 6, lambda layer: None)


def test_queue_training_and_video_testing_blend_the_same_earlier_detections(nuscenes_rig):
    """history_depth=2, history_stride=2: video testing gives frame 4 the detections of frames 2
    (1 s before) and 0 (2 s), frame 2 those of frame 0 only, frames 0, 1 and a scene start none;
    queue training of frames 0, 2 -> 4 decodes the same two frames (in eval mode) and hands the
    same detections to the sample's frame, and the gate trains; a queue of padding hands none."""
    cfg = _track_cfg(video_test=True, history_depth=2, history_stride=2)
    video, plan, seen = video_plan_run(nuscenes_rig, cfg, "past_detections")
    # every call: the chain's frames decoded (no detections of their own), then the frame itself
    mine = [d for d in seen if d is not None]
    valid = [d.valid.tolist() for d in mine]
    assert valid == [[[True, False]], [[True, False]], [[True, True]], [[True, True]]]
    assert torch.equal(mine[2].gap, torch.tensor([[1.0, 2.0]]))

    trainee, got = queue_plan_run(nuscenes_rig, video, cfg, plan, "past_detections")
    assert got[:2] == [None, None] and len(got) == 3  # frames 0 and 2 decoded, then frame 4
    for name in ("centres", "forecast", "probs", "gap"):
        torch.testing.assert_close(getattr(got[2], name), getattr(mine[2], name), atol=1e-4, rtol=1e-4)
    assert got[2].valid.tolist() == [[True, True]]
    assert trainee.bbox_head.history_track.gate[2].weight.grad.abs().sum() > 0

    got.clear()
    data, _, _ = _queue_batch(nuscenes_rig, trainee, [plan[0], plan[2], plan[4]], pad_first=2)
    trainee(**data, mode="loss")
    assert got[-1] is None  # (the padding frames are run all the same, as without history_track)
    got.clear()
    data, _, _ = _queue_batch(nuscenes_rig, trainee, [plan[0], plan[2], plan[4]], pad_first=1)
    trainee(**data, mode="loss")
    assert got[-1].valid.tolist() == [[True, False]]
