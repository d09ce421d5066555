"""DeformDETR3D for CPUs: a 1/2-width ResNet-18 + FPN (4 levels, 128 channels), 300 queries,
3 decoder layers, on the synthetic nuScenes 'learn' preset (six 400x225 cameras, cropped to
400x224), trained from scratch with an iteration-based AdamW + cosine schedule. The model of
``make demo``.

    python tools/create_data.py synthetic --out data/nuscenes-synth --preset learn --seed 0
    python tools/train.py configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py
    python tools/test.py configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py \
        work_dirs/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224/iter_<max_iters>.pth

Results on the synthetic val (scene-0103, scene-0916; 80 samples): see the README's demo
section and the closing notes for the measured NDS/mAP of the default schedule.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.synth_nus_3d_cam import *  # noqa: F401,F403
    from .._base_.models.deform_detr3d_r50_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_iter import *  # noqa: F401,F403

embed_dims = 128
max_iters = 1500
lr = 1.5e-3

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
model["grid_mask"] = None  # noqa: F405  (a ~20 min schedule from scratch learns faster without it)
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
