"""BEVFormer for CPUs (static): the DETR3D-style CPU config's 1/2-width ResNet-18 + FPN (4 levels,
128 channels, channels-last) and dense image head (``ImageCentreAuxHead``), a 50x50 BEV (2.05 m
cells) encoded by 2 layers (4 heads, 4 pillar anchors, 8 points per head and level in SCA), 300
object queries decoded on the BEV by 3 layers, on the synthetic nuScenes 'learn' preset (six
400x225 cameras, cropped to 400x224), trained from scratch with an iteration-based AdamW + cosine
schedule, validated at iterations 900 and 1800.

    python tools/create_data.py synthetic --out data/nuscenes-synth --preset learn --seed 0
    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py
    python tools/test.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py \
        work_dirs/bevformer_r18_fpn_1xb2-cpu_synth-400x224/iter_1800.pth --show-dir mosaics

Budget: the DETR3D-style CPU config's, 1800 iterations of batch 2 (the two side by side in one
session, same data, seed 0, no change but the head). On the AVX2 2-core machine of 1 Dec 2026 a
step takes 1.65 s on 2 threads quiet (the DETR3D-style config 1.55 s), ~50 min of training; this
run took 94 min on one thread beside the other training. The BEV encoder costs about as much as
the backbone (0.25 s of a 2.4 s single-threaded step), most of it the per-layer value
projection of the camera features.

Measured on the synthetic val (80 samples), seed 0, this config as committed:

    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py \
        --work-dir work_dirs/bevformer_cpu

NDS 0.2925, mAP 0.1443, mATE 0.92, mASE 0.38, mAOE 1.03, mAVE 0.36, mAAE 0.14 (NDS 0.204 / mAP
0.050 at iteration 900). The DETR3D-style CPU config, side by side: NDS 0.3106, mAP 0.1803,
mATE 0.96, mASE 0.32, mAOE 0.94, mAVE 0.42, mAAE 0.16. The issue's target, NDS >= 0.30, is not
reached (0.2925). The BEV model localises the large classes better (car AP 0.361 against 0.262,
AP@0.5 m 0.080 against 0.011) and loses the small ones on its 2.05 m cells:

    class                 AP     AP@0.5/1/2/4 m
    car                   0.361  0.080 0.239 0.464 0.663
    truck                 0.240  0.016 0.134 0.290 0.519
    trailer               0.212  0.000 0.040 0.274 0.532
    bus                   0.249  0.015 0.100 0.327 0.554
    construction_vehicle  0.159  0.028 0.082 0.214 0.314
    bicycle               0.012  0.000 0.000 0.011 0.036
    motorcycle            0.010  0.000 0.000 0.000 0.040
    pedestrian            0.152  0.000 0.017 0.218 0.374
    traffic_cone          0.016  0.000 0.000 0.013 0.053
    barrier               0.032  0.000 0.000 0.017 0.110

Finer cells cost more than the encoder's share suggests: on 1 Dec 2026 (session 6, the same
machine on a slower day, 2 threads, other work held at nice 19) this config trained at 2.8 s per
iteration and the same with a 100x100 BEV (``--cfg-options model.bbox_head.encoder.bev_h=100
model.bbox_head.encoder.bev_w=100``, 1.02 m cells) at 4.5 s, so 1800 iterations would take
2 h 15 min; neither run was finished.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.bevformer_r18_fpn_cpu_synth import *  # noqa: F401,F403
