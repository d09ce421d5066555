"""Runtime shared by every bev_deform config: scope, hooks, logging, visualiser, environment.

No ``custom_imports``: pure-Python configs import the classes they name (which registers
bev_deform's modules), and a string type such as ``type='GridMask'`` resolves under
``default_scope='bev_deform'`` because mmengine imports ``bev_deform.registry``, whose
registries import their ``locations`` on first use.
"""

from mmengine.hooks import DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.runner import LogProcessor
from mmengine.visualization import LocalVisBackend

from bev_deform.checkpoint import ResumableCheckpointHook
from bev_deform.visualization import SamplingPointsVisualizationHook, SamplingPointsVisualizer

default_scope = "bev_deform"

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, interval=50),
    param_scheduler=dict(type=ParamSchedulerHook),
    # CheckpointHook that writes atomically and seeds each iteration from (seed, iteration): a kill
    # never leaves a run without a complete checkpoint, and a resumed run equals an uninterrupted one
    checkpoint=dict(type=ResumableCheckpointHook, interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type=DistSamplerSeedHook),
    # sampling-point mosaics at test time; tools/test.py --show-dir D sets draw=True, show_dir=D
    visualization=dict(type=SamplingPointsVisualizationHook, draw=False, queries="top-20", layer=-1),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),  # tools/train.py switches to gloo on CPU
)

log_processor = dict(type=LogProcessor, window_size=50, by_epoch=True)

vis_backends = [dict(type=LocalVisBackend)]
# mmdet3d's Det3DLocalVisualizer plus the sampling-point drawing
visualizer = dict(type=SamplingPointsVisualizer, vis_backends=vis_backends, name="visualizer")

log_level = "INFO"
load_from = None
resume = False
