"""Random draws keyed by what they are for, so that a resumed run draws what the uninterrupted one did.

mmengine seeds python, numpy and torch once, when the Runner starts. What iteration ``k`` then
draws depends on everything drawn before it in that process: augmentations (in the DataLoader
workers, or in the main process with ``num_workers=0``), GridMask and dropout, the start of every
DataLoader iterator, validation. A resumed run restarts those streams (and mmengine's
``IterBasedTrainLoop`` replays the skipped batches through them), so it drifts from the
uninterrupted run even with the same seed and the same weights.

Here each draw has its own key instead, and its own seed :func:`derive_seed` ``(stream, *key)``:

- a training iteration's model randomness: ``(ITERATION_STREAM, runner seed, iteration)``,
  seeded before every iteration by :class:`bev_deform.checkpoint.ResumableCheckpointHook`;
- a sample's augmentation: ``(SAMPLE_STREAM, sampler seed, epoch, position in the epoch)``, carried
  from :class:`bev_deform.datasets.samplers.SeededSampler` to the worker in the index itself and
  seeded by :class:`bev_deform.datasets.transforms.SeedAugmentation`.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["ITERATION_STREAM", "SAMPLE_STREAM", "derive_seed", "seed_all"]

# distinct first words of the keys, so that no iteration seed equals a sample seed by construction
ITERATION_STREAM = 0x17E7
SAMPLE_STREAM = 0x5A3F


def derive_seed(stream: int, *key: int) -> int:
    """A 32-bit seed for the draw ``key`` of ``stream``: numpy's ``SeedSequence`` hash of
    ``(stream, *key)``, so nearby keys (iteration 7 and 8) give unrelated streams.

    Raises:
        ValueError: if ``stream`` or an entry of ``key`` is not a non-negative integer.
    """
    words = (stream, *key)
    if not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w >= 0 for w in words):
        raise ValueError(f"derive_seed needs non-negative integers (stream, *key), got {words}")
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch's CPU generator (and, through
    ``torch.manual_seed``, every CUDA device's) with ``seed``; leaves cuDNN flags alone."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
