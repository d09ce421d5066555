"""The BEVFormer head, encoder, decoder and detector on tiny inputs: the official state-dict
layout, losses that reach every part, the BEV decoder's sampling and refinement, per-sample
bookkeeping through the whole head, shared constants, and the detector end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from mmdet.models.layers import inverse_sigmoid
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from bev_deform.geometry import CameraGeometry
from bev_deform.models.heads.bevformer_head import official_param_name
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS
from bev_deform.registry import MODELS

REPO = Path(__file__).resolve().parents[2]
PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
IMG_HW, PAD_HW = (64, 112), (64, 128)
LEVEL_HW = [(8, 16), (4, 8)]  # strides 8 and 16 of the padded input
C = 32


def head_cfg(**overrides) -> dict:
    cfg = dict(
        type="BEVFormerHead",
        num_classes=3,
        pc_range=PC_RANGE,
        embed_dims=C,
        num_query=24,
        num_levels=2,
        encoder=dict(
            bev_h=12,
            bev_w=10,
            num_layers=2,
            num_points_in_pillar=4,
            layer_cfg=dict(
                tsa_cfg=dict(num_heads=4, num_points=2, dropout=0.0),
                sca_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
                ffn_cfg=dict(feedforward_channels=64, ffn_drop=0.0),
            ),
        ),
        decoder=dict(
            num_layers=2,
            layer_cfg=dict(
                self_attn_cfg=dict(num_heads=4, attn_drop=0.0),
                cross_attn_cfg=dict(num_heads=4, num_points=2, dropout=0.0),
                ffn_cfg=dict(feedforward_channels=64, ffn_drop=0.0),
            ),
        ),
        bbox_coder=dict(type="NMSFreeCoder", max_num=10),
    )
    cfg.update(overrides)
    return cfg


def _build(cfg: dict):
    with DefaultScope.overwrite_default_scope("bev_deform"):
        return MODELS.build(cfg)


CAR_AHEAD = [0.5, 12.0, -1.8, 4.5, 1.9, 1.6, 0.2, 1.0, 0.0]
PED_LEFT = [-6.0, 8.0, -1.7, 0.7, 0.7, 1.8, -1.0, 0.0, 0.5]


def _samples(rig, gts, yaws=None) -> list[Det3DDataSample]:
    l2i = torch.from_numpy(rig((IMG_HW[1], IMG_HW[0])).lidar2img()).float()
    samples = []
    for i, (rows, labels) in enumerate(gts):
        rot = torch.eye(4)
        if yaws is not None:  # turn the rig: other cameras see each cell
            yaw = torch.tensor(yaws[i])
            rot[:2, :2] = torch.tensor([[yaw.cos(), -yaw.sin()], [yaw.sin(), yaw.cos()]])
        meta = dict(lidar2img=(l2i @ rot).numpy(), img_shape=IMG_HW, batch_input_shape=PAD_HW)
        s = Det3DDataSample(metainfo=meta)
        boxes = torch.tensor(rows, dtype=torch.float32).view(-1, 9)
        s.gt_instances_3d = InstanceData(
            bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9), labels_3d=torch.tensor(labels, dtype=torch.long)
        )
        samples.append(s)
    return samples


def _feats(batch: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 6, C, h, w, generator=gen) for h, w in LEVEL_HW]


# the official BEVFormer head's parameters (projects/mmdet3d_plugin/bevformer), under pts_bbox_head.
OFFICIAL_PATTERNS = [
    r"bev_embedding\.weight",
    r"query_embedding\.weight",
    r"positional_encoding\.(row|col)_embed\.weight",
    r"(cls|reg)_branches\.\d+\.\d+\.(weight|bias)",
    r"transformer\.(level_embeds|cams_embeds)",
    r"transformer\.reference_points\.(weight|bias)",
    r"transformer\.encoder\.layers\.\d+\.attentions\.0\.(sampling_offsets|attention_weights|value_proj|output_proj)"
    r"\.(weight|bias)",
    r"transformer\.encoder\.layers\.\d+\.attentions\.1\.deformable_attention\."
    r"(sampling_offsets|attention_weights|value_proj)\.(weight|bias)",
    r"transformer\.encoder\.layers\.\d+\.attentions\.1\.output_proj\.(weight|bias)",
    r"transformer\.(en|de)coder\.layers\.\d+\.ffns\.0\.layers\.(0\.0|1)\.(weight|bias)",
    r"transformer\.(en|de)coder\.layers\.\d+\.norms\.[012]\.(weight|bias)",
    r"transformer\.decoder\.layers\.\d+\.attentions\.0\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
    r"transformer\.decoder\.layers\.\d+\.attentions\.1\.(sampling_offsets|attention_weights|value_proj|output_proj)"
    r"\.(weight|bias)",
]


def test_tiny_head_has_the_official_bevformer_tiny_names_and_shapes():
    cfg = Config.fromfile(str(REPO / "configs/bevformer/bevformer_r50_fpn_8xb1-24e_nus-800x450.py"))
    head = _build(cfg.model.bbox_head.to_dict())
    params = {official_param_name(n): tuple(p.shape) for n, p in head.named_parameters()}
    unmatched = [n for n in params if not any(re.fullmatch(p, n) for p in OFFICIAL_PATTERNS)]
    assert not unmatched, unmatched
    enc, dec = "transformer.encoder.layers", "transformer.decoder.layers"
    expected = {  # BEVFormer-tiny's: C = 256, 8 heads, TSA 4 points x 2 queues, SCA 8 points, 1 level
        f"{enc}.2.attentions.0.sampling_offsets.weight": (8 * 2 * 1 * 4 * 2, 512),
        f"{enc}.0.attentions.0.attention_weights.weight": (8 * 2 * 1 * 4, 512),
        f"{enc}.0.attentions.1.deformable_attention.sampling_offsets.weight": (8 * 1 * 8 * 2, 256),
        f"{enc}.0.attentions.1.deformable_attention.attention_weights.weight": (8 * 1 * 8, 256),
        f"{enc}.0.attentions.1.output_proj.weight": (256, 256),
        f"{enc}.1.ffns.0.layers.0.0.weight": (512, 256),
        f"{dec}.5.attentions.0.attn.in_proj_weight": (768, 256),
        f"{dec}.5.attentions.1.sampling_offsets.weight": (8 * 1 * 4 * 2, 256),
        "bev_embedding.weight": (2500, 256),
        "positional_encoding.row_embed.weight": (50, 128),
        "positional_encoding.col_embed.weight": (50, 128),
        "query_embedding.weight": (900, 512),
        "transformer.cams_embeds": (6, 256),
        "transformer.level_embeds": (1, 256),
        "transformer.reference_points.weight": (3, 256),
        "cls_branches.5.6.weight": (10, 256),
        "reg_branches.5.4.weight": (10, 256),
    }
    assert {k: params.get(k) for k in expected} == expected
    assert sum(k.startswith(f"{enc}.") and k.endswith("norms.2.weight") for k in params) == 3
    assert sum(k.startswith(f"{dec}.") and k.endswith("norms.2.weight") for k in params) == 6


def test_losses_of_every_layer_are_finite_and_reach_every_part(nuscenes_rig):
    torch.manual_seed(0)
    head = _build(head_cfg())
    head.init_weights()
    with torch.no_grad():  # as after a first step: the zero-initialised offset and weight layers
        for module in head.modules():  # pass gradients on to their inputs (the BEV positions)
            if isinstance(module, torch.nn.Linear) and not module.weight.any():
                module.weight.normal_(0.0, 0.02)
    samples = _samples(nuscenes_rig, [([CAR_AHEAD, PED_LEFT], [0, 2]), ([], [])])  # second: no GT
    losses = head.loss(_feats(2), samples)
    assert set(losses) == {"loss_cls", "loss_bbox", "d0.loss_cls", "d0.loss_bbox"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in (
        "transformer.encoder.bev_embedding",
        "transformer.encoder.positional_encoding",
        "transformer.encoder.cams_embeds",
        "transformer.encoder.level_embeds",
        "transformer.encoder.layers.0.attentions.0",
        "transformer.encoder.layers.0.attentions.1.deformable_attention",
        "transformer.encoder.layers.1.attentions.1.output_proj",
        "transformer.decoder.layers.0.attentions.1",
        "transformer.reference_points",
        "query_embedding",
        "cls_branches.0",
        "reg_branches.1",
    ):
        grads = [p.grad for n, p in head.named_parameters() if n.startswith(name) and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


def test_decoder_samples_the_bev_at_the_reference_xy_and_refines_xyz(nuscenes_rig):
    """Each decoder layer's BEV cross-attention is given its reference points' (x, y); between
    layers all three coordinates move by the regression branch's centre logits (z too, as in
    BEVFormer), and the boxes' centres are the branch's offsets from each layer's reference."""
    torch.manual_seed(0)
    head = _build(head_cfg())
    given = []  # the reference points each layer's BEV cross-attention received
    for layer in head.transformer.decoder.layers:
        layer.attentions[1].register_forward_pre_hook(lambda m, args: given.append(args[2]))
    refs_seen = []
    head.transformer.decoder.register_forward_hook(lambda m, args, out: refs_seen.append(out))
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])
    outs = head(_feats(1), [s.metainfo for s in samples])
    hidden, refs, raw = refs_seen[0]
    assert len(given) == 2
    for i in range(2):
        torch.testing.assert_close(given[i], refs[i][..., :2])
    delta = raw[0][..., list(CENTER_SLOTS)]
    torch.testing.assert_close(refs[1], (inverse_sigmoid(refs[0]) + delta).sigmoid().detach())
    assert not torch.allclose(refs[1][..., 2], refs[0][..., 2])  # z is refined
    center = (raw[1][..., list(CENTER_SLOTS)] + inverse_sigmoid(refs[1])).sigmoid()
    z = center[..., 2] * (PC_RANGE[5] - PC_RANGE[2]) + PC_RANGE[2]
    torch.testing.assert_close(outs["all_bbox_preds"][1][..., 4], z)
    assert outs["bev_embed"].shape == (1, 120, C)


