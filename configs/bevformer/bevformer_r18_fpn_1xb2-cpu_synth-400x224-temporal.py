"""BEVFormer for CPUs with temporal fusion: the static CPU config
(``bevformer_r18_fpn_1xb2-cpu_synth-400x224.py``) plus the history BEV, without that config's
denoising (added in session 7 after the rows below: they compare history against none, both
without denoising; denoising with history is not measured yet).

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

Measured on the synthetic val (80 samples), seed 0, 1 Dec 2026, against the static config's
run of session 4 on the same machine (same data, model, budget and seed; the only change is the
history), each on one thread beside another training:

    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py \
        --work-dir work_dirs/bev_temporal

    config        it    NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    static        900   0.2037  0.0504  1.20  0.42  1.09  0.64  0.16
    with history  900   0.1685  0.0516  1.07  0.41  1.19  0.95  0.22
    static        1800  0.2925  0.1443  0.92  0.38  1.03  0.36  0.14  3.1
    with history  1800  0.3198  0.1874  0.84  0.37  1.05  0.38  0.15  5.3

With the history NDS rises from 0.2925 to 0.3198, mAP from 0.144 to 0.187 and mATE falls from
0.92 to 0.84; but mAVE changes by +4 % (target: at least 30 % lower) and NDS stays below the
target of 0.35: neither of the issue's targets is reached. On the iteration-1000 checkpoint
the carried history raises mAP from 0.037 to 0.065 (NDS 0.200 -> 0.215) against the same weights
tested without it (``--cfg-options model.video_test=False``), with mAVE 0.57 -> 0.60: the
model uses the history for detection, not yet for velocity; the final checkpoint without it
gives NDS 0.2668, mAP 0.1139, mAVE 0.44 (with it 0.3198, 0.1874, 0.38). Not yet trained: the
two options that give the model the time gap, which its 2-of-3 random queue frames vary (0.5
to 1.5 s in training, 0.5 s at test): consecutive queue frames
(``train_dataloader.dataset.queue_range=2``) and the ego-motion embedding of the BEV queries
(``model.bbox_head.encoder.ego_motion_embed=True``: translation, yaw change and time gap since
the history frame, from the poses).
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
