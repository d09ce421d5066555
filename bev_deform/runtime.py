"""Runner set-up shared by tools/train.py and tools/test.py: CLI overrides as mmdet3d users
know them, and distributed training on CPU (gloo) where mmengine assumes CUDA."""

from __future__ import annotations

import argparse
import os
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

__all__ = [
    "CPUDistributedDataParallel",
    "DictAction",
    "build_eval_dataset",
    "build_model",
    "load_config",
    "set_data_root",
    "setup_cpu_distributed",
]


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for CPU processes (gloo): the Runner always passes
    ``device_ids=[LOCAL_RANK]``, which torch's DDP rejects for a CPU module."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def parse_runner_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Add the options tools/train.py and tools/test.py share (``--data-root``, ``--cfg-options``,
    ``--launcher``, ``--local_rank``) and parse ``argv``."""
    parser.add_argument("--data-root", help="nuScenes-format root for the config's datasets and evaluators")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value"
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def load_config(config: str, cfg_options: dict | None, work_dir: str | None) -> Config:
    """Read ``config``, merge ``--cfg-options`` and pick the work dir as mmdet3d's tools do:
    CLI > config > ./work_dirs/<config name>."""
    if not osp.isfile(config):
        raise FileNotFoundError(f"config file {config!r} does not exist (expected a path to a .py config)")
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(config))[0])
    cfg.launcher = cfg.get("launcher", "none")
    return cfg


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` work without CUDA: start a gloo process group ourselves
    (mmengine's init_dist calls ``torch.cuda.set_device``) and wrap the model with
    :class:`CPUDistributedDataParallel`. A no-op with CUDA or without a launcher."""
    cfg.launcher = launcher
    if launcher == "none" or torch.cuda.is_available():
        return
    if launcher != "pytorch":
        raise ValueError(f"launcher {launcher!r} needs CUDA; on CPU only 'pytorch' (torchrun) is supported")
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend="gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"])
        )
    cfg.env_cfg = cfg.get("env_cfg", {})
    cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "gloo"
    wrapper = dict(cfg.get("model_wrapper_cfg") or {})
    wrapper["type"] = "CPUDistributedDataParallel"
    cfg.model_wrapper_cfg = wrapper


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataloader's dataset and every evaluator of ``cfg`` at ``data_root`` (a
    nuScenes-format root holding ``nuscenes_infos_{train,val}.pkl``), as the ``--data-root``
    of tools/demo.py and the tests do."""
    root = data_root.rstrip("/") + "/"
    if not osp.isdir(root):
        raise FileNotFoundError(
            f"data root {root!r} does not exist; create it with "
            f"`python tools/create_data.py synthetic --out {root}`"
        )
    for split in ("train", "val", "test"):
        loader = cfg.get(f"{split}_dataloader")
        if loader is not None:
            dataset = loader["dataset"]
            while "dataset" in dataset:  # a wrapper (CBGSDataset, RepeatDataset): its inner dataset
                dataset = dataset["dataset"]
            dataset["data_root"] = root
    for split in ("val", "test"):
        evaluator = cfg.get(f"{split}_evaluator")
        if evaluator is not None:
            evaluator["data_root"] = root
            evaluator["ann_file"] = osp.join(root, osp.basename(evaluator["ann_file"]))


def build_model(cfg: Config, checkpoint: str | None) -> torch.nn.Module:
    """``cfg.model`` built in the config's default scope, in eval mode, with the weights of
    ``checkpoint`` (any bev_deform or mmengine checkpoint; see :func:`bev_deform.checkpoint.load_checkpoint`),
    or as initialised (``init_weights()``) for None: the model of the analysis tools."""
    from mmengine.registry import DefaultScope, init_default_scope

    from .checkpoint import load_checkpoint
    from .registry import MODELS

    scope = cfg.get("default_scope", "bev_deform")
    init_default_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        if checkpoint is None:
            model.init_weights()
        else:
            load_checkpoint(model, checkpoint, map_location="cpu")
    return model.eval()


def build_eval_dataset(cfg: Config, split: str):
    """The ``split`` ('train', 'val' or 'test') dataset of ``cfg`` with the test pipeline, so
    that a training sample is read without augmentation."""
    from mmengine.registry import DefaultScope

    from .registry import DATASETS

    loader = cfg.get(f"{split}_dataloader")
    if loader is None:
        raise ValueError(f"the config has no {split}_dataloader (expected split 'train', 'val' or 'test')")
    ds_cfg = loader["dataset"].copy()
    ds_cfg["pipeline"] = cfg.test_dataloader.dataset.pipeline
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "bev_deform")):
        return DATASETS.build(ds_cfg)
