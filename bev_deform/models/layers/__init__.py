"""Encoder/decoder layers and stacks (the BEV encoder, the query decoders, the Deformable DETR
image encoder) and image-side layers such as GridMask."""

from .bevformer_decoder import BEVFormerDecoder, BEVFormerDecoderLayer
from .bevformer_encoder import BEVFormerEncoder, BEVFormerEncoderLayer, BEVQueries, CameraValues
from .bevformer_transformer import BEVFormerTransformer
from .deform_detr3d_decoder import DeformDETR3DDecoder, DeformDETR3DDecoderLayer
from .deformable_encoder import DeformableEncoder, DeformableEncoderLayer
from .grid_mask import GridMask
from .history_track import HistoryTrack, PastDetections, past_detections
from .query_propagation import PastQueries, QueryPropagation, past_queries

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
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "GridMask",
    "HistoryTrack",
    "PastDetections",
    "PastQueries",
    "QueryPropagation",
    "past_detections",
    "past_queries",
]
