"""The BEV decoder's search for where each query's object was in the history frame
(``decoder.history_match``, :class:`HistoryMatch`): on a camera looking straight down, where each
candidate point reads exactly one feature cell, it finds a moving object's earlier position, sees a
static object as static while the ego drives past it, and gives a query its input back where no
earlier camera sees anything; in the detector, a model without an earlier frame is the model
without the module, and queue training trains it. On the backbone's stride-4 level
(``level='fine'``, the detector's ``fine_level``): the search reads that level and not the neck's,
the neck computes what it computes without it, and queue training and video testing hand the
search the same earlier frame's fine level."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_bev_history_attn import assert_plain_without_an_earlier_frame
from test_bev_temporal import _frames, _pose, _queue_batch, _random_imgs, _video_histories, _video_model
from test_bevformer import PC_RANGE, _build, detector_cfg

from bev_deform.geometry import CameraGeometry, FeatureLevels, earlier_lidar2img
from bev_deform.models.layers.bevformer_decoder import PastCameras, _bilinear_rows

# a camera 10 m above (10, 0, 0) of LIDAR_TOP looking straight down, f = 20 px on a 17 x 17 image
# centred at (8.5, 8.5): a ground point (10 + dx, dy, 0) is seen at u = 8.5 - 2 dy, v = 8.5 - 2 dx,
# the centre of feature cell (column 8 - 2 dy, row 8 - 2 dx) of a stride-1 level
ROT = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
DOWN = np.eye(4)
DOWN[:3, :3] = np.array([[20.0, 0.0, 8.5], [0.0, 20.0, 8.5], [0.0, 0.0, 1.0]]) @ ROT
DOWN[:3, 3] = DOWN[:3, :3] @ -np.array([10.0, 0.0, 10.0])
SIZE = 17
OBJECT, BACKGROUND = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]


def _match_module(loss_weight: float = 0.0, **cfg):
    """One head on 4 channels, the key projection the identity, candidates 1 m apart over +-2 m
    (``cfg`` overrides the module's settings)."""
    with torch.random.fork_rng(devices=[]):
        base = dict(embed_dims=4, match_dims=4, num_heads=1, radius=2.0, grid=5, level=0, num_levels=1)
        model = _build(dict(type="HistoryMatch", **base, pc_range=PC_RANGE, loss_weight=loss_weight) | cfg)
    model.init_weights()
    assert model.embed[-1].weight.abs().sum() == 0  # starts as the identity of its residual
    with torch.no_grad():
        model.key_proj.weight.copy_(torch.eye(4))
        model.key_proj.bias.zero_()
    return model.eval()


def _frame(
    object_cell: tuple[int, int] | None, lidar2img: np.ndarray | torch.Tensor, gap: float | None = None
) -> PastCameras:
    """A one-camera frame whose stride-1 feature map is BACKGROUND but OBJECT at (row, column),
    ``gap`` seconds before the current one."""
    feat = torch.tensor(BACKGROUND)[:, None, None].repeat(1, SIZE, SIZE)  # (C, H, W)
    if object_cell is not None:
        feat[:, object_cell[0], object_cell[1]] = torch.tensor(OBJECT)
    value = feat.flatten(1).t()[None]  # (B*N=1, H*W, C)
    levels = FeatureLevels.from_shapes([(SIZE, SIZE)], (SIZE, SIZE))
    l2i = torch.as_tensor(np.asarray(lidar2img), dtype=torch.float32).view(1, 1, 4, 4)
    cams = CameraGeometry(l2i, torch.full((1, 1, 2), float(SIZE)), (SIZE, SIZE))
    return PastCameras(value, levels, cams, None if gap is None else torch.tensor([gap]))


def _ref(point) -> torch.Tensor:
    lo, hi = torch.tensor(PC_RANGE[:3]), torch.tensor(PC_RANGE[3:])
    return ((torch.tensor(point) - lo) / (hi - lo))[None, None]  # (1, 1, 3)


def test_bilinear_rows_interpolate_between_cell_centres_and_read_zero_outside():
    # map 1 of 2: cell (row y, column x) holds 10 y + x + 1; map 0 holds zeros
    table = torch.zeros(2, 2, 2, 1)
    table[1, :, :, 0] = torch.tensor([[1.0, 2.0], [11.0, 12.0]])
    xy = torch.tensor([[0.5, 0.5], [1.5, 0.0], [0.25, 1.0], [0.0, 0.0], [0.5, 0.5]])
    reads = _bilinear_rows(table, torch.tensor([1, 1, 1, 1, 0]), xy)[:, 0]
    # the four centres' mean; half of cell (0, 1), its right neighbour outside; 3/4 and 1/4
    torch.testing.assert_close(reads, torch.tensor([6.5, 1.0, 11.25, 1.0, 0.0]))


def test_history_match_finds_where_a_moving_object_was():
    """The object is now at (10, 0, 0) (cell row 8, column 8); one history frame ago, the ego
    standing still, it was 1 m further along x and 2 m to the right, (11, -2, 0): cell row 6,
    column 12. The candidate there is the one match: the softmax puts 0.9989 on it (cosine 1
    against 0 for the 24 others, scale 10), and the expected displacement is (0.5, -1.0) radii
    times 0.9988."""
    model = _match_module()
    with torch.no_grad():
        prob, usable = model.match(_ref([10.0, 0.0, 0.0]), _frame((6, 12), DOWN), _frame((8, 8), DOWN))
    assert prob.shape == (1, 1, 1, 25) and usable.tolist() == [[True]]
    offsets = model.offsets
    best = int(prob[0, 0, 0].argmax())
    assert offsets[best].tolist() == [1.0, -2.0]
    expected_peak = np.exp(10.0) / (np.exp(10.0) + 24)
    assert abs(float(prob[0, 0, 0, best]) - expected_peak) < 1e-4
    disp = (prob[0, 0, 0, :, None] * offsets).sum(0) / model.radius
    # the others' offsets sum to minus the match's: (0.5, -1.0) * (p - (1 - p) / 24)
    shrink = expected_peak - (1 - expected_peak) / 24
    torch.testing.assert_close(disp, torch.tensor([0.5, -1.0]) * shrink, atol=1e-5, rtol=0)
    # standing still: the object where it is now, no displacement
    with torch.no_grad():
        prob, _ = model.match(_ref([10.0, 0.0, 0.0]), _frame((8, 8), DOWN), _frame((8, 8), DOWN))
    assert offsets[int(prob[0, 0, 0].argmax())].tolist() == [0.0, 0.0]


def test_history_match_sees_a_static_object_as_static_while_the_ego_drives():
    """The ego drove 3 m along +x: the static object now at (10, 0, 0) was at (13, 0, 0) of the
    earlier frame, which its camera (rigid on the ego) saw at cell row 2, column 8. Through the ego
    motion (earlier_lidar2img) the match is at zero displacement; with the earlier camera as it was
    (the motion ignored) no candidate within 2 m finds it."""
    model = _match_module()
    earlier_pose, cur_pose = _pose(0.0, 0.0, 0.0), _pose(0.0, 3.0, 0.0)
    moved = earlier_lidar2img(torch.tensor(DOWN)[None], torch.tensor(earlier_pose), torch.tensor(cur_pose))[0]
    with torch.no_grad():
        prob, usable = model.match(_ref([10.0, 0.0, 0.0]), _frame((2, 8), moved), _frame((8, 8), DOWN))
        ignored, _ = model.match(_ref([10.0, 0.0, 0.0]), _frame((2, 8), DOWN), _frame((8, 8), DOWN))
    assert usable.tolist() == [[True]]
    assert model.offsets[int(prob[0, 0, 0].argmax())].tolist() == [0.0, 0.0]
    assert float(prob.max()) > 0.998
    torch.testing.assert_close(ignored, torch.full_like(ignored, 1 / 25))  # nothing matches: uniform


def test_history_match_gives_the_query_back_where_no_earlier_camera_sees():
    """All-zero earlier cameras (a sample without an earlier frame): exactly the input, even with
    a non-zero MLP; with the earlier frame the same module changes the query."""
    model = _match_module()
    with torch.no_grad():
        model.embed[-1].weight.normal_()
        model.embed[-1].bias.normal_()
    query = torch.randn(1, 1, 4)
    with torch.no_grad():
        unseen = model(query, _ref([10.0, 0.0, 0.0]), _frame((6, 12), np.zeros((4, 4))), _frame((8, 8), DOWN))
        seen = model(query, _ref([10.0, 0.0, 0.0]), _frame((6, 12), DOWN), _frame((8, 8), DOWN))
    assert torch.equal(unseen, query)
    assert not torch.allclose(seen, query)


def test_soft_targets_put_the_displacement_on_the_candidate_grid_bilinearly():
    """Candidates 1 m apart over +-2 m (index = 5 row + column, offset (column - 2, row - 2)):
    (1, -2) is candidate (row 0, column 3) alone; (0.5, 0) half on (2, 2) and half on (2, 3);
    (0.25, 2) three quarters on (4, 2), a quarter on (4, 3); (2.5, 0) is outside the square."""
    model = _match_module()
    target, inside = model.soft_targets(torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.25, 2.0], [2.5, 0.0]]))
    expected = torch.zeros(4, 25)
    expected[0, 3] = 1.0
    expected[1, 12] = expected[1, 13] = 0.5
    expected[2, 22], expected[2, 23] = 0.75, 0.25
    expected[3, 14] = 1.0  # clamped to the edge, and not counted
    torch.testing.assert_close(target, expected)
    assert inside.tolist() == [True, True, True, False]
    expected_disp = torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.25, 2.0], [2.0, 0.0]])
    torch.testing.assert_close(target @ model.offsets, expected_disp)


