"""The detector end to end on tiny random input: mmdet's ResNet-18 (thin) + FPN with 4 levels,
mmdet3d's Det3DDataPreprocessor, one loss and one predict forward, with and without the auxiliary
image head."""

from __future__ import annotations

import pytest
import torch
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from bev_deform.registry import MODELS

PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
IMG_HW = (64, 112)  # padded to 64 x 128 by the preprocessor


def detector_cfg() -> dict:
    head = dict(
        type="DeformDETR3DHead",
        num_classes=10,
        pc_range=PC_RANGE,
        embed_dims=32,
        num_query=20,
        num_levels=4,
        decoder=dict(
            num_layers=2,
            layer_cfg=dict(
                self_attn_cfg=dict(num_heads=4),
                cross_attn_cfg=dict(num_heads=4, num_points=2),
                ffn_cfg=dict(feedforward_channels=64),
            ),
        ),
        bbox_coder=dict(type="NMSFreeCoder", max_num=15),
    )
    return dict(
        type="DeformDETR3D",
        data_preprocessor=dict(
            type="Det3DDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32,
        ),
        img_backbone=dict(
            type="mmdet.ResNet",
            depth=18,
            base_channels=16,
            out_indices=(1, 2, 3),
            norm_eval=False,
            style="pytorch",
        ),
        img_neck=dict(
            type="mmdet.FPN",
            in_channels=[32, 64, 128],
            out_channels=32,
            add_extra_convs="on_output",
            num_outs=4,
        ),
        grid_mask=dict(type="GridMask", ratio=0.5, mode=1, prob=1.0),
        bbox_head=head,
    )


def _data(rig, batch: int) -> dict:
    l2i = rig((IMG_HW[1], IMG_HW[0])).lidar2img()
    imgs, samples = [], []
    for i in range(batch):
        imgs.append(torch.randint(0, 256, (6, 3, *IMG_HW), dtype=torch.uint8))
        s = Det3DDataSample(metainfo=dict(lidar2img=l2i, img_shape=IMG_HW, box_type_3d=LiDARInstance3DBoxes))
        boxes = torch.tensor([[0.5 + i, 12.0, -1.8, 4.5, 1.9, 1.6, 0.2, 1.0, 0.0]])
        s.gt_instances_3d = InstanceData(
            bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9), labels_3d=torch.tensor([0])
        )
        samples.append(s)
    return dict(inputs=dict(img=imgs), data_samples=samples)


@pytest.fixture
def detector():
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(detector_cfg())
    model.init_weights()
    return model


def test_loss_forward_through_preprocessor_backbone_and_head(detector, nuscenes_rig):
    data = detector.data_preprocessor(_data(nuscenes_rig, 2), training=True)
    assert data["inputs"]["imgs"].shape == (2, 6, 3, 64, 128)
    assert data["data_samples"][0].batch_input_shape == (64, 128)
    losses = detector(**data, mode="loss")
    assert {"loss_cls", "loss_bbox", "d0.loss_cls", "d0.loss_bbox"} == set(losses)
    total, _ = detector.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    conv_grad = detector.img_backbone.conv1.weight.grad
    assert conv_grad is not None and torch.isfinite(conv_grad).all() and conv_grad.abs().sum() > 0


def test_predict_returns_det3d_data_samples_with_lidar_boxes(detector, nuscenes_rig):
    detector.eval()
    data = detector.data_preprocessor(_data(nuscenes_rig, 1), training=False)
    with torch.no_grad():
        results = detector(**data, mode="predict")
        cls_scores, codes = detector(**data, mode="tensor")
    assert len(results) == 1 and isinstance(results[0], Det3DDataSample)
    pred = results[0].pred_instances_3d
    assert isinstance(pred.bboxes_3d, LiDARInstance3DBoxes) and pred.bboxes_3d.tensor.shape == (15, 9)
    assert pred.scores_3d.shape == (15,) and pred.labels_3d.shape == (15,)
    assert cls_scores.shape == (2, 1, 20, 10) and codes.shape == (2, 1, 20, 10)


def test_grid_mask_masks_the_camera_images_in_training_only(detector):
    masked = []  # fraction of zeroed pixels of each GridMask call
    detector.grid_mask.register_forward_hook(
        lambda m, args, out: masked.append((out == 0).float().mean().item())
    )
    imgs = dict(imgs=torch.rand(1, 6, 3, 64, 128) + 1.0)  # no zero pixel of its own
    with torch.no_grad():
        detector.train()
        detector.extract_feat(imgs)
        detector.eval()
        detector.extract_feat(imgs)
    assert len(masked) == 1 and masked[0] > 0.05


