"""The BEV decoder's attention into the history frame's cameras (``decoder.history_attn``): the
projection of the current frame's points into an earlier frame's images through the ego motion,
the module reading where a static point was, the head's ``past_cameras``, the detector giving the
decoder the same earlier frame in queue training and in video testing, and a model that never gets
an earlier frame being exactly the model without the module."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from test_bev_temporal import (
    _frames,
    _pose,
    _queue_batch,
    _random_imgs,
    _video_histories,
    _video_model,
    record_head_arg,
)
from test_bevformer import PC_RANGE, _build, detector_cfg

from bev_deform.geometry import CameraGeometry, FeatureLevels, earlier_lidar2img, lidar_motion, project_points
from bev_deform.models.layers.bevformer_decoder import PastCameras

# a pinhole camera looking along +x of LIDAR_TOP (image u to -y, v to -z), f = 4 pixels, on an
# 8 x 8 image whose centre is (4, 4)
CAM = np.array([[4.0, 0.0, 4.0], [0.0, 4.0, 4.0], [0.0, 0.0, 1.0]]) @ np.array(
    [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
)
LIDAR2IMG = np.eye(4)
LIDAR2IMG[:3, :3] = CAM


def _history_cfg(**decoder) -> dict:
    cfg = detector_cfg()
    cfg["bbox_head"]["decoder"].update(history_attn=dict(num_heads=4, num_points=2, dropout=0.0), **decoder)
    return cfg


def test_earlier_lidar2img_projects_a_static_point_where_the_earlier_frame_saw_it():
    """The ego drove 6 m along +y and turned 90 degrees left: a point now 10 m ahead, (10, 0, 0),
    was at (0, 16, 0) of the earlier frame, as the poses say; the matrix projects the current point
    exactly where the earlier cameras saw that earlier point (the +y camera, at its centre), and
    is not the earlier lidar2img."""
    earlier_pose, cur_pose = _pose(0.3, 100.0, 50.0), _pose(0.3, 100.0, 50.0) @ _pose(math.pi / 2, 0.0, 6.0)
    point_now = torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64)
    point_then = (
        lidar_motion(torch.tensor(earlier_pose), torch.tensor(cur_pose)).inverse()
        @ torch.cat((point_now, torch.ones(1, dtype=torch.float64)))
    )[:3]
    torch.testing.assert_close(point_then, torch.tensor([0.0, 16.0, 0.0], dtype=torch.float64))
    rig = torch.tensor(
        np.stack([LIDAR2IMG, LIDAR2IMG @ _pose(-math.pi / 2, 0.0, 0.0)])
    )  # (2, 4, 4): +x, +y cams
    mat = earlier_lidar2img(rig, torch.tensor(earlier_pose), torch.tensor(cur_pose))
    assert mat.shape == (2, 4, 4) and mat.dtype == torch.float64
    uv_now, valid_now, depth_now = project_points(point_now[None, None], mat[None], (8, 8))
    uv_then, valid_then, depth_then = project_points(point_then[None, None], rig[None], (8, 8))
    torch.testing.assert_close(uv_now, uv_then)
    torch.testing.assert_close(depth_now, depth_then)
    assert valid_now.tolist() == [[[False], [True]]]  # the +y camera saw it, 16 m ahead, at the centre
    torch.testing.assert_close(uv_now[0, 1, 0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert not torch.allclose(mat, rig)
    with pytest.raises(ValueError, match="earlier_lidar2img must be"):
        earlier_lidar2img(rig[:, :3], torch.tensor(earlier_pose), torch.tensor(cur_pose))


def _one_point_attention():
    """A HistoryCameraAttention of 1 head, 1 level, 1 point that reads exactly at the projection,
    its value and output projections the identity."""
    with torch.random.fork_rng(devices=[]):
        model = _build(
            dict(
                type="HistoryCameraAttention",
                embed_dims=4,
                num_heads=1,
                num_levels=1,
                num_points=1,
                pc_range=PC_RANGE,
                dropout=0.0,
                project_values="cells",
            )
        )
    model.init_weights()
    assert model.output_proj.weight.abs().sum() == 0  # starts as the identity of its residual
    with torch.no_grad():
        model.sampling_offsets.weight.zero_()
        model.sampling_offsets.bias.zero_()
        model.value_proj.weight.copy_(torch.eye(4))
        model.output_proj.weight.copy_(torch.eye(4))
    return model.eval()


def test_history_attention_reads_where_the_static_point_was_seen():
    """The ego moved 6 m along +y: a query at (10, 0, 0) now reads the earlier image at
    u = 4 - 4 * 6 / 10 = 1.6 px, where a block of feature [1, 2, 3, 4] is (columns 0-2); without
    the motion it would read at the centre (u = 4), where there is nothing."""
    attn = _one_point_attention()
    feat = torch.zeros(1, 4, 8, 8)  # (B*N, C, H, W)
    feat[0, :, :, :3] = torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None]
    value = feat.flatten(2).transpose(1, 2)  # (1, 64, 4)
    levels = FeatureLevels.from_shapes([(8, 8)], (8, 8), torch.device("cpu"))
    earlier_pose, cur_pose = _pose(0.0, 0.0, 0.0), _pose(0.0, 0.0, 6.0)
    moved = earlier_lidar2img(
        torch.tensor(LIDAR2IMG)[None], torch.tensor(earlier_pose), torch.tensor(cur_pose)
    )
    point = torch.tensor([10.0, 0.0, 0.0])
    ref = ((point - torch.tensor(PC_RANGE[:3])) / (torch.tensor(PC_RANGE[3:]) - torch.tensor(PC_RANGE[:3])))[
        None, None
    ]
    query = torch.zeros(1, 1, 4)
    hw = torch.tensor([[[8.0, 8.0]]])
    with torch.no_grad():
        read = attn(query, value, ref, levels, CameraGeometry(moved[None].float(), hw, (8, 8)))
        still = attn(
            query, value, ref, levels, CameraGeometry(torch.tensor(LIDAR2IMG)[None, None].float(), hw, (8, 8))
        )
        unseen = attn(query, value, ref, levels, CameraGeometry(torch.zeros(1, 1, 4, 4), hw, (8, 8)))
    torch.testing.assert_close(read, torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]))
    torch.testing.assert_close(still, torch.zeros(1, 1, 4))
    assert torch.equal(unseen, query)  # a sample without an earlier frame: exactly its residual


def test_head_past_cameras_turns_the_earlier_frame_into_what_the_decoder_reads(nuscenes_rig):
    model = _build(_history_cfg())
    samples = _frames(nuscenes_rig, [("a", 0.0, 0.0), ("a", 1.0, 8.0)])
    earlier, cur = samples[0].metainfo, samples[1].metainfo
    feats = [torch.randn(2, 6, 32, h, w) for h, w in ((8, 16), (4, 8))]
    past = model.bbox_head.past_cameras(feats, [earlier, None], [cur, cur])
    assert isinstance(past, PastCameras) and past.value.shape == (12, 8 * 16 + 4 * 8, 32)
    torch.testing.assert_close(past.value[7, 0], feats[0][1, 1, :, 0, 0])  # sample 1, camera 1, cell (0, 0)
    expected = earlier_lidar2img(
        torch.as_tensor(np.asarray(earlier["lidar2img"], dtype=np.float64)),
        torch.as_tensor(earlier["lidar2global"]),
        torch.as_tensor(cur["lidar2global"]),
    )
    torch.testing.assert_close(past.cams.lidar2img[0], expected.float())
    assert torch.equal(past.cams.lidar2img[1], torch.zeros(6, 4, 4))  # no earlier frame: no camera
    assert model.bbox_head.past_cameras(feats, [None, None], [cur, cur]) is None
    plain = _build(detector_cfg())
    assert plain.bbox_head.past_cameras(feats, [earlier, earlier], [cur, cur]) is None
    with pytest.raises(ValueError, match="earlier_metas needs 'lidar2global'"):
        model.bbox_head.past_cameras(feats, [dict(earlier, lidar2global=None), None], [cur, cur])
    with pytest.raises(ValueError, match="batch_input_metas needs 'lidar2global'"):
        model.bbox_head.past_cameras(feats, [earlier, None], [dict(cur, lidar2global=None), cur])


def assert_plain_without_an_earlier_frame(
    nuscenes_rig, cfg: dict, module: str, num_extra: int, perturb
) -> None:
    """Same seed, the plain detector_cfg() and ``cfg``: every parameter but the ``num_extra``
    tensors under ``.<module>.`` and the random stream after the initialisation are the same,
    and without an earlier frame the predictions are bit-exact even after ``perturb(layer)`` made
    each decoder layer's module act, so a no-history run of a config is the run without it."""
    runs = []
    for c in (detector_cfg(), cfg):
        torch.manual_seed(0)
        model = _build(dict(c, grid_mask=None))
        model.init_weights()
        runs.append((model, torch.randn(3)))
    (plain, rng_plain), (hist, rng_hist) = runs
    assert torch.equal(rng_plain, rng_hist)
    plain_sd, hist_sd = plain.state_dict(), hist.state_dict()
    extra = sorted(k for k in hist_sd if k not in plain_sd)
    assert sum(f".{module}." in k for k in extra) == num_extra
    assert all(torch.equal(v, hist_sd[k]) for k, v in plain_sd.items())
    with torch.no_grad():
        for layer in hist.bbox_head.transformer.decoder.layers:
            perturb(layer)
    samples = _frames(nuscenes_rig, [("a", 0.0, 0.0), ("a", 0.5, 4.0)])
    imgs = _random_imgs(2)
    outs = []
    for model in (plain, hist):
        data = model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=copy.deepcopy(samples)))
        with torch.no_grad():
            outs.append(model.eval()(**data, mode="predict"))
    for a, b in zip(*outs):
        torch.testing.assert_close(
            a.pred_instances_3d.scores_3d, b.pred_instances_3d.scores_3d, rtol=0, atol=0
        )


