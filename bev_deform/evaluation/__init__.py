"""Evaluation: a thin wrapper over mmdet3d's NuScenesMetric (the real nuscenes-devkit)."""

from .nuscenes_metric import BevNuScenesMetric

__all__ = ["BevNuScenesMetric"]
