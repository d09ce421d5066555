"""DeformDETR3D, ResNet-50 + FPN, real nuScenes at 800x450 (inputs cropped to 800x448), 24 epochs,
the backbone from torchvision's ImageNet ResNet-50 (stem and stage 1 frozen, BN frozen).

    bash tools/dist_train.sh configs/deform_detr3d/deform_detr3d_r50_fpn_8xb1-24e_nus-800x450.py 8
    python tools/test.py configs/deform_detr3d/deform_detr3d_r50_fpn_8xb1-24e_nus-800x450.py CKPT

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP
is claimed for it yet. Data: ``python tools/create_data.py nuscenes --root data/nuscenes``.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.nus_3d_cam import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.deform_detr3d_r50_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405