def test_look_forward_twice_in_the_bev_decoder_trains_the_previous_layers_offset(nuscenes_rig):
    """As in the DETR3D-style decoder: the same boxes; layer 1's box loss reaches layer 0's
    regression branch only with look_forward_twice."""
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])
    got = {}
    for lft in (False, True):
        torch.manual_seed(0)
        cfg = head_cfg()
        cfg["decoder"]["look_forward_twice"] = lft
        head = _build(cfg)
        torch.manual_seed(1)
        codes = head(_feats(1), [s.metainfo for s in samples])["all_bbox_preds"]  # (2, 1, Q, 10)
        codes[1, ..., :2].sum().backward()
        grad = head.reg_branches[0][-1].weight.grad
        got[lft] = (codes.detach(), 0.0 if grad is None else float(grad.abs().sum()))
    torch.testing.assert_close(got[True][0], got[False][0])
    assert got[False][1] == 0.0 and got[True][1] > 0


def test_a_batch_equals_each_sample_alone_with_different_cameras(nuscenes_rig):
    """The whole head (BEV encoder, visible-pair SCA, TSA, decoder) on a batch of two samples whose
    rigs point different ways gives each sample's outputs as if it were alone."""
    torch.manual_seed(0)
    head = _build(head_cfg()).eval()
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0]), ([PED_LEFT], [2])], yaws=[0.0, 0.9])
    feats = _feats(2)
    with torch.no_grad():
        both = head(feats, [s.metainfo for s in samples])
        for i in range(2):
            alone = head([f[i : i + 1] for f in feats], [samples[i].metainfo])
            for key in ("bev_embed", "all_cls_scores", "all_bbox_preds"):
                part = both[key][i : i + 1] if key == "bev_embed" else both[key][:, i : i + 1]
                torch.testing.assert_close(part, alone[key], atol=1e-5, rtol=1e-5, msg=key)


