"""Temporal BEV, the parts that run at test time: TSA with an aligned history and its validity,
video testing that carries the history and resets it at scene starts and time gaps, the
scene-keeping test sampler, and the scene/pose metainfo from the dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.structures import InstanceData
from test_bevformer import CAR_AHEAD, IMG_HW, _build, _samples, detector_cfg

from bev_deform.datasets.samplers import SceneSequentialSampler
from bev_deform.models.attention import TemporalSelfAttention


def _pose(yaw: float, x: float, y: float) -> np.ndarray:
    m = np.eye(4)
    m[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    m[:2, 3] = [x, y]
    return m


def test_tsa_cells_without_a_previous_cell_are_first_frame_cells():
    """Where the aligned history is not valid, the current BEV stands in for it: a sample with no
    valid cell equals the sample without history (a first frame), whatever its history holds, and
    a valid cell does read its history."""
    from bev_deform.geometry import BEVGrid

    torch.manual_seed(0)
    grid = BEVGrid(6, 5, (-10.0, -10.0, -5.0, 10.0, 10.0, 3.0))
    attn = TemporalSelfAttention(embed_dims=16, num_heads=2, num_points=2, dropout=0.0).eval()
    query, history = torch.randn(2, 30, 16), torch.randn(2, 30, 16)
    ref = grid.cell_locations()[None].expand(2, -1, -1)
    valid = torch.stack([torch.zeros(30, dtype=torch.bool), torch.ones(30, dtype=torch.bool)])
    with torch.no_grad():
        out = attn(query, ref, grid.levels(), history=history, history_valid=valid)
        first = attn(query[:1], ref[:1], grid.levels())  # sample 0 alone, no history
        full = attn(query[1:], ref[1:], grid.levels(), history=history[1:])  # sample 1 alone, all valid
        mixed = valid.clone()
        mixed[1, :10] = False
        part = attn(query, ref, grid.levels(), history=history, history_valid=mixed)
        stand_in = attn(
            query[1:], ref[1:], grid.levels(), history=torch.where(mixed[1:, :, None], history[1:], query[1:])
        )
    torch.testing.assert_close(out[:1], first, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[1:], full, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(part[1:], stand_in, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(part[1:], full, atol=1e-4)
    with pytest.raises(ValueError, match="history_valid must be"):
        attn(query, ref, grid.levels(), history_valid=valid)  # a mask without a history


def _frames(nuscenes_rig, plan):
    """One sample per (scene, timestamp, ego x) of ``plan``, the ego heading +x."""
    samples = _samples(nuscenes_rig, [([], [])] * len(plan))
    for s, (scene, stamp, x) in zip(samples, plan):
        s.set_metainfo(
            dict(
                box_type_3d=LiDARInstance3DBoxes,
                scene_token=scene,
                timestamp=stamp,
                lidar2global=_pose(0.0, x, 0.0),
            )
        )
    return samples


def video_plan_run(nuscenes_rig, cfg: dict, arg: str) -> tuple:
    """Video testing (a model of ``cfg``, seed 0) over frames 0-5 of scene "a" (0.5 s and 4 m
    apart) and a scene start of "b", frames 0, 2 and 4 showing the images of a queue's frames 0,
    1 and 2 (``_queue_batch`` over frames 0, 2, 4); returns the model, the plan and the head's
    keyword argument ``arg`` per head call."""
    torch.manual_seed(0)
    video = _video_model(**cfg)
    plan = [("a", 0.5 * k, 4.0 * k) for k in range(6)] + [("b", 9.0, 0.0)]
    samples = _frames(nuscenes_rig, plan)
    imgs = _random_imgs(len(plan))
    imgs[2], imgs[4] = imgs[1], imgs[2]  # frames 0, 2, 4 show the images of the queue
    seen = record_head_arg(video, arg)
    _video_histories(video, samples, imgs)
    return video, plan, seen


def queue_plan_run(nuscenes_rig, video, cfg: dict, plan, arg: str) -> tuple:
    """A training detector of ``cfg`` with ``video``'s weights, one loss and backward on a queue of
    ``plan``'s frames 0, 2 -> 4 (``video_plan_run``'s images); returns it and the head's keyword
    argument ``arg`` per head call (the wrapper stays for more calls)."""
    trainee = _build(dict(cfg, video_test=False))
    trainee.load_state_dict(video.state_dict())
    trainee.train()
    data, _, _ = _queue_batch(nuscenes_rig, trainee, [plan[0], plan[2], plan[4]])
    got = record_head_arg(trainee, arg)
    total, _ = trainee.parse_losses(trainee(**data, mode="loss"))
    total.backward()
    return trainee, got


def _video_histories(model, samples, imgs, batch: int = 1):
    """Run ``samples`` through video testing in batches of ``batch``; the history the head saw
    for each and the BEV it made."""
    seen, bevs, head_forward = [], [], model.bbox_head.forward

    def spy(feats, metas, history=None, history_valid=None, ego_motion=None, **kw):
        seen.append(history)
        outs = head_forward(
            feats, metas, history=history, history_valid=history_valid, ego_motion=ego_motion, **kw
        )
        bevs.append(outs["bev_embed"])
        return outs

    model.bbox_head.forward = spy
    try:
        with torch.no_grad():
            for k in range(0, len(samples), batch):
                part = slice(k, k + batch)
                data = model.data_preprocessor(dict(inputs=dict(img=imgs[part]), data_samples=samples[part]))
                model(**data, mode="predict")
    finally:
        model.bbox_head.forward = head_forward
    return seen, bevs


def record_head_arg(model, name: str) -> list:
    """Wrap ``model.bbox_head.forward`` so that each call appends its keyword argument ``name``
    (None where not given) to the list returned; the wrapper stays for the model's life."""
    seen, forward = [], model.bbox_head.forward

    def spy(*args, **kw):
        seen.append(kw.get(name))
        return forward(*args, **kw)

    model.bbox_head.forward = spy
    return seen


