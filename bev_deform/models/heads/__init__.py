"""Query heads (object queries, prediction branches, losses and decoding), the training-only
dense auxiliary heads on the camera features and on the BEV; 3D contrastive denoising queries for
training."""

from .bev_centre_aux_head import BEVCentreAuxHead
from .bevformer_head import BEVFormerHead
from .deform_detr3d_head import DeformDETR3DHead
from .denoising_3d import Denoising3D, DenoisingQueries, denoising_attn_mask
from .image_centre_aux_head import ImageCentreAuxHead
from .query_head_base import QueryHeadBase

__all__ = [
    "BEVCentreAuxHead",
    "BEVFormerHead",
    "DeformDETR3DHead",
    "Denoising3D",
    "DenoisingQueries",
    "ImageCentreAuxHead",
    "QueryHeadBase",
    "denoising_attn_mask",
]
