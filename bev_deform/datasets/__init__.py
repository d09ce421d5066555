"""nuScenes-format data: the dataset class, multi-view transforms and the synthetic generator."""

from .nuscenes_dataset import BevNuScenesDataset
from .transforms import LoadMultiViewImages, MultiViewResizeCrop

__all__ = ["BevNuScenesDataset", "LoadMultiViewImages", "MultiViewResizeCrop"]
