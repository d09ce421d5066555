"""The BEV decoder's ``motion_compensation``: from the second layer on, ``history_attn`` and
``history_match`` look in the earlier frame where each query's object was by the previous layer's
velocity (its reference point moved back by velocity times the time gap), the first layer and the
BEV cross-attention where they looked before, a sample without an earlier frame unmoved."""

from __future__ import annotations

import pytest
import torch
from test_bev_history_attn import LIDAR2IMG, _history_cfg, assert_plain_without_an_earlier_frame
from test_bev_temporal import _queue_batch
from test_bevformer import PC_RANGE, _build

from bev_deform.geometry import CameraGeometry, FeatureLevels, moved_back, normalize_points
from bev_deform.models.layers.bevformer_decoder import PastCameras
from bev_deform.models.task_modules.nms_free_coder import VELOCITY_SLOTS


def _norm(points) -> torch.Tensor:
    return normalize_points(torch.tensor(points, dtype=torch.float32), PC_RANGE)


def test_moved_back_puts_the_point_where_the_object_was_by_its_velocity():
    """(10, 0, 1) m moving at (6, -2) m/s was at (-2, 4, 1) m 2 s ago; the same point of a sample
    whose gap is 0 (no earlier frame) stays; z never moves."""
    ref = _norm([[10.0, 0.0, 1.0]])[None].repeat(2, 1, 1)  # (B=2, Q=1, 3)
    velocity = torch.tensor([[[6.0, -2.0]], [[6.0, -2.0]]])
    got = moved_back(ref, velocity, torch.tensor([2.0, 0.0]), PC_RANGE)
    torch.testing.assert_close(got[0], _norm([[-2.0, 4.0, 1.0]]))
    torch.testing.assert_close(got[1], ref[1])
    # 60 m/s for 2 s from x = 10: 110 m back, outside the range (normalised < 0), not clamped
    far = moved_back(ref[:1], torch.tensor([[[60.0, 0.0]]]), torch.tensor([2.0]), PC_RANGE)
    torch.testing.assert_close(far[0], _norm([[-110.0, 0.0, 1.0]]))
    assert far[0, 0, 0] < 0


class _ConstantCode(torch.nn.Module):
    """A regression branch whose code has zero centre deltas (the reference points stay) and the
    velocity ``v`` m/s for every query."""

    def __init__(self, v):
        super().__init__()
        self.v = torch.tensor(v)

    def forward(self, query):
        code = query.new_zeros(*query.shape[:-1], 10)
        code[..., list(VELOCITY_SLOTS)] = self.v
        return code


def _decoder(motion_compensation: bool, **extra):
    return _build(
        dict(
            type="BEVFormerDecoder",
            num_layers=3,
            embed_dims=16,
            layer_cfg=dict(
                self_attn_cfg=dict(num_heads=2, attn_drop=0.0),
                cross_attn_cfg=dict(num_heads=2, num_points=2, dropout=0.0),
                ffn_cfg=dict(feedforward_channels=32, ffn_drop=0.0),
            ),
            history_attn=dict(num_heads=2, num_points=2, dropout=0.0),
            motion_compensation=motion_compensation,
            num_levels=1,
            pc_range=PC_RANGE,
            **extra,
        )
    ).eval()


def _past(gap) -> PastCameras:
    """Two samples of one 8 x 8 camera (the +x pinhole of test_bev_history_attn)."""
    levels = FeatureLevels.from_shapes([(8, 8)], (8, 8))
    cams = CameraGeometry(
        torch.tensor(LIDAR2IMG, dtype=torch.float32).view(1, 1, 4, 4).repeat(2, 1, 1, 1),
        torch.full((2, 1, 2), 8.0),
        (8, 8),
    )
    return PastCameras(torch.randn(2, 64, 16), levels, cams, gap)


