"""Attention modules: 2D multi-scale deformable attention and multi-view 3D deformable attention."""

from .msdeform_attn_2d import MSDeformAttn
from .multiview_deform_attn_3d import CameraGeometry, MultiViewDeformableAttention3D, SamplingPoints

__all__ = ["CameraGeometry", "MSDeformAttn", "MultiViewDeformableAttention3D", "SamplingPoints"]
