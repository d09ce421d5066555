"""The ego-motion embedding of the BEV queries (issue 14's stand-in for BEVFormer's CAN-bus MLP,
from the poses): the features of known motions, the encoder's use of them, and the detector
passing the motion and time gap since the history frame in video testing and queue training."""

from __future__ import annotations

import math

import pytest
import torch
from test_bev_temporal import _frames, _pose, _queue_batch
from test_bevformer import IMG_HW, _build, detector_cfg

from bev_deform.geometry import ego_motion_features, lidar_motion, no_ego_motion


def _motion(prev, cur) -> torch.Tensor:
    return lidar_motion(torch.as_tensor(prev), torch.as_tensor(cur))


def test_features_of_a_drive_forward_and_of_a_left_turn_are_the_hand_computed_ones():
    # 4 m forward along +x in 0.5 s: the previous origin lies 4 m behind the ego
    fwd = ego_motion_features(_motion(_pose(0.0, 0.0, 0.0), _pose(0.0, 4.0, 0.0))[None], torch.tensor([0.5]))
    torch.testing.assert_close(fwd, torch.tensor([[-4.0, 0.0, 0.0, 0.0, 0.5, 1.0]], dtype=torch.float64))
    # a 90-degree left turn in place: the previous frame's axes are the current ones turned by -90
    left = ego_motion_features(
        _motion(_pose(0.0, 10.0, 5.0), _pose(math.pi / 2, 10.0, 5.0))[None], torch.tensor([1.0])
    )
    torch.testing.assert_close(left, torch.tensor([[0.0, 0.0, -1.0, -1.0, 1.0, 1.0]], dtype=torch.float64))
    # heading +y and driving 3 m along it: the previous origin lies 3 m behind, on the ego's -x
    turned = ego_motion_features(
        _motion(_pose(math.pi / 2, 0.0, 0.0), _pose(math.pi / 2, 0.0, 3.0))[None], torch.tensor([0.5])
    )
    torch.testing.assert_close(turned, torch.tensor([[-3.0, 0.0, 0.0, 0.0, 0.5, 1.0]], dtype=torch.float64))
    assert no_ego_motion(2).tolist() == [[0.0] * 6] * 2
    with pytest.raises(ValueError, match=r"cur_from_prev must be \(\.\.\., 4, 4\) and time_gap"):
        ego_motion_features(torch.eye(4)[None], torch.tensor([0.5, 0.5]))


def _ego_cfg() -> dict:
    cfg = detector_cfg()
    cfg["bbox_head"]["encoder"]["ego_motion_embed"] = True
    return dict(cfg, grid_mask=None)


def test_encoder_adds_the_embedding_only_when_asked_and_no_history_means_zero_motion(nuscenes_rig):
    torch.manual_seed(0)
    plain = _build(detector_cfg())
    assert not any("ego_motion_mlp" in k for k in plain.state_dict())  # earlier checkpoints still load
    torch.manual_seed(0)
    model = _build(_ego_cfg())
    model.init_weights()
    model.eval()
    keys = {k for k in model.state_dict() if "ego_motion_mlp" in k}
    assert "bbox_head.transformer.encoder.ego_motion_mlp.0.weight" in keys
    assert model.state_dict()["bbox_head.transformer.encoder.ego_motion_mlp.0.weight"].shape == (16, 6)
    samples = _frames(nuscenes_rig, [("a", 0.0, 0.0)])
    img = torch.randint(0, 256, (6, 3, *IMG_HW), generator=torch.Generator().manual_seed(0)).float()
    data = model.data_preprocessor(dict(inputs=dict(img=[img]), data_samples=samples))
    metas = [s.metainfo for s in data["data_samples"]]
    with torch.no_grad():
        feats = model.extract_feat(data["inputs"], metas)
        none = model.bbox_head.encode_bev(feats, metas)
        zeros = model.bbox_head.encode_bev(feats, metas, ego_motion=no_ego_motion(1))
        moving = model.bbox_head.encode_bev(feats, metas, ego_motion=torch.tensor([[-4.0, 0, 0, 0, 0.5, 1]]))
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in keys})
        plain.eval()
        ignored = plain.bbox_head.encode_bev(feats, metas, ego_motion=torch.tensor([[-4.0, 0, 0, 0, 0.5, 1]]))
        without = plain.bbox_head.encode_bev(feats, metas)
    torch.testing.assert_close(none, zeros, rtol=0, atol=0)
    assert (moving - none).abs().max() > 1e-3
    torch.testing.assert_close(ignored, without, rtol=0, atol=0)  # without the embedding it is not read
    with pytest.raises(ValueError, match=r"ego_motion must be \(B=1, 6\)"):
        model.bbox_head.encode_bev(feats, metas, ego_motion=torch.zeros(1, 5))


def _spy(model, seen: list):
    head_forward = model.bbox_head.forward

    def spy(feats, metas, gts=None, history=None, history_valid=None, ego_motion=None, **kw):
        seen.append(ego_motion)
        return head_forward(
            feats, metas, gts, history=history, history_valid=history_valid, ego_motion=ego_motion, **kw
        )

    model.bbox_head.forward = spy


def test_video_test_and_queue_training_pass_the_motion_and_time_gap_since_the_history(nuscenes_rig):
    torch.manual_seed(0)
    model = _build(dict(_ego_cfg(), video_test=True))
    model.init_weights()
    model.eval()
    # 4 m forward in 0.5 s, then 6 m in 1.0 s
    plan = [("a", 0.0, 0.0), ("a", 0.5, 4.0), ("a", 1.5, 10.0)]
    samples = _frames(nuscenes_rig, plan)
    gen = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (6, 3, *IMG_HW), generator=gen).float() for _ in plan]
    seen: list = []
    _spy(model, seen)
    with torch.no_grad():
        model(**model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=samples)), mode="predict")
    assert seen[0] is None  # the first frame: no history, the encoder uses zero motion
    torch.testing.assert_close(seen[1], torch.tensor([[-4.0, 0.0, 0.0, 0.0, 0.5, 1.0]]))
    torch.testing.assert_close(seen[2], torch.tensor([[-6.0, 0.0, 0.0, 0.0, 1.0, 1.0]]))

    # a queue of the same frames: the sample (the last) trains with the motion since frame 1
    train = _build(_ego_cfg())
    train.init_weights()
    train.train()
    data, _, _ = _queue_batch(nuscenes_rig, train, plan)
    seen.clear()
    _spy(train, seen)
    losses = train(**data, mode="loss")
    torch.testing.assert_close(seen[-1], torch.tensor([[-6.0, 0.0, 0.0, 0.0, 1.0, 1.0]]))
    total, _ = train.parse_losses(losses)
    total.backward()
    assert train.bbox_head.transformer.encoder.ego_motion_mlp[0].weight.grad.abs().sum() > 0
