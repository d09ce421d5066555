"""Known answers for the multi-view 3D deformable attention, on the real nuScenes rig."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from bev_deform.geometry import (
    CameraGeometry,
    FeatureLevels,
    denormalize_points,
    normalize_points,
    project_points,
)
from bev_deform.models.attention import MultiViewDeformableAttention3D
from bev_deform.models.attention.multiview_deform_attn_3d import OPTIONS
from bev_deform.registry import MODELS
from bev_deform.visualization import SamplingRecorder

PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
IMG_HW, PAD_HW = (90, 160), (96, 160)  # the rig at 1/10 scale, padded to a multiple of 32
SHAPES = torch.tensor([[12, 20], [6, 10]])  # strides 8 and 16 of the padded image
EMBED, HEADS, POINTS = 8, 2, 2


def _attn(**options) -> MultiViewDeformableAttention3D:
    cfg = dict(type="MultiViewDeformableAttention3D", embed_dims=EMBED, num_heads=HEADS, num_levels=2)
    return MODELS.build(dict(dict(cfg, num_points=POINTS, pc_range=PC_RANGE), **options)).double().eval()


def _levels() -> FeatureLevels:
    return FeatureLevels.from_shapes(SHAPES.tolist(), PAD_HW)


def _cams(rig, num_batch: int = 1) -> CameraGeometry:
    l2i = torch.from_numpy(rig((IMG_HW[1], IMG_HW[0])).lidar2img())  # (6, 4, 4)
    return CameraGeometry(
        lidar2img=l2i[None].expand(num_batch, -1, -1, -1),  # (B, 6, 4, 4)
        img_hw=torch.tensor(IMG_HW, dtype=torch.float64).expand(num_batch, 6, 2),
        pad_hw=PAD_HW,
    )


def _ref(points_lidar) -> torch.Tensor:
    """(Q, 3) metric LIDAR_TOP points -> (1, Q, 3) normalised in PC_RANGE."""
    return normalize_points(torch.as_tensor(points_lidar, dtype=torch.float64), PC_RANGE)[None]


def _coordinate_value(num_cams: int) -> torch.Tensor:
    """(num_cams, S, C) value whose channels (0, 1) of every head hold the normalised (x, y) of
    the pixel centre: bilinear sampling at location (u, v) then returns (u, v) exactly."""
    levels = []
    for h, w in SHAPES.tolist():
        ys, xs = torch.meshgrid(
            (torch.arange(h, dtype=torch.float64) + 0.5) / h,
            (torch.arange(w, dtype=torch.float64) + 0.5) / w,
            indexing="ij",
        )
        feat = torch.zeros(h * w, HEADS, EMBED // HEADS, dtype=torch.float64)
        feat[..., 0], feat[..., 1] = xs.flatten()[:, None], ys.flatten()[:, None]
        levels.append(feat.flatten(1))  # (H*W, M, D) -> (H*W, C)
    return torch.cat(levels)[None].repeat(num_cams, 1, 1)  # (N, S, C)


def _make_exact(attn: MultiViewDeformableAttention3D) -> None:
    """Identity projections and zero offsets: each head samples exactly at the projected point."""
    with torch.no_grad():
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(EMBED))
            lin.bias.zero_()
        attn.sampling_offsets.bias.zero_()


def test_optical_axis_query_samples_the_principal_point(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    _, _, cx, cy = rig.intrinsics(0)
    ref = _ref([rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0])])  # 10 m along CAM_FRONT's axis
    attn, cams = _attn(), _cams(nuscenes_rig)
    pts = attn.sampling_points(torch.zeros(1, 1, EMBED, dtype=torch.float64), ref, cams, _levels())

    assert pts.valid[0, :, 0].tolist() == [True, False, False, False, False, False]
    assert torch.allclose(pts.ref_pixels[0, 0, 0], torch.tensor([cx, cy], dtype=torch.float64), atol=1e-9)
    # these levels are exactly pad / stride, so normalising per level = normalising by the padding
    principal = torch.tensor([cx / PAD_HW[1], cy / PAD_HW[0]], dtype=torch.float64)
    # Deformable DETR init: points on a ring around the projection, p + 1 feature pixels away
    # along each head's direction (heads 0 and 1 look along +x and -x), centred on it
    loc = pts.locations[0, 0, 0]  # (M, L, P, 2)
    assert torch.allclose(loc.mean(dim=(0, 2)), principal.expand(2, 2), atol=1e-6)  # fp32 sin(pi)
    for lvl, (_, w) in enumerate(SHAPES.tolist()):
        dx_pixels = (loc[0, lvl, :, 0] - principal[0]) * w
        assert dx_pixels.tolist() == pytest.approx([1.0, 2.0])
    assert torch.allclose(pts.weights, torch.full_like(pts.weights, 1.0 / 4))  # uniform over L*P


def test_optical_axis_query_reads_the_principal_point_from_the_features(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    _, _, cx, cy = rig.intrinsics(0)
    attn = _attn()
    _make_exact(attn)
    ref = _ref([rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0])])
    out = attn(
        torch.zeros(1, 1, EMBED, dtype=torch.float64),
        _coordinate_value(6),
        ref,
        _levels(),
        _cams(nuscenes_rig),
    )
    expected = torch.zeros(EMBED, dtype=torch.float64)
    for h in range(HEADS):
        expected[h * EMBED // HEADS : h * EMBED // HEADS + 2] = torch.tensor([cx / PAD_HW[1], cy / PAD_HW[0]])
    assert torch.allclose(out[0, 0], expected, atol=1e-9)


@pytest.mark.parametrize("project_values", ["samples", "cells"])
def test_without_value_proj_each_head_reads_its_own_channels_of_the_features(nuscenes_rig, project_values):
    """``use_value_proj=False``: no ``value_proj`` in the module or its state dict, and with an
    identity ``output_proj`` and zero offsets an optical-axis query reads the principal point's
    (u, v) from channels 0, 1 of every head of the raw features, whatever ``project_values`` says;
    a value projection that mixes the channels (the default module, same weights otherwise)
    reads something else."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    _, _, cx, cy = rig.intrinsics(0)
    attn = _attn(use_value_proj=False, project_values=project_values)
    assert attn.value_proj is None
    assert not any(key.startswith("value_proj") for key in attn.state_dict())
    with torch.no_grad():
        attn.output_proj.weight.copy_(torch.eye(EMBED))
        attn.output_proj.bias.zero_()
        attn.sampling_offsets.bias.zero_()
    inputs = (torch.zeros(1, 1, EMBED, dtype=torch.float64), _coordinate_value(6))
    ref = _ref([rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0])])
    out = attn(*inputs, ref, _levels(), _cams(nuscenes_rig))
    expected = torch.zeros(EMBED, dtype=torch.float64)
    for h in range(HEADS):
        expected[h * EMBED // HEADS : h * EMBED // HEADS + 2] = torch.tensor([cx / PAD_HW[1], cy / PAD_HW[0]])
    torch.testing.assert_close(out[0, 0], expected, atol=1e-9, rtol=1e-6)  # as the default module reads it

    projected = _attn(project_values=project_values)
    projected.load_state_dict(attn.state_dict(), strict=False)  # all but value_proj
    assert not torch.allclose(projected(*inputs, ref, _levels(), _cams(nuscenes_rig)), out, atol=1e-3)


def test_cameras_that_see_a_point_are_averaged_not_summed(nuscenes_rig):
    """CAM_FRONT duplicated as a second camera with the same features gives the same output."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    attn = _attn()
    torch.manual_seed(0)
    ref = _ref([rig.cam_point_in_lidar(0, [1.0, 0.5, 12.0])])
    query = torch.randn(1, 1, EMBED, dtype=torch.float64)
    value = torch.randn(1, int(SHAPES.prod(1).sum()), EMBED, dtype=torch.float64)
    cams = _cams(nuscenes_rig)
    one = CameraGeometry(cams.lidar2img[:, :1], cams.img_hw[:, :1], PAD_HW)
    two = CameraGeometry(cams.lidar2img[:, [0, 0]], cams.img_hw[:, :2], PAD_HW)
    out_one = attn(query, value, ref, _levels(), one)
    out_two = attn(query, value.repeat(2, 1, 1), ref, _levels(), two)
    assert not torch.allclose(out_one, query)
    assert torch.allclose(out_one, out_two, atol=1e-12)


def test_query_seen_by_no_camera_returns_its_input_and_gradients_stay_finite(nuscenes_rig):
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    seen = rig.cam_point_in_lidar(0, [0.5, -0.2, 8.0])
    above = [0.0, 0.0, 2.9]  # just above the lidar: behind every camera or far outside its image
    ref = _ref([seen, above])
    cams = _cams(nuscenes_rig)
    _, valid, _ = project_points(torch.tensor([seen, above])[None], cams.lidar2img, cams.img_hw)
    assert valid[0, :, 0].any() and not valid[0, :, 1].any()

    torch.manual_seed(0)
    attn = _attn()
    query = torch.randn(1, 2, EMBED, dtype=torch.float64, requires_grad=True)
    value = torch.randn(6, int(SHAPES.prod(1).sum()), EMBED, dtype=torch.float64, requires_grad=True)
    out = attn(query, value, ref, _levels(), cams)
    assert torch.equal(out[0, 1], query[0, 1])  # identity only: no output bias, no NaN
    assert not torch.allclose(out[0, 0], query[0, 0])
    out.square().sum().backward()
    assert torch.isfinite(query.grad).all() and torch.isfinite(value.grad).all()
    for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
        grad = getattr(attn, name).weight.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_batch_that_no_camera_sees_is_returned_unchanged(nuscenes_rig):
    attn = _attn()
    ref = _ref([[0.0, 0.0, 2.9], [0.0, 0.0, 2.95]])
    query = torch.randn(1, 2, EMBED, dtype=torch.float64)
    value = torch.randn(6, int(SHAPES.prod(1).sum()), EMBED, dtype=torch.float64)
    out = attn(query, value, ref, _levels(), _cams(nuscenes_rig))
    assert torch.equal(out, query)


def test_bad_shapes_raise_value_errors_naming_the_argument(nuscenes_rig):
    attn, cams = _attn(), _cams(nuscenes_rig)
    query = torch.zeros(1, 3, EMBED, dtype=torch.float64)
    value = torch.zeros(6, int(SHAPES.prod(1).sum()), EMBED, dtype=torch.float64)
    ref = torch.zeros(1, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"value must be \(B\*N=6"):
        attn(query, value[:2], ref, _levels(), cams)
    with pytest.raises(ValueError, match="ref_points must be"):
        attn(query, value, ref[..., :2], _levels(), cams)
    with pytest.raises(ValueError, match="levels must have L=2 levels"):
        attn(query, value, ref, FeatureLevels.from_shapes(SHAPES[:1].tolist(), PAD_HW), cams)
    with pytest.raises(ValueError, match=r"value must have S=300 \(sum of H_l \* W_l"):
        attn(query, value[:, :-1], ref, _levels(), cams)
    with pytest.raises(ValueError, match="pc_range must be"):
        MultiViewDeformableAttention3D(embed_dims=8, num_heads=2, pc_range=[0, 1])
    with pytest.raises(ValueError, match="embed_dims must be divisible by num_heads=3"):
        MultiViewDeformableAttention3D(embed_dims=8, num_heads=3, pc_range=PC_RANGE)


def test_camera_geometry_from_metas_reads_shared_and_per_camera_image_shapes(nuscenes_rig):
    l2i = nuscenes_rig((IMG_HW[1], IMG_HW[0])).lidar2img()
    metas = [
        dict(lidar2img=list(l2i), img_shape=(90, 160), batch_input_shape=PAD_HW),
        dict(lidar2img=l2i, img_shape=[(90, 160, 3)] * 3 + [(80, 150, 3)] * 3, batch_input_shape=PAD_HW),
    ]
    cams = CameraGeometry.from_metas(metas, "cpu")
    assert cams.lidar2img.shape == (2, 6, 4, 4) and cams.lidar2img.dtype == torch.float32
    assert cams.img_hw[0].tolist() == [[90.0, 160.0]] * 6
    assert cams.img_hw[1, 5].tolist() == [80.0, 150.0] and cams.pad_hw == PAD_HW
    with pytest.raises(ValueError, match="batch_input_metas need 'batch_input_shape'"):
        CameraGeometry.from_metas([dict(lidar2img=l2i, img_shape=(90, 160))], "cpu")


def _pixel_value(levels: FeatureLevels, num_cams: int, heads: int, embed: int) -> torch.Tensor:
    """(num_cams, S, C) value whose channels (0, 1) of every head hold the image pixel (u, v) of
    the centre of their cell, ((i + 0.5) s, (j + 0.5) s), on every level."""
    feats = []
    for (h, w), s in zip(levels.shapes, levels.strides):
        ys, xs = torch.meshgrid(
            (torch.arange(h, dtype=torch.float64) + 0.5) * s,
            (torch.arange(w, dtype=torch.float64) + 0.5) * s,
            indexing="ij",
        )
        feat = torch.zeros(h * w, heads, embed // heads, dtype=torch.float64)
        feat[..., 0], feat[..., 1] = xs.flatten()[:, None], ys.flatten()[:, None]
        feats.append(feat.flatten(1))  # (H*W, M, D) -> (H*W, C)
    return torch.cat(feats)[None].repeat(num_cams, 1, 1)  # (N, S, C)


def _four_level_attn(level: int, **options) -> MultiViewDeformableAttention3D:
    """Exact 4-level attention (identity projections, zero offsets) whose softmax picks one level
    (with ``attention_fn='sigmoid'`` the chosen level gets weight sigmoid(0) = 0.5)."""
    cfg = dict(type="MultiViewDeformableAttention3D", embed_dims=EMBED, num_heads=HEADS, num_levels=4)
    attn = MODELS.build(dict(dict(cfg, num_points=1, pc_range=PC_RANGE), **options)).double().eval()
    _make_exact(attn)
    with torch.no_grad():
        bias = torch.full((HEADS, 4, 1), -1e4, dtype=torch.float64)  # (M, L, P): exp(-1e4) == 0
        bias[:, level] = 0.0
        attn.attention_weights.bias.copy_(bias.flatten())
    return attn


# (H, W) inputs padded to a multiple of 32, and their stride 8/16/32/64 levels as the FPN makes them
# (ceil(pad / s) cells): the stride-64 level covers more than the padded image (832 or 960 px)
LEVEL_CASES = {
    (448, 800): ((448, 800), [(56, 100), (28, 50), (14, 25), (7, 13)]),
    (900, 1600): ((928, 1600), [(116, 200), (58, 100), (29, 50), (15, 25)]),
}


@pytest.mark.parametrize("img_hw", list(LEVEL_CASES))
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_every_level_reads_back_the_projected_pixel(nuscenes_rig, img_hw, level):
    """Feature maps that hold their own pixel coordinates return the projected point exactly at
    every level, including the stride-64 level whose cells do not tile the padded image."""
    pad_hw, shapes = LEVEL_CASES[img_hw]
    levels = FeatureLevels.from_shapes(shapes, pad_hw)
    assert levels.strides == (8, 16, 32, 64)
    rig = nuscenes_rig((img_hw[1], img_hw[0]))
    fx, fy, cx, cy = rig.intrinsics(0)
    h, w = img_hw
    # pixels well inside the image (>= 1.5 stride-64 cells from any edge), seen by CAM_FRONT only
    targets = [(cx, cy), (0.15 * w, 0.25 * h), (0.85 * w, 0.7 * h), (0.3 * w, 0.75 * h)]
    depth = 12.0
    cam_pts = [[(u - cx) / fx * depth, (v - cy) / fy * depth, depth] for u, v in targets]
    ref = _ref([rig.cam_point_in_lidar(0, p) for p in cam_pts])
    l2i = torch.from_numpy(rig.lidar2img())
    cams = CameraGeometry(l2i[None], torch.tensor(img_hw, dtype=torch.float64).expand(1, 6, 2), pad_hw)
    attn = _four_level_attn(level)
    value = _pixel_value(levels, 6, HEADS, EMBED)
    out = attn(torch.zeros(1, len(targets), EMBED, dtype=torch.float64), value, ref, levels, cams)
    got = out[0].view(len(targets), HEADS, EMBED // HEADS)[..., :2]  # (Q, M, 2) read-back pixels
    expected = torch.tensor(targets, dtype=torch.float64)[:, None].expand_as(got)
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()


def test_samples_in_the_padding_read_zeros_not_the_padded_features(nuscenes_rig):
    """A 900x1600 image padded to 928: the stride-64 level's last row (centre 928 px) is padding.
    A point at v = 896 px lies halfway between the centres of row 13 (864 px) and row 14, so on a
    map of ones whose padding cells hold 1e6 it reads 0.5: the padding counts as zero."""
    img_hw, (pad_hw, shapes) = (900, 1600), LEVEL_CASES[(900, 1600)]
    levels = FeatureLevels.from_shapes(shapes, pad_hw)
    rig = nuscenes_rig((img_hw[1], img_hw[0]))
    fx, fy, cx, cy = rig.intrinsics(0)
    u, v, depth = 800.0, 896.0, 20.0
    ref = _ref([rig.cam_point_in_lidar(0, [(u - cx) / fx * depth, (v - cy) / fy * depth, depth])])
    l2i = torch.from_numpy(rig.lidar2img())
    img = torch.tensor(img_hw, dtype=torch.float64).expand(1, 6, 2)
    cams = CameraGeometry(l2i[None], img, pad_hw)
    padding = levels.padding_mask(img[0])  # (6, S)
    value = torch.where(padding[..., None], 1e6, 1.0).expand(6, -1, EMBED).to(torch.float64)
    attn = _four_level_attn(3)
    out = attn(torch.zeros(1, 1, EMBED, dtype=torch.float64), value.contiguous(), ref, levels, cams)
    assert torch.allclose(out[0, 0], torch.full((EMBED,), 0.5, dtype=torch.float64), atol=1e-9)


DETR3D = dict(sampling="projection", num_points=1, attention_fn="sigmoid", camera_fusion="sum")
# each option of issue 12 alone, DETR3D's setting (with and without its position encoding), and
# every non-default option of the deformable sampling at once
OPTION_SETS = {
    "default": {},
    "image_units": dict(offset_units="image"),
    "sigmoid": dict(attention_fn="sigmoid"),
    "sum": dict(camera_fusion="sum"),
    "projection": dict(sampling="projection"),
    "inverse_sigmoid": dict(pos_encoding="inverse_sigmoid"),
    "detr3d": DETR3D,
    "detr3d_inverse_sigmoid": dict(DETR3D, pos_encoding="inverse_sigmoid"),
    "deformable+projection": dict(sampling="deformable+projection"),
    "mass": dict(camera_fusion="mass"),
    "no_value_proj": dict(use_value_proj=False),
    "deformable_all": dict(
        offset_units="image", attention_fn="sigmoid", camera_fusion="sum", pos_encoding="inverse_sigmoid"
    ),
}


@pytest.mark.parametrize("options", list(OPTION_SETS.values()), ids=list(OPTION_SETS))
@pytest.mark.parametrize("dense, project_values", [(False, "cells"), (False, "samples"), (True, "samples")])
def test_visible_pairs_and_projected_samples_equal_the_dense_projected_cells(
    nuscenes_rig, dense, project_values, options
):
    """Batch 2 with a different rig pose per sample (so different cameras see each query), queries
    seen by 0, 1 and 2 cameras, images with padding rows: the visible-pair path and the projection
    of samples equal the dense computation over projected cells (every pair sampled, then masked),
    in outputs and in the gradients of the query, the value and every parameter (fp32, 1e-5), for
    every option set; with ``sampling='projection'`` ``sampling_offsets`` gets no gradient."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    l2i = torch.from_numpy(rig.lidar2img()).float()  # (6, 4, 4)
    yaw = torch.tensor(0.7)
    rot = torch.eye(4)
    rot[:2, :2] = torch.tensor([[yaw.cos(), -yaw.sin()], [yaw.sin(), yaw.cos()]])
    cams = CameraGeometry(
        torch.stack([l2i, l2i @ rot]), torch.tensor(IMG_HW, dtype=torch.float32).expand(2, 6, 2), PAD_HW
    )
    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 60, 3, generator=gen) * torch.tensor([0.6, 0.6, 0.4]) + torch.tensor([0.2, 0.2, 0.3])
    # the last 6 queries of each sample project into the bottom 6 px of an image, so that their
    # samples read the padding rows below it (which must read as zero)
    cand = torch.rand(2, 4000, 3, generator=gen) * torch.tensor([0.2, 0.2, 0.3]) + torch.tensor(
        [0.4, 0.4, 0.3]
    )
    uv, seen, _ = project_points(denormalize_points(cand, PC_RANGE), cams.lidar2img, cams.img_hw)
    near_bottom = (seen & (uv[..., 1] * IMG_HW[0] > IMG_HW[0] - 6)).any(1)  # (2, 4000)
    for i in range(2):
        ref[i, -6:] = cand[i, near_bottom[i].nonzero()[:6, 0]]
    _, valid, _ = project_points(denormalize_points(ref, PC_RANGE), cams.lidar2img, cams.img_hw)
    seen_by = valid.sum(1)  # (2, Q)
    assert {0, 1, 2} <= set(seen_by.flatten().tolist()), seen_by
    assert not torch.equal(valid[0], valid[1])
    levels = _levels()
    assert levels.padding_mask(cams.img_hw.flatten(0, 1)).any()  # rows 90..96 px are padding

    query = torch.randn(2, 60, EMBED, generator=gen)
    value = torch.randn(12, levels.num_values, EMBED, generator=gen)
    results = {}
    for setting in ((True, "cells"), (dense, project_values)):
        torch.manual_seed(0)
        cfg = dict(type="MultiViewDeformableAttention3D", embed_dims=EMBED, num_heads=HEADS, num_levels=2)
        cfg.update(num_points=POINTS, pc_range=PC_RANGE, dropout=0.0, dense=setting[0])
        attn = MODELS.build(dict(cfg, project_values=setting[1], **options))
        with torch.no_grad():
            attn.sampling_offsets.bias.mul_(2.0)  # some samples leave the image
            if attn.value_proj is not None:
                attn.value_proj.bias.normal_(generator=torch.Generator().manual_seed(1))  # follows the mass
        q, v = query.clone().requires_grad_(), value.clone().requires_grad_()
        out = attn(q, v, ref, levels, cams)
        (out * torch.linspace(-1, 1, EMBED)).square().sum().backward()
        grads = {name: prm.grad for name, prm in attn.named_parameters()}
        results[setting] = (out.detach(), q.grad, v.grad, grads)
    (out_d, gq_d, gv_d, gp_d), (out_s, gq_s, gv_s, gp_s) = (
        results[(True, "cells")],
        results[(dense, project_values)],
    )
    unseen = seen_by == 0
    assert torch.equal(out_s[unseen], query[unseen]) and torch.equal(out_d[unseen], query[unseen])
    assert (out_d - query).abs().max() > 0.1  # the seen queries do change
    torch.testing.assert_close(out_s, out_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gq_s, gq_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gv_s, gv_d, atol=1e-5, rtol=1e-5)
    projection = options.get("sampling") == "projection"
    for name in gp_d:
        if projection and name.startswith("sampling_offsets."):
            assert gp_s[name] is None and gp_d[name] is None, name  # not used
            continue
        torch.testing.assert_close(gp_s[name], gp_d[name], atol=1e-5, rtol=1e-5, msg=name)


