"""DeformDETR3D, ResNet-101-DCN + FPN at 1600x900 (``deform_detr3d_r101-dcn_fpn_8xb1-24e_nus-1600x900``)
trained on class-balanced samples: mmdet3d's ``CBGSDataset`` (class-balanced grouping and
sampling, Zhu et al. 2019) wraps the train set, as DETR3D's CBGS config does (its README: NDS 0.422 -> 0.434).

What CBGS does (mmdet3d 1.4): with K classes, n_c the number of train samples that contain class
c and D = sum_c n_c, every class present draws floor(D / K) samples, with replacement, from the
n_c samples that contain it. An epoch has K * floor(D / K) ~ D samples instead of N, i.e. N times
the mean number of classes per sample; a sample with a rare class is drawn about floor(D / K) /
n_c times for that class, and every class is shown by at least floor(D / K) training samples.
A class with no sample at all raises ``ZeroDivisionError`` in mmdet3d (a train set must contain
all K classes).

Schedule: epoch-based as DETR3D's CBGS config, the same 24 epochs, each K * floor(D / K) samples
long (the cosine decay is by epoch, the 500-iteration warm-up by iteration, checkpoints per epoch:
nothing assumes an epoch length). With an iteration-based schedule (``adamw_cosine_iter``) the
number of iterations stays as set; CBGS only changes which samples they draw.

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
