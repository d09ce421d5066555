"""Query selection in the BEVFormer-style detector: the aux head's lifted image peaks are the
initial reference points of the first k object queries on the BEV, in training (also with a
queue), in plain and in video testing; the other queries keep their learned points."""

from __future__ import annotations

import torch
from test_bev_temporal import _frames, _queue_batch
from test_bevformer import CAR_AHEAD, IMG_HW, _build, _samples, detector_cfg

from bev_deform.geometry import CameraGeometry

K = 4


def _model(**kwargs):
    torch.manual_seed(0)
    model = _build(dict(detector_cfg(), grid_mask=None, query_selection=K, **kwargs))
    model.init_weights()
    return model


def _spy(model, seen: list) -> None:
    forward = model.bbox_head.transformer.forward

    def spy(*args, ref_points=None, **kwargs):
        seen.append(ref_points)
        return forward(*args, ref_points=ref_points, **kwargs)

    model.bbox_head.transformer.forward = spy


def _expected(model, data) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected (B, K, 3) and the learned (B, Q, 3) reference points of a batch."""
    metas = [s.metainfo for s in data["data_samples"]]
    with torch.no_grad():
        feats = model.extract_feat(data["inputs"], metas)
        refs, _ = model.aux_head.select_reference_points(
            feats[0], CameraGeometry.from_metas(metas, "cpu"), K, model.bbox_head.pc_range
        )
        query_pos = model.bbox_head._split_queries(len(metas))[0]
        learned = model.bbox_head.transformer.initial_ref_points(query_pos)
    return refs, learned


def test_bevformer_trains_and_predicts_from_the_selected_reference_points(nuscenes_rig):
    model = _model()
    seen: list = []
    _spy(model, seen)
    imgs = [
        torch.randint(0, 256, (6, 3, *IMG_HW), generator=torch.Generator().manual_seed(i)).float()
        for i in range(2)
    ]
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0]), ([CAR_AHEAD], [0])])
    data = model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=samples), training=True)
    model.eval()  # the same batch-norm statistics as the expected points' pass
    refs, learned = _expected(model, data)
    model.train()
    for m in model.modules():  # batch norm in eval mode: the selection sees what _expected saw
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    losses = model(**data, mode="loss")
    total, _ = model.parse_losses(losses)
    total.backward()
    assert torch.isfinite(total)
    torch.testing.assert_close(seen[0][:, :K], refs, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(seen[0][:, K:], learned[:, K:])
    assert not torch.allclose(seen[0][:, :K], learned[:, :K])

    model.eval()
    data = model.data_preprocessor(dict(inputs=dict(img=imgs[:1]), data_samples=samples[:1]))
    with torch.no_grad():
        model(**data, mode="predict")
    refs, _ = _expected(model, data)
    torch.testing.assert_close(seen[1][:, :K], refs, atol=1e-6, rtol=1e-6)


def test_video_testing_and_queue_training_select_per_frame(nuscenes_rig):
    model = _model(video_test=True)
    model.eval()
    plan = [("a", 0.0, 0.0), ("a", 0.5, 4.0)]
    frames = _frames(nuscenes_rig, plan)
    imgs = [
        torch.randint(0, 256, (6, 3, *IMG_HW), generator=torch.Generator().manual_seed(i)).float()
        for i in range(2)
    ]
    seen: list = []
    _spy(model, seen)
    with torch.no_grad():
        model(**model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=frames)), mode="predict")
    for b in range(2):  # each frame of the batch selects from its own image peaks
        refs, _ = _expected(
            model,
            model.data_preprocessor(dict(inputs=dict(img=imgs[b : b + 1]), data_samples=frames[b : b + 1])),
        )
        torch.testing.assert_close(seen[b][:, :K], refs, atol=1e-6, rtol=1e-6)

    train = _model()
    data, _, _ = _queue_batch(nuscenes_rig, train, [*plan, ("a", 1.0, 8.0)])
    seen.clear()
    _spy(train, seen)
    train.train()
    losses = train(**data, mode="loss")
    assert len(seen) == 1 and seen[0].shape == (1, 24, 3)  # the queue's frames only encode the BEV
    assert all(torch.isfinite(v).all() for v in losses.values())
