"""The static BEVFormer CPU model, data and schedule, read by
``configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py`` (its docstring has the figures)
and by its temporal variant: the DETR3D-style CPU config (``deform_detr3d_r18_fpn_cpu_synth``:
its backbone, FPN, dense image head, decoder, data and budget) with the BEVFormer detector and
head and a 50x50 BEV encoder of 2 layers, validated at half the budget too, and DINO's 3D
contrastive denoising in training (measured better in the static config: NDS 0.2925 -> 0.3298;
the temporal variant has it too since 4 Dec 2026)."""

from mmengine.config import read_base

with read_base():
    from .deform_detr3d_r18_fpn_cpu_synth import *  # noqa: F401,F403

from bev_deform.models.detectors import BEVFormer
from bev_deform.models.heads import BEVFormerHead

bev_h, bev_w = 50, 50

model.update(type=BEVFormer)  # noqa: F405
model["bbox_head"].update(  # noqa: F405
    type=BEVFormerHead,
    encoder=dict(
        bev_h=bev_h,
        bev_w=bev_w,
        num_layers=2,
        num_points_in_pillar=4,
        layer_cfg=dict(
            tsa_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
            sca_cfg=dict(num_heads=4, num_points=8, dropout=0.0),
            ffn_cfg=dict(feedforward_channels=2 * embed_dims, ffn_drop=0.0),  # noqa: F405
        ),
    ),
    denoising=dict(num_groups=5),  # training only; nothing at inference
)
train_cfg.update(val_interval=max_iters // 2)  # noqa: F405
