"""Evaluate a bev_deform checkpoint (NDS/mAP through nuscenes-devkit) with mmengine's Runner.

python tools/test.py CONFIG CHECKPOINT [--work-dir D] [--show-dir D] [--cfg-options k=v ...]
bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [...]
mim test bev_deform CONFIG --checkpoint CHECKPOINT
"""

import argparse

from mmengine.runner import Runner

from bev_deform.checkpoint import check_checkpoint, runner_checkpoint_globals
from bev_deform.runtime import load_config, parse_runner_args, set_data_root, setup_cpu_distributed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Test (and evaluate) a bev_deform detector")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="the dir to save the evaluation results and logs")
    parser.add_argument(
        "--show-dir", help="write per-sample sampling-point mosaics here (relative to the work dir's run)"
    )
    return parse_runner_args(parser, argv)


def enable_show_dir(cfg, show_dir: str) -> None:
    """Turn on the sampling-point visualisation hook, writing mosaics to ``show_dir``."""
    hooks = cfg.setdefault("default_hooks", {})
    if "visualization" not in hooks:
        raise ValueError(
            "--show-dir needs a `default_hooks.visualization` entry in the config "
            "(configs/_base_/default_runtime.py provides one)"
        )
    hooks["visualization"]["draw"] = True
    hooks["visualization"]["show_dir"] = show_dir


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    setup_cpu_distributed(cfg, args.launcher)
    check_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_show_dir(cfg, args.show_dir)
    runner = Runner.from_cfg(cfg)
    with runner_checkpoint_globals():
        runner.test()


if __name__ == "__main__":
    main()
