"""DeformDETR3D for CPUs with a small DAT ("DAT-N": DAT-T's layout at a third of its width, the
same 64/128/256 channels at strides 8/16/32 as the R18 CPU config's backbone), trained from
scratch on the synthetic nuScenes 'learn' preset: the R18 CPU config
(configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py) with the backbone swapped
and as many iterations as fit in the R18 run's training time (and without the denoising that the R18
config switched on on 4 Dec 2026, after this row was measured).

    python tools/create_data.py synthetic --out data/nuscenes-synth --preset learn --seed 0
    python tools/train.py projects/DAT/configs/deform_detr3d_dat-n_fpn_1xb2-cpu_synth-400x224.py
    python tools/test.py projects/DAT/configs/deform_detr3d_dat-n_fpn_1xb2-cpu_synth-400x224.py \
        work_dirs/deform_detr3d_dat-n_fpn_1xb2-cpu_synth-400x224/iter_1000.pth

The R18 config's settings are read from its importable base
(configs/_base_/deform_detr3d_r18_fpn_cpu_synth.py; mmengine's ``read_base`` imports configs by
module name, which the R18 config's file name, with ``-``, is not); projects/DAT/tests/test_configs.py
checks that the two configs differ only in the backbone and the iteration count.

Time per iteration (batch 2 x 6 cameras, forward, backward and AdamW step), the two models
interleaved iteration by iteration in one process on the same pre-loaded batches, on the 2-core
machine this was built on (busy: its absolute figures are 2-4x the R18 config's unloaded 0.5 s):
DAT-N / R18 = 1.82 and 1.89 in process CPU time on one thread (two runs: 3.78 / 2.08 s and
3.95 / 2.09 s), 1.66 in wall time on two threads (median of 10 pairs), hence 1000 iterations
against the R18 config's 1800 (projects/DAT/tools/interleaved_iteration_time.py, see the README).

Measured on the synthetic val (80 samples), seed 0, 1 Dec 2026, one thread beside another
training (1000 iterations in 88.1 min, about 81 min without the benchmark pauses in it; the R18
config's 1800 took 81.8 min, 2.73 s each, in the same conditions): NDS 0.1848, mAP 0.0993,
mATE 1.03, mASE 0.39, mAOE 1.05, mAVE 1.17, mAAE 0.26, against the R18 config's NDS 0.3106,
mAP 0.1803 (projects/DAT/README.md has both rows). From scratch at this budget DAT-N is clearly
behind ResNet-18.

Inputs are 224x400, padded to 224x416: the stages' maps are 56x104, 28x52, 14x26 and 7x13, so
windows of 8 and 4 tile stages 1-2 exactly (stages 3-4 pad to multiples of 7), and the bias
tables are built at this size (``img_size``).
"""

from mmengine.config import read_base

with read_base():
    from ....configs._base_.deform_detr3d_r18_fpn_cpu_synth import *  # noqa: F401,F403

from projects.DAT.dat import DAT

max_iters = 1000  # the R18 config's 1800 iterations of training time: a DAT-N iteration takes ~1.8x one

model["img_backbone"] = dict(  # noqa: F405
    type=DAT,
    arch=dict(
        dims=(32, 64, 128, 256),
        depths=(2, 2, 6, 2),
        heads=(1, 2, 4, 8),  # 32 channels per head, as DAT-T
        deform_groups=(1, 2),  # 128 channels per offset group, as DAT-T
        window_sizes=(8, 4, 7, 7),
    ),
    img_size=(224, 416),
    out_indices=(1, 2, 3),
)

# the R18 config's schedule for this max_iters
param_scheduler[0].update(end=max_iters // 20)  # noqa: F405
param_scheduler[1].update(end=max_iters, T_max=max_iters)  # noqa: F405
train_cfg.update(max_iters=max_iters, val_interval=max_iters)  # noqa: F405
