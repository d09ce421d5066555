"""A short iteration-based AdamW + cosine schedule for CPU runs on the synthetic data: the
optimizer of ``adamw_cosine_24e`` (AdamW, lr 2e-4, image backbone at 0.1x, gradient norm clipped
at 35) with the warm-up and cosine decay counted in iterations.

Iteration-based: it also switches the runtime's checkpointing and logging to iterations,
so import it after ``default_runtime`` (``from .._base_.default_runtime import *`` first).
Evaluation runs once, at the end. Configs evaluate eagerly (each line when it is read), so a
config that reads this one and changes ``max_iters`` must restate what was computed from it:
``param_scheduler``'s ``end`` / ``T_max`` (and the warm-up's ``end``, 1/20 of the run here),
``train_cfg.max_iters`` and the checkpoint interval, as ``deform_detr3d_r18_fpn_cpu_synth`` does.
"""

from mmengine.config import read_base

with read_base():
    from ..default_runtime import *  # noqa: F401,F403

    # the epoch schedule's optimizer, its lr and the val/test loops
    from .adamw_cosine_24e import lr, optim_wrapper, test_cfg, val_cfg  # noqa: F401

from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import CosineAnnealingLR, LinearLR
from mmengine.runner import IterBasedTrainLoop, LogProcessor

max_iters = 300

param_scheduler = [
    dict(type=LinearLR, start_factor=1.0 / 3, by_epoch=False, begin=0, end=max(1, max_iters // 20)),
    dict(type=CosineAnnealingLR, eta_min=lr * 1e-2, by_epoch=False, begin=0, end=max_iters, T_max=max_iters),
]

train_cfg = dict(type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)

default_hooks.update(  # noqa: F405
    logger=dict(type=LoggerHook, interval=10, log_metric_by_epoch=False),  # val metrics at their iteration
    checkpoint=dict(type=CheckpointHook, interval=max_iters, by_epoch=False, max_keep_ckpts=1),
)
log_processor = dict(type=LogProcessor, window_size=10, by_epoch=False)
