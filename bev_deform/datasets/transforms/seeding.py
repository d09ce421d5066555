"""Each sample's augmentation drawn from its own seed, not from the worker's random stream."""

from __future__ import annotations

from mmcv.transforms import BaseTransform

from bev_deform.randomness import seed_all
from bev_deform.registry import TRANSFORMS


@TRANSFORMS.register_module()
class SeedAugmentation(BaseTransform):
    """Seed python's, numpy's and torch's global RNGs with the seed of this draw of the sample, so
    that every transform after it (ours and mmdet3d's, which draw from ``np.random``) makes the
    same draws for the same (sampler seed, epoch, position), whichever process runs it and
    whatever ran before. Put it first in a training pipeline whose dataloader uses
    :class:`bev_deform.datasets.samplers.SeededSampler`.

    Required keys: ``sample_idx``, a :class:`~bev_deform.datasets.samplers.SeededIndex` (mmengine's
    ``BaseDataset`` puts the index it was given there). Modified keys: ``sample_idx`` (to a plain
    ``int``).

    A plain ``int`` index after a seeded one is a dataset's re-fetch of another sample when the
    pipeline dropped one (mmengine's ``BaseDataset._rand_another``): its draws continue the stream
    seeded for the dropped draw, so they are reproducible too. A plain index before any seeded
    one means the sampler is not a ``SeededSampler``, and raises ``ValueError``.
    """

    def __init__(self) -> None:
        self._seeded = False

    def transform(self, results: dict) -> dict:
        """Seed from ``results['sample_idx'].seed``; see the class docstring."""
        index = results.get("sample_idx")
        seed = getattr(index, "seed", None)
        if seed is None:
            if not self._seeded:
                raise ValueError(
                    f"SeedAugmentation needs results['sample_idx'] to be a SeededIndex (got {index!r}): "
                    "set the training dataloader's sampler to bev_deform.datasets.samplers.SeededSampler"
                )
            return results
        seed_all(seed)
        self._seeded = True
        results["sample_idx"] = int(index)
        return results
