"""The DETR3D-style CPU config with dense depth supervision from the lidar in training: the dense
image head (``ImageCentreAuxHead``) also predicts log depth at every stride-8 cell of every camera,
with L1 against the nearest LIDAR_TOP point that projects into the cell (BEVDepth's depth
supervision, the dense depth loss of Sparse4D v2 / Far3D). Training loads each sample's points
(``LoadPointsFromFile``) and packs them; inference is unchanged (cameras only, the points are
not loaded, the depth branch is not run), so the evaluation and a submission stay camera-only.

    python tools/train.py configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224-lidar_depth.py

Measured (session 13, 4 Dec 2026, seed 0, 2 threads of the 2-core AMD EPYC machine, alone; the
CPU config's ``make demo`` run on the same threads for comparison):

    config                      NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    the CPU config (make demo)  0.3254  0.1743  0.98  0.24  0.87  0.37  0.16  1.07
    this config                 0.3298  0.1873  0.95  0.22  0.99  0.34  0.15  0.89

mAP +0.013 and mATE lower, heading worse; NDS +0.004 is inside the seed spread (0.01), so the CPU
config does not load the lidar (the discussion is in its docstring). This variant is the CPU
config as it was measured against (denoising on); the query groups and look forward twice that
the CPU config switched on afterwards (5 Dec 2026) are not in it, so that these figures stay this
config's: add them with ``--cfg-options model.bbox_head.query_groups=3
model.bbox_head.decoder.look_forward_twice=True`` (not measured together).
"""

from mmengine.config import read_base

with read_base():
    from .._base_.deform_detr3d_r18_fpn_cpu_synth import *  # noqa: F401,F403

from mmdet3d.datasets.transforms import LoadPointsFromFile

# the CPU config's denoising (deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py, which read_base
# cannot import by its file name)
model["bbox_head"].update(denoising=dict(num_groups=5))  # noqa: F405
model["aux_head"].update(loss_depth=dict(type="mmdet.L1Loss", loss_weight=1.0))  # noqa: F405

# training only: the points after the images (x, y, z, intensity, ring as the info files say), packed
_train_pipeline = [
    train_pipeline[0],  # noqa: F405
    dict(type=LoadPointsFromFile, coord_type="LIDAR", load_dim=5, use_dim=3, backend_args=backend_args),  # noqa: F405
    *train_pipeline[1:-1],  # noqa: F405
    dict(train_pipeline[-1], keys=[*train_pipeline[-1]["keys"], "points"]),  # noqa: F405
]
# the lidar paths are joined to data_prefix['pts'] only with use_lidar; the val set and the
# evaluator (the submission's meta block) keep the camera-only modality
train_dataloader["dataset"].update(  # noqa: F405
    pipeline=_train_pipeline,
    modality=dict(input_modality, use_lidar=True),  # noqa: F405
)
