"""Running an exported model in ONNX Runtime on CPU, with the names of ``onnx_export``."""

from __future__ import annotations

import numpy as np
from torch import Tensor


def ort_session(path: str, num_threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` of ``path`` on the CPU execution provider, with
    ``num_threads`` intra-op threads (ONNX Runtime's default, one per core, when None)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(
    session, images: Tensor | np.ndarray, lidar2img: Tensor | np.ndarray
) -> dict[str, np.ndarray]:
    """images (1, N, 3, H_pad, W_pad), lidar2img (1, N, 4, 4) -> the graph's outputs by name."""
    feeds = {
        "images": np.ascontiguousarray(np.asarray(images, dtype=np.float32)),
        "lidar2img": np.ascontiguousarray(np.asarray(lidar2img, dtype=np.float32)),
    }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))