def _video_model(weights_from=None, **cfg):
    """A detector in eval mode with video testing (unless ``cfg`` says otherwise) and ``cfg``:
    initialised, or with the weights of ``weights_from``."""
    model = _build(dict(detector_cfg(), **{"video_test": True, **cfg}))
    if weights_from is None:
        model.init_weights()
    else:
        model.load_state_dict(weights_from.state_dict())
    return model.eval()


def _random_imgs(n: int) -> list[torch.Tensor]:
    """``n`` frames of 6 random camera images, from one seeded generator."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (6, 3, *IMG_HW), generator=gen).float() for _ in range(n)]


def test_video_test_carries_the_aligned_history_and_resets_it_at_scene_starts_and_gaps(nuscenes_rig):
    torch.manual_seed(0)
    model = _video_model(max_history_gap=1.0)
    # scene a: 3 frames 0.5 s apart; scene b: a start, then a 3 s gap (a missing frame), then 0.5 s
    plan = [
        ("a", 0.0, 0.0),
        ("a", 0.5, 4.0),
        ("a", 1.0, 8.0),
        ("b", 7.0, 0.0),
        ("b", 10.0, 1.0),
        ("b", 10.5, 2.0),
    ]
    samples = _frames(nuscenes_rig, plan)
    imgs = [
        torch.randint(0, 256, (6, 3, *IMG_HW), generator=torch.Generator().manual_seed(i)).float()
        for i in range(6)
    ]
    # two batches of three: the history crosses the batch border too
    seen_history, bevs = _video_histories(model, samples, imgs, batch=3)
    assert model.num_history_resets == 3  # first frame, scene b, the 3 s gap
    assert [h is not None for h in seen_history] == [False, True, True, False, False, True]

    # frame 1's history is frame 0's BEV moved back by the 4 m the ego drove forward
    motion = torch.eye(4, dtype=torch.float64)
    motion[0, 3] = -4.0
    expected, _ = model.bbox_head.grid.align_history(bevs[0], motion[None])
    torch.testing.assert_close(seen_history[1], expected)
    assert not torch.allclose(seen_history[1], bevs[0])

    model2 = _video_model(weights_from=model, video_test=False)
    with torch.no_grad():
        first = model2(
            **model2.data_preprocessor(dict(inputs=dict(img=imgs[:1]), data_samples=samples[:1])),
            mode="predict",
        )
    # without a history, video testing predicts what the plain model predicts
    model.reset_history()
    with torch.no_grad():
        again = model(
            **model.data_preprocessor(dict(inputs=dict(img=imgs[:1]), data_samples=samples[:1])),
            mode="predict",
        )
    torch.testing.assert_close(again[0].pred_instances_3d.scores_3d, first[0].pred_instances_3d.scores_3d)


def test_history_depth_rebuilds_each_history_from_the_last_k_frames_as_queue_training_does(nuscenes_rig):
    """history_depth=2: frame 3's history is what a fresh run over frames 1, 2 gives it (the
    3-frame queue of training), not the recurrent one that frame 0 also shaped; the kept frames
    are dropped at a scene change and at a gap."""
    torch.manual_seed(0)
    model = _video_model(history_depth=2)
    plan = [
        ("a", 0.0, 0.0),
        ("a", 0.5, 4.0),
        ("a", 1.0, 8.0),
        ("a", 1.5, 12.0),
        ("b", 7.0, 0.0),
        ("b", 9.0, 1.0),
    ]
    samples = _frames(nuscenes_rig, plan)
    imgs = _random_imgs(len(plan))
    seen, _ = _video_histories(model, samples, imgs)
    assert model.num_history_resets == 3  # first frame, scene b, the 2 s gap
    assert [h is not None for h in seen] == [False, True, True, True, False, False]
    assert model.recent[0].meta["timestamp"] == 9.0 and len(model.recent) == 1

    recurrent = _video_model(weights_from=model)
    full, _ = _video_histories(recurrent, samples[:4], imgs[:4])
    recurrent.reset_history()
    fresh, _ = _video_histories(recurrent, samples[1:4], imgs[1:4])
    torch.testing.assert_close(seen[3], fresh[2], atol=1e-5, rtol=1e-5)  # frames 1, 2 -> frame 3
    torch.testing.assert_close(seen[2], full[2], atol=1e-5, rtol=1e-5)  # a 2-frame chain either way
    assert not torch.allclose(seen[3], full[3], atol=1e-4)  # the recurrent history of frame 3 differs
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="history_depth must be None"):
            _build(dict(detector_cfg(), video_test=True, history_depth=bad))


def test_history_stride_chains_every_second_frame_in_testing_and_spans_its_gap_in_training(nuscenes_rig):
    """history_depth=2, history_stride=2: frame 4's history is a fresh chain over frames 0, 2 (what
    the dataset's queue_stride=2 trains), frame 5's over 1, 3; frames 0 and 1 have none (no frame 2
    before them); a stride-1 model's history of frame 4 differs. In training a chain step may span
    stride x max_history_gap."""
    torch.manual_seed(0)
    model = _video_model(history_depth=2, history_stride=2)
    plan = [("a", 0.5 * k, 4.0 * k) for k in range(6)] + [("b", 9.0, 0.0)]
    samples = _frames(nuscenes_rig, plan)
    imgs = _random_imgs(len(plan))
    seen, _ = _video_histories(model, samples, imgs)
    assert [h is not None for h in seen] == [False, False, True, True, True, True, False]
    assert model.num_history_resets == 3 and len(model.recent) == 1  # frames 0 and 1, scene b

    recurrent = _video_model(weights_from=model, max_history_gap=1.0)
    for frames, target in (([0, 2, 4], 4), ([1, 3, 5], 5), ([1, 3], 3)):
        recurrent.reset_history()
        fresh, _ = _video_histories(recurrent, [samples[k] for k in frames], [imgs[k] for k in frames])
        torch.testing.assert_close(seen[target], fresh[-1], atol=1e-5, rtol=1e-5)
    stride1 = _video_model(weights_from=model, history_depth=2)
    seen1, _ = _video_histories(stride1, samples, imgs)
    assert not torch.allclose(seen[4], seen1[4], atol=1e-4)

    # training: a queue of frames 1.5 s apart is a chain with stride 3, none with stride 1
    queue_plan = [("a", 0.0, 0.0), ("a", 1.5, 12.0), ("a", 3.0, 24.0)]
    for stride, has_history in ((3, True), (1, False)):
        trainee = _build(dict(detector_cfg(), grid_mask=None, history_depth=2, history_stride=stride))
        trainee.train()
        data, _, _ = _queue_batch(nuscenes_rig, trainee, queue_plan)
        got, head_forward = [], trainee.bbox_head.forward

        def spy(f, m, gts=None, history=None, got=got, head_forward=head_forward, **kw):
            got.append(history)
            return head_forward(f, m, gts, history=history, **kw)

        trainee.bbox_head.forward = spy
        trainee(**data, mode="loss")
        assert (got[0] is not None) == has_history
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="history_stride must be"):
            _build(dict(detector_cfg(), history_depth=2, history_stride=bad))
    with pytest.raises(ValueError, match="history_stride=2 needs history_depth"):
        _build(dict(detector_cfg(), history_stride=2))


def test_velocity_refine_votes_from_the_earlier_frames_of_the_scene_only(nuscenes_rig):
    # the head "detects" one walker at global (20 + 1.2 t, 5), standing (velocity 0), score 0.9, in
    # scene a's frames 0.5 s apart while the ego drives 4 m per frame along +x; then scene b starts
    # where and when a's next frame would be (its walker where a's would be)
    refine = dict(class_names=["car", "pedestrian"], classes=dict(pedestrian=2.0))
    model = _video_model(velocity_refine=refine)
    plan = [("a", 0.5 * k, 4.0 * k) for k in range(7)] + [("b", 3.5, 28.0)]
    samples = _frames(nuscenes_rig, plan)
    frames = iter(plan)

    def walker(cls_scores, bbox_preds):
        _, t, ego_x = next(frames)
        box = torch.tensor([[20.0 + 1.2 * t - ego_x, 5.0, 0.0, 0.7, 0.7, 1.8, 0.0, 0.0, 0.0]])
        return [
            InstanceData(
                bboxes_3d=LiDARInstance3DBoxes(box, box_dim=9),
                scores_3d=torch.tensor([0.9]),
                labels_3d=torch.tensor([1]),
            )
        ]

    model.bbox_head.predict_by_feat = walker
    imgs = _random_imgs(len(plan))
    vels = []
    with torch.no_grad():
        for k in range(len(plan)):
            part = slice(k, k + 1)
            data = model.data_preprocessor(dict(inputs=dict(img=imgs[part]), data_samples=samples[part]))
            vels.append(model(**data, mode="predict")[0].pred_instances_3d.bboxes_3d.tensor[0, 7:9].tolist())
    # 3 earlier frames of score 0.9 give support 2.7 >= 2 (the head's 0: 1.37); their slope is exact
    walking = [pytest.approx([1.2, 0.0], abs=1e-6)] * 4
    assert vels == [[0.0, 0.0]] * 3 + walking + [[0.0, 0.0]]  # scene b's first frame: no earlier one
    assert model.velocity_refiner.num_refined == 4
    with pytest.raises(ValueError, match="velocity_refine votes from the earlier frames of a video test"):
        _build(dict(detector_cfg(), video_test=False, velocity_refine=refine))


def test_video_test_names_the_missing_metainfo(nuscenes_rig):
    model = _build(dict(detector_cfg(), video_test=True))
    model.eval()
    samples = _samples(nuscenes_rig, [([], [])])
    imgs = [torch.zeros(6, 3, *IMG_HW)]
    with (
        pytest.raises(
            ValueError, match=r"video testing needs \['scene_token', 'timestamp', 'lidar2global'\]"
        ),
        torch.no_grad(),
    ):
        model(**model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=samples)), mode="predict")


class _Infos:
    def __init__(self, infos):
        self.infos = infos

    def __len__(self):
        return len(self.infos)

    def get_data_info(self, i):
        return self.infos[i]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_scene_sampler_keeps_every_scene_whole_and_in_time_order_on_one_rank(monkeypatch, world_size):
    rng = np.random.default_rng(0)
    infos = [
        dict(scene_token=s, timestamp=float(t))
        for s, n in (("a", 7), ("b", 4), ("c", 5), ("d", 2))
        for t in range(n)
    ]
    infos = [infos[i] for i in rng.permutation(len(infos))]  # the info file need not be in order
    parts = []
    for rank in range(world_size):
        monkeypatch.setattr("bev_deform.datasets.samplers.get_dist_info", lambda r=rank: (r, world_size))
        parts.append(list(SceneSequentialSampler(_Infos(infos))))
    assert sorted(i for p in parts for i in p) == list(range(len(infos)))  # each sample exactly once
    for part in parts:
        scenes = [infos[i]["scene_token"] for i in part]
        assert all(scenes.count(s) == sum(x["scene_token"] == s for x in infos) for s in set(scenes))  # whole
        runs = [s for k, s in enumerate(scenes) if k == 0 or scenes[k - 1] != s]
        assert len(runs) == len(set(runs))  # each scene contiguous
        for s in set(scenes):
            stamps = [infos[i]["timestamp"] for i in part if infos[i]["scene_token"] == s]
            assert stamps == sorted(stamps)
    if world_size == 2:
        assert sorted(len(p) for p in parts) == [9, 9]  # a+d and b+c


def test_synthetic_samples_carry_their_scene_and_lidar_pose(synthetic_nuscenes_tiny):
    import json

    from bev_deform.datasets import BevNuScenesDataset

    ds = BevNuScenesDataset(
        data_root=str(synthetic_nuscenes_tiny) + "/", ann_file="nuscenes_infos_val.pkl", test_mode=True,
        metainfo=dict(version="v1.0-mini"),
    )  # fmt: skip
    table = json.loads((synthetic_nuscenes_tiny / "v1.0-mini" / "sample.json").read_text())
    scene_of = {r["token"]: r["scene_token"] for r in table}
    info = ds.get_data_info(0)
    assert info["scene_token"] == scene_of[info["token"]]
    expected = np.asarray(info["ego2global"]) @ np.asarray(info["lidar_points"]["lidar2ego"])
    np.testing.assert_allclose(info["lidar2global"], expected)
    with pytest.raises(FileNotFoundError, match="sample.json"):
        BevNuScenesDataset(
            data_root=str(synthetic_nuscenes_tiny) + "/", ann_file="nuscenes_infos_val.pkl", test_mode=True,
            metainfo=dict(version="v1.0-trainval"), scene_info=True,
        )  # fmt: skip


def _queue_batch(nuscenes_rig, model, plan, pad_first=0):
    """One training sample whose queue holds the frames of ``plan`` but the last (the sample), the
    first ``pad_first`` of them padding; returns the preprocessed batch and the per-frame images."""
    frames = _frames(nuscenes_rig, plan)
    imgs = _random_imgs(len(plan))
    for k in range(pad_first):
        imgs[k] = torch.zeros_like(imgs[k])
    sample = frames[-1]
    sample.gt_instances_3d = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])[0].gt_instances_3d
    queue = [dict(f.metainfo, pad=k < pad_first) for k, f in enumerate(frames[:-1])]
    sample.set_metainfo(dict(queue=[q if not q["pad"] else dict(pad=True) for q in queue]))
    data = model.data_preprocessor(
        dict(inputs=dict(img=[torch.cat(imgs)]), data_samples=[sample]), training=True
    )
    return data, imgs, frames


def test_queue_training_builds_the_history_that_video_testing_would(nuscenes_rig):
    """A 3-frame queue: the earlier frames run in eval mode without gradients, each with the
    aligned BEV of the one before; the sample trains on the aligned BEV of the last, which is what
    video testing of the same frames gives; a padding frame contributes no history."""
    torch.manual_seed(0)
    model = _build(dict(detector_cfg(), grid_mask=None))
    model.init_weights()
    model.train()
    plan = [("a", 0.0, 0.0), ("a", 0.5, 4.0), ("a", 1.0, 8.0)]
    data, imgs, frames = _queue_batch(nuscenes_rig, model, plan)
    seen = []
    head_forward = model.bbox_head.forward

    def spy(feats, metas, gts=None, history=None, history_valid=None, ego_motion=None, **kw):
        seen.append((history, history_valid))
        return head_forward(
            feats, metas, gts, history=history, history_valid=history_valid, ego_motion=ego_motion, **kw
        )

    model.bbox_head.forward = spy
    video = _video_model(weights_from=model, grid_mask=None)  # before the train step moves the BN stats
    losses = model(**data, mode="loss")
    total, _ = model.parse_losses(losses)
    total.backward()
    assert torch.isfinite(total) and model.training
    ((history, valid),) = seen
    assert history is not None and not history.requires_grad and valid.any()
    assert model.img_backbone.conv1.weight.grad.abs().sum() > 0  # the sample's own frame trains

    # video testing of frames 0 and 1 leaves frame 1's BEV; aligned to frame 2 it is the history
    model.bbox_head.forward = head_forward
    with torch.no_grad():
        video(
            **video.data_preprocessor(dict(inputs=dict(img=imgs[:2]), data_samples=frames[:2])),
            mode="predict",
        )
        expected = video._align(video.history, frames[2].metainfo, torch.device("cpu"))
    torch.testing.assert_close(history, expected[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(valid, expected[1])

    # with frame 0 padding, the history comes from frame 1 alone (frame 1 starts the sequence)
    seen.clear()
    video.load_state_dict(model.state_dict())
    model.bbox_head.forward = spy
    data, imgs, frames = _queue_batch(nuscenes_rig, model, plan, pad_first=1)
    model(**data, mode="loss")
    ((history_pad, _),) = seen
    video.reset_history()
    with torch.no_grad():
        video(
            **video.data_preprocessor(dict(inputs=dict(img=imgs[1:2]), data_samples=frames[1:2])),
            mode="predict",
        )
        expected = video._align(video.history, frames[2].metainfo, torch.device("cpu"))
    torch.testing.assert_close(history_pad, expected[0], atol=1e-5, rtol=1e-5)


def test_queue_of_only_padding_trains_without_history(nuscenes_rig):
    torch.manual_seed(0)
    model = _build(dict(detector_cfg(), grid_mask=None))
    model.init_weights()
    data, _, _ = _queue_batch(
        nuscenes_rig, model, [("a", 0.0, 0.0), ("a", 0.5, 4.0), ("a", 1.0, 8.0)], pad_first=2
    )
    seen = []
    head_forward = model.bbox_head.forward
    model.bbox_head.forward = lambda f, m, gts=None, history=None, **kw: (
        seen.append(history) or head_forward(f, m, gts, history=history, **kw)
    )
    losses = model(**data, mode="loss")
    assert seen == [None] and all(torch.isfinite(v).all() for v in losses.values())


def test_dataset_queue_holds_earlier_frames_of_the_sample_scene_in_time_order(
    synthetic_nuscenes_tiny, tmp_path
):
    """Train and val infos of the tiny set (two scenes of 6 samples) in one file, shuffled: every
    queue holds earlier frames of the sample's own scene, in time order, padded at a scene start."""
    import pickle

    from mmengine.config import Config

    from bev_deform.datasets import BevNuScenesDataset

    root = synthetic_nuscenes_tiny
    infos = [pickle.loads((root / f"nuscenes_infos_{s}.pkl").read_bytes()) for s in ("train", "val")]
    rows = infos[0]["data_list"] + infos[1]["data_list"]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    merged = tmp_path / "infos.pkl"
    merged.write_bytes(pickle.dumps(dict(metainfo=infos[0]["metainfo"], data_list=rows)))
    cfg = Config.fromfile("configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py")
    pipeline = cfg.train_dataloader.dataset.pipeline
    ds = BevNuScenesDataset(
        data_root=str(root) + "/", ann_file=str(merged), pipeline=pipeline,
        metainfo=dict(version="v1.0-mini"), modality=cfg.train_dataloader.dataset.modality,
        data_prefix=cfg.train_dataloader.dataset.data_prefix, queue_length=3, queue_range=4,
    )  # fmt: skip
    assert len(ds._scene_frames) == 2
    pads = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        queue = ds.queue_indices(i, np.random.default_rng(i))
        real = [j for j in queue if j is not None]
        assert queue[: len(queue) - len(real)] == [None] * (len(queue) - len(real))  # padding first
        stamps = [ds.get_data_info(j)["timestamp"] for j in real]
        assert all(ds.get_data_info(j)["scene_token"] == info["scene_token"] for j in real)
        assert stamps == sorted(stamps) and all(s < info["timestamp"] for s in stamps)
        assert all(info["timestamp"] - s <= 4 * 0.5 + 1e-6 for s in stamps)  # within queue_range frames
        pads.append(len(queue) - len(real))
    assert sorted(pads) == [0] * 8 + [1, 1, 2, 2]  # the first two frames of each scene
    first = min(ds._scene_frames.values(), key=lambda f: 0)[0]
    sample = ds.prepare_data(ds._scene_frames[ds.get_data_info(first)["scene_token"]][2])
    assert sample["inputs"]["img"].shape[0] == 18 and [q["pad"] for q in sample["data_samples"].queue] == [
        False,
        False,
    ]
    with pytest.raises(ValueError, match="queue_length must be"):
        BevNuScenesDataset(data_root=str(root) + "/", ann_file=str(merged), queue_length=3, queue_range=1)

    # queue_stride=2: the frames 2 and 4 before the sample (1 s and 2 s earlier), padded at the front
    strided = BevNuScenesDataset(
        data_root=str(root) + "/", ann_file=str(merged), pipeline=pipeline,
        metainfo=dict(version="v1.0-mini"), modality=cfg.train_dataloader.dataset.modality,
        data_prefix=cfg.train_dataloader.dataset.data_prefix, queue_length=3, queue_range=2, queue_stride=2,
    )  # fmt: skip
    for frames in strided._scene_frames.values():
        for k, i in enumerate(frames):
            want = [frames[k - 4] if k >= 4 else None, frames[k - 2] if k >= 2 else None]
            assert strided.queue_indices(i) == want
            stamp = strided.get_data_info(i)["timestamp"]
            gaps = [stamp - strided.get_data_info(j)["timestamp"] for j in want if j is not None]
            np.testing.assert_allclose(gaps, [2.0, 1.0][2 - len(gaps) :], atol=1e-6)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="queue_stride must be an integer >= 1"):
            BevNuScenesDataset(
                data_root=str(root) + "/", ann_file=str(merged), queue_length=3, queue_stride=bad
            )


