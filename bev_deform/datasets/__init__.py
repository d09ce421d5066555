"""nuScenes-format data: the dataset class, multi-view transforms and the synthetic generator."""

from .nuscenes_dataset import PACK_META_KEYS, TEMPORAL_META_KEYS, BevNuScenesDataset
from .transforms import LoadMultiViewImages, MultiViewResizeCrop

__all__ = [
    "PACK_META_KEYS",
    "TEMPORAL_META_KEYS",
    "BevNuScenesDataset",
    "LoadMultiViewImages",
    "MultiViewResizeCrop",
]
