"""BEVFormer (static, no temporal fusion yet): ResNet-50 + FPN on the C5 level only (256 channels),
a 50x50 BEV over pc_range encoded by 3 layers of temporal self-attention (the current BEV as its
own history), spatial cross-attention (4 pillar anchors, 8 points per head and level) and FFN, then
900 object queries decoded on the BEV by 6 layers: BEVFormer-tiny's model.

The backbone starts from torchvision's ImageNet ResNet-50 (``torchvision://resnet50``, loaded by
``model.init_weights()``, downloaded once into the torch hub cache), as BEVFormer-tiny does; its
stem and first stage and its BN are frozen (frozen layers are only right with pre-trained
weights). A config that trains from scratch replaces the whole ``img_backbone``, as the CPU
config does.

Shared constants (classes, point cloud range, data preprocessor, GridMask) come from the dataset
config; ``embed_dims``, ``num_levels`` and the BEV size are stated here once (the head passes the
first two and pc_range down; the size lives in the encoder, with the BEV grid). Configs that
change them restate the model entries they feed (``model['img_neck']``, the encoder's
``bev_h``/``bev_w``).
"""

from mmengine.config import read_base

with read_base():
    from ..datasets.nus_3d_cam import class_names, grid_mask, img_data_preprocessor, point_cloud_range

from bev_deform.models.detectors import BEVFormer
from bev_deform.models.heads import BEVFormerHead
from bev_deform.models.task_modules import HungarianAssigner3D, NMSFreeCoder

embed_dims = 256
num_levels = 1
bev_h, bev_w = 50, 50

model = dict(
    type=BEVFormer,
    data_preprocessor=img_data_preprocessor,
    grid_mask=grid_mask,
    img_backbone=dict(
        type="mmdet.ResNet",
        depth=50,
        num_stages=4,
        out_indices=(3,),
        frozen_stages=1,
        norm_cfg=dict(type="BN2d", requires_grad=False),
        norm_eval=True,
        style="pytorch",
        init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet50"),  # as BEVFormer-tiny
    ),
    img_neck=dict(
        type="mmdet.FPN",
        in_channels=[2048],
        out_channels=embed_dims,
        start_level=0,
        add_extra_convs="on_output",
        num_outs=num_levels,
        relu_before_extra_convs=True,
    ),
    bbox_head=dict(
        type=BEVFormerHead,
        num_classes=len(class_names),
        pc_range=point_cloud_range,
        embed_dims=embed_dims,
        num_query=900,
        num_levels=num_levels,
        encoder=dict(
            bev_h=bev_h,
            bev_w=bev_w,
            num_layers=3,
            num_points_in_pillar=4,
            layer_cfg=dict(
                tsa_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
                sca_cfg=dict(num_heads=8, num_points=8, dropout=0.1),
                ffn_cfg=dict(feedforward_channels=2 * embed_dims, ffn_drop=0.1),
            ),
        ),
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
