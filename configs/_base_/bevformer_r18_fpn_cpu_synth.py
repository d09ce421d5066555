"""The static BEVFormer CPU model, data and schedule, read by
``configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py`` (its docstring has the figures)
and by its temporal variant."""

from mmengine.config import read_base

with read_base():
    from .datasets.synth_nus_3d_cam import *  # noqa: F401,F403
    from .models.bevformer_r50_fpn import *  # noqa: F401,F403
    from .schedules.adamw_cosine_iter import *  # noqa: F401,F403

from bev_deform.models.heads import ImageCentreAuxHead

embed_dims = 128
num_levels = 4
bev_h, bev_w = 50, 50
max_iters = 1800  # the DETR3D-style CPU config's budget
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
train_cfg.update(max_iters=max_iters, val_interval=max_iters // 2)  # noqa: F405
default_hooks["checkpoint"].update(interval=250, max_keep_ckpts=2)  # noqa: F405
randomness = dict(seed=0)
