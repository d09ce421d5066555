"""Benchmark a whole detector on CPU: time per training iteration and per inference frame, where
the time goes, peak memory, and the 3D attention's fast paths against the dense one.

Usage::

    python tools/benchmarks/model.py CONFIG [--train] [--batch 1] [--runs 3] [--threads 2] [--attention-only]
    python tools/benchmarks/model.py \
        configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py --train --batch 2
    python tools/benchmarks/model.py \
        configs/deform_detr3d/deform_detr3d_r50_fpn_8xb1-24e_nus-800x450.py --train --runs 2

What runs: the config's model (random initialisation: no checkpoint is loaded, so the numbers
are the same as for trained weights), on random images at the config's ``input_size`` and the
real nuScenes rig's ``lidar2img`` at that size, with ``--batch`` samples of six cameras and
three ground-truth boxes each. Every measurement runs once per round in each of three settings
of the 3D attentions (``SETTINGS``):

- ``dense``: every (query, camera) pair sampled, then masked, over value cells projected by
  ``value_proj`` first (``dense=True, project_values='cells'``: the computation before the fast
  paths, the baseline of the ratios);
- ``visible``: only the visible pairs sampled, over projected cells (``project_values='cells'``);
- ``visible+samples``: only the visible pairs, over unprojected cells, each sample projected
  (``project_values='samples'``, what ``'auto'`` picks on CPU: the configs' default here).

A model without ``MultiViewDeformableAttention3D`` (the BEVFormer configs) runs in one setting,
"as configured", without the 3D attention table.

Rounds interleave the settings so that load from other processes hits all alike; the median of
``--runs`` rounds after one warm-up round is printed.

- inference frame: ``model.test_step`` under ``torch.no_grad``, time per sample.
- training iteration (``--train``): ``model.train_step`` with an AdamW optimizer, time per iteration.
- breakdown (module hooks, forward and backward; backward times are the span between a module's
  backward pre-hook and its backward hook, so they include nodes the autograd engine runs in
  between): backbone + neck, value projection (every deformable attention's ``value_proj`` over
  the cells, or the 3D attention's per-sample projection ``project_samples``), sampling (the MSDA
  op, in every attention that calls it), loss and assignment
  (``loss_by_feat``, forward), and the rest: the total minus these rows (the rest of the head, its
  self-attention, FFNs and branches, the optimizer step and the data preprocessor).
- 3D attention alone: one ``MultiViewDeformableAttention3D`` with the config's shapes (its
  embed dims, heads, levels and points, the config's query count, levels of the config's input
  size), reference points uniform over pc_range, forward + backward; time and peak extra memory
  (``VmHWM`` after resetting it with ``/proc/self/clear_refs``, Linux only), per setting, in
  total and beyond the gradients of the value and the query (the value's gradient, as large as the
  value, is an output every setting must return: it alone is about 40 % of the dense peak on the
  R50 config). ``--attention-only`` runs just this table.
- peak memory of the whole run: ``VmHWM`` after a reset before each measurement.

Times and memory come from two passes of one invocation (``--allocator both``, the default):
times under glibc's default allocator, as a training runs; then, in a child process, memory with
``MALLOC_MMAP_THRESHOLD_=65536``, which makes glibc mmap every block of 64 KiB or more and return
it on free, so that ``VmHWM`` sees each step's peak (no freed memory hiding in malloc's lists).
Times are not taken in that pass: there every tensor of 64 KiB or more pays first-touch page
faults, where the default allocator reuses its heap for blocks up to its dynamic mmap threshold
(at most 32 MiB); on the 2-core machine this was built on, that took the R50 config's 3D attention
(visible+samples) from 105 ms to 146 ms and the dense one not at all (388-389 ms).

Prints ratios against ``dense`` measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import torch
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.structures import InstanceData
from torch import nn

import bev_deform.models.attention.msdeform_attn_2d as msda2d
import bev_deform.models.attention.multiview_deform_attn_3d as mv3d
import bev_deform.models.attention.spatial_cross_attn as sca
import bev_deform.models.attention.temporal_self_attn as tsa
from bev_deform.datasets.synthetic.rig import NATIVE_WH, scaled_intrinsics, sensor2ego
from bev_deform.geometry import CAM_NAMES, CameraGeometry, FeatureLevels
from bev_deform.models.attention import MultiViewDeformableAttention3D
from bev_deform.registry import MODELS
from bev_deform.runtime import load_config

# setting -> (dense, project_values) of every MultiViewDeformableAttention3D
SETTINGS = {
    "dense": (True, "cells"),
    "visible": (False, "cells"),
    "visible+samples": (False, "samples"),
}
BASELINE = "dense"
AS_CONFIGURED = "as configured"  # the only setting of a model without MultiViewDeformableAttention3D
# the modules whose attentions call the MSDA op by this name (patched to time it)
OP_USERS = (mv3d, msda2d, sca, tsa)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="CPU benchmark of a whole detector, fast paths vs dense")
    parser.add_argument("config")
    parser.add_argument("--train", action="store_true", help="also time training iterations")
    parser.add_argument("--batch", type=int, default=1, help="samples (of 6 cameras) per step")
    parser.add_argument("--runs", type=int, default=3, help="measured rounds (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--attention-only", action="store_true", help="only the 3D attention alone (skips the whole model)"
    )
    parser.add_argument(
        "--allocator",
        choices=("both", "default", "mmap"),
        default="both",
        help="'default': times under glibc's default allocator; 'mmap': memory, with every block of "
        "64 KiB or more mmapped; 'both' (default): the first, then the second in a child process",
    )
    return parser.parse_args(argv)


def reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mib() -> float:
    """VmHWM of this process in MiB (since the last :func:`reset_peak`), or nan off Linux."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError):
        return float("nan")


def rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024
    except (OSError, KeyError):
        return float("nan")


def rig_lidar2img(img_hw: tuple[int, int]) -> np.ndarray:
    """(6, 4, 4) nuScenes rig ``lidar2img`` for images resized to width W and cropped to ``img_hw``
    keeping the bottom rows, as the configs' ``MultiViewResizeCrop`` does."""
    h, w = img_hw
    full_h = round(w * NATIVE_WH[1] / NATIVE_WH[0])
    lidar2ego = sensor2ego("LIDAR_TOP")
    mats = []
    for cam in CAM_NAMES:
        k = np.eye(4)
        k[:3, :3] = scaled_intrinsics(cam, (w, full_h))
        k[1, 2] -= full_h - h  # the crop removes rows from the top
        mats.append(k @ np.linalg.inv(sensor2ego(cam)) @ lidar2ego)
    return np.stack(mats)


# a car ahead, a pedestrian to the left, a truck behind: (x, y, z, l, w, h, yaw, vx, vy)
BOXES = [
    [0.5, 12.0, -1.8, 4.5, 1.9, 1.6, 0.2, 1.0, 0.0],
    [-6.0, 8.0, -1.7, 0.7, 0.7, 1.8, -1.0, 0.0, 0.5],
    [3.0, -15.0, -1.5, 10.0, 2.5, 3.0, 1.5, 2.0, 0.0],
]


def make_batch(batch: int, img_hw: tuple[int, int]) -> dict:
    """A ``data_preprocessor``-ready batch: uint8-range images, rig metainfo and 3 boxes per sample."""
    gen = torch.Generator().manual_seed(0)
    l2i = rig_lidar2img(img_hw)
    samples = []
    for _ in range(batch):
        s = Det3DDataSample(metainfo=dict(lidar2img=l2i, img_shape=img_hw, box_type_3d=LiDARInstance3DBoxes))
        boxes = torch.tensor(BOXES)
        s.gt_instances_3d = InstanceData(
            bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9), labels_3d=torch.tensor([0, 8, 1])
        )
        samples.append(s)
    imgs = [torch.randint(0, 256, (6, 3, *img_hw), generator=gen).float() for _ in range(batch)]
    return dict(inputs=dict(img=imgs), data_samples=samples)


