"""BEVFormer (static, no temporal fusion yet): ResNet-50 + FPN on the C5 level only (256 channels),
a 50x50 BEV over pc_range encoded by 3 layers of temporal self-attention (the current BEV as its
own history), spatial cross-attention (4 pillar anchors, 8 points per head and level) and FFN, then
900 object queries decoded on the BEV by 6 layers: BEVFormer-tiny's model. The shared
set-prediction model (``r50_fpn_set_prediction``: the pre-trained backbone, FPN, decoder sizes,
losses, coder and assigner) with the BEVFormer detector and head, one level and the BEV encoder.

The backbone starts from torchvision's ImageNet ResNet-50, as BEVFormer-tiny does (frozen stem,
first stage and BN: see ``r50_fpn_set_prediction``). ``num_levels`` and the BEV size are stated
here once (the head passes the first down; the size lives in the encoder, with the BEV grid).
Configs that change them restate the model entries they feed (``model['img_neck']``, the
encoder's ``bev_h``/``bev_w``).
"""

from mmengine.config import read_base

with read_base():
    from .r50_fpn_set_prediction import *  # noqa: F401,F403

from bev_deform.models.detectors import BEVFormer
from bev_deform.models.heads import BEVFormerHead

num_levels = 1
bev_h, bev_w = 50, 50

model.update(type=BEVFormer)  # noqa: F405
model["img_backbone"].update(out_indices=(3,))  # noqa: F405
model["img_neck"].update(in_channels=[2048], num_outs=num_levels)  # noqa: F405
model["bbox_head"].update(  # noqa: F405
    type=BEVFormerHead,
    num_levels=num_levels,
    encoder=dict(
        bev_h=bev_h,
        bev_w=bev_w,
        num_layers=3,
        num_points_in_pillar=4,
        layer_cfg=dict(
            tsa_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
            sca_cfg=dict(num_heads=8, num_points=8, dropout=0.1),
            ffn_cfg=dict(feedforward_channels=2 * embed_dims, ffn_drop=0.1),  # noqa: F405
        ),
    ),
)
