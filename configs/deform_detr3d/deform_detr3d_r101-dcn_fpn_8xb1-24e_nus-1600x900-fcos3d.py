"""DeformDETR3D, ResNet-101-DCN + FPN at 1600x900 (``deform_detr3d_r101-dcn_fpn_8xb1-24e_nus-1600x900``)
started from an FCOS3D checkpoint instead of ImageNet, as DETR3D and BEVFormer report their
nuScenes numbers: backbone and FPN from mmdet3d's FCOS3D R101-DCN (trained on nuScenes train
with a caffe-style ResNet), so the backbone is ``style='caffe'`` and the data preprocessor
normalises as caffe weights expect: BGR kept (``bgr_to_rgb=False``), mean
[103.530, 116.280, 123.675], std 1.

The checkpoint is mmdet3d's model-zoo file (``fcos3d_checkpoint`` below: downloaded once by
``model.init_weights()`` into the torch hub cache). Offline, download that URL first (FCOS3D_FILE
is its last path component) and point the config at the file:

    wget -P ckpts/ <the fcos3d_checkpoint URL>
    bash tools/dist_train.sh \
        configs/deform_detr3d/deform_detr3d_r101-dcn_fpn_8xb1-24e_nus-1600x900-fcos3d.py 8 --amp \
        --cfg-options model.img_backbone.init_cfg.checkpoint=ckpts/FCOS3D_FILE \
        model.img_neck.init_cfg.checkpoint=ckpts/FCOS3D_FILE

Its keys are ``backbone.*`` / ``neck.*`` (taken with ``prefix``); DETR3D's converted
``ckpts/fcos3d.pth`` holds ``img_backbone.*`` / ``img_neck.*`` instead: set both ``prefix`` to those.
The FPN loads whole: FCOS3D's first three lateral and output convolutions and its first extra
(on-output) convolution have this FPN's shapes (its second extra level is not used).

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP
is claimed for it yet.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.nus_3d_cam_1600x900 import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.deform_detr3d_r101_dcn_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

# mmdet3d's FCOS3D R101-DCN fine-tuned on nuScenes (configs/fcos3d/metafile.yml: mAP 32.1, NDS 39.3)
fcos3d_checkpoint = (
    "https://download.openmmlab.com/mmdetection3d/v0.1.0_models/fcos3d/"
    "fcos3d_r101_caffe_fpn_gn-head_dcn_2x8_1x_nus-mono3d_finetune/"
    "fcos3d_r101_caffe_fpn_gn-head_dcn_2x8_1x_nus-mono3d_finetune_20210717_095645-8d806dc2.pth"
)

# caffe-style weights: BGR input, mean subtraction only
img_data_preprocessor.update(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False)  # noqa: F405
model["data_preprocessor"] = img_data_preprocessor  # noqa: F405
model["img_backbone"].update(  # noqa: F405
    style="caffe",  # the stride-2 of a bottleneck in its first 1x1 conv, as in the checkpoint
    init_cfg=dict(type="Pretrained", checkpoint=fcos3d_checkpoint, prefix="backbone."),
)
model["img_neck"]["init_cfg"] = dict(type="Pretrained", checkpoint=fcos3d_checkpoint, prefix="neck.")  # noqa: F405

train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405
