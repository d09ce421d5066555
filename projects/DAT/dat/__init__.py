"""DAT (Deformable Attention Transformer, v1) for bev_deform: importing this package registers
``DAT`` in bev_deform's MODELS, and nothing else."""

from .backbone import ARCHS, DAT, DATClassifier
from .deformable_attention import DeformableAttention
from .layers import ShiftedWindowAttention, WindowAttention

__all__ = [
    "ARCHS",
    "DAT",
    "DATClassifier",
    "DeformableAttention",
    "ShiftedWindowAttention",
    "WindowAttention",
]