@pytest.mark.parametrize("queue_norm", ["running", "batch"])
def test_queue_norm_picks_the_statistics_of_the_earlier_frames(nuscenes_rig, queue_norm):
    """The queue's earlier frames run without gradients: with ``queue_norm='running'`` their neck
    levels are the eval-mode ones (BN's running statistics), with ``'batch'`` the train-mode ones
    (the batch's statistics, as the sample's own frame), and either way the running statistics
    end as one train-mode pass of the sample's own frame leaves them (the queue updates none)."""
    import copy

    torch.manual_seed(0)
    model = _build(dict(detector_cfg(), grid_mask=None, queue_norm=queue_norm))
    model.init_weights()
    model.train()
    plan = [("a", 0.0, 0.0), ("a", 0.5, 4.0), ("a", 1.0, 8.0)]
    data, _, _ = _queue_batch(nuscenes_rig, model, plan)
    imgs = data["inputs"]["imgs"]  # (1, 3 N, 3, H, W), the sample's own frame last
    n = imgs.shape[1] // 3
    metas = [s.metainfo for s in data["data_samples"]]
    before = copy.deepcopy(model)
    with torch.no_grad():
        before.train(queue_norm == "batch")
        expected = [before.extract_feat(dict(imgs=imgs[:, k * n : (k + 1) * n]), metas) for k in range(2)]
        other = copy.deepcopy(model).train(queue_norm != "batch")
        unexpected = other.extract_feat(dict(imgs=imgs[:, :n]), metas)
        after = copy.deepcopy(model).train()
        after.extract_feat(dict(imgs=imgs[:, 2 * n :]), metas)  # the sample's own frame, in train mode
    queued, extract = [], model.extract_feat

    def spy(inputs, metas_):
        out = extract(inputs, metas_)
        if not torch.is_grad_enabled():
            queued.append(out)
        return out

    model.extract_feat = spy
    model(**data, mode="loss")
    assert len(queued) == 2 and model.training
    for got, want in zip(queued, expected):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
    assert not torch.allclose(queued[0][0], unexpected[0], atol=1e-3)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.training for m in bn)
    for m, a in zip(bn, [m for m in after.modules() if isinstance(m, torch.nn.BatchNorm2d)]):
        torch.testing.assert_close(m.running_mean, a.running_mean)
        torch.testing.assert_close(m.running_var, a.running_var)
        assert m.momentum == a.momentum


def test_queue_norm_is_named_when_unknown():
    with pytest.raises(ValueError, match="queue_norm must be 'running' or 'batch'"):
        _build(dict(detector_cfg(), queue_norm="eval"))
