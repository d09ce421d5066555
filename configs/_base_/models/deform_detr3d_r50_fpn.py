"""DeformDETR3D: ResNet-50 + FPN (4 levels, 256 channels), 900 queries, 6 decoder layers of
self-attention, multi-view 3D deformable cross-attention (8 heads, 4 points) and FFN: the shared
set-prediction model (``r50_fpn_set_prediction``: the pre-trained backbone, FPN, decoder sizes,
losses, coder and assigner) with the DeformDETR3D detector and head.

The cross-attention (``MultiViewDeformableAttention3D``) has ablation options against DETR3D
(issue 12), all at their defaults here: ``offset_units`` ('level' | 'image'), ``attention_fn``
('softmax' | 'sigmoid'), ``camera_fusion`` ('mean' | 'sum' | 'mass'), ``sampling`` ('deformable' |
'projection' | 'anchored' | 'deformable+projection'), ``pos_encoding`` ('raw' |
'inverse_sigmoid') and ``use_value_proj`` (True | False); see its docstring. Set one for a
run with ``--cfg-options model.bbox_head.decoder.layer_cfg.cross_attn_cfg.sampling=projection``.
"""

from mmengine.config import read_base

with read_base():
    from .r50_fpn_set_prediction import *  # noqa: F401,F403

from bev_deform.models.detectors import DeformDETR3D
from bev_deform.models.heads import DeformDETR3DHead

model.update(type=DeformDETR3D)  # noqa: F405
model["bbox_head"].update(type=DeformDETR3DHead)  # noqa: F405
