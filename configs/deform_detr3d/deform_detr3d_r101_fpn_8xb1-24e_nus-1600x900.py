"""DeformDETR3D, ResNet-101 + FPN, real nuScenes at full 1600x900 (inputs cropped to 1600x896),
900 queries, 6 decoder layers, 4 levels, 24 epochs: the DETR3D/BEVFormer-size model.

    bash tools/dist_train.sh configs/deform_detr3d/deform_detr3d_r101_fpn_8xb1-24e_nus-1600x900.py 8 --amp

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP
is claimed for it yet. Start from an FCOS3D / ImageNet ResNet-101 with
``--cfg-options model.img_backbone.init_cfg.type=Pretrained model.img_backbone.init_cfg.checkpoint=PATH``.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.nus_3d_cam import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.deform_detr3d_r50_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

img_scale = 1.0
input_size = (896, 1600)  # (H, W) after the crop; a multiple of 32
train_scale_range = (0.95, 1.05)

# the dataset config's pipelines with this config's image size (resize/crop is the 3rd train step)
train_pipeline[2] = dict(train_pipeline[2], final_size=input_size, scale_range=train_scale_range)  # noqa: F405
test_pipeline[1] = dict(test_pipeline[1], final_size=input_size, scale_range=(img_scale, img_scale))  # noqa: F405
train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405
train_dataloader["dataset"]["pipeline"] = train_pipeline  # noqa: F405
val_dataloader["dataset"]["pipeline"] = test_pipeline  # noqa: F405
test_dataloader = val_dataloader  # noqa: F405

model["img_backbone"].update(depth=101)  # noqa: F405
