"""A short iteration-based AdamW + cosine schedule for CPU runs on the synthetic data.

Iteration-based: it also switches the runtime's checkpointing and logging to iterations,
so import it after ``default_runtime`` (``from .._base_.default_runtime import *`` first).
``max_iters`` is the one knob; evaluation runs once, at the end.
"""

from mmengine.config import read_base

with read_base():
    from ..default_runtime import *  # noqa: F401,F403

from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper
from mmengine.runner import IterBasedTrainLoop, LogProcessor, TestLoop, ValLoop
from torch.optim import AdamW

max_iters = 300
lr = 2e-4
warmup_iters = max(1, max_iters // 20)

optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=AdamW, lr=lr, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={"img_backbone": dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type=LinearLR, start_factor=1.0 / 3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type=CosineAnnealingLR, eta_min=lr * 1e-2, by_epoch=False, begin=0, end=max_iters, T_max=max_iters),
]

train_cfg = dict(type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)

default_hooks.update(  # noqa: F405
    logger=dict(type=LoggerHook, interval=10, log_metric_by_epoch=False),  # val metrics at their iteration
    checkpoint=dict(type=CheckpointHook, interval=max_iters, by_epoch=False, max_keep_ckpts=1),
)
log_processor = dict(type=LogProcessor, window_size=10, by_epoch=False)
