"""BEVFormer-base (static): ResNet-101 with DCNv2 in stages 3-4 + FPN (4 levels), a 200x200 BEV,
6 encoder layers, real nuScenes at full 1600x900 (inputs cropped to 1600x896), 24 epochs.

    bash tools/dist_train.sh configs/bevformer/bevformer_r101-dcn_fpn_8xb1-24e_nus-1600x900.py 8 --amp

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP
is claimed for it. The backbone starts from torchvision's ImageNet ResNet-101; BEVFormer-base
(NDS 0.517 with temporal fusion) starts from an FCOS3D ResNet-101-DCN checkpoint instead
(``configs/_base_/models/bevformer_r101_dcn_fpn.py`` says how).
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.nus_3d_cam_1600x900 import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.bevformer_r101_dcn_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

train_scale_range = (1.0, 1.0)  # BEVFormer-base: no rescale (the 1600x900 dataset config: +-5%)
num_levels = 4
bev_h, bev_w = 200, 200

train_pipeline[2] = dict(train_pipeline[2], scale_range=train_scale_range)  # noqa: F405
train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405
train_dataloader["dataset"]["pipeline"] = train_pipeline  # noqa: F405

model["img_backbone"].update(out_indices=(1, 2, 3))  # noqa: F405
model["img_neck"].update(in_channels=[512, 1024, 2048], num_outs=num_levels)  # noqa: F405
model["bbox_head"].update(num_levels=num_levels)  # noqa: F405
model["bbox_head"]["encoder"].update(bev_h=bev_h, bev_w=bev_w, num_layers=6)  # noqa: F405
