"""mmdet3d's ``Pack3DDetInputs`` with the metainfo keys that bev_deform's models read."""

from __future__ import annotations

from collections.abc import Sequence

from mmdet3d.datasets.transforms import Pack3DDetInputs

from bev_deform.registry import TRANSFORMS

# what temporal models read from a sample's metainfo, on top of mmdet3d's default meta keys
TEMPORAL_META_KEYS = ("scene_token", "timestamp", "lidar2global")
PACK_META_KEYS = tuple(Pack3DDetInputs.__init__.__defaults__[0]) + TEMPORAL_META_KEYS


@TRANSFORMS.register_module()
class PackMultiViewInputs(Pack3DDetInputs):
    """``Pack3DDetInputs`` whose ``meta_keys`` default to :data:`PACK_META_KEYS`: mmdet3d's
    defaults (``lidar2img``, ``img_shape``, ...) plus ``TEMPORAL_META_KEYS`` (scene, time, pose).

    Configs name this class instead of passing ``meta_keys=PACK_META_KEYS`` to mmdet3d's: a
    pure-Python config holds an imported constant as a lazy import, which the work dir's dumped
    config writes as the string ``'bev_deform...PACK_META_KEYS'``; ``Pack3DDetInputs`` then packs
    the characters of that string as keys, and the dumped config of every run (what
    ``tools/test.py work_dirs/RUN/CONFIG.py`` reads) packed no ``lidar2img``.

    Args:
        keys: the result keys to pack (``'img'``, ``'gt_bboxes_3d'``, ...).
        meta_keys: the metainfo keys to pack.
    """

    def __init__(self, keys: Sequence[str], meta_keys: Sequence[str] = PACK_META_KEYS) -> None:
        if isinstance(meta_keys, str):
            raise ValueError(f"meta_keys must be a sequence of key names, got the string {meta_keys!r}")
        super().__init__(keys=tuple(keys), meta_keys=tuple(meta_keys))
