"""Attention modules: 2D multi-scale deformable attention and multi-view 3D deformable attention."""

from .deformable_base import DeformableAttentionBase
from .msdeform_attn_2d import MSDeformAttn
from .multiview_deform_attn_3d import MultiViewDeformableAttention3D, SamplingPoints

__all__ = ["DeformableAttentionBase", "MSDeformAttn", "MultiViewDeformableAttention3D", "SamplingPoints"]
