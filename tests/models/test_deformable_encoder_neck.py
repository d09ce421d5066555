"""DeformableEncoderNeck: Deformable DETR's encoder over each image's FPN levels, with mmdet's
``DeformableDETR.pre_transformer`` + ``DeformableDetrTransformerEncoder`` (mmcv's attention) as the
oracle, with and without padding."""

from __future__ import annotations

import types

import pytest
import torch
from mmdet.models.detectors.deformable_detr import DeformableDETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.models.layers.transformer.deformable_detr_layers import DeformableDetrTransformerEncoder
from mmdet.structures import DetDataSample
from mmengine.registry import DefaultScope

from bev_deform.geometry import FeatureLevels
from bev_deform.registry import MODELS

C, HEADS, POINTS, FFN_CH, LAYERS = 32, 4, 2, 64, 2
PAD_HW = (64, 96)
STRIDES = (8, 16, 32)
SHAPES = [(PAD_HW[0] // s, PAD_HW[1] // s) for s in STRIDES]  # (8, 12), (4, 6), (2, 3)
# two images padded into one 64 x 96 batch; sizes at multiples of 32, where the padding mask of
# mmdet (nearest interpolation of the image mask) and ours (cell centre beyond the image) agree
PADDED_HW = ((64, 64), (32, 96))


def _neck():
    cfg = dict(
        type="DeformableEncoderNeck",
        embed_dims=C,
        num_levels=len(STRIDES),
        encoder=dict(
            num_layers=LAYERS,
            layer_cfg=dict(
                self_attn_cfg=dict(num_heads=HEADS, num_points=POINTS),
                ffn_cfg=dict(feedforward_channels=FFN_CH, ffn_drop=0.1),
            ),
        ),
    )
    with DefaultScope.overwrite_default_scope("bev_deform"):
        neck = MODELS.build(cfg)
    neck.init_weights()
    with torch.no_grad():  # move away from the init so that offsets and weights depend on the query
        for p in neck.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return neck.eval()


def _mmdet_encoder(neck) -> DeformableDetrTransformerEncoder:
    """mmdet's encoder as mmdet's deformable-detr config builds it, scaled down, with our weights."""
    enc = DeformableDetrTransformerEncoder(
        num_layers=LAYERS,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=C, num_heads=HEADS, num_levels=len(STRIDES), num_points=POINTS, batch_first=True
            ),
            ffn_cfg=dict(embed_dims=C, feedforward_channels=FFN_CH, ffn_drop=0.1),
        ),
    )
    enc.load_state_dict(neck.encoder.state_dict())  # strict: the names are mmdet's
    return enc.eval()


def _mmdet_memory(neck, feats, img_hws) -> torch.Tensor:
    """Deformable DETR's own pre_transformer and forward_encoder, run on an object holding its
    attributes: mmdet's sine encoding with the config's settings, our level embedding, mmdet's
    encoder with our weights."""
    detr = types.SimpleNamespace(
        positional_encoding=SinePositionalEncoding(num_feats=C // 2, normalize=True, offset=-0.5),
        level_embed=neck.level_embed,
        get_valid_ratio=DeformableDETR.get_valid_ratio,
        encoder=_mmdet_encoder(neck),
    )
    samples = [DetDataSample(metainfo=dict(batch_input_shape=PAD_HW, img_shape=hw)) for hw in img_hws]
    enc_inputs, _ = DeformableDETR.pre_transformer(detr, feats, samples)
    return DeformableDETR.forward_encoder(detr, **enc_inputs)["memory"], enc_inputs


@pytest.mark.parametrize("img_hws", [(PAD_HW, PAD_HW), PADDED_HW], ids=["unpadded", "padded"])
def test_equals_mmdet_deformable_detr_encoder_with_the_same_weights(img_hws):
    torch.manual_seed(0)
    neck = _neck()
    feats = tuple(torch.randn(2, C, h, w) for h, w in SHAPES)
    with torch.no_grad():
        out = neck(feats, torch.tensor(img_hws, dtype=torch.float32), PAD_HW)
        memory, enc_inputs = _mmdet_memory(neck, feats, img_hws)
    assert [tuple(o.shape) for o in out] == [tuple(f.shape) for f in feats]
    levels = FeatureLevels.from_shapes(SHAPES, PAD_HW)
    if img_hws == PADDED_HW:  # the same padding as mmdet's, and some of it at every level
        ours = levels.padding_mask(torch.tensor(img_hws, dtype=torch.float32))
        assert torch.equal(ours, enc_inputs["feat_mask"])
        assert ours.view(2, -1)[:, -6:].any(1).all()  # the last (2 x 3) level: padded in both images
        assert enc_inputs["valid_ratios"][1, 0].tolist() == [1.0, 0.5]
    else:
        assert enc_inputs["feat_mask"] is None  # mmdet's unpadded path (positional encoding from shapes)
    # (K, S, C) -> L x (K, C, H_l, W_l)
    expected = [
        m.transpose(1, 2).reshape(2, C, h, w)
        for m, (h, w) in zip(memory.split([h * w for h, w in SHAPES], 1), SHAPES)
    ]
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[0], feats[0], atol=1e-2)  # the encoder changed the features


