"""DeformDETR3D with a DAT-T backbone (ImageNet-1k weights) + FPN, real nuScenes at 800x450
(inputs cropped to 800x448), 24 epochs: the R50 config with the backbone swapped.

    python projects/DAT/tools/convert_dat_checkpoint.py dat_tiny_in1k_224.pth \
        checkpoints/dat-t_in1k_224_bev_deform.pth
    bash tools/dist_train.sh projects/DAT/configs/deform_detr3d_dat-t_fpn_8xb1-24e_nus-800x450.py 8
    python tools/test.py projects/DAT/configs/deform_detr3d_dat-t_fpn_8xb1-24e_nus-800x450.py CKPT

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP is
claimed for it yet. The maps of a 448x800 input are 112x200, 56x100, 28x50, 14x25; the window
attention pads them to multiples of 7, and the bias tables stay at the checkpoint's 224 resolution
(stretched over the larger maps), so the ImageNet weights load as they are.
"""

from mmengine.config import read_base

with read_base():
    from ....configs._base_.datasets.nus_3d_cam import *  # noqa: F401,F403
    from ....configs._base_.default_runtime import *  # noqa: F401,F403
    from ....configs._base_.models.deform_detr3d_r50_fpn import *  # noqa: F401,F403
    from ....configs._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

from projects.DAT.dat import DAT

pretrained = "checkpoints/dat-t_in1k_224_bev_deform.pth"  # projects/DAT/tools/convert_dat_checkpoint.py

model["img_backbone"] = dict(  # noqa: F405
    type=DAT,
    arch="tiny",
    img_size=224,  # the checkpoint's bias tables and masks
    out_indices=(1, 2, 3),
    drop_path_rate=0.2,
    with_cp=True,  # six 448x800 images per sample: recompute the blocks in the backward pass
    init_cfg=dict(type="Pretrained", checkpoint=pretrained),
)
model["img_neck"].update(in_channels=[192, 384, 768])  # noqa: F405

# no weight decay on the bias tables (as DAT and Swin train them); the backbone keeps its lr_mult
_backbone_group = optim_wrapper["paramwise_cfg"]["custom_keys"]["img_backbone"]  # noqa: F405
optim_wrapper["paramwise_cfg"]["custom_keys"].update(  # noqa: F405
    relative_position_bias_table=dict(_backbone_group, decay_mult=0.0),
    rpe_table=dict(_backbone_group, decay_mult=0.0),
)
train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405
