"""Benchmark multi-scale deformable attention on CPU: bev_deform's kernel vs mmcv's fallback.

Usage::

    python tools/benchmarks/msda.py                 # both cases, 2 threads, median of 7 runs
    python tools/benchmarks/msda.py --cases b --runs 11

Compared, on the same inputs:

- ``bev_deform``: ``bev_deform.ops.multi_scale_deformable_attn`` on CPU tensors (the compiled
  kernel ``bev_deform.ops._msda_cpu``; the script says so, or that the gather fallback ran);
- ``mmcv``: ``mmcv.ops.multi_scale_deform_attn.multi_scale_deformable_attn_pytorch``, the
  per-level ``grid_sample`` fallback a CPU user of mmcv gets.

Cases: (a) the classic Deformable-DETR shapes, value (1, 43054, 8, 32), levels 180x180 ...
23x23, 900 queries, 4 points; (b) six cameras of a 480x800 input at strides 8-64, value
(6, 7979, 8, 32), levels 60x100 ... 8x13, 900 queries, 4 points. Locations are uniform in
[0, 1] (the worst case for cache locality; real offsets cluster around reference points),
attention weights a softmax over levels x points, the output gradient standard normal.

Time: ``torch.set_num_threads(threads)`` in this one process; after ``--warmup`` runs of each
(the first calls in a process pay one-off costs that a training loop does not: lazy
initialisation, glibc's adaptive mmap threshold, and, for the first few backward calls of the
kernel, faulting in fresh transparent huge pages, slow on a VM), the median of ``--runs``
wall-clock runs (``time.perf_counter``) of the forward alone (inputs without
``requires_grad``, as in inference) and of forward + ``backward`` (inputs with
``requires_grad``, all three gradients computed). The runs of both implementations and both
modes interleave, so that load from other processes on a shared machine hits them alike; the
load average is printed.

Peak extra memory: measured in a fresh subprocess per (case, implementation, mode), because
torch's CPU allocations are invisible to ``tracemalloc``. The subprocess builds the inputs,
runs the op once (lazy initialisation, thread pools), drops the results, resets the kernel's
peak-RSS counter (``echo 5 > /proc/self/clear_refs``), runs the op once more and reports
``VmHWM - VmRSS before the run`` from ``/proc/self/status``: the most resident memory the op
ever added, outputs, autograd's saved tensors and the gradients included. The subprocess sets
``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc serves every tensor-sized block by ``mmap`` and
returns it on free (no freed memory hiding in malloc's lists); the figure is page-granular and
Linux-only ("n/a" elsewhere).
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from bev_deform.ops import cpu_extension, multi_scale_deformable_attn

CASES = {
    "a": dict(
        batch=1,
        shapes=[[180, 180], [90, 90], [45, 45], [23, 23]],
        queries=900,
        heads=8,
        channels=32,
        points=4,
    ),
    "b": dict(
        batch=6, shapes=[[60, 100], [30, 50], [15, 25], [8, 13]], queries=900, heads=8, channels=32, points=4
    ),
}
IMPLS = ("bev_deform", "mmcv")
MODES = ("fwd", "fwd+bwd")


def make_inputs(batch, shapes, queries, heads, channels, points, seed=0):
    """Returns value (B, S, M, D), spatial_shapes (L, 2), level_start_index (L,),
    sampling_locations (B, Q, M, L, P, 2), attention_weights (B, Q, M, L, P), grad_output (B, Q, M*D)."""
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    levels = len(shapes)
    value = torch.randn(batch, int(sizes.sum()), heads, channels, generator=gen)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=gen)
    logits = torch.randn(batch, queries, heads, levels * points, generator=gen)
    # (B, Q, M, L*P) -> (B, Q, M, L, P)
    weights = logits.softmax(-1).view(batch, queries, heads, levels, points)
    grad_output = torch.randn(batch, queries, heads * channels, generator=gen)
    return value, spatial_shapes, level_start_index, locations, weights, grad_output


def run_op(impl, mode, inputs):
    """Runs one forward (mode 'fwd') or forward + backward (mode 'fwd+bwd') of `impl`."""
    value, spatial_shapes, level_start_index, locations, weights, grad_output = inputs
    if mode == "fwd+bwd":
        value, locations, weights = (t.detach().requires_grad_() for t in (value, locations, weights))
    if impl == "bev_deform":
        output = multi_scale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights)
    else:
        output = multi_scale_deformable_attn_pytorch(value, spatial_shapes, locations, weights)
    if mode == "fwd+bwd":
        output.backward(grad_output)
    return output


def time_ops(inputs, runs, warmup):
    """Median wall-clock seconds per (impl, mode); the runs of all four interleave, so that a
    burst of load on a shared machine hits each of them alike."""
    keys = [(impl, mode) for impl in IMPLS for mode in MODES]
    for key in keys:
        for _ in range(warmup):
            run_op(*key, inputs)
    times = {key: [] for key in keys}
    for _ in range(runs):
        for key in keys:
            start = time.perf_counter()
            run_op(*key, inputs)
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def _status_kib(field):
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1))


def measure_peak_in_this_process(case, impl, mode, threads):
    """Peak extra resident memory (MiB) of one run; see the module docstring."""
    torch.set_num_threads(threads)
    inputs = make_inputs(**CASES[case])
    run_op(impl, mode, inputs)  # warm-up, result dropped at once
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    output = run_op(impl, mode, inputs)
    peak = _status_kib("VmHWM")
    del output
    return (peak - before) / 1024


def measure_peak(case, impl, mode, threads):
    """Runs measure_peak_in_this_process in a fresh subprocess; None where it cannot."""
    if not sys.platform.startswith("linux"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--measure-peak", case, impl, mode, "--threads", str(threads)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def kernel_description():
    ext = cpu_extension()
    if ext is None:
        return "bev_deform CPU path: pure-PyTorch gather FALLBACK (the compiled kernel is not built)"
    threads = ext.num_threads()
    return f"bev_deform CPU path: compiled kernel _msda_cpu (OpenMP: {ext.openmp()}, threads: {threads})"


def benchmark_case(case, runs, warmup, threads):
    """Returns {(impl, mode): (seconds, peak MiB or None)} for one case."""
    seconds = time_ops(make_inputs(**CASES[case]), runs, warmup)
    return {key: (seconds[key], measure_peak(case, *key, threads)) for key in seconds}


def _format(value, unit):
    return "n/a" if value is None else f"{value:.1f} {unit}"


def print_table(case, results):
    spec = CASES[case]
    print(
        f"\ncase ({case}): value ({spec['batch']}, {sum(h * w for h, w in spec['shapes'])}, {spec['heads']}, "
        f"{spec['channels']}), levels {spec['shapes']}, {spec['queries']} queries, {spec['points']} points"
    )
    header = f"{'':<12}{'fwd time':>12}{'fwd+bwd time':>15}{'fwd peak':>14}{'fwd+bwd peak':>15}"
    print(header)
    for impl in IMPLS:
        (tf, mf), (tb, mb) = results[impl, "fwd"], results[impl, "fwd+bwd"]
        cells = [_format(tf * 1e3, "ms"), _format(tb * 1e3, "ms"), _format(mf, "MiB"), _format(mb, "MiB")]
        print(f"{impl:<12}{cells[0]:>12}{cells[1]:>15}{cells[2]:>14}{cells[3]:>15}")
    ratios = []
    for index in (0, 1):  # time: mmcv / ours (speed-up), memory: ours / mmcv
        for mode in MODES:
            ours, theirs = results["bev_deform", mode][index], results["mmcv", mode][index]
            ok = ours is not None and theirs is not None and ours > 0 and theirs > 0
            ratios.append((theirs / ours if index == 0 else ours / theirs) if ok else None)
    cells = [_format(r, "x") if r is not None else "n/a" for r in ratios]
    print(f"{'speed-up':<12}{cells[0]:>12}{cells[1]:>15}{'':>14}{'':>15}")
    print(f"{'mem ours/mm':<12}{'':>12}{'':>15}{cells[2]:>14}{cells[3]:>15}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--runs", type=int, default=7, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs per measurement first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every measurement")
    parser.add_argument("--measure-peak", nargs=3, metavar=("CASE", "IMPL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_peak:
        print(measure_peak_in_this_process(*args.measure_peak, threads=args.threads))
        return
    torch.set_num_threads(args.threads)
    print(
        f"MSDA on CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.runs} runs after {args.warmup} warm-up runs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(kernel_description())
    for case in args.cases:
        print_table(case, benchmark_case(case, args.runs, args.warmup, args.threads))
    print("\nspeed-up = mmcv time / bev_deform time; mem = bev_deform peak / mmcv peak (lower is better)")


if __name__ == "__main__":
    main()
