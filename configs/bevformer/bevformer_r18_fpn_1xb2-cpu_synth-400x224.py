"""BEVFormer for CPUs (static): the DETR3D-style CPU config's 1/2-width ResNet-18 + FPN (4 levels,
128 channels, channels-last) and dense image head (``ImageCentreAuxHead``), a 50x50 BEV (2.05 m
cells) encoded by 2 layers (4 heads, 4 pillar anchors, 8 points per head and level in SCA), 300
object queries decoded on the BEV by 3 layers, on the synthetic nuScenes 'learn' preset (six
400x225 cameras, cropped to 400x224), trained from scratch with an iteration-based AdamW + cosine
schedule, validated every 600 iterations.

    python tools/create_data.py synthetic --out data/nuscenes-synth --preset learn --seed 0
    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py
    python tools/test.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py \
        work_dirs/bevformer_r18_fpn_1xb2-cpu_synth-400x224/iter_2400.pth --show-dir mosaics

Budget: ~25 minutes of training on a 2-core CPU. Measured side by side with the DETR3D-style CPU
config on this machine, one training step of batch 2 costs 1.13x (single-threaded: 2.36 s against
2.09 s) to 1.15x (two threads, loaded machine: 1.8 s against 1.57 s per iteration), so ~0.57 s
per iteration where that config takes 0.5: 2400 iterations and four evaluations in ~24 minutes.
The BEV encoder costs about as much as the backbone (0.25 s of a 2.4 s single-threaded step),
most of it the per-layer value projection of the camera features.

Measured NDS / mAP: not yet (the 25-minute run is scheduled separately; see the closing note of
issue 13).
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.synth_nus_3d_cam import *  # noqa: F401,F403
    from .._base_.models.bevformer_r50_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_iter import *  # noqa: F401,F403

from bev_deform.models.heads import ImageCentreAuxHead

embed_dims = 128
num_levels = 4
bev_h, bev_w = 50, 50
max_iters = 2400
lr = 1e-3

model["img_backbone"] = dict(  # noqa: F405
    type="mmdet.ResNet",
    depth=18,
    base_channels=32,
    num_stages=4,
    out_indices=(1, 2, 3),
    norm_cfg=dict(type="BN2d", requires_grad=True),
    norm_eval=False,
    style="pytorch",
)
model.update(  # noqa: F405
    channels_last=True,
    aux_head=dict(type=ImageCentreAuxHead, level=0),  # dense image-side targets (training only)
)
model["img_neck"].update(in_channels=[64, 128, 256], out_channels=embed_dims, num_outs=num_levels)  # noqa: F405
model["bbox_head"].update(  # noqa: F405
    embed_dims=embed_dims,
    num_levels=num_levels,
    num_query=300,
    # synthetic velocities are exact (static objects exactly 0): velocity gets the full weight
    code_weights=[1.0] * 10,
    encoder=dict(
        bev_h=bev_h,
        bev_w=bev_w,
        num_layers=2,
        num_points_in_pillar=4,
        layer_cfg=dict(
            tsa_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
            sca_cfg=dict(num_heads=4, num_points=8, dropout=0.0),
            ffn_cfg=dict(feedforward_channels=2 * embed_dims, ffn_drop=0.0),
        ),
    ),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(num_heads=4, attn_drop=0.0),
            cross_attn_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
            ffn_cfg=dict(feedforward_channels=2 * embed_dims, ffn_drop=0.0),
        ),
    ),
)

# the schedule, restated for this config's max_iters and lr (no backbone lr multiplier: from scratch)
optim_wrapper.update(optimizer=dict(type=AdamW, lr=lr, weight_decay=0.01), paramwise_cfg=None)  # noqa: F405
param_scheduler = [
    dict(type=LinearLR, start_factor=0.1, by_epoch=False, begin=0, end=max_iters // 20),  # noqa: F405
    dict(type=CosineAnnealingLR, eta_min=lr * 1e-2, by_epoch=False, begin=0, end=max_iters, T_max=max_iters),  # noqa: F405
]
train_cfg.update(max_iters=max_iters, val_interval=max_iters // 4)  # noqa: F405
default_hooks["checkpoint"].update(interval=250, max_keep_ckpts=2)  # noqa: F405
randomness = dict(seed=0)
