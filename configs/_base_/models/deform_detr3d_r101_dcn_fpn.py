"""DeformDETR3D with ResNet-101 and modulated deformable convolutions (mmcv's ``DCNv2``) in stages
3 and 4, as DETR3D / BEVFormer use: the base model (``deform_detr3d_r50_fpn``) with a deeper
backbone that starts from torchvision's ImageNet ResNet-101 (``torchvision://resnet101``). The
DCN layers take the ImageNet 3x3 weights; their offset/mask convolutions are not in the ImageNet
file and start at zero (mmcv's init): zero offsets and a modulation of sigmoid(0) = 0.5, learnt
from there. An FCOS3D checkpoint has them trained (the ``-fcos3d`` config).

mmcv's DCNv2 (``ModulatedDeformConv2dPack``) runs on CUDA and, slower, on CPU (mmcv's CPU
im2col kernels), so the config tests build and train it on CPU.
"""

from mmengine.config import read_base

with read_base():
    from .deform_detr3d_r50_fpn import *  # noqa: F401,F403

model["img_backbone"].update(  # noqa: F405
    depth=101,
    dcn=dict(type="DCNv2", deform_groups=1, fallback_on_stride=False),
    stage_with_dcn=(False, False, True, True),
    init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet101"),
)
