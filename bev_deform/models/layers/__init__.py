"""Encoder/decoder layers and stacks (and image-side layers such as GridMask)."""

from .bevformer_decoder import BEVFormerDecoder, BEVFormerDecoderLayer
from .bevformer_encoder import BEVFormerEncoder, BEVFormerEncoderLayer, BEVQueries, CameraValues
from .bevformer_transformer import BEVFormerTransformer
from .deform_detr3d_decoder import DeformDETR3DDecoder, DeformDETR3DDecoderLayer
from .grid_mask import GridMask

__all__ = [
    "BEVFormerDecoder",
    "BEVFormerDecoderLayer",
    "BEVFormerEncoder",
    "BEVFormerEncoderLayer",
    "BEVFormerTransformer",
    "BEVQueries",
    "CameraValues",
    "DeformDETR3DDecoder",
    "DeformDETR3DDecoderLayer",
    "GridMask",
]