def test_history_match_loss_trains_the_search_on_where_the_object_was():
    """The object of test_history_match_finds_where_a_moving_object_was, (10, 0, 0) now and
    (11, -2, 0) half a second before: velocity (-2, 4) m/s puts the target on the candidate that
    matches, cross-entropy -log(e^10 / (e^10 + 24)) = 0.00109 (times loss_weight 0.5); a standing
    target (velocity 0) is the centre candidate, cosine 0: log(e^10 + 24) = 10.0011; an object
    moving out of the square, one no earlier camera sees, or a frame without a time gap count
    nothing or are named; the loss reaches the key projection and the scale."""
    model = _match_module(loss_weight=0.5)
    past, now = _frame((6, 12), DOWN, gap=0.5), _frame((8, 8), DOWN)
    centre = [torch.tensor([[10.0, 0.0, 0.0]])]
    right = model.loss(centre, [torch.tensor([[-2.0, 4.0]])], past, now)
    assert abs(right.item() - 0.5 * np.log1p(24 * np.exp(-10.0))) < 1e-6
    standing = model.loss(centre, [torch.zeros(1, 2)], past, now)
    assert abs(float(standing) - 0.5 * np.log(np.exp(10.0) + 24)) < 1e-4
    # two objects: the mean; one of them moving 5 m in the half second (out of reach) is not counted
    twice = [torch.tensor([[10.0, 0.0, 0.0], [10.0, 0.0, 0.0]])]
    pair = model.loss(twice, [torch.tensor([[0.0, 0.0], [-2.0, 4.0]])], past, now)
    assert abs(float(pair) - (float(standing) + float(right)) / 2) < 1e-4
    far = model.loss(twice, [torch.tensor([[0.0, 0.0], [-10.0, 0.0]])], past, now)
    assert abs(float(far) - float(standing)) < 1e-6
    unknown = model.loss(twice, [torch.tensor([[0.0, 0.0], [float("nan"), 0.0]])], past, now)
    assert abs(float(unknown) - float(standing)) < 1e-6  # a velocity that is not a number: not counted
    standing.backward()
    assert model.key_proj.weight.grad.abs().sum() > 0 and model.logit_scale.grad.abs() > 0
    # a sample without an earlier frame (all-zero cameras): nothing counts, a zero that still has a graph
    unseen = model.loss(centre, [torch.zeros(1, 2)], _frame((6, 12), np.zeros((4, 4)), gap=0.0), now)
    assert float(unseen) == 0.0 and unseen.requires_grad
    with pytest.raises(ValueError, match="needs the time gap"):
        model.loss(centre, [torch.zeros(1, 2)], _frame((6, 12), DOWN), now)
    with pytest.raises(ValueError, match="one entry per sample"):
        model.loss(centre * 2, [torch.zeros(1, 2)] * 2, past, now)
    with pytest.raises(ValueError, match="loss_weight must be >= 0"):
        _build(dict(type="HistoryMatch", embed_dims=8, num_levels=4, pc_range=PC_RANGE, loss_weight=-1.0))