def test_a_history_bev_changes_the_bev_and_none_is_the_current_bev(nuscenes_rig):
    torch.manual_seed(0)
    head = _build(head_cfg()).eval()
    metas = [s.metainfo for s in _samples(nuscenes_rig, [([CAR_AHEAD], [0])])]
    with torch.no_grad():
        plain = head(_feats(1), metas)
        history = head(_feats(1), metas, history=torch.randn(1, 120, C))
    assert not torch.allclose(plain["bev_embed"], history["bev_embed"])


def test_shared_constants_are_passed_down_and_never_repeated():
    head = _build(head_cfg())
    sca = head.transformer.encoder.layers[1].attentions[1]
    assert (sca.embed_dims, sca.num_levels, sca.num_points_in_pillar) == (C, 2, 4)
    assert head.transformer.encoder.grid.pc_range == tuple(PC_RANGE) and head.grid.shape == (12, 10)
    assert head.transformer.decoder.layers[0].attentions[1].num_levels == 1  # the BEV
    bad = head_cfg()
    bad["encoder"] = dict(bad["encoder"], embed_dims=C)
    with pytest.raises(ValueError, match=r"encoder must not set \['embed_dims'\]"):
        _build(bad)
    bad = head_cfg()
    bad["encoder"]["layer_cfg"] = dict(sca_cfg=dict(num_levels=2))
    with pytest.raises(ValueError, match=r"sca_cfg must not set \['num_levels'\]"):
        _build(bad)
    with pytest.raises(ValueError, match="mlvl_feats must have num_levels=2 levels"):
        _build(head_cfg())(_feats(1)[:1], [])


def test_encoder_rejects_a_camera_count_it_has_no_embeddings_for(nuscenes_rig):
    head = _build(head_cfg())
    meta = _samples(nuscenes_rig, [([], [])])[0].metainfo
    cams = CameraGeometry.from_metas([meta], "cpu")
    five = CameraGeometry(cams.lidar2img[:, :5], cams.img_hw[:, :5], cams.pad_hw)
    value, levels = head._flatten_levels([f[:, :5] for f in _feats(1)], PAD_HW)
    with pytest.raises(ValueError, match=r"for N=6 cameras \(cams_embeds\)"):
        head.transformer.encoder(value, levels, five)


