"""Detectors: thin wrappers from camera images to the query head."""

from .bevformer import BEVFormer
from .deform_detr3d import DeformDETR3D

__all__ = ["BEVFormer", "DeformDETR3D"]
