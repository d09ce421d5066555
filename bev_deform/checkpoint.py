"""Checkpoints that load under torch's weights-only unpickler, survive a kill, and resume exactly.

Loading. mmengine's Runner pickles its message hub into every checkpoint: ``HistoryBuffer`` s of
numpy arrays, numpy scalars, and ``HistoryBuffer``'s statistic methods (as
``getattr(HistoryBuffer, 'mean')``). torch >= 2.6 loads with ``weights_only=True`` by default and
refuses them, and mmengine 0.10 calls ``torch.load`` without ``weights_only``.
:func:`runner_checkpoint_globals` allows exactly those types, for as long as the ``with`` block
runs, through torch's own ``safe_globals``; ``getattr`` is replaced by a function that returns
only ``HistoryBuffer``'s statistic methods (a general ``getattr`` would let a file reach any
attribute of any allowed class).

Writing. mmengine writes a checkpoint in place (a kill leaves a truncated file), deletes the
oldest kept checkpoint *before* writing the new one, and writes ``last_checkpoint`` in place, so
a kill at the wrong moment leaves nothing to resume from. :class:`ResumableCheckpointHook` writes
each file to a temporary name in the same directory, fsyncs it and renames it into place
(:func:`atomic_write`), and deletes outdated checkpoints only after the new one is complete.

Resuming. :func:`check_checkpoint` reads a file's zip directory (torch's format keeps it at the
end, so a cut-short file has none) and names the file and its size when it is incomplete;
:func:`find_resume_checkpoint` picks the newest complete checkpoint of a work dir.
:class:`ResumableCheckpointHook` also seeds every training iteration from (seed, iteration)
(:mod:`bev_deform.randomness`), so a resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import os.path as osp
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import load_checkpoint as mmengine_load_checkpoint

from bev_deform.randomness import ITERATION_STREAM, derive_seed, seed_all
from bev_deform.registry import HOOKS

__all__ = [
    "ATOMIC_BACKEND",
    "AtomicLocalBackend",
    "ResumableCheckpointHook",
    "atomic_write",
    "check_checkpoint",
    "find_resume_checkpoint",
    "load_checkpoint",
    "load_checkpoint_file",
    "resolve_train_checkpoint",
    "runner_checkpoint_globals",
]

ATOMIC_BACKEND = "local_atomic"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format (torch >= 1.6) is a zip archive
_PICKLE_MAGIC = b"\x80"  # torch's legacy format starts with a pickle protocol opcode
_STEP_CKPT = re.compile(r"^(?:epoch|iter)_(\d+)\.pth$")  # CheckpointHook's default filename_tmpl


# ----------------------------------------------------------------------------------------- loading


def _history_buffer_statistic(owner, name: str):
    """Stands in for ``builtins.getattr`` while a checkpoint is unpickled: a ``HistoryBuffer``
    pickles its statistic methods as ``getattr(HistoryBuffer, 'min')``; nothing else is returned."""
    allowed = {"min", "max", "current", "mean", *HistoryBuffer._statistics_methods}
    if owner is HistoryBuffer and name in allowed and callable(getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"the checkpoint calls getattr({owner!r}, {name!r}); only HistoryBuffer's statistic methods "
        f"({sorted(allowed)}) are allowed"
    )


def _runner_safe_globals() -> list:
    """What a checkpoint of mmengine's Runner holds beyond tensors and builtin containers."""
    multiarray = np.core.multiarray if np.lib.NumpyVersion(np.__version__) < "2.0.0" else np._core.multiarray
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    numeric += (np.float16, np.float32, np.float64)
    return [
        HistoryBuffer,
        (_history_buffer_statistic, "builtins.getattr"),
        multiarray._reconstruct,
        multiarray.scalar,
        np.ndarray,
        np.dtype,
        *(type(np.dtype(t)) for t in numeric),  # numpy >= 1.25 builds dtypes of these classes
    ]


