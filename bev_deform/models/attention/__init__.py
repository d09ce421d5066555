"""Attention modules: 2D multi-scale deformable attention, multi-view 3D deformable attention, and
the BEV encoder's spatial cross-attention (into the cameras) and temporal self-attention (on the BEV)."""

from .deformable_base import DeformableAttentionBase
from .msdeform_attn_2d import MSDeformAttn
from .multiview_deform_attn_3d import MultiViewDeformableAttention3D, SamplingPoints
from .spatial_cross_attn import (
    PillarDeformableAttention,
    PillarProjection,
    PillarSamplingPoints,
    SpatialCrossAttention,
    project_pillars,
)
from .temporal_self_attn import TemporalSelfAttention
from .visible_pairs import VisiblePairs

__all__ = [
    "DeformableAttentionBase",
    "MSDeformAttn",
    "MultiViewDeformableAttention3D",
    "PillarDeformableAttention",
    "PillarProjection",
    "PillarSamplingPoints",
    "SamplingPoints",
    "SpatialCrossAttention",
    "TemporalSelfAttention",
    "VisiblePairs",
    "project_pillars",
]