def test_reference_points_are_each_cells_centre_at_every_level():
    levels = FeatureLevels.from_shapes(SHAPES, PAD_HW)
    neck = _neck()
    ratios = torch.tensor([[[1.0, 1.0]] * 3, [[1.0, 0.5]] * 3])  # image 1: the top half is real
    ref = neck.encoder.reference_points(levels, ratios)  # (K, S, L, 2)
    pixels = levels.locations_to_pixels(ref, level_dim=-2)  # (K, S, L, 2) image pixels
    # level-0 cell (row 3, column 5) is the 8 x 8 pixel block around (44, 28), on every level
    cell = 3 * SHAPES[0][1] + 5
    for k in range(2):
        torch.testing.assert_close(pixels[k, cell], torch.tensor([[44.0, 28.0]] * 3))
    # the last level's cell (row 0, column 2) covers pixels [64, 96] x [0, 32]: centre (80, 16)
    last = sum(h * w for h, w in SHAPES[:2]) + 2
    torch.testing.assert_close(pixels[0, last], torch.tensor([[80.0, 16.0]] * 3))


def test_real_cells_do_not_depend_on_the_padding():
    torch.manual_seed(1)
    neck = _neck()
    img_hw = torch.tensor(PADDED_HW, dtype=torch.float32)
    feats = [torch.randn(2, C, h, w) for h, w in SHAPES]
    levels = FeatureLevels.from_shapes(SHAPES, PAD_HW)
    pad = levels.padding_mask(img_hw).split([h * w for h, w in SHAPES], 1)  # L x (K, H_l * W_l)
    # garbage in every padding cell: (K, H_l * W_l) -> (K, 1, H_l, W_l) mask over the channels
    noisy = [f + 100.0 * p.view(2, 1, *f.shape[-2:]) * torch.randn_like(f) for f, p in zip(feats, pad)]
    with torch.no_grad():
        clean_out, noisy_out = neck(feats, img_hw, PAD_HW), neck(noisy, img_hw, PAD_HW)
    for a, b, p in zip(clean_out, noisy_out, pad):
        real = ~p.view(2, 1, *a.shape[-2:]).expand_as(a)
        assert torch.equal(a[real], b[real])
        assert not torch.equal(a, b)  # the padding cells themselves did change


def test_bad_inputs_raise_value_errors():
    neck = _neck()
    feats = [torch.randn(2, C, h, w) for h, w in SHAPES]
    img_hw = torch.tensor([PAD_HW, PAD_HW], dtype=torch.float32)
    with pytest.raises(ValueError, match="mlvl_feats must have num_levels=3"):
        neck(feats[:2], img_hw, PAD_HW)
    with pytest.raises(ValueError, match=r"each level must be \(K=2, C=32, H, W\)"):
        neck([f[:, :16] for f in feats], img_hw, PAD_HW)
    with pytest.raises(ValueError, match=r"img_hw must be \(K=2, 2\)"):
        neck(feats, img_hw[:1], PAD_HW)
    with pytest.raises(ValueError, match="encoder must not set"):
        MODELS.build(dict(type="DeformableEncoderNeck", embed_dims=C, encoder=dict(embed_dims=C)))


@pytest.mark.cuda
def test_on_cuda_mmcvs_op_gives_the_cpu_kernels_result():
    torch.manual_seed(0)
    neck = _neck()
    feats = [torch.randn(2, C, h, w) for h, w in SHAPES]
    img_hw = torch.tensor(PADDED_HW, dtype=torch.float32)
    with torch.no_grad():
        expected = neck(feats, img_hw, PAD_HW)
        got = neck.cuda()([f.cuda() for f in feats], img_hw.cuda(), PAD_HW)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)