def test_history_match_names_bad_settings():
    for kw, match in (
        (dict(match_dims=6, num_heads=4), "divisible by num_heads"),
        (dict(grid=1), "grid >= 2"),
        (dict(level=4), "level must be 'fine' or in"),
        (dict(level="fine"), "needs fine_dims"),
        (dict(level="coarse"), "level must be 'fine' or in"),
        (dict(pc_range=None), "needs pc_range"),
    ):
        cfg = dict(type="HistoryMatch", embed_dims=8, num_levels=4, pc_range=PC_RANGE)
        with pytest.raises(ValueError, match=match):
            _build({**cfg, **kw})


def test_history_match_layers_picks_the_layers_that_search():
    decoder = dict(type="BEVFormerDecoder", num_layers=3, embed_dims=32, pc_range=PC_RANGE, num_levels=2)
    built = _build(dict(decoder, history_match=dict(match_dims=16, layers=(-1, 0))))
    assert [layer.history_match is not None for layer in built.layers] == [True, False, True]
    assert [layer.history_match is not None for layer in _build(dict(decoder, history_match={})).layers] == [
        True
    ] * 3
    with pytest.raises(ValueError, match=r"layers'\] must be layer indices"):
        _build(dict(decoder, history_match=dict(layers=(3,))))


def _match_cfg() -> dict:
    cfg = detector_cfg()
    cfg["bbox_head"]["decoder"].update(
        history_attn=dict(num_heads=4, num_points=2, dropout=0.0),
        history_match=dict(match_dims=16, num_heads=2, radius=2.0, grid=3),
    )
    return cfg


