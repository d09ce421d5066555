"""Encoder/decoder layers and stacks (and image-side layers such as GridMask)."""

from .deform_detr3d_decoder import DeformDETR3DDecoder, DeformDETR3DDecoderLayer
from .grid_mask import GridMask

__all__ = ["DeformDETR3DDecoder", "DeformDETR3DDecoderLayer", "GridMask"]
