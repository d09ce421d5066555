"""Known answers for the BEV encoder's attentions on the real nuScenes rig: spatial cross-attention
(pillars into the cameras, visible pairs only) and temporal self-attention (history + current)."""

from __future__ import annotations

import pytest
import torch

from bev_deform.geometry import BEVGrid, CameraGeometry, FeatureLevels
from bev_deform.models.attention import (
    SpatialCrossAttention,
    TemporalSelfAttention,
    VisiblePairs,
    project_pillars,
)

PC_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
IMG_HW, PAD_HW = (90, 160), (96, 160)  # the rig at 1/10 scale, padded to a multiple of 32
SHAPES = [(12, 20), (6, 10)]  # strides 8 and 16 of the padded image
EMBED, HEADS = 8, 2


def _cams(rig_factory, num_batch: int = 1, dtype=torch.float64) -> CameraGeometry:
    l2i = torch.from_numpy(rig_factory((IMG_HW[1], IMG_HW[0])).lidar2img()).to(dtype)  # (6, 4, 4)
    return CameraGeometry(
        lidar2img=l2i[None].expand(num_batch, -1, -1, -1),
        img_hw=torch.tensor(IMG_HW, dtype=dtype).expand(num_batch, 6, 2),
        pad_hw=PAD_HW,
    )


def _grid_around(point, num_cells: int = 3, cell: float = 2.0, half_height: float = 2.0) -> BEVGrid:
    """A small grid whose centre cell is centred on ``point`` (x, y) with ``point``'s z in the
    middle of its z range (so the middle of 3 anchors, or the only anchor, lies on the point)."""
    x, y, z = (float(v) for v in point)
    r = num_cells * cell / 2
    return BEVGrid(num_cells, num_cells, (x - r, y - r, z - half_height, x + r, y + r, z + half_height))


def _sca(num_levels: int, num_points: int, anchors: int, dense: bool = False) -> SpatialCrossAttention:
    return SpatialCrossAttention(
        embed_dims=EMBED, num_heads=HEADS, num_levels=num_levels, num_points=num_points,
        num_points_in_pillar=anchors, dropout=0.0, dense=dense,
    )  # fmt: skip


