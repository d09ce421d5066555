"""BEVFormer for CPUs (static): the DETR3D-style CPU config's 1/2-width ResNet-18 + FPN (4 levels,
128 channels, channels-last) and dense image head (``ImageCentreAuxHead``), a 50x50 BEV (2.05 m
cells) encoded by 2 layers (4 heads, 4 pillar anchors, 8 points per head and level in SCA), 300
object queries decoded on the BEV by 3 layers, on the synthetic nuScenes 'learn' preset (six
400x225 cameras, cropped to 400x224), trained from scratch with an iteration-based AdamW + cosine
schedule, validated every 600 iterations.

    python tools/create_data.py synthetic --out data/nuscenes-synth --preset learn --seed 0
    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py
    python tools/test.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224.py \
        work_dirs/bevformer_r18_fpn_1xb2-cpu_synth-400x224/iter_2400.pth --show-dir mosaics

Budget: ~25 minutes of training on a 2-core CPU. Measured side by side with the DETR3D-style CPU
config on this machine, one training step of batch 2 costs 1.13x (single-threaded: 2.36 s against
2.09 s) to 1.15x (two threads, loaded machine: 1.8 s against 1.57 s per iteration), so ~0.57 s
per iteration where that config takes 0.5: 2400 iterations and four evaluations in ~24 minutes.
The BEV encoder costs about as much as the backbone (0.25 s of a 2.4 s single-threaded step),
most of it the per-layer value projection of the camera features.

Measured NDS / mAP: not yet (the 25-minute run is scheduled separately; see the closing note of
issue 13).
"""

from mmengine.config import read_base

with read_base():
    from .._base_.bevformer_r18_fpn_cpu_synth import *  # noqa: F401,F403
