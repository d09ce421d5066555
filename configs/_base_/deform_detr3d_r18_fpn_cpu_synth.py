"""The DETR3D-style CPU model, data and schedule, read by
``configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py`` (its docstring has the
figures and how they were reached), by the BEVFormer CPU base (``bevformer_r18_fpn_cpu_synth``:
the BEV head on this backbone, data and budget) and by projects/DAT's DAT-N CPU config (another
backbone and iteration count). It lives here because mmengine's ``read_base`` imports configs by
module name, which the public configs' file names (with ``-``) are not.

A 1/2-width ResNet-18 + FPN (4 levels, 128 channels, channels-last) trained from scratch, 300
queries, 3 decoder layers, the training-only dense image head (``ImageCentreAuxHead``), the
synthetic data, and ``adamw_cosine_iter``'s schedule for 1800 iterations at lr 1e-3.
"""

from mmengine.config import read_base

with read_base():
    from .datasets.synth_nus_3d_cam import *  # noqa: F401,F403
    from .models.deform_detr3d_r50_fpn import *  # noqa: F401,F403
    from .schedules.adamw_cosine_iter import *  # noqa: F401,F403

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
    # synthetic velocities are exact (static objects exactly 0), so velocity gets the full weight
    # instead of DETR3D's 0.2 for nuScenes' noisy ones; the attribute (moving/parked) follows it
    code_weights=[1.0] * 10,
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(num_heads=4, attn_drop=0.0),
            cross_attn_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
            ffn_cfg=dict(feedforward_channels=2 * embed_dims, ffn_drop=0.0),
        ),
    ),
)

# the schedule for this max_iters and lr, without the backbone lr multiplier (from scratch)
optim_wrapper["optimizer"].update(lr=lr)  # noqa: F405
optim_wrapper.update(paramwise_cfg=None)  # noqa: F405
param_scheduler[0].update(start_factor=0.1, end=max_iters // 20)  # noqa: F405
param_scheduler[1].update(eta_min=lr * 1e-2, end=max_iters, T_max=max_iters)  # noqa: F405
train_cfg.update(max_iters=max_iters, val_interval=max_iters)  # noqa: F405
default_hooks["checkpoint"].update(interval=250, max_keep_ckpts=2)  # noqa: F405
randomness = dict(seed=0)  # the demo's run is reproducible; `--cfg-options randomness.seed=N` varies it
