"""What the DeformDETR3D and the BEVFormer model share (``deform_detr3d_r50_fpn`` and
``bevformer_r50_fpn`` read it and add their detector, head and what differs): a pre-trained
ResNet-50 + FPN (4 levels, 256 channels), 900 object queries decoded by 6 layers of
self-attention, deformable cross-attention (8 heads, 4 points) and FFN, a Hungarian assignment,
focal classification and L1 box losses, and the NMS-free box coder.

The backbone starts from torchvision's ImageNet ResNet-50 (``torchvision://resnet50``, loaded by
``model.init_weights()``; mmengine resolves the name through torchvision, which must be installed,
and downloads the file once into the torch hub cache). Its stem and first stage are frozen
(``frozen_stages=1``) and BN keeps the pre-trained statistics (``norm_eval=True``, no BN
gradients), as in DETR3D / BEVFormer: frozen layers are only right with pre-trained weights. The
data preprocessor normalises as those weights expect (RGB, ImageNet mean/std; the dataset config's
``img_data_preprocessor``). A config that trains from scratch replaces the whole ``img_backbone``
(no ``init_cfg``, ``frozen_stages=-1``, ``norm_eval=False``, BN trained), as the CPU configs do.

Shared constants (classes, point cloud range, data preprocessor, GridMask) come from the dataset
config; ``embed_dims`` and ``num_levels`` are stated here once and passed down by the head. A
config that changes them restates the model entries they feed (``model['img_neck']``,
``model['bbox_head']``).
"""

from mmengine.config import read_base

with read_base():
    from ..datasets.nus_3d_cam import class_names, grid_mask, img_data_preprocessor, point_cloud_range

from bev_deform.models.task_modules import HungarianAssigner3D, NMSFreeCoder

embed_dims = 256
num_levels = 4

model = dict(
    data_preprocessor=img_data_preprocessor,
    grid_mask=grid_mask,
    img_backbone=dict(
        type="mmdet.ResNet",
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type="BN2d", requires_grad=False),
        norm_eval=True,
        style="pytorch",  # torchvision's layout: the stride-2 of a bottleneck in its 3x3 conv
        init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet50"),
    ),
    img_neck=dict(
        type="mmdet.FPN",
        in_channels=[512, 1024, 2048],
        out_channels=embed_dims,
        start_level=0,
        add_extra_convs="on_output",
        num_outs=num_levels,
        relu_before_extra_convs=True,
    ),
    bbox_head=dict(
        num_classes=len(class_names),
        pc_range=point_cloud_range,
        embed_dims=embed_dims,
        num_query=900,
        num_levels=num_levels,
        decoder=dict(
            num_layers=6,
            layer_cfg=dict(
                self_attn_cfg=dict(num_heads=8, attn_drop=0.1),
                cross_attn_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
                ffn_cfg=dict(feedforward_channels=2 * embed_dims, ffn_drop=0.1),
            ),
        ),
        bbox_coder=dict(
            type=NMSFreeCoder, max_num=300, post_center_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0]
        ),
        loss_cls=dict(type="mmdet.FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
        loss_bbox=dict(type="mmdet.L1Loss", loss_weight=0.25),
        train_cfg=dict(assigner=dict(type=HungarianAssigner3D)),
    ),
)
