"""Train a bev_deform model with mmengine's Runner (as mmdet3d's tools/train.py).

python tools/train.py CONFIG [--work-dir D] [--amp] [--resume [CKPT]] [--cfg-options k=v ...]
bash tools/dist_train.sh CONFIG NUM_PROCS [...]        # torchrun, --launcher pytorch
mim train bev_deform CONFIG [...]
"""

import argparse

from mmengine.runner import Runner

from bev_deform.checkpoint import resolve_train_checkpoint, runner_checkpoint_globals
from bev_deform.runtime import load_config, parse_runner_args, set_data_root, setup_cpu_distributed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a bev_deform detector")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="the dir to save logs and checkpoints")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision training")
    parser.add_argument("--auto-scale-lr", action="store_true", help="scale the lr by the total batch size")
    parser.add_argument(
        "--resume",
        nargs="?",
        type=str,
        const="auto",
        help="resume from CKPT, or from the newest complete checkpoint in the work dir when no path is given",
    )
    return parse_runner_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    setup_cpu_distributed(cfg, args.launcher)
    if args.amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            print("AMP training is already enabled in the config.")
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if args.auto_scale_lr:
        if "auto_scale_lr" not in cfg or "base_batch_size" not in cfg.auto_scale_lr:
            raise ValueError(
                "--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=...)` in the config"
            )
        cfg.auto_scale_lr.enable = True
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    resolve_train_checkpoint(cfg)
    runner = Runner.from_cfg(cfg)
    with runner_checkpoint_globals():
        runner.train()


if __name__ == "__main__":
    main()
