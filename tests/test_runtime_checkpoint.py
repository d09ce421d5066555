"""bev_deform.checkpoint on checkpoints written by a real mmengine Runner (a toy model, so each run
takes a fraction of a second): weights-only loading with the allow-list, atomic writes under an
interruption and a real kill, the newest complete checkpoint for resuming, and a resumed run that
equals the uninterrupted one (while mmengine's stock hooks do not)."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
from pathlib import Path

import mmengine
import mmengine.runner.loops
import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset, DefaultSampler
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from bev_deform import checkpoint as ckpt_mod
from bev_deform.checkpoint import (
    AtomicLocalBackend,
    ResumableCheckpointHook,
    atomic_write,
    check_checkpoint,
    find_resume_checkpoint,
    load_checkpoint_file,
    resolve_train_checkpoint,
    runner_checkpoint_globals,
)
from bev_deform.datasets.samplers import SeededSampler
from bev_deform.datasets.transforms import SeedAugmentation


class ToyModel(BaseModel):
    """A linear model whose training draws from torch's CPU stream as GridMask and dropout do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 1))

    def forward(self, inputs, data_samples=None, mode="loss"):
        x = torch.stack(inputs)  # (B, 3)
        x = x * (torch.rand_like(x) > 0.3)  # a GridMask-like mask
        return dict(loss=self.net(x).pow(2).mean())


class ToyDataset(BaseDataset):
    """5 samples: 3 iterations of batch 2 per epoch, so 8 iterations cross two epoch ends."""

    def load_data_list(self) -> list[dict]:
        return [dict(value=i / 5) for i in range(5)]


def augment(results: dict) -> dict:
    """An augmentation drawing from numpy's global stream, as mmdet3d's transforms do."""
    noise = np.random.normal(size=2)
    return dict(inputs=torch.tensor([results["value"], *noise], dtype=torch.float32))


def make_runner(work_dir: Path, max_iters: int, *, exact: bool = True, resume_from=None, **ckpt_kw) -> Runner:
    """The toy model on the toy data with our hook, sampler and seeding (``exact``), or with
    mmengine's stock ``CheckpointHook`` and ``DefaultSampler``."""
    torch.manual_seed(0)
    pipeline = [SeedAugmentation(), augment] if exact else [augment]
    dataset = ToyDataset(ann_file="", pipeline=pipeline, serialize_data=False)
    checkpoint = dict(type=ResumableCheckpointHook if exact else CheckpointHook, by_epoch=False)
    checkpoint.update(dict(interval=4) | ckpt_kw)
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f"{work_dir.name}-{max_iters}",  # one message hub per runner
        train_dataloader=dict(
            dataset=dataset,
            sampler=dict(type=SeededSampler if exact else DefaultSampler, shuffle=True),
            batch_size=2,
            num_workers=0,
            collate_fn=dict(type="pseudo_collate"),
        ),
        optim_wrapper=dict(optimizer=dict(type=torch.optim.SGD, lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=checkpoint, logger=dict(type="LoggerHook", interval=1)),
        randomness=dict(seed=0),
        load_from=None if resume_from is None else str(resume_from),
        resume=resume_from is not None,
    )


