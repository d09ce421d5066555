"""bev_deform: multi-camera 3D detection with multi-scale deformable attention."""

__version__ = "0.1.0"
