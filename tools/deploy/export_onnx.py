"""Export a DeformDETR3D checkpoint to ONNX (eval mode, batch 1, static image size).

    python tools/deploy/export_onnx.py CONFIG CHECKPOINT --out model.onnx \
        [--msda decomposed|trt] [--opset 17] [--img-shape H W] [--debug-outputs]

Graph: ``images`` (1, N, 3, H_pad, W_pad) float32, the data preprocessor's output (normalised,
RGB, zero-padded to ``pad_size_divisor``), and ``lidar2img`` (1, N, 4, 4) float32 -> ``boxes``
(1, k, 9) (x, y, z, l, w, h, yaw, vx, vy; bottom centre), ``scores`` (1, k), ``labels`` (1, k)
int64, ``valid`` (1, k) bool (``k`` is the coder's ``max_num``; ``valid`` holds the coder's score
threshold and post-centre range). ``--debug-outputs`` adds ``query_ids`` (1, k), the pre-top-k
``cls_scores`` (1, Q, K) and ``bbox_codes`` (1, Q, 10), which tools/deploy/verify_onnx.py compares.

``--msda decomposed`` (default) writes MSDA as GridSample + weighted sums, which stock ONNX
Runtime runs; ``--msda trt`` as TensorRT's ``MultiscaleDeformableAttnPlugin_TRT`` nodes, for
``trtexec --onnx=model.onnx`` (see the README). The image size (before padding) is the config's
``input_size`` unless ``--img-shape`` gives it.
"""

from __future__ import annotations

import argparse

from bev_deform.deploy import DEFAULT_OPSET, SUPPORTED_OPSETS, build_detector, export_onnx, image_shapes
from bev_deform.ops import EXPORT_IMPLEMENTATIONS
from bev_deform.runtime import DictAction, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export a DeformDETR3D checkpoint to ONNX")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--msda", choices=sorted(EXPORT_IMPLEMENTATIONS), default="decomposed")
    parser.add_argument("--opset", type=int, choices=SUPPORTED_OPSETS, default=DEFAULT_OPSET)
    parser.add_argument(
        "--img-shape", type=int, nargs=2, metavar=("H", "W"), help="image size before padding"
    )
    parser.add_argument("--debug-outputs", action="store_true", help="add query_ids, cls_scores, bbox_codes")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, None)
    img_shape, pad_shape = image_shapes(cfg, args.img_shape)
    model = build_detector(cfg, args.checkpoint)
    num_cams = len(cfg.get("cameras", [None] * 6))
    report = export_onnx(
        model, args.out, img_shape, pad_shape, args.msda, args.opset, num_cams, args.debug_outputs
    )
    print(
        f"wrote {report.path}: msda={args.msda}, opset {args.opset}, images (1, {num_cams}, 3, "
        f"{pad_shape[0]}, {pad_shape[1]}) (image {img_shape[0]}x{img_shape[1]} before padding)"
    )
    frozen = sum(report.trace_warnings.values())
    print(f"{frozen} values frozen into the trace (shape checks and static level shapes), by place:")
    for (place, message), count in sorted(report.trace_warnings.items()):
        print(f"  {count:3d} x {place}: {message}")
    return report


if __name__ == "__main__":
    main()
