"""Evaluate a bev_deform checkpoint (NDS/mAP through nuscenes-devkit) with mmengine's Runner.

python tools/test.py CONFIG CHECKPOINT [--work-dir D] [--show-dir D] [--cfg-options k=v ...]
python tools/test.py CONFIG CHECKPOINT --format-only --out-dir D   # test-server submission (v1.0-test)
bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [...]
mim test bev_deform CONFIG --checkpoint CHECKPOINT
"""

import argparse
import copy
import os.path as osp

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
    parser.add_argument(
        "--format-only",
        action="store_true",
        help="run on the config's test split (`test_split`, v1.0-test) and write the nuScenes submission "
        "OUT_DIR/pred_instances_3d/results_nusc.json instead of evaluating",
    )
    parser.add_argument("--out-dir", help="with --format-only: the directory the submission is written to")
    parser.add_argument(
        "--out", help="also dump every sample's raw predictions to this .pkl (mmengine's DumpResults)"
    )
    args = parse_runner_args(parser, argv)
    if args.out and not args.out.endswith((".pkl", ".pickle")):
        parser.error(f"--out must be a .pkl or .pickle file, got {args.out}")
    if args.format_only and not args.out_dir:
        parser.error("--format-only needs --out-dir (the directory the submission JSON is written to)")
    return args


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


def enable_format_only(cfg, out_dir: str) -> None:
    """Point the test dataloader and evaluator at the config's ``test_split`` (the info file and
    nuScenes version of the test set, e.g. ``dict(ann_file='nuscenes_infos_test.pkl',
    version='v1.0-test')``) and make the evaluator write the submission to ``out_dir``."""
    split = cfg.get("test_split")
    if split is None:
        raise ValueError(
            "--format-only needs `test_split = dict(ann_file=..., version=...)` in the config "
            "(configs/_base_/datasets/nus_3d_cam.py defines it for nuScenes)"
        )
    loader = copy.deepcopy(cfg.test_dataloader)  # test_dataloader may be the val dataloader itself
    dataset = loader["dataset"]
    dataset["ann_file"] = split["ann_file"]
    dataset["metainfo"] = dict(dataset.get("metainfo") or {}, version=split["version"])
    evaluator = copy.deepcopy(cfg.test_evaluator)
    if not isinstance(evaluator, dict):
        raise ValueError(f"--format-only needs a single test_evaluator dict, got {type(evaluator).__name__}")
    evaluator.update(
        ann_file=osp.join(osp.dirname(evaluator["ann_file"]), split["ann_file"]),
        version=split["version"],
        format_only=True,
        jsonfile_prefix=osp.abspath(out_dir),
    )
    cfg.test_dataloader = loader
    cfg.test_evaluator = evaluator


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
    if args.format_only:
        enable_format_only(cfg, args.out_dir)
    if args.out:
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, dict(type="DumpResults", out_file_path=args.out)]
    runner = Runner.from_cfg(cfg)
    with runner_checkpoint_globals():
        runner.test()


if __name__ == "__main__":
    main()
