"""Query heads: object queries, prediction branches, losses and decoding."""

from .deform_detr3d_head import DeformDETR3DHead

__all__ = ["DeformDETR3DHead"]