def _coordinate_value(shapes, num_cams: int) -> torch.Tensor:
    """(num_cams, S, C) value whose channels (0, 1) of every head hold the normalised (x, y) of
    the cell centre: bilinear sampling at location (u, v) returns (u, v) exactly."""
    levels = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(h, dtype=torch.float64) + 0.5) / h,
            (torch.arange(w, dtype=torch.float64) + 0.5) / w,
            indexing="ij",
        )
        feat = torch.zeros(h * w, HEADS, EMBED // HEADS, dtype=torch.float64)
        feat[..., 0], feat[..., 1] = xs.flatten()[:, None], ys.flatten()[:, None]
        levels.append(feat.flatten(1))  # (H*W, M, D) -> (H*W, C)
    return torch.cat(levels)[None].repeat(num_cams, 1, 1)  # (N, S, C)


def _make_exact(linears, offsets: torch.nn.Linear) -> None:
    """Identity projections and zero offsets: every point samples exactly at its reference."""
    with torch.no_grad():
        for lin in linears:
            lin.weight.copy_(torch.eye(EMBED))
            lin.bias.zero_()
        offsets.weight.zero_()
        offsets.bias.zero_()


@pytest.mark.parametrize(("cam", "name"), [(0, "CAM_FRONT"), (3, "CAM_BACK")])
def test_pillar_on_a_cameras_optical_axis_samples_its_principal_point_in_that_camera_only(
    nuscenes_rig, cam, name
):
    """A cell 10 m along CAM_FRONT's axis (ahead) or CAM_BACK's (behind the ego), its middle anchor
    on the axis: only that camera sees the pillar, the anchor projects to (cx, cy), and with zero
    offsets its points sit on the principal point of every level."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    _, _, cx, cy = rig.intrinsics(cam)
    axis_point = rig.cam_point_in_lidar(cam, [0.0, 0.0, 10.0])
    assert (axis_point[1] > 9) if cam == 0 else (axis_point[1] < -9)  # LIDAR_TOP: +y forward
    grid = _grid_around(axis_point)
    pillars = project_pillars(grid, 3, _cams(nuscenes_rig))
    centre = grid.cell_index(torch.tensor(axis_point[:2])).item()
    assert centre == 4
    expected = [False] * 6
    expected[cam] = True
    assert pillars.valid[0, :, centre].tolist() == expected, name
    principal = torch.tensor([cx, cy], dtype=torch.float64)
    assert torch.allclose(pillars.ref_pixels[0, cam, centre, 1], principal, atol=1e-9)

    attn = _sca(num_levels=2, num_points=6, anchors=3).double()
    with torch.no_grad():
        attn.deformable_attention.sampling_offsets.bias.zero_()
    levels = FeatureLevels.from_shapes(SHAPES, PAD_HW)
    pts = attn.sampling_points(torch.randn(1, 9, EMBED, dtype=torch.float64), pillars, levels)
    loc = attn.deformable_attention.locations(
        pillars.ref_pixels[:, cam], pillars.anchor_valid[:, cam], pts.offsets, levels
    )  # (1, Q, M, L, P, 2)
    # point p belongs to anchor p % 3: points 1 and 4 of every head and level are the middle anchor's
    on_axis = loc[0, centre, :, :, 1::3]  # (M, L, 2, 2)
    per_level = levels.pixels_to_locations(principal)  # (L, 2)
    assert torch.allclose(on_axis, per_level[None, :, None].expand_as(on_axis), atol=1e-9)


def test_pillar_on_the_optical_axis_reads_the_principal_point_from_the_features(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    _, _, cx, cy = rig.intrinsics(0)
    grid = _grid_around(rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0]))
    levels = FeatureLevels.from_shapes(SHAPES[:1], PAD_HW)  # stride 8, exactly the padded image
    attn = _sca(num_levels=1, num_points=2, anchors=1).double()
    _make_exact(
        [attn.deformable_attention.value_proj, attn.output_proj], attn.deformable_attention.sampling_offsets
    )
    pillars = project_pillars(grid, 1, _cams(nuscenes_rig))
    out = attn(
        torch.zeros(1, 9, EMBED, dtype=torch.float64), _coordinate_value(SHAPES[:1], 6), pillars, levels
    )
    expected = torch.zeros(HEADS, EMBED // HEADS, dtype=torch.float64)
    expected[:, :2] = torch.tensor([cx / PAD_HW[1], cy / PAD_HW[0]])
    assert torch.allclose(out[0, 4].view(HEADS, -1), expected, atol=1e-9)


def test_cells_no_camera_sees_return_their_residual_exactly(nuscenes_rig):
    """On BEVFormer-tiny's 50x50 grid the cells around the ego (under and between the cameras) are
    seen by no camera: they get exactly their input back (no output bias, no NaN), gradients stay
    finite, and every other cell changes."""
    grid = BEVGrid(50, 50, PC_RANGE)
    pillars = project_pillars(grid, 4, _cams(nuscenes_rig, dtype=torch.float32))
    unseen = ~pillars.valid[0].any(0)  # (Q,)
    ego = grid.cell_index(torch.zeros(2)).item()
    assert unseen[ego] and 0 < int(unseen.sum()) < 20
    torch.manual_seed(0)
    attn = _sca(num_levels=2, num_points=8, anchors=4)
    levels = FeatureLevels.from_shapes(SHAPES, PAD_HW)
    query = torch.randn(1, grid.num_cells, EMBED, requires_grad=True)
    value = torch.randn(6, levels.num_values, EMBED, requires_grad=True)
    out = attn(query, value, pillars, levels)
    assert torch.equal(out[0, unseen], query[0, unseen])
    assert not torch.isclose(out[0, ~unseen], query[0, ~unseen]).all(-1).any()
    out.square().sum().backward()
    assert torch.isfinite(query.grad).all() and torch.isfinite(value.grad).all()


def _two_rigs(nuscenes_rig) -> CameraGeometry:
    """Batch 2: the rig, and the rig turned by 0.7 rad (other cameras see each cell)."""
    l2i = torch.from_numpy(nuscenes_rig((IMG_HW[1], IMG_HW[0])).lidar2img()).float()  # (6, 4, 4)
    yaw = torch.tensor(0.7)
    rot = torch.eye(4)
    rot[:2, :2] = torch.tensor([[yaw.cos(), -yaw.sin()], [yaw.sin(), yaw.cos()]])
    return CameraGeometry(
        torch.stack([l2i, l2i @ rot]), torch.tensor(IMG_HW, dtype=torch.float32).expand(2, 6, 2), PAD_HW
    )


def test_visible_pair_sca_equals_the_dense_computation_for_a_batch_with_different_cameras(nuscenes_rig):
    """Batch 2 with a different rig pose per sample, so each sample's cameras see other cells
    (BEVFormer's SCA takes its indexes from sample 0 for every sample: BEVFormer#90, #123): the
    visible-pair path equals sampling every pair and masking, in outputs and in the gradients of
    the query, the value and every parameter (fp32, 1e-5); each sample equals itself run alone."""
    cams = _two_rigs(nuscenes_rig)
    grid = BEVGrid(13, 13, PC_RANGE)  # odd: the centre cell, at the ego, is seen by no camera
    pillars = project_pillars(grid, 4, cams)
    assert not torch.equal(pillars.valid[0], pillars.valid[1])
    assert {0, 1, 2} <= set(pillars.valid.sum(1).flatten().tolist())
    assert (pillars.anchor_valid.any(-1) & ~pillars.anchor_valid.all(-1)).any()  # partly seen pillars
    levels = FeatureLevels.from_shapes(SHAPES, PAD_HW)
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(2, grid.num_cells, EMBED, generator=gen)
    value = torch.randn(12, levels.num_values, EMBED, generator=gen)
    padding = levels.padding_mask(cams.img_hw.flatten(0, 1))
    results = {}
    for dense in (True, False):
        torch.manual_seed(0)
        attn = _sca(num_levels=2, num_points=8, anchors=4, dense=dense)
        with torch.no_grad():
            attn.deformable_attention.sampling_offsets.bias.mul_(2.0)  # some samples leave the image
        q, v = query.clone().requires_grad_(), value.clone().requires_grad_()
        out = attn(q, v, pillars, levels, key_padding_mask=padding)
        (out * torch.linspace(-1, 1, EMBED)).square().sum().backward()
        grads = {name: prm.grad.clone() for name, prm in attn.named_parameters()}
        results[dense] = (out.detach(), q.grad, v.grad, grads)
        if not dense:
            alone = [
                attn(
                    query[i : i + 1],
                    value[6 * i : 6 * i + 6],
                    project_pillars(
                        grid, 4, CameraGeometry(cams.lidar2img[i : i + 1], cams.img_hw[:1], PAD_HW)
                    ),
                    levels,
                    key_padding_mask=padding[:6],
                ).detach()
                for i in range(2)
            ]
    (out_d, gq_d, gv_d, gp_d), (out_s, gq_s, gv_s, gp_s) = results[True], results[False]
    torch.testing.assert_close(out_s, out_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gq_s, gq_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gv_s, gv_d, atol=1e-5, rtol=1e-5)
    for name in gp_d:
        torch.testing.assert_close(gp_s[name], gp_d[name], atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(out_s, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_visible_pairs_sample_under_a_quarter_of_the_dense_pairs_on_the_nuscenes_rig(nuscenes_rig):
    """The measured saving on BEVFormer-tiny's 50x50 grid with 4 anchors: 2802 visible (cell, camera)
    pairs of 15000 (most pillars are seen by one camera, 307 by two, 5 by none); padded to the
    busiest camera's 590 cells, 3540 slots are sampled, 24% of the dense computation."""
    pillars = project_pillars(BEVGrid(50, 50, PC_RANGE), 4, _cams(nuscenes_rig, dtype=torch.float32))
    pairs = VisiblePairs.from_valid(pillars.valid)
    assert torch.bincount(pillars.valid.sum(1).flatten()).tolist() == [5, 2188, 307]
    assert int(pillars.valid.sum()) == 2802 and pairs.num_slots == 590
    assert pairs.num_slots * 6 < 0.25 * 6 * 2500


def test_each_camera_is_normalised_by_its_own_image(nuscenes_rig):
    """CAM_BACK at half resolution in the same batch (its own lidar2img and img_shape): its axis
    anchor lands on its own principal point and on the same place of every padded level; BEVFormer
    divides every camera's pixels by the first image's shape instead."""
    full = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    half = nuscenes_rig((IMG_HW[1] // 2, IMG_HW[0] // 2))
    l2i = torch.from_numpy(full.lidar2img())
    l2i[3] = torch.from_numpy(half.lidar2img()[3])
    img_hw = torch.tensor(IMG_HW, dtype=torch.float64).expand(6, 2).clone()
    img_hw[3] = torch.tensor([IMG_HW[0] // 2, IMG_HW[1] // 2])
    cams = CameraGeometry(l2i[None], img_hw[None], PAD_HW)
    grid = _grid_around(half.cam_point_in_lidar(3, [0.0, 0.0, 10.0]))
    pillars = project_pillars(grid, 3, cams)
    _, _, cx, cy = half.intrinsics(3)
    assert pillars.valid[0, :, 4].tolist() == [False, False, False, True, False, False]
    principal = torch.tensor([cx, cy], dtype=torch.float64)
    assert torch.allclose(pillars.ref_pixels[0, 3, 4, 1], principal, atol=1e-9)
    assert cx < IMG_HW[1] / 2 and cy < IMG_HW[0] / 2  # inside the half-size image
    # its sampling locations are normalised by each padded level's extent (160 x 96 here, the
    # maps its features sit in), not by the first image's 160 x 90 as BEVFormer does, which puts
    # every point 96 / 90 too low in the feature map
    attn = _sca(num_levels=2, num_points=3, anchors=3).double()
    with torch.no_grad():
        attn.deformable_attention.sampling_offsets.bias.zero_()
    levels = FeatureLevels.from_shapes(SHAPES, PAD_HW)
    pts = attn.sampling_points(torch.zeros(1, 9, EMBED, dtype=torch.float64), pillars, levels)
    loc = attn.deformable_attention.locations(
        pillars.ref_pixels[:, 3], pillars.anchor_valid[:, 3], pts.offsets, levels
    )[0, 4, :, :, 1]  # (M, L, 2): the middle anchor's point of every head and level
    expected = torch.tensor([cx / PAD_HW[1], cy / PAD_HW[0]], dtype=torch.float64)
    assert torch.allclose(loc, expected.expand_as(loc), atol=1e-9)
    bevformer = principal / torch.tensor([IMG_HW[1], IMG_HW[0]], dtype=torch.float64)  # first image's shape
    assert not torch.allclose(expected, bevformer, atol=1e-3)


def test_sca_bad_inputs_raise_value_errors(nuscenes_rig):
    with pytest.raises(ValueError, match="num_points must be a multiple of num_points_in_pillar=4"):
        _sca(num_levels=1, num_points=6, anchors=4)
    attn = _sca(num_levels=2, num_points=8, anchors=4).double()
    grid = BEVGrid(4, 4, PC_RANGE)
    levels = FeatureLevels.from_shapes(SHAPES, PAD_HW)
    pillars = project_pillars(grid, 4, _cams(nuscenes_rig))
    query = torch.zeros(1, 16, EMBED, dtype=torch.float64)
    value = torch.zeros(6, levels.num_values, EMBED, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"pillars must be projected for \(B=1, N, Q=15, D=4\)"):
        attn(query[:, :15], value, pillars, levels)
    with pytest.raises(ValueError, match=r"value must be \(B\*N=6, S, C=8\)"):
        attn(query, value[:3], pillars, levels)
    with pytest.raises(ValueError, match="levels must have L=2 levels"):
        attn(query, value[:, :240], pillars, FeatureLevels.from_shapes(SHAPES[:1], PAD_HW))


# ---------------------------------------------------------------- temporal self-attention


def _tsa(num_points: int = 2) -> TemporalSelfAttention:
    return TemporalSelfAttention(embed_dims=EMBED, num_heads=HEADS, num_points=num_points, dropout=0.0)


def _bev_coordinates(grid: BEVGrid, batch: int = 1) -> torch.Tensor:
    """(B, H*W, C) BEV whose channels (0, 1) of every head hold the cell's normalised (u, v)."""
    bev = torch.zeros(batch, grid.num_cells, HEADS, EMBED // HEADS, dtype=torch.float64)
    bev[..., :2] = grid.cell_locations(dtype=torch.float64)[None, :, None]
    return bev.flatten(2)


def test_tsa_has_bevformers_two_queue_layers():
    """Offsets and weights from [history, query] (2C inputs) for 2 queues, as in BEVFormer's
    state dict; the queues act as levels of the rotational offset initialisation."""
    tsa = TemporalSelfAttention(embed_dims=256, num_heads=8, num_points=4)
    assert tuple(tsa.sampling_offsets.weight.shape) == (8 * 2 * 1 * 4 * 2, 512)
    assert tuple(tsa.attention_weights.weight.shape) == (8 * 2 * 1 * 4, 512)
    bias = tsa.sampling_offsets.bias.view(8, 2, 1, 4, 2)  # (M, T, L, P, 2)
    assert torch.equal(bias[:, 0], bias[:, 1]) and torch.allclose(bias[0, 0, 0, :, 0], torch.arange(1.0, 5.0))


def test_tsa_without_history_reads_the_current_bev_in_both_queues():
    """Identity projections, zero offsets, a BEV holding its own coordinates: every cell reads its
    own (u, v) from both queues. A zero history halves it (the queues are averaged); a history
    sampled one cell to the right reads the neighbour's (u, v) (each queue has its own points)."""
    grid = BEVGrid(5, 7, PC_RANGE)
    tsa = _tsa().double()
    _make_exact([tsa.value_proj, tsa.output_proj], tsa.sampling_offsets)
    bev = _bev_coordinates(grid)
    ref = grid.cell_locations(dtype=torch.float64)[None]  # (1, Q, 2)
    levels = grid.levels()
    own = bev.view(1, -1, HEADS, EMBED // HEADS)[..., :2]  # (1, Q, M, 2)

    def read(out):
        return (out - bev).view(1, -1, HEADS, EMBED // HEADS)[..., :2]  # what the attention added

    assert torch.allclose(read(tsa(bev, ref, levels)), own, atol=1e-12)
    assert torch.allclose(read(tsa(bev, ref, levels, history=torch.zeros_like(bev))), own / 2, atol=1e-12)
    shifted = ref + torch.tensor([1.0 / 7, 0.0], dtype=torch.float64)
    out = tsa(bev, ref, levels, history=bev, history_ref=shifted)
    right = own.view(5, 7, HEADS, 2)[:, 1:]  # the right neighbour of columns 0..5
    got = read(out).view(5, 7, HEADS, 2)[:, :-1]
    assert torch.allclose(got, (own.view(5, 7, HEADS, 2)[:, :-1] + right) / 2, atol=1e-12)


def test_tsa_pairs_each_sample_with_its_own_history():
    """Batch 2 with different histories equals each sample alone (BEVFormer's TSA concatenates
    ``value[:bs]``, the first sample's two queues, for a batch of two)."""
    torch.manual_seed(0)
    grid = BEVGrid(6, 6, PC_RANGE)
    tsa = _tsa(num_points=4)
    with torch.no_grad():
        tsa.sampling_offsets.weight.normal_(0.0, 0.3)
        tsa.attention_weights.weight.normal_(0.0, 0.3)
    query, history, pos = (torch.randn(2, 36, EMBED) for _ in range(3))
    ref = grid.cell_locations()[None].expand(2, -1, -1)
    levels = grid.levels()
    both = tsa(query, ref, levels, query_pos=pos, history=history)
    for i in range(2):
        s = slice(i, i + 1)
        alone = tsa(query[s], ref[s], levels, query_pos=pos[s], history=history[s])
        torch.testing.assert_close(both[s], alone, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(both, tsa(query, ref, levels, query_pos=pos))  # the history matters


def test_tsa_bad_inputs_raise_value_errors():
    grid = BEVGrid(3, 3, PC_RANGE)
    tsa = _tsa()
    query, ref = torch.zeros(1, 9, EMBED), grid.cell_locations()[None]
    with pytest.raises(ValueError, match="bev_levels must be one level of Q = 9 cells"):
        tsa(query, ref, BEVGrid(3, 4, PC_RANGE).levels())
    with pytest.raises(ValueError, match=r"history must be \(B, Q, C\)"):
        tsa(query, ref, grid.levels(), history=torch.zeros(1, 8, EMBED))
    with pytest.raises(ValueError, match=r"ref_2d must be \(B, Q, 2\)"):
        tsa(query, ref[:, :4], grid.levels())
