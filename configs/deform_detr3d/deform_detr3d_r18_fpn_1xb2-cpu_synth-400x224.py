"""DeformDETR3D for CPUs: a 1/2-width ResNet-18 + FPN (4 levels, 128 channels, channels-last),
300 queries, 3 decoder layers, and the training-only dense image head (``ImageCentreAuxHead``),
on the synthetic nuScenes 'learn' preset (six 400x225 cameras, cropped to 400x224), trained from
scratch with an iteration-based AdamW + cosine schedule. The model of ``make demo``.

    python tools/create_data.py synthetic --out data/nuscenes-synth --preset learn --seed 0
    python tools/train.py configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py
    python tools/test.py configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py \
        work_dirs/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224/iter_1800.pth

Measured (this config, 1800 iterations of batch 2 on a 2-core CPU: 0.57 s per iteration = 1.75
it/s, 18.9 min with a mid-run and the final evaluation) on the synthetic val (scene-0103,
scene-0916; 80 samples):
NDS 0.2532, mAP 0.1823, mATE 0.93, mASE 0.27, mAOE 0.76, mAVE 1.28, mAAE 0.42.

    class                 AP     AP@0.5/1/2/4 m
    car                   0.244  0.011 0.081 0.286 0.598
    truck                 0.170  0.000 0.015 0.147 0.520
    trailer               0.167  0.000 0.002 0.161 0.505
    bus                   0.110  0.000 0.000 0.048 0.393
    construction_vehicle  0.221  0.000 0.046 0.251 0.585
    bicycle               0.191  0.000 0.099 0.300 0.363
    motorcycle            0.100  0.000 0.012 0.089 0.300
    pedestrian            0.275  0.004 0.047 0.394 0.655
    traffic_cone          0.186  0.029 0.183 0.250 0.283
    barrier               0.159  0.000 0.065 0.212 0.359

What got it there from NDS 0.198 (the same schedule at 1500 iterations without them), each measured
on this machine: the dense image head (NDS 0.219, mAP 0.107 -> 0.147 at 1500 iterations) and the
channels-last backbone, whose 20% faster iterations buy 1800 instead of 1500 in the same time.
Training is seeded (``randomness``); other seeds differ by run-to-run noise.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.synth_nus_3d_cam import *  # noqa: F401,F403
    from .._base_.models.deform_detr3d_r50_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_iter import *  # noqa: F401,F403

from bev_deform.models.heads import ImageCentreAuxHead

embed_dims = 128
max_iters = 1800
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
    channels_last=True,  # oneDNN's NHWC convolutions: 0.57 instead of 0.69 s per iteration
    aux_head=dict(type=ImageCentreAuxHead, level=0),  # dense image-side targets (training only)
)
model["img_neck"].update(in_channels=[64, 128, 256], out_channels=embed_dims)  # noqa: F405
model["bbox_head"].update(  # noqa: F405
    embed_dims=embed_dims,
    num_query=300,
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
train_cfg.update(max_iters=max_iters, val_interval=max_iters)  # noqa: F405
default_hooks["checkpoint"].update(interval=250, max_keep_ckpts=2)  # noqa: F405
randomness = dict(seed=0)  # the demo's run is reproducible; `--cfg-options randomness.seed=N` varies it
