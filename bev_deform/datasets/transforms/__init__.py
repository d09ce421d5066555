"""bev_deform's multi-view data transforms (registered in ``bev_deform.registry.TRANSFORMS``).

Only what mmdet3d lacks lives here; the pipelines reuse mmdet3d's ``LoadAnnotations3D``,
``MultiViewWrapper`` + ``PhotoMetricDistortion3D``, ``ObjectRangeFilter``, ``ObjectNameFilter``
and ``Pack3DDetInputs`` (through ``PackMultiViewInputs``, which adds the meta keys our models
read). Normalisation and padding happen in the model's
``Det3DDataPreprocessor``, which handles (N, C, H, W) multi-view images; GridMask is a model
layer (``bev_deform.models.layers.GridMask``) so that it runs on the batch's device.
"""

from .loading import NUSCENES_CAMERAS, LoadMultiViewImages, check_cameras, pad_to_4x4, read_image
from .packing import PACK_META_KEYS, TEMPORAL_META_KEYS, PackMultiViewInputs
from .resize_crop import MultiViewResizeCrop, crop_with_padding, image_aug_matrix
from .seeding import SeedAugmentation

__all__ = [
    "NUSCENES_CAMERAS",
    "LoadMultiViewImages",
    "MultiViewResizeCrop",
    "PACK_META_KEYS",
    "PackMultiViewInputs",
    "SeedAugmentation",
    "TEMPORAL_META_KEYS",
    "check_cameras",
    "crop_with_padding",
    "image_aug_matrix",
    "pad_to_4x4",
    "read_image",
]