class TimedOp(nn.Module):
    """A function (the MSDA op, the per-sample projection) as a module, so that forward and
    backward hooks can time it."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, *args, **kwargs):
        return self.op(*args, **kwargs)


class Breakdown:
    """Accumulates forward and backward wall time per label with module hooks."""

    def __init__(self) -> None:
        self.times: dict[str, float] = defaultdict(float)
        self._t0: dict[int, float] = {}
        self.handles = []

    def watch(self, module: nn.Module, label: str) -> None:
        key_f, key_b = (id(module), "f"), (id(module), "b")

        def pre(mod, args):
            self._t0[key_f] = time.perf_counter()

        def post(mod, args, out):
            self.times[label] += time.perf_counter() - self._t0.pop(key_f)

        def bpre(mod, grad_out):
            self._t0[key_b] = time.perf_counter()

        def bpost(mod, grad_in, grad_out):
            if key_b in self._t0:
                self.times[label] += time.perf_counter() - self._t0.pop(key_b)

        self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        if torch.is_grad_enabled():
            self.handles += [
                module.register_full_backward_pre_hook(bpre),
                module.register_full_backward_hook(bpost),
            ]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def set_setting(model: nn.Module, setting: str) -> None:
    if setting == AS_CONFIGURED:
        return
    for m in model.modules():
        if isinstance(m, MultiViewDeformableAttention3D):
            m.dense, m.project_values = SETTINGS[setting]


def timed_step(model, data, train: bool, optim: OptimWrapper | None) -> tuple[float, dict, float]:
    """One step with the breakdown hooks: (seconds, {label: seconds}, peak MiB above the start)."""
    op, proj = TimedOp(mv3d.multi_scale_deformable_attn), TimedOp(mv3d.project_samples)
    bd = Breakdown()
    with torch.set_grad_enabled(train):
        bd.watch(model.img_backbone, "backbone + neck")
        bd.watch(model.img_neck, "backbone + neck")
        bd.watch(op, "sampling (MSDA op)")
        bd.watch(proj, "value projection")
        for m in model.modules():  # every deformable attention's projection of its value cells
            if isinstance(getattr(m, "value_proj", None), nn.Linear):
                bd.watch(m.value_proj, "value projection")
    loss_time = [0.0]
    orig_loss = model.bbox_head.loss_by_feat

    def timed_loss(*args, **kwargs):
        t = time.perf_counter()
        out = orig_loss(*args, **kwargs)
        loss_time[0] += time.perf_counter() - t
        return out

    model.bbox_head.loss_by_feat = timed_loss
    mv3d.project_samples = proj
    for mod in OP_USERS:
        mod.multi_scale_deformable_attn = op
    start_rss = rss_mib()
    reset_peak()
    t0 = time.perf_counter()
    try:
        if train:
            model.train_step(data, optim)
        else:
            with torch.no_grad():
                model.test_step(data)
    finally:
        elapsed = time.perf_counter() - t0
        mv3d.project_samples = proj.op
        for mod in OP_USERS:
            mod.multi_scale_deformable_attn = op.op
        del model.bbox_head.loss_by_feat
        bd.remove()
    times = dict(bd.times)
    times["loss and assignment"] = loss_time[0]
    return elapsed, times, peak_mib() - start_rss


def attention_alone(model, img_hw, setting: str) -> tuple[float, float, float]:
    """Forward + backward of one 3D attention with the model's shapes: (seconds, peak extra MiB,
    peak extra MiB beyond the gradients of the value and the query, which every setting returns)."""
    head = model.bbox_head
    layer0 = next(m for m in model.modules() if isinstance(m, MultiViewDeformableAttention3D))
    c, lv = head.embed_dims, head.num_levels
    dense, project_values = SETTINGS[setting]
    attn = MultiViewDeformableAttention3D(
        embed_dims=c, num_heads=layer0.num_heads, num_levels=lv, num_points=layer0.num_points,
        pc_range=head.pc_range, dropout=0.0, dense=dense, project_values=project_values,
    )  # fmt: skip
    pad_hw = tuple(int(np.ceil(v / 32) * 32) for v in img_hw)
    shapes = [(int(np.ceil(pad_hw[0] / s)), int(np.ceil(pad_hw[1] / s))) for s in (8, 16, 32, 64)[:lv]]
    levels = FeatureLevels.from_shapes(shapes, pad_hw)
    l2i = torch.from_numpy(rig_lidar2img(img_hw)).float()[None]  # (1, 6, 4, 4)
    cams = CameraGeometry(l2i, torch.tensor(img_hw).float().expand(1, 6, 2), pad_hw)
    gen = torch.Generator().manual_seed(0)
    q = head.num_query
    query = torch.randn(1, q, c, generator=gen, requires_grad=True)
    value = torch.randn(6, levels.num_values, c, generator=gen, requires_grad=True)
    ref = torch.rand(1, q, 3, generator=gen)  # uniform over pc_range
    start_rss = rss_mib()
    reset_peak()
    t0 = time.perf_counter()
    out = attn(query, value, ref, levels, cams)
    out.square().sum().backward()
    elapsed = time.perf_counter() - t0
    extra = peak_mib() - start_rss
    input_grads = (value.numel() + query.numel()) * value.element_size() / 2**20
    return elapsed, extra, extra - input_grads


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.allocator == "mmap" and os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
        # glibc serves every tensor-sized block by mmap and returns it on free, so that VmHWM
        # measures what each step adds (no freed memory hiding in malloc's lists); read at start-up.
        # Times are not taken here: every such block then pays its first-touch page faults.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)
    show_time, show_memory = args.allocator != "mmap", args.allocator == "mmap"
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, None, None)
    for part in cfg.model.values():  # random initialisation: no pretrained download (torchvision://)
        init = part.get("init_cfg") if isinstance(part, dict) else None
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            part["init_cfg"] = None
    img_hw = tuple(cfg.get("input_size", (224, 400)))
    init_default_scope(cfg.get("default_scope", "bev_deform"))
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "bev_deform")):
        model = MODELS.build(cfg.model)
    model.init_weights()
    data = make_batch(args.batch, img_hw)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-5))
    print(f"config: {args.config}\ninput: batch {args.batch} x 6 cameras x {img_hw[0]}x{img_hw[1]}, "
          f"{args.threads} threads, median of {args.runs} rounds after 1 warm-up, "
          f"{'times (default allocator)' if show_time else 'memory (blocks >= 64 KiB mmapped)'}")  # fmt: skip

    modes = [("inference frame", False)] + ([("training iteration", True)] if args.train else [])
    if args.attention_only:
        modes = []
    has_3d = any(isinstance(m, MultiViewDeformableAttention3D) for m in model.modules())
    names = list(SETTINGS) if has_3d else [AS_CONFIGURED]
    results = {}  # (mode, setting) -> list of (seconds, times, peak)
    for mode, train in modes:
        model.train(train)
        for r in range(args.runs + 1):
            for name in names:
                set_setting(model, name)
                res = timed_step(model, data, train, optim)
                if r > 0:
                    results.setdefault((mode, name), []).append(res)
    attn = {}  # setting -> list of (seconds, MiB)
    for r in range(args.runs + 1 if has_3d else 0):
        for name in names:
            res = attention_alone(model, img_hw, name)
            if r > 0:
                attn.setdefault(name, []).append(res)

    listed = ("backbone + neck", "value projection", "sampling (MSDA op)", "loss and assignment")
    compared = [n for n in names if n != BASELINE and BASELINE in names]  # settings with a ratio
    header = "".join(f"{n + ' (s)':>20s}" for n in names)
    header += "".join(f"{n + '/' + BASELINE:>24s}" for n in compared)
    for mode, train in modes:
        per = args.batch if not train else 1  # inference: per sample
        rows = {}  # row label -> {setting: value}
        for name in names:
            runs = results[(mode, name)]
            total = median([x[0] for x in runs]) / per
            parts = {k: median([x[1].get(k, 0.0) for x in runs]) / per for k in listed}
            rows.setdefault("total", {})[name] = total
            for k in listed:
                rows.setdefault(k, {})[name] = parts[k]
            rows.setdefault("rest (total - rows above)", {})[name] = total - sum(parts.values())
            rows.setdefault("peak memory above start (MiB)", {})[name] = median([x[2] for x in runs])
        label = "per sample" if not train else "per iteration"
        print(f"\n{mode} ({label}), by setting of the 3D attentions")
        print(f"{'':30s}{header}")
        for key, vals in rows.items():
            if ("MiB" in key and not show_memory) or ("MiB" not in key and not show_time):
                continue
            fmt = "{:20.0f}" if "MiB" in key else "{:20.3f}"
            line = "".join(fmt.format(vals[n]) for n in names)
            line += "".join(f"{ratio(vals[n], vals[BASELINE]):24.2f}" for n in compared)
            print(f"{key:30s}{line}")

    if not has_3d:
        print("\nno MultiViewDeformableAttention3D in this model: no 3D attention settings to compare")
    else:
        print("\n3D attention alone, forward + backward (one layer, reference points uniform over pc_range)")
        print(f"{'':30s}" + "".join(f"{n:>20s}" for n in names) + "".join(
            f"{BASELINE + '/' + n:>24s}" for n in compared
        ))  # fmt: skip
        rows = ((0, "time (s)"),) if show_time else ()
        rows += ((1, "peak extra memory (MiB)"), (2, "  of it beyond input grads")) if show_memory else ()
        for i, what in rows:
            vals = {n: median([x[i] for x in attn[n]]) for n in names}
            line = "".join(f"{vals[n]:20.4f}" for n in names)
            line += "".join(f"{ratio(vals[BASELINE], vals[n]):24.2f}" for n in compared)
            print(f"{what:30s}{line}")
    if args.allocator == "both":  # memory in a child process whose allocator mmaps every large block
        sys.stdout.flush()
        subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--allocator", "mmap"], check=True)


if __name__ == "__main__":
    main()
