"""BEVFormer for CPUs (static): the DETR3D-style CPU config's 1/2-width ResNet-18 + FPN (4 levels,
128 channels, channels-last) and dense image head (``ImageCentreAuxHead``), a 50x50 BEV (2.05 m
cells) encoded by 2 layers (4 heads, 4 pillar anchors, 8 points per head and level in SCA), 300
object queries decoded on the BEV by 3 layers, DINO's 3D contrastive denoising in training, on
the synthetic nuScenes 'learn' preset (six 400x225 cameras, cropped to 400x224), trained from
scratch with an iteration-based AdamW + cosine schedule, validated at iterations 900 and 1800.

    python tools/create_data.py synthetic --out data/nuscenes-synth --preset learn --seed 0
    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py
    python tools/test.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py \
        work_dirs/bevformer_r18_fpn_1xb2-cpu_synth-400x224/iter_1800.pth --show-dir mosaics

Budget: the DETR3D-style CPU config's, 1800 iterations of batch 2 (same data and seed; the head
differs, and the denoising, which that config does not use yet). On the AVX2 2-core machine a
step took 1.65 s on 2 threads quiet on the faster day of session 4 (the DETR3D-style config 1.55
s), 2.8 s on the slower days of sessions 6 and 7 (DETR3D-style 2.0-2.1 s). The BEV encoder costs
about as much as the backbone (0.25 s of a 2.4 s single-threaded step), most of it the per-layer
value projection of the camera features.

Measured on the synthetic val (80 samples), seed 0, this config as committed (1 Dec 2026,
session 7, the AVX2 2-core machine, 2 threads, 1800 iterations in 84.6 min, median 2.79 s per
iteration with the validation at 900 included and light other work at nice 19 at times):

    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py \
        --work-dir work_dirs/bev_dn

NDS 0.3298, mAP 0.1886, mATE 0.85, mASE 0.30, mAOE 1.01, mAVE 0.35, mAAE 0.14 (NDS 0.277 / mAP
0.117 at iteration 900). The issue's target, NDS >= 0.30, is reached. The DETR3D-style CPU
config on the same machine and data (``make demo``, session 6): NDS 0.3165, mAP 0.1789, mATE
0.97, mASE 0.35, mAOE 0.88, mAVE 0.39, mAAE 0.14, 2.0 s per iteration.

    class                 AP     AP@0.5/1/2/4 m
    car                   0.265  0.041 0.154 0.287 0.578
    truck                 0.289  0.070 0.190 0.348 0.548
    trailer               0.329  0.046 0.197 0.414 0.658
    bus                   0.282  0.056 0.137 0.369 0.566
    construction_vehicle  0.340  0.083 0.283 0.433 0.563
    bicycle               0.027  0.000 0.006 0.035 0.066
    motorcycle            0.015  0.000 0.000 0.006 0.053
    pedestrian            0.247  0.000 0.050 0.369 0.570
    traffic_cone          0.059  0.000 0.000 0.084 0.153
    barrier               0.033  0.000 0.000 0.000 0.131

The one change from the first trained version is DINO's 3D contrastive denoising in training
(``denoising=dict(num_groups=5)``, the defaults: box noise scale 1.0, label noise 0.25, loss
weight 1.0; nothing at inference), seed 0, the same data and budget:

    setting                NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  NDS / mAP at 900  s/it
    without denoising      0.2925  0.1443  0.92  0.38  1.03  0.36  0.14  0.204 / 0.050     2.8 *
    with denoising (kept)  0.3298  0.1886  0.85  0.30  1.01  0.35  0.14  0.277 / 0.117     2.79

The row without denoising is session 4's run (code before session 5's ``valid_shapes`` /
``bilinear_mass`` change, which moved the DETR3D-style config's NDS by +0.006, float rounding;
its per-class table: car 0.361, truck 0.240, trailer 0.212, bus 0.249, construction vehicle 0.159,
bicycle 0.012, motorcycle 0.010, pedestrian 0.152, traffic cone 0.016, barrier 0.032); * its
step time measured on this machine in session 6 (it trained at 1.65 s on the faster day of session
4). Denoising leads at half the budget already (mAP 0.117 against 0.050) and helps every large
class but cars (car AP 0.265 against 0.361, while car AP@0.5 m is 0.041 against 0.080); the small
classes stay near zero on the 2.05 m cells. The denoising queries cost no measurable step time
(the decoder on the BEV is a small part of the step).

``docs/bevformer_sampling_example.png`` is this checkpoint on val sample 10
(``tools/vis_sampling_points.py CONFIG work_dirs/bev_dn/iter_1800.pth --sample-idx 10
--queries top-10``): the 10 top queries' boxes sit on ground-truth vehicles 0-45 m ahead and to
the right, with the decoder's BEV samples around them; the encoder's SCA samples of the 31 cells
under them fall in CAM_FRONT (809) and CAM_FRONT_RIGHT (865), pillar anchors stacked on the
objects' image columns, CAM_BACK gets 230 for the box behind the ego, the side cameras 16-51.

Finer cells cost more than the encoder's share suggests: on 1 Dec 2026 (session 6, the same
machine on a slower day, 2 threads, other work held at nice 19) this config trained at 2.8 s per
iteration and the same with a 100x100 BEV (``--cfg-options model.bbox_head.encoder.bev_h=100
model.bbox_head.encoder.bev_w=100``, 1.02 m cells) at 4.5 s, so 1800 iterations would take
2 h 15 min; neither run was finished.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.bevformer_r18_fpn_cpu_synth import *  # noqa: F401,F403

# DINO's contrastive denoising in 3D (training only: NDS 0.2925 -> 0.3298, docstring above) is in
# the _base_, shared with the temporal variant
