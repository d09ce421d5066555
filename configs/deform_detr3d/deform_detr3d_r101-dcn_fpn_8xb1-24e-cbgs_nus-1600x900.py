"""DeformDETR3D, ResNet-101-DCN + FPN at 1600x900 (``deform_detr3d_r101-dcn_fpn_8xb1-24e_nus-1600x900``)
trained on class-balanced samples: mmdet3d's ``CBGSDataset`` (class-balanced grouping and
sampling, Zhu et al. 2019) wraps the train set, as DETR3D's CBGS configs do (+1.2 NDS there).

What CBGS does (mmdet3d 1.4): with K classes, n_c the number of train samples that contain class
c and D = sum_c n_c, every class present draws floor(D / K) samples, with replacement, from the
n_c samples that contain it. An epoch has K * floor(D / K) samples instead of N (several times
more on nuScenes, where most samples contain a car): a sample with a rare class is repeated
about floor(D / K) / n_c times, the classes are balanced in how many training samples show them.
A class with no sample at all raises ``ZeroDivisionError`` in mmdet3d (a train set must contain
all K classes).

Schedule: epoch-based as DETR3D's CBGS config, the same 24 epochs, each epoch K * floor(D / K)
samples long (the cosine decay is by epoch, the 500-iteration warm-up by iteration, checkpoints
per epoch: nothing depends on the epoch length). Iteration-based schedules do not change with
CBGS except that an iteration draws from the balanced set.

    bash tools/dist_train.sh \
        configs/deform_detr3d/deform_detr3d_r101-dcn_fpn_8xb1-24e-cbgs_nus-1600x900.py 8 --amp

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP
is claimed for it yet.
"""

from mmdet3d.datasets.dataset_wrappers import CBGSDataset
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.nus_3d_cam_1600x900 import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.deform_detr3d_r101_dcn_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405
train_dataloader["dataset"] = dict(type=CBGSDataset, dataset=train_dataloader["dataset"])  # noqa: F405
