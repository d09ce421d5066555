"""Image-side necks that run after the FPN, per camera: the Deformable DETR encoder."""

from .deformable_encoder_neck import DeformableEncoderNeck

__all__ = ["DeformableEncoderNeck"]
