"""Task modules of the query head: Hungarian 3D assigner, match costs, NMS-free box coder, and the
test-time velocity refiner of video testing."""

from .hungarian_assigner_3d import BBox3DL1Cost, HungarianAssigner3D
from .nms_free_coder import NMSFreeCoder
from .velocity_refiner import VelocityRefiner

__all__ = ["BBox3DL1Cost", "HungarianAssigner3D", "NMSFreeCoder", "VelocityRefiner"]
