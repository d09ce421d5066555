"""Detectors: thin wrappers from camera images to the query head."""

from .deform_detr3d import DeformDETR3D

__all__ = ["DeformDETR3D"]