def test_a_model_without_an_earlier_frame_is_the_model_without_history_match(nuscenes_rig):
    """With history_attn too: 2 layers x 7 tensors of history_match, its MLP's last layer made
    non-zero."""
    assert_plain_without_an_earlier_frame(
        nuscenes_rig,
        _match_cfg(),
        "history_match",
        2 * 7,
        lambda layer: layer.history_match.embed[-1].weight.normal_(),
    )


def test_queue_training_trains_history_match(nuscenes_rig):
    """Queue training hands every layer's search the last queue frame and the current frame, and
    its key projection and MLP get gradients; a queue without an earlier frame calls no search."""
    torch.manual_seed(0)
    model = _build(dict(_match_cfg(), grid_mask=None))
    model.init_weights()
    model.train()
    plan = [("a", 0.5 * k, 4.0 * k) for k in range(5)]
    calls, layers = [], model.bbox_head.transformer.decoder.layers
    match_forward = type(layers[0].history_match).forward

    def spy(self, query, ref_points, past, present):
        calls.append((past.value.shape, present.value.shape))
        return match_forward(self, query, ref_points, past, present)

    for layer in layers:
        layer.history_match.forward = spy.__get__(layer.history_match)
    data, _, _ = _queue_batch(nuscenes_rig, model, [plan[0], plan[2], plan[4]])
    total, _ = model.parse_losses(model(**data, mode="loss"))
    total.backward()
    assert len(calls) == 2 and all(past == present for past, present in calls)
    for layer in layers:  # the MLP's last layer, zero at the start, is what trains first
        assert layer.history_match.embed[-1].weight.grad.abs().sum() > 0
        assert layer.history_match.key_proj.weight.grad.abs().sum() == 0
    with torch.no_grad():  # once it is not zero, the search itself trains
        for layer in layers:
            layer.history_match.embed[-1].weight.normal_()
    model.zero_grad()
    total, _ = model.parse_losses(model(**data, mode="loss"))
    total.backward()
    for layer in layers:
        assert layer.history_match.key_proj.weight.grad.abs().sum() > 0
        assert layer.history_match.logit_scale.grad.abs() > 0
    calls.clear()
    data, _, _ = _queue_batch(nuscenes_rig, model, [plan[0], plan[2], plan[4]], pad_first=2)
    model(**data, mode="loss")
    assert calls == []