def test_a_model_without_an_earlier_frame_is_the_model_without_history_attn(nuscenes_rig):
    """2 layers x 16 tensors of history_attn; its output projection (zero at the start) made
    non-zero, so that the module would act if it ran."""
    assert_plain_without_an_earlier_frame(
        nuscenes_rig,
        _history_cfg(),
        "history_attn",
        2 * 16,
        lambda layer: layer.history_attn.output_proj.weight.normal_(),
    )


def test_queue_training_and_video_testing_read_the_same_earlier_frame(nuscenes_rig):
    """history_depth=2, history_stride=2: in video testing frame 4's decoder reads frame 2's neck
    levels through the motion from frame 2 to 4, frames 0 and 1 and a scene start read none; queue
    training of frames 0, 2 -> 4 reads the same (the last queue frame), in eval mode for BN."""
    torch.manual_seed(0)
    cfg = dict(_history_cfg(), grid_mask=None, video_test=True, history_depth=2, history_stride=2)
    video = _video_model(**cfg)
    plan = [("a", 0.5 * k, 4.0 * k) for k in range(6)] + [("b", 9.0, 0.0)]
    samples = _frames(nuscenes_rig, plan)
    imgs = _random_imgs(len(plan))
    pasts = record_head_arg(video, "past_cameras")
    _video_histories(video, samples, imgs)
    assert [p is not None for p in pasts] == [False, False, True, True, True, True, False]
    with torch.no_grad():
        data = video.data_preprocessor(dict(inputs=dict(img=[imgs[2]]), data_samples=[samples[2]]))
        frame2 = video.extract_feat(data["inputs"], [samples[2].metainfo])
    expected = video.bbox_head.past_cameras(frame2, [samples[2].metainfo], [samples[4].metainfo])
    torch.testing.assert_close(pasts[4].value, expected.value)
    torch.testing.assert_close(pasts[4].cams.lidar2img, expected.cams.lidar2img)
    assert not torch.allclose(
        pasts[4].cams.lidar2img,
        expected.cams.lidar2img.new_tensor(np.asarray(samples[2].metainfo["lidar2img"], dtype=np.float32))[
            None
        ],
    )  # the motion is in it

    trainee = _build(dict(cfg, video_test=False))
    trainee.load_state_dict(video.state_dict())
    trainee.train()
    data, qimgs, qframes = _queue_batch(nuscenes_rig, trainee, [plan[0], plan[2], plan[4]])
    got = record_head_arg(trainee, "past_cameras")
    losses = trainee(**data, mode="loss")
    total, _ = trainee.parse_losses(losses)
    total.backward()
    (past,) = got
    with torch.no_grad():  # the last queue frame, as video testing would read it before frame 4
        q = video.data_preprocessor(dict(inputs=dict(img=[qimgs[1]]), data_samples=[qframes[1]]))
        feats = video.extract_feat(q["inputs"], [qframes[1].metainfo])
    expected = video.bbox_head.past_cameras(feats, [qframes[1].metainfo], [qframes[2].metainfo])
    torch.testing.assert_close(past.value, expected.value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(past.cams.lidar2img, pasts[4].cams.lidar2img)  # the same motion, 2 -> 4
    grads = [
        layer.history_attn.output_proj.weight.grad for layer in trainee.bbox_head.transformer.decoder.layers
    ]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # it trains

    # the padding frame before a scene start gives no earlier frame
    got.clear()
    data, _, _ = _queue_batch(nuscenes_rig, trainee, [plan[0], plan[2], plan[4]], pad_first=2)
    trainee(**data, mode="loss")
    assert got == [None]


def test_video_testing_with_history_attn_needs_history_depth():
    with pytest.raises(ValueError, match="history_attn reads an earlier frame's neck levels"):
        _build(dict(_history_cfg(), video_test=True))
    _build(dict(_history_cfg(), video_test=True, history_depth=1))
