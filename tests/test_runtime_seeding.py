"""Keyed random draws (bev_deform.randomness, SeededSampler, SeedAugmentation): the same key gives
the same draws whatever the process drew before, across pickling to DataLoader workers too."""

from __future__ import annotations

import copy
import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset, DefaultSampler, pseudo_collate

from bev_deform.checkpoint import ResumableCheckpointHook
from bev_deform.datasets.samplers import SeededIndex, SeededSampler
from bev_deform.datasets.transforms import MultiViewResizeCrop, SeedAugmentation
from bev_deform.randomness import ITERATION_STREAM, SAMPLE_STREAM, derive_seed


def draws() -> tuple:
    """One draw from each global stream a pipeline or a model uses."""
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def scramble(n: int) -> None:
    """Advance every global stream by a different amount."""
    random.seed(n)
    np.random.seed(n + 1)
    torch.manual_seed(n + 2)


def test_derive_seed_is_a_fixed_hash_of_the_key():
    assert derive_seed(ITERATION_STREAM, 0, 7) == derive_seed(ITERATION_STREAM, 0, 7)
    seeds = {derive_seed(ITERATION_STREAM, 0, it) for it in range(1000)}
    assert len(seeds) == 1000  # neighbouring iterations do not share a seed
    assert derive_seed(ITERATION_STREAM, 0, 7) != derive_seed(SAMPLE_STREAM, 0, 7)
    assert all(0 <= s < 2**32 for s in seeds)
    for bad in ((ITERATION_STREAM, -1), (ITERATION_STREAM, 1.5), (ITERATION_STREAM, True)):
        with pytest.raises(ValueError, match="non-negative integers"):
            derive_seed(*bad)


def test_hook_seeds_an_iteration_from_seed_and_iteration_only():
    hook = ResumableCheckpointHook(interval=1, by_epoch=False)
    results = []
    for history in (3, 11):  # two processes that drew different things before iteration 5
        scramble(history)
        hook.before_train_iter(SimpleNamespace(seed=42, iter=5), batch_idx=5)
        results.append(draws())
    assert results[0] == results[1]
    hook.before_train_iter(SimpleNamespace(seed=42, iter=6), batch_idx=6)
    assert draws() != results[0]
    hook.before_train_iter(SimpleNamespace(seed=43, iter=5), batch_idx=5)
    assert draws() != results[0]


def test_seeded_index_is_an_int_that_keeps_its_seed_through_pickle_and_deepcopy():
    idx = SeededIndex(3, seed=1234)
    assert idx == 3 and isinstance(idx, int) and ["a", "b", "c", "d"][idx] == "d"
    for copied in (pickle.loads(pickle.dumps(idx)), copy.deepcopy({"sample_idx": idx})["sample_idx"]):
        assert type(copied) is SeededIndex and copied == 3 and copied.seed == 1234


def test_seeded_sampler_keeps_default_order_and_keys_each_draw():
    dataset = list(range(10))
    plain, seeded = (
        DefaultSampler(dataset, shuffle=True, seed=7),
        SeededSampler(dataset, shuffle=True, seed=7),
    )
    epochs = []
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        seeded.set_epoch(epoch)
        order = list(seeded)
        assert [int(i) for i in order] == list(plain)
        assert [i.seed for i in order] == [derive_seed(SAMPLE_STREAM, 7, epoch, p) for p in range(10)]
        epochs.append({int(i): i.seed for i in order})
    assert all(epochs[0][i] != epochs[1][i] for i in range(10))  # a sample's draw differs per epoch
    seeded.set_epoch(0)
    assert {int(i): i.seed for i in seeded} == epochs[0]  # and is the same when the epoch comes again


def test_seeded_sampler_ranks_have_distinct_positions_even_for_padded_duplicates():
    dataset = list(range(5))  # 2 ranks: padded to 6, sample 0 drawn twice
    per_rank = []
    for rank in (0, 1):
        sampler = SeededSampler(dataset, shuffle=False, seed=0)
        sampler.rank, sampler.world_size = rank, 2
        sampler.num_samples, sampler.total_size = 3, 6
        per_rank.append(list(sampler))
    assert sorted(int(i) for r in per_rank for i in r) == [0, 0, 1, 2, 3, 4]
    assert len({i.seed for r in per_rank for i in r}) == 6


def resize_crop_params(transform: MultiViewResizeCrop, results: dict) -> tuple:
    out = transform(copy.deepcopy(results))
    return out["scale_factor"], out["img_crop_offset"], out["flip"]


def test_seed_augmentation_makes_a_draw_independent_of_the_stream():
    views = dict(
        img=[np.zeros((90, 160, 3), np.uint8)] * 6, cam2img=[np.eye(3)] * 6, lidar2img=[np.eye(4)] * 6
    )
    aug = MultiViewResizeCrop(final_size=(64, 128), scale_range=(0.8, 1.6), flip=True)
    seeding = SeedAugmentation()
    params = []
    for history in (0, 5):
        scramble(history)
        results = seeding(dict(views, sample_idx=SeededIndex(2, seed=99)))
        assert type(results["sample_idx"]) is int and results["sample_idx"] == 2
        params.append(resize_crop_params(aug, results))
    assert params[0] == params[1]
    others = {resize_crop_params(aug, seeding(dict(views, sample_idx=SeededIndex(2, s)))) for s in range(5)}
    assert len(others) == 5  # other draws of the same sample get other augmentations

    # a re-fetch (a plain index after a seeded one) continues the stream seeded for the dropped
    # draw: reproducible too, whatever was drawn before
    def refetch() -> tuple:
        resize_crop_params(aug, seeding(dict(views, sample_idx=SeededIndex(2, seed=99))))  # dropped
        return resize_crop_params(aug, seeding(dict(views, sample_idx=4)))

    scramble(1)
    first = refetch()
    scramble(2)
    assert refetch() == first != params[0]


def test_seed_augmentation_without_seeded_sampler_fails_loudly():
    with pytest.raises(ValueError, match="SeededSampler"):
        SeedAugmentation()(dict(sample_idx=3))


class _ToyDataset(BaseDataset):
    """mmengine BaseDataset of 8 samples (it puts the index into ``sample_idx``)."""

    def load_data_list(self) -> list[dict]:
        return [dict(value=float(i)) for i in range(8)]


def _jitter(results: dict) -> dict:
    return dict(value=results["value"], noise=np.random.rand(), perm=torch.randperm(5))


def _epoch_draws(num_workers: int, persistent: bool) -> list:
    dataset = _ToyDataset(ann_file="", pipeline=[SeedAugmentation(), _jitter], serialize_data=False)
    sampler = SeededSampler(dataset, shuffle=True, seed=3)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=2,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=persistent,
        collate_fn=pseudo_collate,
    )
    out = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        for batch in loader:
            out += [(v, n, p.tolist()) for v, n, p in zip(batch["value"], batch["noise"], batch["perm"])]
    return out


def test_dataloader_draws_are_the_same_in_the_main_process_and_in_persistent_workers():
    scramble(0)
    main = _epoch_draws(num_workers=0, persistent=False)
    assert len({noise for _, noise, _ in main}) == 16  # every draw of every sample differs
    assert main == _epoch_draws(num_workers=2, persistent=True)