def test_queue_training_with_the_match_loss_trains_the_search_from_the_first_step(nuscenes_rig):
    """With ``loss_weight`` the head adds ``loss_match`` (last layer) and ``d0.loss_match`` at the
    ground-truth boxes, with the queue frame's time gap from the timestamps (1 s); the key
    projection gets a gradient while the MLP is still zero; a queue without an earlier frame has no
    such loss."""
    torch.manual_seed(0)
    cfg = dict(_match_cfg(), grid_mask=None)
    cfg["bbox_head"]["decoder"]["history_match"]["loss_weight"] = 0.25
    model = _build(cfg)
    model.init_weights()
    model.train()
    plan = [("a", 0.5 * k, 4.0 * k) for k in range(5)]
    gaps = []
    past_cameras = type(model.bbox_head).past_cameras

    def spy(self, *args):
        out = past_cameras(self, *args)
        gaps.append(None if out is None else out.gap)
        return out

    model.bbox_head.past_cameras = spy.__get__(model.bbox_head)
    data, _, _ = _queue_batch(nuscenes_rig, model, [plan[0], plan[2], plan[4]])
    losses = model(**data, mode="loss")
    assert gaps and torch.equal(gaps[-1], torch.tensor([1.0]))
    assert {"loss_match", "d0.loss_match"} <= set(losses)
    assert all(0 < float(losses[k]) < float("inf") for k in ("loss_match", "d0.loss_match"))
    total, _ = model.parse_losses(losses)
    total.backward()
    for layer in model.bbox_head.transformer.decoder.layers:
        assert layer.history_match.embed[-1].weight.abs().sum() == 0
        assert layer.history_match.key_proj.weight.grad.abs().sum() > 0
    data, _, _ = _queue_batch(nuscenes_rig, model, [plan[0], plan[2], plan[4]], pad_first=2)
    assert not any("loss_match" in k for k in model(**data, mode="loss"))


def _fine_frame(neck_cell, fine_cell, lidar2img) -> PastCameras:
    """A frame as :func:`_frame` whose neck level has the object at ``neck_cell`` and whose fine
    level (the same stride-1 geometry, its own features) has it at ``fine_cell``."""
    neck, fine = _frame(neck_cell, lidar2img), _frame(fine_cell, lidar2img)
    return neck._replace(fine=fine.value, fine_levels=fine.levels)


def test_history_match_on_the_fine_level_reads_the_fine_level_not_the_necks():
    """The object of test_history_match_finds_where_a_moving_object_was on the fine level (now at
    cell row 8, column 8; then at row 6, column 12: 1 m along x, 2 m to the right), and a decoy on
    the neck level that stood still: the same module with ``level='fine'`` finds (1, -2), with
    ``level=0`` (0, 0); the key projection takes ``fine_dims`` channels; a frame without a fine
    level is named."""
    fine, neck = _match_module(level="fine", fine_dims=4, embed_dims=8), _match_module()
    assert fine.key_proj.in_features == 4 and fine.reads_fine and not neck.reads_fine
    past, now = _fine_frame((8, 8), (6, 12), DOWN), _fine_frame((8, 8), (8, 8), DOWN)
    with torch.no_grad():
        prob_fine, usable = fine.match(_ref([10.0, 0.0, 0.0]), past, now)
        prob_neck, _ = neck.match(_ref([10.0, 0.0, 0.0]), past, now)
    assert usable.tolist() == [[True]]
    assert fine.offsets[int(prob_fine[0, 0, 0].argmax())].tolist() == [1.0, -2.0]
    assert abs(float(prob_fine.max()) - np.exp(10.0) / (np.exp(10.0) + 24)) < 1e-4
    assert neck.offsets[int(prob_neck[0, 0, 0].argmax())].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="fine_level=True"):
        fine.match(_ref([10.0, 0.0, 0.0]), _frame((6, 12), DOWN), now)


def _fine_cfg() -> dict:
    """_match_cfg() searching the backbone's stride-4 level (16 channels), kept by fine_level."""
    cfg = _match_cfg()
    cfg["img_backbone"] = dict(cfg["img_backbone"], out_indices=(0, 1, 2))
    cfg["bbox_head"]["decoder"]["history_match"].update(level="fine", fine_dims=16)
    return dict(cfg, fine_level=True)