def detector_cfg() -> dict:
    return dict(
        type="BEVFormer",
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
            out_indices=(1, 2),
            norm_eval=False,
            style="pytorch",
        ),
        img_neck=dict(type="mmdet.FPN", in_channels=[32, 64], out_channels=C, num_outs=2),
        grid_mask=dict(type="GridMask", ratio=0.5, mode=1, prob=1.0),
        bbox_head=head_cfg(num_classes=10, bbox_coder=dict(type="NMSFreeCoder", max_num=15)),
        aux_head=dict(type="ImageCentreAuxHead", level=0),
    )


def test_detector_trains_and_predicts_through_the_preprocessor(nuscenes_rig):
    torch.manual_seed(0)
    model = _build(detector_cfg())
    model.init_weights()
    imgs = [torch.randint(0, 256, (6, 3, *IMG_HW), dtype=torch.uint8) for _ in range(2)]
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0]), ([PED_LEFT], [7])])
    for s in samples:
        s.set_metainfo(dict(box_type_3d=LiDARInstance3DBoxes))
    data = model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=samples), training=True)
    losses = model(**data, mode="loss")
    assert {"loss_cls", "loss_bbox", "d0.loss_cls", "aux_loss_heatmap"} <= set(losses)
    total, _ = model.parse_losses(losses)
    total.backward()
    assert model.img_backbone.conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (result,) = model(
            **model.data_preprocessor(dict(inputs=dict(img=imgs[:1]), data_samples=samples[:1])),
            mode="predict",
        )
    pred = result.pred_instances_3d
    assert isinstance(pred.bboxes_3d, LiDARInstance3DBoxes) and pred.bboxes_3d.tensor.shape == (15, 9)
    assert (pred.query_ids < 24).all() and torch.isfinite(pred.bboxes_3d.tensor).all()


def test_detector_runs_the_image_encoder_between_the_neck_and_the_head(nuscenes_rig):
    cfg = detector_cfg()
    cfg["img_encoder"] = dict(
        type="DeformableEncoderNeck",
        encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=dict(num_heads=4, num_points=2))),
    )
    cfg.pop("aux_head")
    torch.manual_seed(0)
    model = _build(cfg)
    model.init_weights()
    assert model.img_encoder.num_levels == 2  # the head's
    imgs = [torch.randint(0, 256, (6, 3, *IMG_HW), dtype=torch.uint8)]
    samples = _samples(nuscenes_rig, [([CAR_AHEAD], [0])])
    data = model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=samples), training=True)
    total, _ = model.parse_losses(model(**data, mode="loss"))
    assert torch.isfinite(total)
    total.backward()
    grad = model.img_encoder.encoder.layers[0].self_attn.sampling_offsets.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("config", "bev", "enc_layers", "levels", "depth", "dcn", "input_hw"),
    [
        ("bevformer_r50_fpn_8xb1-24e_nus-800x450.py", 50, 3, 1, 50, False, (448, 800)),
        ("bevformer_r101-dcn_fpn_8xb1-24e_nus-1280x720.py", 150, 3, 1, 101, True, (704, 1280)),
        ("bevformer_r101-dcn_fpn_8xb1-24e_nus-1600x900.py", 200, 6, 4, 101, True, (896, 1600)),
    ],
)
def test_real_configs_have_bevformers_sizes(config, bev, enc_layers, levels, depth, dcn, input_hw):
    """BEVFormer-tiny, -small and -base as the official configs state them (the config test runs
    them on a 20x20 grid; here the full-size heads are built)."""
    cfg = Config.fromfile(str(REPO / "configs/bevformer" / config))
    head, backbone = cfg.model.bbox_head, cfg.model.img_backbone
    assert (head.encoder.bev_h, head.encoder.bev_w, head.encoder.num_layers) == (bev, bev, enc_layers)
    assert (head.num_levels, cfg.model.img_neck.num_outs, head.decoder.num_layers, head.num_query) == (
        levels, levels, 6, 900,
    )  # fmt: skip
    assert backbone.depth == depth and ("dcn" in backbone) == dcn
    assert backbone.init_cfg.checkpoint == f"torchvision://resnet{depth}"
    assert cfg.train_dataloader.dataset.pipeline[2].final_size == input_hw
    built = _build(head.to_dict())
    assert built.transformer.encoder.bev_embedding.weight.shape == (bev * bev, 256)
    assert len(built.transformer.encoder.layers) == enc_layers and built.grid.cell_size == pytest.approx(
        (102.4 / bev, 102.4 / bev)
    )
