"""BEVFormer-small (static): ResNet-101 with DCNv2 in stages 3-4 + FPN on C5, a 150x150 BEV,
3 encoder layers, 1 level, real nuScenes at 0.8x (1280x720, inputs cropped to 1280x704), 24 epochs.

    bash tools/dist_train.sh configs/bevformer/bevformer_r101-dcn_fpn_8xb1-24e_nus-1280x720.py 8 --amp

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP
is claimed for it. The backbone starts from torchvision's ImageNet ResNet-101; BEVFormer-small
(NDS 0.479 with temporal fusion) starts from an FCOS3D ResNet-101-DCN checkpoint instead
(``configs/_base_/models/bevformer_r101_dcn_fpn.py`` says how).
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.nus_3d_cam import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.bevformer_r101_dcn_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

img_scale = 0.8
input_size = (704, 1280)  # (H, W) after the crop; a multiple of 32
train_scale_range = (0.8, 0.8)  # BEVFormer: one fixed scale (RandomScaleImageMultiViewImage [0.8])
bev_h, bev_w = 150, 150

# the dataset config's pipelines with this config's image size (resize/crop is the 3rd train step)
train_pipeline[2] = dict(train_pipeline[2], final_size=input_size, scale_range=train_scale_range)  # noqa: F405
test_pipeline[1] = dict(test_pipeline[1], final_size=input_size, scale_range=(img_scale, img_scale))  # noqa: F405
train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405
train_dataloader["dataset"]["pipeline"] = train_pipeline  # noqa: F405
val_dataloader["dataset"]["pipeline"] = test_pipeline  # noqa: F405
test_dataloader = val_dataloader  # noqa: F405

model["bbox_head"]["encoder"].update(bev_h=bev_h, bev_w=bev_w)  # noqa: F405