def test_the_fine_level_leaves_the_neck_and_a_model_without_an_earlier_frame_as_they_were(nuscenes_rig):
    """The parameters, the random stream and the predictions without an earlier frame are the plain
    model's (2 layers x 7 tensors of history_match, its MLP's last layer made non-zero); the neck's
    levels are the plain model's, and the stride-4 level of 16 channels comes after them."""
    assert_plain_without_an_earlier_frame(
        nuscenes_rig,
        _fine_cfg(),
        "history_match",
        2 * 7,
        lambda layer: layer.history_match.embed[-1].weight.normal_(),
    )
    models = []
    for cfg in (detector_cfg(), _fine_cfg()):
        torch.manual_seed(0)
        models.append(_build(dict(cfg, grid_mask=None)))
        models[-1].init_weights()
    samples = _frames(nuscenes_rig, [("a", 0.0, 0.0)])
    feats = []
    for model in models:
        data = model.data_preprocessor(dict(inputs=dict(img=_random_imgs(1)), data_samples=samples))
        with torch.no_grad():
            feats.append(model.eval().extract_feat(data["inputs"], [samples[0].metainfo]))
    (plain, fine), pad_hw = feats, data["inputs"]["imgs"].shape[-2:]
    assert len(plain) == 2 and len(fine) == 3
    for a, b in zip(plain, fine[:2]):
        assert torch.equal(a, b)
    assert tuple(fine[2].shape) == (1, 6, 16, pad_hw[0] // 4, pad_hw[1] // 4)


def test_queue_training_and_video_testing_search_the_same_earlier_fine_level(nuscenes_rig):
    """history_depth=2, history_stride=2: video testing's frame 4 searches frame 2's fine level
    (stride 4), the frame's own fine level as the present; queue training of frames 0, 2 -> 4 hands
    the search the same (BN in eval mode), trains it with its loss (``loss_match``, the key
    projection of 16 input channels gets a gradient)."""
    torch.manual_seed(0)
    cfg = dict(_fine_cfg(), grid_mask=None, video_test=True, history_depth=2, history_stride=2)
    cfg["bbox_head"]["decoder"]["history_match"]["loss_weight"] = 0.5
    video = _video_model(**cfg)
    calls, layer = [], video.bbox_head.transformer.decoder.layers[-1]
    match_forward = type(layer.history_match).forward

    def spy(self, query, ref_points, past, present):
        calls.append((past, present))
        return match_forward(self, query, ref_points, past, present)

    plan = [("a", 0.5 * k, 4.0 * k) for k in range(5)]
    samples, imgs = _frames(nuscenes_rig, plan), _random_imgs(len(plan))
    layer.history_match.forward = spy.__get__(layer.history_match)
    _video_histories(video, samples, imgs)
    assert len(calls) == 3  # frames 2, 3 and 4
    past, present = calls[-1]
    feats = []
    for k in (2, 4):
        with torch.no_grad():
            data = video.data_preprocessor(dict(inputs=dict(img=[imgs[k]]), data_samples=[samples[k]]))
            feats.append(video.extract_feat(data["inputs"], [samples[k].metainfo])[-1])
    for frame, level in ((past, feats[0]), (present, feats[1])):
        assert frame.fine_levels.strides == (4,)
        torch.testing.assert_close(frame.fine, level.flatten(0, 1).flatten(2).transpose(1, 2))

    trainee = _build(dict(cfg, video_test=False))
    trainee.load_state_dict(video.state_dict())
    trainee.train()
    calls.clear()
    trainee.bbox_head.transformer.decoder.layers[-1].history_match.forward = spy.__get__(
        trainee.bbox_head.transformer.decoder.layers[-1].history_match
    )
    data, qimgs, qframes = _queue_batch(nuscenes_rig, trainee, [plan[0], plan[2], plan[4]])
    losses = trainee(**data, mode="loss")
    ((past_q, present_q),) = calls
    with torch.no_grad():  # the last queue frame, as video testing would read it before frame 4
        q = video.data_preprocessor(dict(inputs=dict(img=[qimgs[1]]), data_samples=[qframes[1]]))
        level = video.extract_feat(q["inputs"], [qframes[1].metainfo])[-1]
    torch.testing.assert_close(
        past_q.fine, level.flatten(0, 1).flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5
    )
    assert present_q.fine.requires_grad and present_q.fine.shape == present.fine.shape
    assert 0 < float(losses["loss_match"]) < float("inf")
    total, _ = trainee.parse_losses(losses)
    total.backward()
    grad = trainee.bbox_head.transformer.decoder.layers[-1].history_match.key_proj.weight.grad
    assert grad.shape[1] == 16 and grad.abs().sum() > 0


def test_the_fine_level_is_named_where_the_detector_and_the_search_disagree(nuscenes_rig):
    cfg = _fine_cfg()
    with pytest.raises(ValueError, match="set both or neither"):
        _build(dict(cfg, fine_level=False))
    with pytest.raises(ValueError, match="set both or neither"):
        _build(dict(_match_cfg(), fine_level=True))
    model = _build(cfg)
    feats = [torch.zeros(1, 6, 32, 8, 14), torch.zeros(1, 6, 32, 4, 7)]
    with pytest.raises(ValueError, match="the fine level after them"):
        model.bbox_head.encode_bev(feats, [])
