"""Run an exported model in ONNX Runtime and the checkpoint in PyTorch on dataset samples and
print the largest differences of scores and boxes.

    python tools/deploy/verify_onnx.py CONFIG CHECKPOINT MODEL.onnx [--num-samples 3] \
        [--split val|test|train] [--data-root D] [--atol 1e-4] [--threads N]

Each sample goes through the config's test pipeline and the model's data preprocessor; PyTorch
runs the detector as ``tools/test.py`` does (the CPU kernel for MSDA), ONNX Runtime the export on
the same ``images`` and ``lidar2img``. Printed per sample: the largest |difference| of the
pre-top-k sigmoid scores and box codes (for an export with ``--debug-outputs``), the detections
each keeps, how many match by (query, class) (by rank without debug outputs; near-ties at the
top-k boundary counted apart), and the largest |difference| of the matched boxes and scores.
Exits with status 1 when a difference exceeds ``--atol`` or the detections differ.
"""

from __future__ import annotations

import argparse
import sys

import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from bev_deform.deploy import build_detector, compare_with_pytorch, ort_session
from bev_deform.registry import DATASETS
from bev_deform.runtime import DictAction, load_config, set_data_root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Compare an ONNX export with the PyTorch model")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("model", help="the exported .onnx file")
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--split", choices=["train", "val", "test"], default="val")
    parser.add_argument("--data-root", help="nuScenes-format root for the config's datasets")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, help="threads of both runtimes (their defaults when unset)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    return parser.parse_args(argv)


def load_batches(cfg, split: str, num: int, preprocessor) -> list[dict]:
    """The first ``num`` samples of ``split`` through the test pipeline, each a preprocessed batch of one."""
    ds_cfg = cfg[f"{split}_dataloader"]["dataset"].copy()
    if split == "train":
        ds_cfg["pipeline"] = cfg.test_dataloader.dataset.pipeline  # no augmentation
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "bev_deform")):
        dataset = DATASETS.build(ds_cfg)
    if not 1 <= num <= len(dataset):
        raise ValueError(f"--num-samples must be in [1, {len(dataset)}] for the {split} split, got {num}")
    return [preprocessor(pseudo_collate([dataset[i]]), False) for i in range(num)]


def main(argv=None) -> list:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, None)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.threads:
        torch.set_num_threads(args.threads)
    detector = build_detector(cfg, args.checkpoint)
    session = ort_session(args.model, args.threads)
    diffs = []
    header = "sample  max|d score|  max|d code|  kept torch/onnx  matched  unmatched (at k-th)"
    print(f"{header}  max|d box|  max|d det s")
    for i, data in enumerate(load_batches(cfg, args.split, args.num_samples, detector.data_preprocessor)):
        d = compare_with_pytorch(detector, session, data, args.atol)
        diffs.append(d)
        raw = [f"{v:12.2e}" if v is not None else f"{'n/a':>12}" for v in (d.score_diff, d.code_diff)]
        print(
            f"{i:6d}  {raw[0]}  {raw[1]}  {d.num_torch:7d}/{d.num_onnx:<7d}  "
            f"{d.num_matched:7d}  {d.num_unmatched:9d} ({d.num_boundary:d})     {d.box_diff:10.2e}  "
            f"{d.det_score_diff:11.2e}"
        )
    ok = all(d.ok(args.atol) for d in diffs)
    print(f"{'OK' if ok else 'MISMATCH'}: {len(diffs)} samples, atol {args.atol:g}")
    if not ok:
        sys.exit(1)
    return diffs


if __name__ == "__main__":
    main()