@pytest.fixture(autouse=True)
def no_epoch_end_sleep(monkeypatch):
    """mmengine's infinite iterator sleeps 2 s at each epoch end; not needed here."""
    monkeypatch.setattr(mmengine.runner.loops.time, "sleep", lambda seconds: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Work dir of 8 toy iterations with checkpoints at 4 and 8 (``max_keep_ckpts=2``); read-only."""
    work = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mmengine.runner.loops.time, "sleep", lambda seconds: None)
        make_runner(work, 8, max_keep_ckpts=2).train()
    return work


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """A copy of ``src`` cut short, as a kill during ``torch.save`` leaves it."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_runner_checkpoint_loads_weights_only_with_the_allow_list_and_only_inside_it(trained, monkeypatch):
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    path = trained / "iter_8.pth"
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(path)  # torch's default weights_only=True refuses what mmengine pickles
    ckpt = load_checkpoint_file(path)
    assert ckpt["meta"]["iter"] == 8 and set(ckpt["state_dict"]) == set(ToyModel().state_dict())
    loss = ckpt["message_hub"]["log_scalars"]["train/loss"]  # statistics come back through the stand-in
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 8
    assert loss.statistics("current") == loss.data[0][-1]
    with runner_checkpoint_globals():
        assert torch.load(path, weights_only=True)["meta"]["iter"] == 8
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # the allow-list is gone after the block


class _Sneaky:
    """Pickles as ``getattr(np.ndarray, 'tofile')``, a method a general getattr would hand out."""

    def __reduce__(self):
        return getattr, (np.ndarray, "tofile")


def test_getattr_stand_in_gives_out_only_history_buffer_statistics(tmp_path):
    path = tmp_path / "sneaky.pth"
    torch.save({"x": _Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match="only HistoryBuffer's statistic methods"):
        load_checkpoint_file(path)


def test_check_checkpoint_names_a_bad_file_and_its_size(trained, tmp_path):
    good = trained / "iter_8.pth"
    check_checkpoint(good)
    cut = truncate(good, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=rf"{cut} \({cut.stat().st_size} bytes\) is incomplete"):
        check_checkpoint(cut)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.pth \(0 bytes\) is empty"):
        check_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "log.pth").write_text("hello")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        check_checkpoint(tmp_path / "log.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        check_checkpoint(tmp_path / "missing.pth")
    check_checkpoint("https://download.openmmlab.com/x.pth")  # URIs are mmengine's to fetch


def test_find_resume_checkpoint_skips_a_truncated_latest_and_says_so(trained, tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(ckpt_mod, "print_log", lambda msg, *args, **kwargs: logged.append(msg))
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    assert find_resume_checkpoint(str(work)) == str(trained / "iter_8.pth")  # last_checkpoint's
    (work / "last_checkpoint").write_text(str(work / "iter_8.pth"))
    truncate(trained / "iter_8.pth", work / "iter_8.pth")
    size = (work / "iter_8.pth").stat().st_size
    assert find_resume_checkpoint(str(work)) == str(work / "iter_4.pth")
    assert len(logged) == 1 and f"{work / 'iter_8.pth'} ({size} bytes) is incomplete" in logged[0]
    assert logged[0].endswith(f"resuming from {work / 'iter_4.pth'}")
    truncate(trained / "iter_4.pth", work / "iter_4.pth")
    with pytest.raises(ValueError, match="no complete checkpoint to resume from"):
        find_resume_checkpoint(str(work))
    assert find_resume_checkpoint(str(tmp_path)) is None  # nothing there at all


def test_resolve_train_checkpoint_for_auto_resume_and_given_paths(trained, tmp_path):
    cfg = mmengine.Config(dict(work_dir=str(trained), resume=True, load_from=None))
    resolve_train_checkpoint(cfg)
    assert cfg.load_from == str(trained / "iter_8.pth") and cfg.resume
    cfg = mmengine.Config(dict(work_dir=str(tmp_path / "fresh"), resume=True, load_from=None))
    resolve_train_checkpoint(cfg)
    assert cfg.load_from is None and not cfg.resume  # nothing to resume: start afresh
    cut = truncate(trained / "iter_8.pth", tmp_path / "cut.pth")
    for resume in (True, False):  # --resume PATH, and load_from
        cfg = mmengine.Config(dict(work_dir=str(trained), resume=resume, load_from=str(cut)))
        with pytest.raises(ValueError, match=f"{cut} .* bytes"):
            resolve_train_checkpoint(cfg)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "iter_4.pth"
    atomic_write(path, b"old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"new" * 1000)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["iter_4.pth"]


def test_a_kill_during_the_write_leaves_the_previous_checkpoint(trained, tmp_path):
    """A real SIGKILL of a (forked) process in the middle of atomic_write: the data written, the
    rename not yet done."""
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
            atomic_write(work / "iter_8.pth", b"x" * 1_000_000)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    stale = list(work.glob(".iter_8.pth.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size == 1_000_000
    check_checkpoint(work / "iter_8.pth")  # the previous file, untouched
    # training in that work dir removes the write the kill cut short
    make_runner(work, 1, interval=100).train()
    assert not list(work.glob(".*.tmp"))


def test_hook_deletes_the_outdated_checkpoint_only_after_the_new_one_is_written(tmp_path, monkeypatch):
    real_put = AtomicLocalBackend.put

    def put_fails_at_iter_8(self, obj, filepath):
        if str(filepath).endswith("iter_8.pth"):
            raise OSError("disk full")
        real_put(self, obj, filepath)

    monkeypatch.setattr(AtomicLocalBackend, "put", put_fails_at_iter_8)
    work = tmp_path / "ours"
    with pytest.raises(OSError, match="disk full"):
        make_runner(work, 8, max_keep_ckpts=1).train()
    assert sorted(p.name for p in work.glob("*.pth")) == ["iter_4.pth"]
    assert (work / "last_checkpoint").read_text() == str(work / "iter_4.pth")
    check_checkpoint(work / "iter_4.pth")

    # mmengine's CheckpointHook deletes iter_4 first: the same failure leaves no checkpoint at all
    def local_put_fails_at_iter_8(self, obj, filepath):
        if str(filepath).endswith("iter_8.pth"):
            raise OSError("disk full")
        Path(filepath).write_bytes(obj)

    monkeypatch.setattr(mmengine.fileio.LocalBackend, "put", local_put_fails_at_iter_8)
    stock = tmp_path / "stock"
    with pytest.raises(OSError, match="disk full"):
        make_runner(stock, 8, exact=False, max_keep_ckpts=1).train()
    assert not list(stock.glob("*.pth"))


def final_weights(runner: Runner) -> dict:
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


@pytest.mark.parametrize("exact", [True, False], ids=["ours", "mmengine-stock"])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, exact):
    """8 iterations straight vs. 4, a new process-like Runner resumed from iter_4, then 4 more."""
    straight = make_runner(tmp_path / "straight", 8, exact=exact)
    straight.train()
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(tmp_path / "straight" / "iter_4.pth", resumed_dir / "iter_4.pth")
    resumed = make_runner(resumed_dir, 8, exact=exact, resume_from=resumed_dir / "iter_4.pth")
    with runner_checkpoint_globals():
        resumed.train()
    a, b = final_weights(straight), final_weights(resumed)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    if exact:
        assert diff == 0.0
    else:  # the failure this module fixes: same seed, same weights at iter 4, different end
        assert diff > 1e-3
