"""The main job in one command (``make demo``): synthetic nuScenes -> train -> evaluate -> draw.

    python tools/demo.py [--work-dir work_dirs/demo] [--preset learn] [--seed 0] [--max-iters N]

Steps, each printed with the command it runs (so they can be re-run by hand) and its wall time:

1. data: the synthetic ``learn`` preset in the nuScenes v1.0-mini format, with mmdet3d info
   files, under ``{work_dir}/data`` (reused when it is already there);
2. train: the CPU config with ``tools/train.py --resume``: a run that was interrupted continues
   from its last checkpoint, a finished one is not trained again;
3. evaluate: ``tools/test.py`` on the synthetic val through nuscenes-devkit (NDS/mAP table),
   writing sampling-point mosaics of a few val samples (``--show-dir``);
4. curves: loss and NDS over iterations as a PNG.

Everything lands in ``--work-dir``; the last lines say where.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

from mmengine import load

from bev_deform.checkpoint import find_resume_checkpoint

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py")
NDS_KEY = "NuScenes metric/pred_instances_3d_NuScenes/NDS"
MAP_KEY = "NuScenes metric/pred_instances_3d_NuScenes/mAP"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="bev_deform demo: data -> train -> evaluate -> visualise")
    parser.add_argument("--work-dir", default="work_dirs/demo")
    parser.add_argument("--preset", choices=["tiny", "learn"], default="learn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iters", type=int, help="training iterations (default: the config's)")
    parser.add_argument("--val-interval", type=int, default=500, help="evaluate every N iterations")
    parser.add_argument("--num-mosaics", type=int, default=4, help="val samples to draw")
    return parser.parse_args(argv)


def step(title: str, cmd: list[str]) -> float:
    """Run one step as a subprocess of this Python, streaming its output; returns seconds."""
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, *cmd], cwd=REPO, check=True)
    secs = time.time() - t0
    print(f"=== {title}: done in {secs / 60:.1f} min", flush=True)
    return secs


def latest_checkpoint(work_dir: str) -> str:
    """The newest complete checkpoint that training left in ``work_dir``."""
    path = find_resume_checkpoint(work_dir)
    if path is None:
        raise FileNotFoundError(f"training left no checkpoint in {work_dir}; see the training log there")
    return path


def read_scalars(work_dir: str) -> list[dict]:
    """Every line of every ``{ts}/vis_data/scalars.json`` under ``work_dir``, in run order."""
    lines = []
    for path in sorted(glob.glob(osp.join(work_dir, "*", "vis_data", "scalars.json"))):
        with open(path) as f:
            lines += [json.loads(s) for s in f if s.strip()]
    return lines


def plot_curves(work_dir: str, out: str) -> None:
    """Training loss (per logged iteration) and validation NDS/mAP over iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_scalars(work_dir)
    train = sorted({r["iter"]: r["loss"] for r in rows if "loss" in r and "iter" in r}.items())
    val = sorted({r["step"]: (r[NDS_KEY], r[MAP_KEY]) for r in rows if NDS_KEY in r}.items())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax1.plot(*zip(*train), lw=1)
    ax1.set(xlabel="iteration", ylabel="total loss (all terms)", title="training loss", yscale="log")
    if val:
        steps = [s for s, _ in val]
        ax2.plot(steps, [v[0] for _, v in val], "o-", label="NDS")
        ax2.plot(steps, [v[1] for _, v in val], "s-", label="mAP")
        ax2.legend()
    ax2.set(xlabel="iteration", ylabel="score", title="synthetic val (nuscenes-devkit)", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.join(work_dir, "data", f"nuscenes-synth-{args.preset}")
    train_dir, test_dir = osp.join(work_dir, "train"), osp.join(work_dir, "test")
    times = {}
    if osp.isfile(osp.join(data_root, "nuscenes_infos_val.pkl")):
        print(f"=== data: reusing {data_root}")
    else:
        gen = ["tools/create_data.py", "synthetic", "--out", data_root, "--preset", args.preset]
        times["data"] = step("1/4 data", [*gen, "--seed", str(args.seed), "--overwrite"])

    opts = [f"train_cfg.val_interval={args.val_interval}"]
    if args.max_iters:
        opts += [f"train_cfg.max_iters={args.max_iters}"]
    common = ["--data-root", data_root]
    train = ["tools/train.py", CONFIG, "--work-dir", train_dir, "--resume", *common, "--cfg-options", *opts]
    times["train"] = step("2/4 train (resumes from the last checkpoint if interrupted)", train)

    ckpt = latest_checkpoint(train_dir)
    num_val = len(load(osp.join(data_root, "nuscenes_infos_val.pkl"))["data_list"])
    interval = max(1, num_val // max(1, args.num_mosaics))  # the test batch size is 1
    test = ["tools/test.py", CONFIG, ckpt, "--work-dir", test_dir, *common, "--show-dir", "mosaics"]
    test += ["--cfg-options", f"default_hooks.visualization.interval={interval}"]
    times["evaluate"] = step("3/4 evaluate on the synthetic val, draw sampling points", test)

    curves = osp.join(work_dir, "training_curves.png")
    plot_curves(train_dir, curves)
    report(work_dir, ckpt, test_dir, curves, times)


def report(work_dir: str, ckpt: str, test_dir: str, curves: str, times: dict) -> None:
    runs = sorted(glob.glob(osp.join(test_dir, "[0-9]*_[0-9]*")))
    metrics_files = sorted(glob.glob(osp.join(runs[-1], "[0-9]*.json"))) if runs else []
    metrics = {}
    if metrics_files:
        with open(metrics_files[-1]) as f:
            metrics = json.loads(f.read().splitlines()[-1])
    mosaics = sorted(glob.glob(osp.join(runs[-1], "mosaics", "*_mosaic.png"))) if runs else []
    print("\n=== 4/4 done")
    print(f"NDS {metrics.get(NDS_KEY, float('nan')):.4f}   mAP {metrics.get(MAP_KEY, float('nan')):.4f}")
    print("wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
    print(f"work dir:        {work_dir}")
    print(f"checkpoint:      {ckpt}")
    print(f"metrics:         {metrics_files[-1] if metrics_files else '(none)'}")
    print(f"training curves: {curves}")
    print(f"mosaics:         {osp.dirname(mosaics[0]) if mosaics else '(none)'} ({len(mosaics)} samples)")
    with open(os.path.join(work_dir, "demo_summary.json"), "w") as f:
        json.dump(
            dict(metrics=metrics, times_s=times, checkpoint=ckpt, curves=curves, mosaics=mosaics), f, indent=1
        )


if __name__ == "__main__":
    main()
