"""A training sampler whose indices carry the seed of their sample's augmentation.

The DataLoader sends a worker nothing but the index of each sample, so the key of a draw
(sampler seed, epoch, position in the epoch) travels inside the index: :class:`SeededIndex` is an
``int`` (every dataset and ``BaseDataset.get_data_info`` use it as the index it is, and puts it in
``results['sample_idx']``) with a ``seed`` attribute, which :class:`SeedAugmentation` reads.
"""

from __future__ import annotations

from collections.abc import Iterator

from mmengine.dataset import DefaultSampler

from bev_deform.randomness import SAMPLE_STREAM, derive_seed

__all__ = ["SeededIndex", "SeededSampler"]


class SeededIndex(int):
    """A dataset index (an ``int``) with the ``seed`` of the augmentation of this draw of it.
    Survives pickling (to DataLoader workers) and ``copy.deepcopy`` (mmdet3d's ``prepare_data``)."""

    def __new__(cls, index: int, seed: int) -> SeededIndex:
        obj = super().__new__(cls, index)
        obj.seed = int(seed)
        return obj

    def __reduce__(self):
        return SeededIndex, (int(self), self.seed)

    def __repr__(self) -> str:
        return f"SeededIndex({int(self)}, seed={self.seed})"


class SeededSampler(DefaultSampler):
    """mmengine's :class:`~mmengine.dataset.DefaultSampler` (same order, same ``seed``, ``epoch``,
    ``shuffle`` and ``round_up``) yielding :class:`SeededIndex` es: the draw at global position
    ``p`` of epoch ``e`` (``p`` over all ranks, so padded duplicates differ too) has the seed
    ``derive_seed(SAMPLE_STREAM, seed, e, p)``. Pair it with ``SeedAugmentation`` at the head
    of the training pipeline.

    Epochs are set as for ``DefaultSampler``: by mmengine's ``DistSamplerSeedHook`` in epoch-based
    training, by the ``IterBasedTrainLoop``'s infinite iterator at each pass otherwise.
    """

    def __iter__(self) -> Iterator[SeededIndex]:
        for pos, index in enumerate(super().__iter__()):
            position = self.rank + pos * self.world_size  # DefaultSampler takes indices[rank::world_size]
            yield SeededIndex(index, derive_seed(SAMPLE_STREAM, self.seed, self.epoch, position))
