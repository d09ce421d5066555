"""CPU latency per frame of DeformDETR3D in PyTorch eager and in ONNX Runtime, and their ratio.

Usage::

    python tools/benchmarks/onnx_latency.py                   # the CPU config and the 800x450 R50 config
    python tools/benchmarks/onnx_latency.py --configs cpu --runs 11 --threads 4

For each config the model is built with initialised (untrained) weights, since latency does not
depend on them, and exported with ``--msda decomposed`` at opset 17 (``bev_deform.deploy``) to a
temporary file. One frame is six cameras at the config's ``input_size`` padded as the data
preprocessor pads it, with the nuScenes rig's ``lidar2img`` at that size; both runtimes get the
same preprocessed tensors and produce the same fixed-size top-k (``DeformDETR3DForExport``):
PyTorch eager under ``torch.no_grad()`` with the project's compiled CPU kernel for MSDA (the
path of ``tools/test.py``), ONNX Runtime on its CPU execution provider with ``--threads``
intra-op threads (``torch.set_num_threads`` the same). Time: after ``--warmup`` runs of each,
the median of ``--runs`` wall-clock runs (``time.perf_counter``), the two runtimes interleaved
so that load from other processes hits them alike. The largest score difference between the
two is printed as a check that they computed the same thing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config

from bev_deform.datasets.synthetic.rig import (
    CAMERA_CHANNELS,
    LIDAR_CHANNEL,
    NATIVE_WH,
    scaled_intrinsics,
    sensor2ego,
)
from bev_deform.deploy import DeformDETR3DForExport, build_detector, export_onnx, image_shapes, ort_session
from bev_deform.ops import cpu_extension

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "cpu": "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py",
    "r50": "configs/deform_detr3d/deform_detr3d_r50_fpn_8xb1-24e_nus-800x450.py",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="CPU latency: PyTorch eager vs ONNX Runtime")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["cpu", "r50"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def rig_lidar2img(img_shape: tuple[int, int]) -> np.ndarray:
    """(6, 4, 4) float32 lidar2img of the nuScenes rig resized to width W and cropped to the bottom
    H rows of its 16:9 image (as ``MultiViewResizeCrop`` does in test mode)."""
    h, w = img_shape
    full_h = round(w * NATIVE_WH[1] / NATIVE_WH[0])
    lidar2ego = sensor2ego(LIDAR_CHANNEL)
    mats = []
    for channel in CAMERA_CHANNELS:
        k = np.eye(4)
        k[:3, :3] = scaled_intrinsics(channel, (w, full_h))
        k[1, 2] -= full_h - h  # the crop keeps the bottom rows
        mats.append(k @ np.linalg.inv(sensor2ego(channel)) @ lidar2ego)
    return np.stack(mats).astype(np.float32)


def bench_config(name: str, args) -> dict:
    cfg = Config.fromfile(str(REPO / CONFIGS[name]))
    img_shape, pad_shape = image_shapes(cfg)
    torch.manual_seed(0)
    detector = build_detector(cfg, None)
    wrapper = DeformDETR3DForExport(detector, img_shape, pad_shape).eval()
    images = torch.randn(1, 6, 3, *pad_shape, generator=torch.Generator().manual_seed(0))
    lidar2img = torch.from_numpy(rig_lidar2img(img_shape))[None]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        t0 = time.perf_counter()
        export_onnx(detector, path, img_shape, pad_shape, example_inputs=(images, lidar2img))
        export_s = time.perf_counter() - t0
        session = ort_session(path, args.threads)
        feeds = {"images": images.numpy(), "lidar2img": lidar2img.numpy()}

        def run_torch():
            with torch.no_grad():
                return wrapper(images, lidar2img)

        def run_ort():
            return session.run(None, feeds)

        for _ in range(args.warmup):
            torch_out, ort_out = run_torch(), run_ort()
        times = {"torch": [], "ort": []}
        for _ in range(args.runs):
            for key, fn in (("torch", run_torch), ("ort", run_ort)):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    score_diff = float(np.abs(torch_out[1].numpy() - ort_out[1]).max())
    return dict(
        name=name,
        shape=f"6x{pad_shape[0]}x{pad_shape[1]}",
        queries=detector.bbox_head.num_query,
        layers=detector.bbox_head.decoder.num_layers,
        torch_ms=1e3 * statistics.median(times["torch"]),
        ort_ms=1e3 * statistics.median(times["ort"]),
        export_s=export_s,
        score_diff=score_diff,
    )


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime

    kernel = "compiled" if cpu_extension() is not None else "gather fallback (not built)"
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
        f"load average {os.getloadavg()[0]:.2f}, MSDA kernel: {kernel}"
    )
    print(f"median of {args.runs} runs after {args.warmup} warm-up, per frame (6 cameras)")
    header = "config  input        queries x layers  PyTorch ms  ONNX Runtime ms  ORT/PyTorch  export s"
    print(f"{header}  max|d score|")
    for name in args.configs:
        r = bench_config(name, args)
        ratio = r["ort_ms"] / r["torch_ms"]
        print(
            f"{r['name']:6s}  {r['shape']:11s}  {r['queries']:7d} x {r['layers']:<6d}  "
            f"{r['torch_ms']:10.0f}  {r['ort_ms']:15.0f}  {ratio:11.2f}  {r['export_s']:8.1f}  "
            f"{r['score_diff']:12.1e}"
        )


if __name__ == "__main__":
    main()
