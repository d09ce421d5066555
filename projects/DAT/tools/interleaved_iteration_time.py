"""Seconds per training iteration of two configs, measured side by side on a busy machine.

    python projects/DAT/tools/interleaved_iteration_time.py \
        configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py \
        projects/DAT/configs/deform_detr3d_dat-n_fpn_1xb2-cpu_synth-400x224.py \
        --data-root data/nuscenes-synth --iters 10 --threads 1

Both models are built in one process and trained on the same pre-loaded batches of the first
config's training set, alternating iteration by iteration (forward, backward, optimizer step: the
Runner's ``train_step``), so whatever else runs on the machine slows both alike. Prints the median
wall and process-CPU seconds of each and their ratio (CPU time on one thread is the steadiest).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from bev_deform.registry import DATASETS, MODELS
from bev_deform.runtime import set_data_root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs=2, help="the two training configs")
    parser.add_argument("--data-root", default="data/nuscenes-synth")
    parser.add_argument("--iters", type=int, default=10, help="measured iterations per config")
    parser.add_argument("--warmup", type=int, default=3, help="iterations per config before measuring")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs, batches = [], None
    for path in args.configs:
        cfg = Config.fromfile(path)
        set_data_root(cfg, args.data_root)
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope("bev_deform"):
            model = MODELS.build(cfg.model)
            if batches is None:
                loader = cfg.train_dataloader
                dataset, bs = DATASETS.build(loader.dataset), loader.batch_size
                n = args.warmup + args.iters
                batches = [pseudo_collate([dataset[bs * i + j] for j in range(bs)]) for i in range(n)]
            model.init_weights()
            model.train()
            runs.append((path, model, build_optim_wrapper(model, cfg.optim_wrapper), [], []))
    for i, batch in enumerate(batches):
        for _, model, optim_wrapper, wall, cpu in runs:
            t0, c0 = time.perf_counter(), time.process_time()
            model.train_step(batch, optim_wrapper)
            if i >= args.warmup:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    medians = []
    for path, _, _, wall, cpu in runs:
        medians.append((statistics.median(wall), statistics.median(cpu)))
        wall_s, cpu_s = medians[-1]
        print(f"{path}: wall {wall_s:.3f} s/iter, cpu {cpu_s:.3f} s/iter (medians of {len(wall)})")
    print(
        f"second / first: wall {medians[1][0] / medians[0][0]:.2f}, cpu {medians[1][1] / medians[0][1]:.2f}"
    )


if __name__ == "__main__":
    main()