def _reads(decoder, past):
    """Run the decoder on 2 samples x 3 queries with velocity (3, -1) m/s; returns what each
    layer's history_attn and BEV cross-attention were given as reference points, and the initial
    points."""
    history, bev_reads = [], []
    for layer in decoder.layers:
        layer.history_attn.register_forward_pre_hook(lambda m, args: history.append(args[2].clone()))
        layer.attentions[1].register_forward_pre_hook(lambda m, args: bev_reads.append(args[2].clone()))
    torch.manual_seed(0)
    ref = _norm([[10.0, 0.0, 1.0], [20.0, 5.0, 0.5], [15.0, -3.0, 0.0]])[None].repeat(2, 1, 1)
    bev_levels = FeatureLevels.from_shapes([(4, 4)], (4, 4))
    branches = torch.nn.ModuleList([_ConstantCode([3.0, -1.0]) for _ in range(3)])
    with torch.no_grad():
        decoder(
            torch.randn(2, 3, 16),
            torch.randn(2, 3, 16),
            torch.randn(2, 16, 16),
            ref,
            bev_levels,
            branches,
            past=past,
        )
    return history, bev_reads, ref


def test_later_layers_look_in_the_earlier_frame_where_the_velocity_says_the_object_was():
    """Velocity (3, -1) m/s, gaps 2 s and 0 s: layers 1 and 2 read the earlier cameras 6 m back in
    x and 2 m on in y for the first sample, unmoved for the second (no earlier frame); layer 0
    and every BEV cross-attention read at the reference point; without the option every layer
    reads there."""
    history, bev_reads, ref = _reads(_decoder(True), _past(torch.tensor([2.0, 0.0])))
    assert len(history) == 3
    torch.testing.assert_close(history[0], ref)
    moved = ref.clone()
    moved[0] = _norm([[4.0, 2.0, 1.0], [14.0, 7.0, 0.5], [9.0, -1.0, 0.0]])
    for later in history[1:]:
        torch.testing.assert_close(later, moved)
    for read in bev_reads:
        torch.testing.assert_close(read, ref[..., :2])
    history, _, ref = _reads(_decoder(False), _past(torch.tensor([2.0, 0.0])))
    for read in history:
        torch.testing.assert_close(read, ref)


def test_motion_compensation_names_what_it_needs():
    with pytest.raises(ValueError, match="needs the time gap of the earlier frame"):
        _reads(_decoder(True), _past(None))
    _reads(_decoder(False), _past(None))  # without it, no gap is needed
    with pytest.raises(
        ValueError, match="motion_compensation moves where history_attn and history_match look"
    ):
        _build(dict(type="BEVFormerDecoder", num_layers=2, embed_dims=16, motion_compensation=True))


def test_a_model_without_an_earlier_frame_is_the_model_without_motion_compensation(nuscenes_rig):
    assert_plain_without_an_earlier_frame(
        nuscenes_rig,
        _history_cfg(motion_compensation=True),
        "history_attn",
        2 * 16,
        lambda layer: layer.history_attn.output_proj.weight.normal_(),
    )


def test_queue_training_looks_back_by_the_previous_layers_velocity(nuscenes_rig):
    """Queue training of frames 0, 2 -> 4 (0.5 s apart): the sample's decoder reads the last queue
    frame (1 s before) at its reference points in layer 0 and, in layer 1, at layer 1's points
    moved back by layer 0's predicted velocity times 1 s; history_attn trains."""
    torch.manual_seed(0)
    model = _build(dict(_history_cfg(motion_compensation=True), grid_mask=None))
    model.init_weights()
    model.train()
    layers, decoder = model.bbox_head.transformer.decoder.layers, model.bbox_head.transformer.decoder
    reads, outs = [], []
    for layer in layers:
        layer.history_attn.register_forward_pre_hook(lambda m, args: reads.append(args[2].detach().clone()))
    decoder.register_forward_hook(lambda m, args, out: outs.append([o.detach() for o in out]))
    plan = [("a", 0.5 * k, 4.0 * k) for k in range(5)]
    data, _, _ = _queue_batch(nuscenes_rig, model, [plan[0], plan[2], plan[4]])
    total, _ = model.parse_losses(model(**data, mode="loss"))
    total.backward()
    assert len(outs) == 1 and len(reads) == 2  # the sample's decoder only (the queue frames run none)
    _, refs, raw_codes = outs[0]
    torch.testing.assert_close(reads[0], refs[0])
    velocity = raw_codes[0][..., list(VELOCITY_SLOTS)]
    assert velocity.abs().max() > 0
    torch.testing.assert_close(reads[1], moved_back(refs[1], velocity, torch.tensor([1.0]), PC_RANGE))
    assert not torch.allclose(reads[1], refs[1])
    for layer in layers:
        assert layer.history_attn.output_proj.weight.grad.abs().sum() > 0
