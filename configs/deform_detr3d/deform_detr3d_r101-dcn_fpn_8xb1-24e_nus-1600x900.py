"""DeformDETR3D, ResNet-101 with DCNv2 in stages 3-4 + FPN, real nuScenes at full 1600x900 (inputs
cropped to 1600x896), 900 queries, 6 decoder layers, 4 levels, 24 epochs: the DETR3D/BEVFormer-size
model, its backbone from torchvision's ImageNet ResNet-101 (stem and stage 1 frozen, BN frozen).

    bash tools/dist_train.sh configs/deform_detr3d/deform_detr3d_r101-dcn_fpn_8xb1-24e_nus-1600x900.py 8 --amp

Variants: ``..._nus-1600x900-fcos3d.py`` starts from an FCOS3D checkpoint (caffe style, as DETR3D
and BEVFormer report their numbers), ``...-24e-cbgs_nus-1600x900.py`` trains on class-balanced
(CBGS) samples.

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP
is claimed for it yet.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.nus_3d_cam_1600x900 import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.deform_detr3d_r101_dcn_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405
