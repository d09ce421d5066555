"""Samplers: a training sampler whose indices carry the seed of their sample's augmentation, and
a test sampler that keeps scenes whole for video testing (:class:`SceneSequentialSampler`).

The DataLoader sends a worker nothing but the index of each sample, so the key of a draw
(sampler seed, epoch, position in the epoch) travels inside the index: :class:`SeededIndex` is an
``int`` (every dataset and ``BaseDataset.get_data_info`` use it as the index it is, and puts it in
``results['sample_idx']``) with a ``seed`` attribute, which :class:`SeedAugmentation` reads.
"""

from __future__ import annotations

from collections.abc import Iterator

from mmengine.dataset import DefaultSampler
from mmengine.dist import get_dist_info
from torch.utils.data import Sampler

from bev_deform.randomness import SAMPLE_STREAM, derive_seed

__all__ = ["SceneSequentialSampler", "SeededIndex", "SeededSampler"]


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


class SceneSequentialSampler(Sampler):
    """A test sampler that keeps every scene whole, in time order, on one process.

    Video testing carries each frame's BEV to the next, so a scene cut between processes (as
    ``DefaultSampler``'s ``indices[rank::world_size]`` cuts every scene) would give each process
    every other frame and a different result from one process. Here the scenes (by the samples'
    ``scene_token``, in time order by ``timestamp``) are dealt to the ranks whole, the longest
    first, each to the rank with the fewest samples so far; a rank yields its scenes one after
    the other. No sample is repeated or dropped (no padding: mmengine's result collection takes
    parts of different lengths).

    Args:
        dataset: a dataset whose ``get_data_info(i)`` has ``scene_token`` and ``timestamp``
            (``BevNuScenesDataset(scene_info=True)``).
        seed: unused (the order is fixed); accepted for mmengine's sampler interface.
    """

    def __init__(self, dataset, seed: int | None = None) -> None:
        rank, world_size = get_dist_info()
        self.rank, self.world_size = rank, world_size
        scenes: dict[str, list[tuple[float, int]]] = {}
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            if info.get("scene_token") is None or info.get("timestamp") is None:
                raise ValueError(
                    f"SceneSequentialSampler needs scene_token and timestamp in the data infos, sample {i} "
                    f"has {sorted(info)}. Fix: BevNuScenesDataset(scene_info=True)"
                )
            scenes.setdefault(info["scene_token"], []).append((float(info["timestamp"]), i))
        ordered = sorted(scenes.values(), key=lambda s: (-len(s), min(s)))  # longest first, then by time
        loads = [0] * world_size
        parts: list[list[int]] = [[] for _ in range(world_size)]
        for scene in ordered:
            r = loads.index(min(loads))
            parts[r] += [i for _, i in sorted(scene)]
            loads[r] += len(scene)
        self.parts = parts
        self.indices = parts[rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reseed: the order is fixed."""