def test_bilinear_mass_is_the_op_sampling_ones_on_the_real_cells():
    """bilinear_mass equals MSDA over a value of ones in the real cells (zeros in the padding), in
    value and in the gradients of the locations and weights, for locations inside, outside, on
    pixel borders and at OUTSIDE, rows with different real extents and a level with none."""
    from bev_deform.models.attention.deformable_base import bilinear_mass
    from bev_deform.ops import multi_scale_deformable_attn
    from bev_deform.ops.msda import mask_invalid_cells

    gen = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor([[6, 10], [3, 5]])
    starts = torch.tensor([0, 60])
    valid = torch.tensor([[[6, 10], [3, 5]], [[4, 7], [2, 3]], [[6, 10], [0, 0]]])  # (R=3, L, 2)
    r, k, m, lv, p = 3, 5, 2, 2, 3
    loc = torch.rand(r, k, m, lv, p, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    loc[:, 0, :, 0] = torch.tensor([0.5 / 10, 0.5 / 6], dtype=torch.float64)  # cell centres, level 0
    loc[:, 0, :, 1] = torch.tensor([0.5 / 5, 0.5 / 3], dtype=torch.float64)  # and level 1
    loc[:, 1] = torch.tensor([7.0 / 10, 4.0 / 6], dtype=torch.float64)  # a pixel corner on level 0
    loc[:, 2, 0] = -2.0  # OUTSIDE: no corner on level 0
    weights = torch.rand(r, k, m, lv, p, generator=gen, dtype=torch.float64)
    ones = mask_invalid_cells(torch.ones(r, 75, 1, 1, dtype=torch.float64), spatial_shapes, valid)

    def op(loc, w):
        out = multi_scale_deformable_attn(
            ones, spatial_shapes, starts, loc.flatten(1, 2)[:, :, None], w.flatten(1, 2)[:, :, None]
        )
        return out.view(r, k, m, 1)

    results = []
    for fn in (op, lambda loc, w: bilinear_mass(loc, w, spatial_shapes, valid)):
        leaves = [loc.clone().requires_grad_(), weights.clone().requires_grad_()]
        out = fn(*leaves)
        (out * torch.linspace(-1, 2, out.numel(), dtype=torch.float64).view(out.shape)).sum().backward()
        results.append((out.detach(), leaves[0].grad, leaves[1].grad))
    (out_op, gl_op, gw_op), (out_mass, gl_mass, gw_mass) = results
    torch.testing.assert_close(out_mass, out_op, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw_mass, gw_op, rtol=0, atol=1e-12)
    # the corner (query 1) is a one-sided derivative, where the two may take different sides
    torch.testing.assert_close(gl_mass[:, 2:], gl_op[:, 2:], rtol=0, atol=1e-12)
    # cell centres: all of their bilinear mass is real, but for row 2's level 1, which has no real cell
    torch.testing.assert_close(out_mass[:2, 0, :, 0], weights[:2, 0].sum((-2, -1)))
    torch.testing.assert_close(out_mass[2, 0, :, 0], weights[2, 0, :, 0].sum(-1))
    assert (out_mass[:, 2] < weights[:, 2].sum((-2, -1))[..., None]).all()  # level 0 reads nothing
    assert out_mass.min() >= 0 and out_mass[2].max() > 0


def test_project_values_auto_projects_samples_on_cpu_and_a_bad_name_raises():
    from bev_deform.models.attention.deformable_base import resolve_project_values

    assert resolve_project_values("auto", torch.device("cpu")) == "samples"
    assert resolve_project_values("auto", torch.device("cuda")) == "cells"
    assert resolve_project_values("cells", torch.device("cpu")) == "cells"
    with pytest.raises(ValueError, match="project_values must be one of"):
        MultiViewDeformableAttention3D(embed_dims=8, num_heads=2, pc_range=PC_RANGE, project_values="late")


def test_the_attention_never_reads_the_level_tensors_back_to_the_host(nuscenes_rig, monkeypatch):
    """The op's level check reads spatial_shapes / level_start_index back to Python (a device sync
    on CUDA); the attention's levels come from Python ints, so its hot path skips that read."""
    import bev_deform.ops.checks as checks

    calls = []
    monkeypatch.setattr(checks, "_check_levels", lambda *args: calls.append(args))
    attn = _attn()
    ref = _ref([nuscenes_rig((IMG_HW[1], IMG_HW[0])).cam_point_in_lidar(0, [0.5, -0.2, 8.0])])
    value = torch.randn(6, 300, EMBED, dtype=torch.float64)
    for dense, project_values in ((False, "cells"), (True, "cells"), (False, "samples"), (True, "samples")):
        attn.dense, attn.project_values = dense, project_values
        attn(torch.randn(1, 1, EMBED, dtype=torch.float64), value, ref, _levels(), _cams(nuscenes_rig))
    assert calls == []


# ---- the options of issue 12 (offset units, sigmoid weights, camera sum, projection sampling, pos encoding)


def _front_camera_targets(rig, img_hw, targets, depth: float = 12.0) -> torch.Tensor:
    """(1, Q, 3) normalised reference points that CAM_FRONT sees at the image pixels ``targets``."""
    fx, fy, cx, cy = rig.intrinsics(0)
    cam_pts = [[(u - cx) / fx * depth, (v - cy) / fy * depth, depth] for u, v in targets]
    return _ref([rig.cam_point_in_lidar(0, p) for p in cam_pts])


def _level_case(nuscenes_rig, img_hw):
    pad_hw, shapes = LEVEL_CASES[img_hw]
    levels = FeatureLevels.from_shapes(shapes, pad_hw)
    rig = nuscenes_rig((img_hw[1], img_hw[0]))
    l2i = torch.from_numpy(rig.lidar2img())
    cams = CameraGeometry(l2i[None], torch.tensor(img_hw, dtype=torch.float64).expand(1, 6, 2), pad_hw)
    return rig, levels, cams


def test_projection_sampling_reads_the_projected_pixel_whatever_the_offset_layer_says(nuscenes_rig):
    """sampling='projection': with large random ``sampling_offsets`` weights and bias and a random
    query, every level still reads back exactly the projected pixel, and the recorder reports
    zero offsets (every sampling pixel is the projected reference pixel)."""
    img_hw = (448, 800)
    rig, levels, cams = _level_case(nuscenes_rig, img_hw)
    h, w = img_hw
    _, _, cx, cy = rig.intrinsics(0)
    targets = [(cx, cy), (0.15 * w, 0.25 * h), (0.85 * w, 0.7 * h), (0.3 * w, 0.75 * h)]
    ref = _front_camera_targets(rig, img_hw, targets)
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(1, len(targets), EMBED, generator=gen, dtype=torch.float64)
    value = _pixel_value(levels, 6, HEADS, EMBED)
    expected = torch.tensor(targets, dtype=torch.float64)[:, None].expand(-1, HEADS, -1)  # (Q, M, 2)
    for level in range(4):
        attn = _four_level_attn(level, sampling="projection")
        with torch.no_grad():
            attn.sampling_offsets.weight.normal_(0.0, 50.0, generator=gen)
            attn.sampling_offsets.bias.normal_(0.0, 50.0, generator=gen)
        with SamplingRecorder(attn) as rec:
            out = attn(query, value, ref, levels, cams)
        got = (out - query)[0].view(len(targets), HEADS, EMBED // HEADS)[..., :2]  # (Q, M, 2) pixels
        assert torch.allclose(got, expected, atol=1e-6), (level, (got - expected).abs().max())
        (record,) = rec.layers
        assert record.valid[0, :, :].sum(0).tolist() == [1] * len(targets)  # CAM_FRONT only
        pixels = record.pixels[0, 0]  # (Q, M, L, P, 2) CAM_FRONT's sampling pixels
        assert torch.allclose(
            pixels, record.ref_pixels[0, 0][:, None, None, None].expand_as(pixels), atol=1e-9
        )


@pytest.mark.parametrize("level", range(4))
def test_anchored_sampling_reads_the_projection_with_point_0_and_deforms_the_others(nuscenes_rig, level):
    """sampling='anchored' with 3 points and random offset weights: point 0 of every head and level
    has offset zero (and, weighted alone on ``level``, reads back exactly the projected pixel),
    points 1 and 2 are exactly where 'deformable' with the same weights puts them, and so are the
    attention weights; the deformable module's point 0 does move."""
    img_hw = (448, 800)
    rig, levels, cams = _level_case(nuscenes_rig, img_hw)
    h, w = img_hw
    _, _, cx, cy = rig.intrinsics(0)
    targets = [(cx, cy), (0.15 * w, 0.25 * h), (0.85 * w, 0.7 * h)]
    ref = _front_camera_targets(rig, img_hw, targets)
    cfg = dict(type="MultiViewDeformableAttention3D", embed_dims=EMBED, num_heads=HEADS, num_levels=4)
    cfg.update(num_points=3, pc_range=PC_RANGE)
    deform = MODELS.build(cfg).double().eval()
    gen = torch.Generator().manual_seed(level)
    with torch.no_grad():
        deform.sampling_offsets.weight.normal_(0.0, 5.0, generator=gen)
        deform.sampling_offsets.bias.normal_(0.0, 5.0, generator=gen)
        deform.attention_weights.weight.normal_(0.0, 1.0, generator=gen)
    anchored = MODELS.build(dict(cfg, sampling="anchored")).double().eval()
    anchored.load_state_dict(deform.state_dict())
    query = torch.randn(1, len(targets), EMBED, generator=gen, dtype=torch.float64)

    got, ref_pts = (
        anchored.sampling_points(query, ref, cams, levels),
        deform.sampling_points(query, ref, cams, levels),
    )
    assert got.offsets[..., 0, :].abs().max().item() == 0.0  # (B, Q, M, L, P, 2): point 0 at the projection
    assert ref_pts.offsets[..., 0, :].abs().min().item() > 0.0  # where 'deformable' moves it
    torch.testing.assert_close(got.offsets[..., 1:, :], ref_pts.offsets[..., 1:, :], rtol=0, atol=0)
    torch.testing.assert_close(got.weights, ref_pts.weights, rtol=0, atol=0)

    # exact projections and only point 0 of ``level`` weighted: the output is the projected pixel
    _make_exact(anchored)
    with torch.no_grad():
        anchored.sampling_offsets.bias.normal_(0.0, 5.0, generator=gen)  # points 1, 2 anywhere
        anchored.attention_weights.weight.zero_()
        bias = torch.full((HEADS, 4, 3), -1e4, dtype=torch.float64)  # (M, L, P): exp(-1e4) == 0
        bias[:, level, 0] = 0.0
        anchored.attention_weights.bias.copy_(bias.flatten())
    value = _pixel_value(levels, 6, HEADS, EMBED)
    out = anchored(query, value, ref, levels, cams)
    read = (out - query)[0].view(len(targets), HEADS, EMBED // HEADS)[..., :2]  # (Q, M, 2) pixels
    expected = torch.tensor(targets, dtype=torch.float64)[:, None].expand(-1, HEADS, -1)
    assert torch.allclose(read, expected, atol=1e-6), (level, (read - expected).abs().max())


def test_anchored_sampling_with_one_point_is_projection_sampling(nuscenes_rig):
    img_hw = (448, 800)
    rig, levels, cams = _level_case(nuscenes_rig, img_hw)
    ref = _front_camera_targets(rig, img_hw, [(100.0, 200.0), (700.0, 300.0)])
    cfg = dict(type="MultiViewDeformableAttention3D", embed_dims=EMBED, num_heads=HEADS, num_levels=4)
    cfg.update(num_points=1, pc_range=PC_RANGE, sampling="projection")
    gen = torch.Generator().manual_seed(0)
    projection = MODELS.build(cfg).double().eval()
    with torch.no_grad():
        for param in projection.parameters():
            param.normal_(0.0, 1.0, generator=gen)
    anchored = MODELS.build(dict(cfg, sampling="anchored")).double().eval()
    anchored.load_state_dict(projection.state_dict())
    query = torch.randn(1, 2, EMBED, generator=gen, dtype=torch.float64)
    value = torch.randn(
        6, int(levels.spatial_shapes.prod(-1).sum()), EMBED, generator=gen, dtype=torch.float64
    )
    expected = projection(query, value, ref, levels, cams)
    assert not torch.allclose(expected, query)  # the cameras were read
    torch.testing.assert_close(anchored(query, value, ref, levels, cams), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dense, project_values", [(False, "cells"), (False, "samples"), (True, "cells")])
def test_deformable_plus_projection_adds_detr3d_read_to_the_deformable_points(
    nuscenes_rig, dense, project_values
):
    """sampling='deformable+projection' with random weights, for queries seen by one and two
    cameras and one seen by none: the output (output_proj without bias) is the deformable module's
    output plus DETR3D's read at the projection (a 'projection' module with one point and sigmoid
    weights whose weight layer is ``projection_weights``), each minus the query once; the
    deformable points and their softmax are bit-equal to 'deformable', the extra point is the
    projection on every level with its own sigmoid weight."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    ahead = list(rig.cam_point_in_lidar(0, [0.0, 0.0, 12.0]))  # CAM_FRONT's axis, 12 m
    points = [list(_two_camera_point(rig)), ahead, [0.0, 0.0, -30.0]]  # seen by 2, 1, 0 cameras
    ref, cams, levels = _ref(points), _cams(nuscenes_rig), _levels()
    gen = torch.Generator().manual_seed(0)
    hybrid = _attn(sampling="deformable+projection", dense=dense, project_values=project_values)
    with torch.no_grad():
        for param in hybrid.parameters():
            param.normal_(0.0, 0.5, generator=gen)
        hybrid.output_proj.bias.zero_()  # the two parts' sum then has no double bias
    deform = _attn(dense=dense, project_values=project_values)
    deform.load_state_dict({k: v for k, v in hybrid.state_dict().items() if "projection_weights" not in k})
    paths = dict(dense=dense, project_values=project_values)
    detr3d = _attn(sampling="projection", num_points=1, attention_fn="sigmoid", **paths)
    detr3d.load_state_dict(
        {
            k.replace("projection_weights", "attention_weights"): v
            for k, v in hybrid.state_dict().items()
            if not k.startswith(("sampling_offsets", "attention_weights"))
        },
        strict=False,
    )
    assert {"projection_weights.weight", "projection_weights.bias"} <= set(hybrid.state_dict())
    fresh = _attn(sampling="deformable+projection")
    fresh.init_weights()
    assert fresh.projection_weights.weight.abs().sum() == 0 and fresh.projection_weights.bias.abs().sum() == 0
    assert "projection_weights.weight" not in deform.state_dict()
    query = torch.randn(1, 3, EMBED, generator=gen, dtype=torch.float64)
    value = torch.randn(6, levels.num_values, EMBED, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        pts, plain = (a.sampling_points(query, ref, cams, levels) for a in (hybrid, deform))
        assert pts.offsets.shape[-2] == POINTS + 1 and pts.weights.shape[-1] == POINTS + 1
        assert torch.equal(pts.offsets[..., :POINTS, :], plain.offsets)
        assert torch.equal(pts.weights[..., :POINTS], plain.weights)
        assert torch.equal(pts.offsets[..., POINTS, :], torch.zeros_like(pts.offsets[..., POINTS, :]))
        extra = hybrid.projection_weights(query + hybrid.position_encoder(ref)).sigmoid().view(1, 3, HEADS, 2)
        torch.testing.assert_close(pts.weights[..., POINTS], extra, rtol=0, atol=0)
        seen = pts.valid.sum(1)[0].tolist()
        assert seen == [2, 1, 0], seen
        with SamplingRecorder(hybrid) as rec:
            out = hybrid(query, value, ref, levels, cams)
        (record,) = rec.layers  # the recorder and visualiser see the P + 1 points
        pixels = record.pixels[0, 0, 1]  # CAM_FRONT, the query on its axis: (M, L, P + 1, 2)
        assert pixels.shape == (HEADS, 2, POINTS + 1, 2)
        at_ref = record.ref_pixels[0, 0, 1].expand(HEADS, 2, 2)  # (M, L, 2)
        torch.testing.assert_close(pixels[..., POINTS, :], at_ref, atol=1e-9, rtol=0)
        expected = deform(query, value, ref, levels, cams) + detr3d(query, value, ref, levels, cams) - query
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    assert torch.equal(out[0, 2], query[0, 2])  # seen by no camera: the query itself
    assert (out - deform(query, value, ref, levels, cams)).abs()[0, :2].min() > 1e-6  # the read counts


def _two_camera_point(rig) -> list[float]:
    """A LIDAR_TOP point at 10 m depth near CAM_FRONT's left edge (u = 10 px of 160), inside
    CAM_FRONT_LEFT's image as well."""
    fx, fy, cx, cy = rig.intrinsics(0)
    u, v, depth = 10.0, 40.0, 10.0
    return rig.cam_point_in_lidar(0, [(u - cx) / fx * depth, (v - cy) / fy * depth, depth])


@pytest.mark.parametrize("dense, project_values", [(False, "cells"), (False, "samples"), (True, "cells")])
def test_detr3d_setting_is_the_sum_of_sigmoid_weighted_bilinear_reads_at_the_projection(
    nuscenes_rig, dense, project_values
):
    """DETR3D's setting (projection, one point, sigmoid, sum) for a point that two cameras see:
    output = query + output_proj(sum over the 2 cameras and 2 levels of sigmoid(w_{h,l}) times the
    bilinear read of value_proj(value) at the projection, head by head), the reads computed here
    with grid_sample (align_corners=False) on each level's map, padding cells zeroed."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    point = torch.tensor([_two_camera_point(rig)], dtype=torch.float64)  # (1, 3) metres
    cams, levels = _cams(nuscenes_rig), _levels()
    uv, valid, _ = project_points(point[None], cams.lidar2img, cams.img_hw)  # (1, 6, 1, 2), (1, 6, 1)
    assert valid[0, :, 0].tolist() == [True, False, True, False, False, False]  # FRONT, FRONT_LEFT
    pixels = uv[0, :, 0] * torch.tensor([IMG_HW[1], IMG_HW[0]], dtype=torch.float64)  # (6, 2) (u, v)

    torch.manual_seed(0)
    attn = _attn(dense=dense, project_values=project_values, **DETR3D)
    d = EMBED // HEADS
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        attn.attention_weights.weight.zero_()  # logits = bias: (M, L, 1) known weights
        attn.attention_weights.bias.normal_(generator=gen)
        attn.sampling_offsets.weight.normal_(0.0, 50.0, generator=gen)  # unused
        attn.sampling_offsets.bias.normal_(0.0, 50.0, generator=gen)
        attn.value_proj.bias.normal_(generator=gen)
        attn.output_proj.bias.normal_(generator=gen)
    query = torch.randn(1, 1, EMBED, dtype=torch.float64, generator=gen)
    value = torch.randn(6, levels.num_values, EMBED, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        out = attn(query, value, _ref(point), levels, cams)

        padding = levels.padding_mask(cams.img_hw[0])  # (6, S)
        projected = attn.value_proj(value).masked_fill(padding[..., None], 0.0)  # (6, S, C)
        weights = attn.attention_weights.bias.sigmoid().view(HEADS, 2)  # (M, L)
        fused = torch.zeros(EMBED, dtype=torch.float64)
        for cam in (0, 2):
            for lvl, ((h, w), s, start) in enumerate(
                zip(levels.shapes, levels.strides, levels.level_start_index)
            ):
                grid_map = projected[cam, start : start + h * w].T.reshape(1, EMBED, h, w)
                loc = pixels[cam] / torch.tensor([w * s, h * s], dtype=torch.float64)  # [0, 1] per level
                grid = (2.0 * loc - 1.0).view(1, 1, 1, 2)
                read = F.grid_sample(grid_map, grid, align_corners=False, padding_mode="zeros").flatten()
                fused += read * weights[:, lvl].repeat_interleave(d)  # head h's channels h*D..(h+1)*D
        expected = query[0, 0] + attn.output_proj(fused)
    torch.testing.assert_close(out[0, 0], expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("offset_units", ["level", "image"])
def test_an_offset_of_one_cell_moves_by_the_stride_of_its_units(nuscenes_rig, offset_units):
    """Offset bias (1, 0) on every head: the point lands s_l image pixels right of the projection on
    level l with 'level' units, and s_0 = 8 pixels right on every level with 'image' units; both
    where the recorder says it sampled and in the pixel-coordinate maps read back."""
    img_hw = (448, 800)
    rig, levels, cams = _level_case(nuscenes_rig, img_hw)
    h, w = img_hw
    _, _, cx, cy = rig.intrinsics(0)
    # well inside the image, also after a shift of one stride-64 cell (column 12, centre 800 px, is padding)
    targets = [(cx, cy), (0.15 * w, 0.25 * h), (0.6 * w, 0.7 * h), (0.3 * w, 0.75 * h)]
    ref = _front_camera_targets(rig, img_hw, targets)
    query = torch.zeros(1, len(targets), EMBED, dtype=torch.float64)
    value = _pixel_value(levels, 6, HEADS, EMBED)
    for level, stride in enumerate(levels.strides):
        shift = stride if offset_units == "level" else levels.strides[0]
        expected = torch.tensor(targets, dtype=torch.float64) + torch.tensor([float(shift), 0.0])
        attn = _four_level_attn(level, offset_units=offset_units)
        with torch.no_grad():
            attn.sampling_offsets.bias.view(HEADS, 4, 1, 2).copy_(torch.tensor([1.0, 0.0]))
        with SamplingRecorder(attn) as rec:
            out = attn(query, value, ref, levels, cams)
        got = out[0].view(len(targets), HEADS, EMBED // HEADS)[..., :2]  # (Q, M, 2) read-back pixels
        assert torch.allclose(got, expected[:, None].expand_as(got), atol=1e-6), (level, got)
        pixels = rec.layers[0].pixels[0, 0, :, :, level, 0]  # (Q, M, 2) CAM_FRONT, this level
        assert torch.allclose(pixels, expected[:, None].expand_as(pixels), atol=1e-9), (level, pixels)


@pytest.mark.parametrize("attention_fn", ["softmax", "sigmoid"])
def test_sigmoid_weights_are_not_normalised(nuscenes_rig, attention_fn):
    """A map of ones read at the projection returns each head's sum of weights: 1 for the softmax,
    sum over (level, point) of sigmoid(logit) for the sigmoid."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    ref = _ref([rig.cam_point_in_lidar(0, [0.0, 0.0, 10.0])])  # CAM_FRONT's principal point only
    attn = _attn(attention_fn=attention_fn)
    _make_exact(attn)
    logits = torch.linspace(-1.0, 2.0, HEADS * 2 * POINTS, dtype=torch.float64)  # (M * L * P,)
    with torch.no_grad():
        attn.attention_weights.weight.zero_()
        attn.attention_weights.bias.copy_(logits)
    value = torch.ones(6, _levels().num_values, EMBED, dtype=torch.float64)
    out = attn(torch.zeros(1, 1, EMBED, dtype=torch.float64), value, ref, _levels(), _cams(nuscenes_rig))
    if attention_fn == "softmax":
        per_head = [1.0] * HEADS
    else:
        per_head = [sum(1.0 / (1.0 + math.exp(-x)) for x in row) for row in logits.view(HEADS, -1).tolist()]
    expected = torch.tensor(per_head, dtype=torch.float64).repeat_interleave(EMBED // HEADS)
    assert torch.allclose(out[0, 0], expected, atol=1e-12), (out[0, 0], expected)
    assert attention_fn == "softmax" or expected.min() > 1.5  # visibly not normalised


@pytest.mark.parametrize("camera_fusion, factor", [("mean", 1.0), ("sum", 2.0)])
def test_camera_fusion_sum_counts_every_camera_that_sees_the_point(nuscenes_rig, camera_fusion, factor):
    """CAM_FRONT twice, with the same features: the 'sum' gives twice the one-camera output, the
    'mean' the same (output_proj without bias, so linear); a query that no camera sees gets exactly
    its residual in both."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    attn = _attn(camera_fusion=camera_fusion, attention_fn="sigmoid")
    with torch.no_grad():
        attn.output_proj.bias.zero_()
    torch.manual_seed(0)
    ref = _ref([rig.cam_point_in_lidar(0, [1.0, 0.5, 12.0]), [0.0, 0.0, 2.9]])  # seen, unseen
    query = torch.randn(1, 2, EMBED, dtype=torch.float64)
    value = torch.randn(1, _levels().num_values, EMBED, dtype=torch.float64)
    cams = _cams(nuscenes_rig)
    one = CameraGeometry(cams.lidar2img[:, :1], cams.img_hw[:, :1], PAD_HW)
    two = CameraGeometry(cams.lidar2img[:, [0, 0]], cams.img_hw[:, :2], PAD_HW)
    delta_one = attn(query, value, ref, _levels(), one) - query
    out_two = attn(query, value.repeat(2, 1, 1), ref, _levels(), two)
    assert delta_one[0, 0].abs().max() > 1e-3
    torch.testing.assert_close(out_two[0, 0] - query[0, 0], factor * delta_one[0, 0], atol=1e-12, rtol=1e-12)
    assert torch.equal(out_two[0, 1], query[0, 1]) and torch.equal(
        delta_one[0, 1], torch.zeros(EMBED).double()
    )


def _edge_points(rig, num: int) -> torch.Tensor:
    """(1, num, 3) normalised points 12 m in front of CAM_FRONT whose projections run along the
    image's bottom and right edges (within 6 px of them), so that ring offsets leave the image."""
    h, w = IMG_HW
    pixels = [(w - 1.0 - 5.0 * i / num, h * (i + 0.5) / num) for i in range(num // 2)]
    pixels += [(w * (i + 0.5) / num, h - 1.0 - 5.0 * i / num) for i in range(num - num // 2)]
    return _front_camera_targets(rig, IMG_HW, pixels)


def _front_cams(rig_fn, heights) -> CameraGeometry:
    """CAM_FRONT once per entry of ``heights``, each with that many real image rows (the rest padding)."""
    cams = _cams(rig_fn)
    img_hw = torch.tensor([[float(h), IMG_HW[1]] for h in heights], dtype=torch.float64)[None]
    return CameraGeometry(cams.lidar2img[:, [0] * len(heights)], img_hw, PAD_HW)


def test_camera_fusion_mass_reads_one_from_a_map_of_ones_wherever_the_samples_land(nuscenes_rig):
    """Points at CAM_FRONT's bottom and right edges, ring offsets 3x Deformable DETR's, identity
    projections: on a map of ones the 'sum' (one camera) returns each head's in-image mass m (here
    from under 0.05 up to 1), and 'mass' returns m / max(m, MASS_FLOOR): exactly 1 wherever at
    least MASS_FLOOR of the attention landed in the image (the reads outside count for nothing)."""
    from bev_deform.models.attention.multiview_deform_attn_3d import MASS_FLOOR

    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    ref = _edge_points(rig, 40)
    cams = _front_cams(nuscenes_rig, [IMG_HW[0]])
    value = torch.ones(1, _levels().num_values, EMBED, dtype=torch.float64)
    query = torch.zeros(1, ref.shape[1], EMBED, dtype=torch.float64)
    outs = {}
    for fusion in ("sum", "mass"):
        attn = _attn(camera_fusion=fusion)
        _make_exact(attn)
        with torch.no_grad():
            attn.sampling_offsets.bias.copy_(3.0 * _attn().sampling_offsets.bias)  # the ring, 3x wider
        outs[fusion] = attn(query, value, ref, _levels(), cams)[0].view(-1, HEADS, EMBED // HEADS)
    mass = outs["sum"][..., 0]  # (Q, M) in-image mass per head
    assert torch.allclose(outs["sum"], mass[..., None].expand_as(outs["sum"]), atol=1e-12)
    assert mass.max() > 0.999 and mass.min() < 0.6  # some heads fully inside, some half outside
    assert ((mass > 0) & (mass < MASS_FLOOR)).any()  # and the floor is reached
    expected = mass / mass.clamp(min=MASS_FLOOR)
    torch.testing.assert_close(outs["mass"], expected[..., None].expand_as(outs["mass"]), atol=1e-12, rtol=0)


def test_camera_fusion_mass_weighs_each_camera_by_the_mass_that_landed_in_it(nuscenes_rig):
    """CAM_FRONT twice, the second with only 60 real rows (the rest padding), holding the constant
    maps 2 and -1: a point near row 60 has in-image masses m_a, m_b (from the one-camera 'sum' on
    ones) and 'mass' returns (2 m_a - m_b) / (m_a + m_b) per head; 'mean' returns (2 m_a - m_b) / 2."""
    ref = _front_camera_targets(nuscenes_rig((IMG_HW[1], IMG_HW[0])), IMG_HW, [(70.0, 57.0)])
    query = torch.zeros(1, 1, EMBED, dtype=torch.float64)
    ones = torch.ones(1, _levels().num_values, EMBED, dtype=torch.float64)

    def run(fusion, heights, value):
        attn = _attn(camera_fusion=fusion)
        _make_exact(attn)
        return attn(query, value, ref, _levels(), _front_cams(nuscenes_rig, heights))[0, 0].view(HEADS, -1)

    m_a, m_b = run("sum", [IMG_HW[0]], ones)[:, 0], run("sum", [60], ones)[:, 0]  # (M,) each
    assert (m_a - m_b).abs().min() > 0.05  # the padding takes a visible share of camera b's samples
    value = torch.cat((2.0 * ones, -1.0 * ones))  # (2, S, C): camera a 2, camera b -1
    for fusion, expected in (("mass", (2 * m_a - m_b) / (m_a + m_b)), ("mean", (2 * m_a - m_b) / 2)):
        out = run(fusion, [IMG_HW[0], 60], value)  # (M, C/M)
        torch.testing.assert_close(out, expected[:, None].expand_as(out), atol=1e-12, rtol=0, msg=fusion)


def test_camera_fusion_mass_gradients_match_finite_differences(nuscenes_rig):
    """The division by the in-image mass is differentiated through the mass too (float64
    ``gradcheck`` in the query and the value, points at the image edges, wide offsets)."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    ref = _edge_points(rig, 6)
    torch.manual_seed(0)
    attn = _attn(camera_fusion="mass")
    with torch.no_grad():
        attn.sampling_offsets.bias.mul_(3.0)
        attn.sampling_offsets.weight.normal_(std=0.5)  # the offsets follow the query
        attn.attention_weights.weight.normal_()
    cams = _front_cams(nuscenes_rig, [IMG_HW[0]])
    query = torch.randn(1, ref.shape[1], EMBED, dtype=torch.float64, requires_grad=True)
    value = torch.randn(1, _levels().num_values, EMBED, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, v: attn(q, v, ref, _levels(), cams), (query, value), atol=1e-6)


@pytest.mark.parametrize("pos_encoding", ["raw", "inverse_sigmoid"])
def test_pos_encoding_chooses_what_the_position_encoder_sees(nuscenes_rig, pos_encoding):
    """'raw' encodes the [0, 1] reference point, 'inverse_sigmoid' log(r / (1 - r)); so the
    'inverse_sigmoid' offsets and weights at r are the 'raw' ones at log(r / (1 - r)), and differ
    from the 'raw' ones at r."""
    rig = nuscenes_rig((IMG_HW[1], IMG_HW[0]))
    ref = _ref([rig.cam_point_in_lidar(0, [1.0, 0.5, 12.0])])
    logit = torch.log(ref / (1.0 - ref))
    assert (ref - logit).abs().min() > 0.1
    torch.manual_seed(0)
    attn = _attn(pos_encoding=pos_encoding)
    raw = _attn()
    raw.load_state_dict(attn.state_dict())
    with torch.no_grad():  # offsets and weights that depend on the query
        for name in ("sampling_offsets", "attention_weights"):
            getattr(attn, name).weight.normal_()
            getattr(raw, name).weight.copy_(getattr(attn, name).weight)
    seen = []
    hook = attn.position_encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    query = torch.randn(1, 1, EMBED, dtype=torch.float64)
    cams, levels = _cams(nuscenes_rig), _levels()
    pts = attn.sampling_points(query, ref, cams, levels)
    hook.remove()
    (encoded,) = seen
    expected_input = logit if pos_encoding == "inverse_sigmoid" else ref
    torch.testing.assert_close(encoded, expected_input, atol=1e-12, rtol=0)
    same = raw.sampling_points(query, expected_input, cams, levels)
    torch.testing.assert_close(pts.offsets, same.offsets, atol=1e-12, rtol=0)
    torch.testing.assert_close(pts.weights, same.weights, atol=1e-12, rtol=0)
    at_ref = raw.sampling_points(query, ref, cams, levels)
    assert (pos_encoding == "raw") == torch.allclose(pts.offsets, at_ref.offsets)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_bad_option_value_raises_naming_the_option_and_its_values(name):
    allowed = OPTIONS[name]
    default = MultiViewDeformableAttention3D(embed_dims=8, num_heads=2, pc_range=PC_RANGE)
    assert getattr(default, name) == allowed[0]  # the first value is the default
    with pytest.raises(ValueError, match="^" + re.escape(f"{name} must be one of {allowed}, got 'bogus'")):
        MultiViewDeformableAttention3D(embed_dims=8, num_heads=2, pc_range=PC_RANGE, **{name: "bogus"})
