"""BEVFormer for CPUs with temporal fusion: the static CPU config
(``bevformer_r18_fpn_1xb2-cpu_synth-400x224.py``) plus the history BEV.

- Training: 3-frame queues (BEVFormer's ``queue_length=3``): each sample comes with 2 earlier
  frames of its scene drawn from the 3 before it; they run in eval mode without gradients, each
  with the BEV of the one before aligned by the ego motion from the info files' poses
  (``lidar2global``; no CAN bus), and the sample trains on the aligned BEV of the last.
- Testing: video testing (``video_test=True``) carries each frame's BEV to the next frame of
  its scene and resets it at a scene start or a gap of more than 1 s; ``SceneSequentialSampler``
  keeps every scene whole and in time order on one process, so ``tools/dist_test.sh`` with N
  processes gives the 1-process result.

    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py
    python tools/test.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py \
        work_dirs/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal/iter_1800.pth

Measured NDS / mAP: not yet (the ablation against the static config is scheduled; each step
costs about 1.6x the static config's, the two earlier frames' backbone and encoder without
gradients).
"""

from mmengine.config import read_base

with read_base():
    from .._base_.bevformer_r18_fpn_cpu_synth import *  # noqa: F401,F403

from bev_deform.datasets.samplers import SceneSequentialSampler

queue_length = 3

model.update(video_test=True, max_history_gap=1.0)  # noqa: F405
train_dataloader["dataset"].update(queue_length=queue_length)  # noqa: F405
val_dataloader["sampler"] = dict(type=SceneSequentialSampler)  # noqa: F405
test_dataloader = val_dataloader  # noqa: F405