def test_images_must_be_camera_batched(detector):
    with pytest.raises(ValueError, match=r"batch_inputs_dict\['imgs'\] must be \(B, N, 3, H, W\)"):
        detector.extract_feat(dict(imgs=torch.zeros(6, 3, 64, 128)))


def test_detector_adds_aux_losses_in_training_and_never_runs_the_head_in_predict(nuscenes_rig):
    cfg = detector_cfg()
    cfg["aux_head"] = dict(type="ImageCentreAuxHead", level=0)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg)
    model.init_weights()
    assert model.aux_head.num_classes == 10 and model.aux_head.shared[0].in_channels == 32
    data = model.data_preprocessor(_data(nuscenes_rig, 2), training=True)
    losses = model(**data, mode="loss")
    assert {"aux_loss_heatmap", "aux_loss_reg", "loss_cls", "loss_bbox"} <= set(losses)
    assert losses["aux_loss_reg"] > 0  # the test box (12 m ahead) is seen by CAM_FRONT
    calls = []
    model.aux_head.register_forward_hook(lambda *args: calls.append(1))
    model.eval()
    with torch.no_grad():
        model(**model.data_preprocessor(_data(nuscenes_rig, 1), training=False), mode="predict")
    assert calls == []


def test_aux_head_config_must_not_repeat_shared_constants():
    cfg = detector_cfg()
    cfg["aux_head"] = dict(type="ImageCentreAuxHead", num_classes=10)
    scope = DefaultScope.overwrite_default_scope("bev_deform")
    with scope, pytest.raises(ValueError, match="aux_head must not set"):
        MODELS.build(cfg)


def test_channels_last_gives_the_same_outputs_with_nhwc_features(detector, nuscenes_rig):
    cfg = detector_cfg()
    cfg["channels_last"] = True
    with DefaultScope.overwrite_default_scope("bev_deform"):
        nhwc = MODELS.build(cfg)
    nhwc.load_state_dict(detector.state_dict())
    assert nhwc.img_backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    detector.eval()
    nhwc.eval()
    data = detector.data_preprocessor(_data(nuscenes_rig, 1), training=False)
    with torch.no_grad():
        feats = nhwc.extract_feat(data["inputs"])
        expected = detector(**data, mode="tensor")
        got = nhwc(**data, mode="tensor")
    assert feats[0][:, 0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_image_encoder_trains_one_step_with_padded_images(nuscenes_rig):
    cfg = detector_cfg()
    cfg["img_encoder"] = dict(
        type="DeformableEncoderNeck",
        encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=dict(num_heads=4, num_points=2))),
    )
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg)
    model.init_weights()
    assert (model.img_encoder.embed_dims, model.img_encoder.num_levels) == (32, 4)  # from the head
    encoded = []
    model.img_encoder.register_forward_hook(lambda m, args, out: encoded.append((args, out)))
    data = model.data_preprocessor(_data(nuscenes_rig, 1), training=True)
    optim = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model(**data, mode="loss")
    total, _ = model.parse_losses(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    total.backward()
    (feats, img_hw, pad_hw), out = encoded[0]
    assert pad_hw == (64, 128) and img_hw.shape == (6, 2) and (img_hw == torch.tensor([64.0, 112.0])).all()
    assert [tuple(o.shape) for o in out] == [tuple(f.shape) for f in feats]
    attn = model.img_encoder.encoder.layers[0].self_attn
    ffn = model.img_encoder.encoder.layers[0].ffn
    grads = [
        attn.sampling_offsets.weight.grad,
        attn.attention_weights.weight.grad,
        ffn.layers[0][0].weight.grad,
    ]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    # the positions and level embeddings only feed the offset and weight projections, which start
    # at zero (Deformable DETR's init): they get gradient from the second step on
    assert model.img_encoder.level_embed.grad.abs().max() == 0
    before = attn.sampling_offsets.weight.detach().clone()
    optim.step()
    assert not torch.equal(attn.sampling_offsets.weight, before)


def test_image_encoder_needs_the_metas():
    cfg = detector_cfg()
    cfg["img_encoder"] = dict(type="DeformableEncoderNeck", encoder=dict(num_layers=1))
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg)
    with pytest.raises(ValueError, match="batch_input_metas must be given"):
        model.extract_feat(dict(imgs=torch.zeros(1, 6, 3, 64, 128)))