def runner_checkpoint_globals() -> contextlib.AbstractContextManager:
    """``with runner_checkpoint_globals(): ...``: while the block runs, ``torch.load`` (and so
    mmengine's ``load_checkpoint`` and ``Runner.resume``) reads checkpoints written by mmengine's
    Runner with torch's default ``weights_only=True``. A no-op on torch < 2.5, which has no
    ``safe_globals`` and loads without ``weights_only`` by default."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return contextlib.nullcontext() if safe_globals is None else safe_globals(_runner_safe_globals())


def check_checkpoint(path: str | Path) -> None:
    """Check that ``path`` is a complete torch checkpoint without loading it.

    Reads the first bytes and, for torch's zip format, the zip directory at the end of the file,
    which a file cut short (by a kill while it was written, a full disk, a partial copy) lacks.
    Files in torch's legacy (pickle) format, and URIs (``https://``, ``s3://``, mmengine's
    ``open-mmlab://``...), which mmengine fetches itself, pass unchecked.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: naming the file and its size, if it is empty, not a torch checkpoint, or
            incomplete.
    """
    path = str(path)
    if "://" in path:
        return
    if not osp.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = osp.getsize(path)
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head.startswith(_PICKLE_MAGIC):
        return
    if head != _ZIP_MAGIC:
        what = "empty" if size == 0 else f"not a torch checkpoint (it starts with {head!r})"
        raise ValueError(f"checkpoint {path} ({size} bytes) is {what}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(
            f"checkpoint {path} ({size} bytes) is incomplete ({exc}): it was probably cut short while "
            "being written (a kill, a full disk, a partial copy); use an earlier checkpoint"
        ) from exc
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        raise ValueError(f"checkpoint {path} ({size} bytes) is a zip archive without torch's data.pkl")


def load_checkpoint_file(path: str | Path, map_location: str | Callable | None = "cpu") -> dict:
    """Check ``path`` (:func:`check_checkpoint`) and ``torch.load`` it with ``weights_only=True``
    under :func:`runner_checkpoint_globals`. Returns the checkpoint dict."""
    check_checkpoint(path)
    with runner_checkpoint_globals():
        return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(model: torch.nn.Module, path: str, **kwargs) -> dict:
    """mmengine's :func:`~mmengine.runner.load_checkpoint` for our tools: ``path`` is
    checked first (:func:`check_checkpoint`), and the file is read under
    :func:`runner_checkpoint_globals`. ``kwargs`` go to mmengine (``map_location``, ``strict``...)."""
    check_checkpoint(path)
    with runner_checkpoint_globals():
        return mmengine_load_checkpoint(model, path, **kwargs)


# ----------------------------------------------------------------------------------------- resuming


def find_resume_checkpoint(work_dir: str) -> str | None:
    """The newest complete checkpoint of ``work_dir``, or None when it has none at all.

    Candidates, newest first: the file named in ``work_dir/last_checkpoint`` (mmengine's record of
    the last save), then ``epoch_N.pth`` / ``iter_N.pth`` in ``work_dir`` by decreasing ``N``.
    Each incomplete or missing candidate skipped is logged as a warning with its size.

    Raises:
        ValueError: if ``work_dir`` has checkpoints but none of them is complete.
    """
    candidates = []
    record = osp.join(work_dir, "last_checkpoint")
    if osp.isfile(record):
        with open(record) as f:
            candidates.append(f.read().strip())
    steps = []
    for path in glob.glob(osp.join(glob.escape(work_dir), "*.pth")):
        match = _STEP_CKPT.match(osp.basename(path))
        if match:
            steps.append((int(match.group(1)), path))
    candidates += [path for _, path in sorted(steps, reverse=True)]
    skipped, seen = [], set()
    for path in candidates:
        if not path or osp.realpath(path) in seen:
            continue
        seen.add(osp.realpath(path))
        try:
            check_checkpoint(path)
        except (FileNotFoundError, ValueError) as exc:
            skipped.append(str(exc))
            continue
        if skipped:
            print_log(
                "skipping checkpoints that cannot be resumed from: "
                + "; ".join(skipped)
                + f"; resuming from {path}",
                logger="current",
                level=logging.WARNING,
            )
        return path
    if skipped:
        raise ValueError(f"no complete checkpoint to resume from in {work_dir}: " + "; ".join(skipped))
    return None


def resolve_train_checkpoint(cfg) -> None:
    """Settle which checkpoint a training config starts from, before the Runner is built.

    ``cfg.resume`` without ``cfg.load_from`` (``tools/train.py --resume``): ``cfg.load_from``
    becomes :func:`find_resume_checkpoint` of ``cfg.work_dir``; when the work dir has no
    checkpoint, ``cfg.resume`` becomes False and training starts afresh, as with mmengine.
    A given ``cfg.load_from`` is checked with :func:`check_checkpoint`, so a corrupt file fails
    here, named, with its size.
    """
    if cfg.get("resume") and not cfg.get("load_from"):
        cfg.load_from = find_resume_checkpoint(cfg.work_dir) if osp.isdir(cfg.work_dir) else None
        if cfg.load_from is None:
            print_log(f"no checkpoint to resume from in {cfg.work_dir}: training from the start", "current")
            cfg.resume = False  # mmengine would read a missing or empty last_checkpoint
    elif cfg.get("load_from"):
        check_checkpoint(cfg.load_from)


# ----------------------------------------------------------------------------------------- writing


def _tmp_name(directory: str, name: str, pid: int | str = "[0-9]*") -> str:
    """The temporary file :func:`atomic_write` uses for ``directory/name`` (by default a glob
    pattern matching every process's)."""
    return osp.join(directory, f".{name}.{pid}.tmp")


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``:
    a temporary file in the same directory, flushed and fsynced, then ``os.replace`` d into place,
    then the directory fsynced. A temporary file left by a kill is named ``.{name}.{pid}.tmp``."""
    path = osp.abspath(str(path))
    directory = osp.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = _tmp_name(directory, osp.basename(path), os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` / ``put_text`` write with :func:`atomic_write`."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        atomic_write(filepath, obj.encode(encoding))


@HOOKS.register_module()
class ResumableCheckpointHook(CheckpointHook):
    """mmengine's :class:`~mmengine.hooks.CheckpointHook` (same arguments) whose checkpoints survive
    a kill and resume exactly.

    - Local checkpoints (``out_dir`` without a URI prefix and no ``backend_args``) are written
      with :class:`AtomicLocalBackend`; ``last_checkpoint`` too. Temporary files left by a kill
      are removed when training starts.
    - With ``max_keep_ckpts``, the outdated checkpoint is deleted after the new one and
      ``last_checkpoint`` are on disk, not before.
    - Before every training iteration, python, numpy and torch (CPU and CUDA) are seeded with
      ``derive_seed(ITERATION_STREAM, runner.seed, runner.iter)``: what the iteration draws
      (GridMask, dropout) depends on the seed and the iteration only, and not on what the process
      drew before (which differs after a resume). ``runner.seed`` already differs per rank when
      the config's ``randomness.diff_rank_seed`` is set. The hook's ``VERY_LOW`` priority runs
      this last among the ``before_train_iter`` hooks, just before the forward pass.

    Together with :class:`~bev_deform.datasets.samplers.SeededSampler` and
    :class:`~bev_deform.datasets.transforms.SeedAugmentation` (the data's draws) and mmengine's
    resume (weights, optimizer, schedulers, iteration, sampler position), a resumed run equals
    the uninterrupted one.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if (
            self.backend_args is None
            and self.file_client_args is None
            and type(self.file_backend) is LocalBackend
        ):
            self.backend_args = dict(backend=ATOMIC_BACKEND)
            self.file_backend = get_file_backend(self.out_dir, backend_args=self.backend_args)
        if is_main_process() and isinstance(self.file_backend, AtomicLocalBackend):
            patterns = [(self.out_dir, "*.pth"), (runner.work_dir, "last_checkpoint")]
            for stale in sorted(
                {p for d, name in patterns for p in glob.glob(_tmp_name(glob.escape(d), name))}
            ):
                runner.logger.warning(f"removing {stale}, a checkpoint write cut short by an earlier kill")
                os.remove(stale)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed_all(derive_seed(ITERATION_STREAM, runner.seed, runner.iter))

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """mmengine's version with the deletion of the outdated checkpoint moved after the save."""
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if not is_main_process():
            return
        atomic_write(osp.join(runner.work_dir, "last_checkpoint"), self.last_ckpt.encode())
        if outdated is not None:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)
