"""BEVFormer with ResNet-101 and modulated deformable convolutions (mmcv's ``DCNv2``) in stages
3 and 4, BEVFormer-small's and -base's backbone: the base model (``bevformer_r50_fpn``) with the
deeper backbone, set as ``deform_detr3d_r101_dcn_fpn`` sets it for DeformDETR3D (a config reads
one model base, so the two families state it each).

It starts from torchvision's ImageNet ResNet-101 (``torchvision://resnet101``); the DCN layers take
the ImageNet 3x3 weights and their offsets start at zero. BEVFormer-small and -base start from an
FCOS3D ResNet-101-DCN checkpoint instead: ``--cfg-options load_from=ckpts/r101_dcn_fcos3d_pretrain.pth``.
"""

from mmengine.config import read_base

with read_base():
    from .bevformer_r50_fpn import *  # noqa: F401,F403

model["img_backbone"].update(  # noqa: F405
    depth=101,
    dcn=dict(type="DCNv2", deform_groups=1, fallback_on_stride=False),
    stage_with_dcn=(False, False, True, True),
    init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet101"),  # the DCN offsets start at 0
)
