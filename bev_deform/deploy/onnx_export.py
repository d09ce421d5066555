"""ONNX export of ``DeformDETR3D``: the real detector, cameras from graph inputs, fixed-size outputs.

The graph: ``images`` (1, N, 3, H_pad, W_pad), the data preprocessor's output (normalised, RGB,
padded), and ``lidar2img`` (1, N, 4, 4) float32 -> ``boxes`` (1, k, 9) (x, y, z, l, w, h, yaw,
vx, vy; bottom centre, as ``LiDARInstance3DBoxes``), ``scores`` (1, k), ``labels`` (1, k) int64
and ``valid`` (1, k) bool, the top-k of the last decoder layer by decreasing score
(``NMSFreeCoder.decode_fixed``); ``valid`` marks the boxes that the score threshold and the
post-centre range keep, the ones ``NMSFreeCoder.decode`` returns. With ``debug_outputs``, also
``query_ids`` (1, k) int64 and the pre-top-k ``cls_scores`` (1, Q, K) (sigmoid) and
``bbox_codes`` (1, Q, 10), for checking the export against PyTorch. The model's metadata
(``metadata_props``) records ``img_shape`` and ``pad_shape`` ("H,W") and ``msda``.

Nothing of the model is rewritten here: :class:`DeformDETR3DForExport` calls the detector's own
``extract_feat``, head and coder; the only substitutions are the cameras (a ``CameraGeometry``
made by the model's own ``from_metas`` for the static image sizes, with the ``lidar2img`` graph
input put in) and the MSDA op's form (``bev_deform.ops.msda_implementation``). Image size, level
shapes and level starts are static Python ints of the trace; the camera matrices are never
constants.

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``): it
traces, so the op's ``spatial_shapes.tolist()`` (``ops.checks``) becomes the static level shapes
the graph should have, where ``torch.export`` sees a data-dependent value; and it calls
``symbolic`` on autograd Functions, which is how the TensorRT plugin node is written.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bev_deform.geometry import CameraGeometry
from bev_deform.models.attention import MultiViewDeformableAttention3D
from bev_deform.ops import EXPORT_IMPLEMENTATIONS, msda_implementation

INPUT_NAMES = ("images", "lidar2img")
OUTPUT_NAMES = ("boxes", "scores", "labels", "valid")
DEBUG_OUTPUT_NAMES = ("query_ids", "cls_scores", "bbox_codes")
# GridSample is in ai.onnx from opset 16; at opset >= 20 TensorRT reads its renamed
# mode='linear' as nearest (NVIDIA/TensorRT#4646)
SUPPORTED_OPSETS = (16, 17, 18, 19)
DEFAULT_OPSET = 17


class ExportReport(NamedTuple):
    """What :func:`export_onnx` did.

    Attributes:
        path: the written .onnx file.
        trace_warnings: ``(file:line, message)`` -> count of the tracer's warnings, each a Python
            value that the trace froze into a constant (shape checks, level shapes).
    """

    path: str
    trace_warnings: dict[tuple[str, str], int]


class DeformDETR3DForExport(nn.Module):
    """``DeformDETR3D`` in eval mode as a function of (images, lidar2img) with fixed-size outputs.

    Args:
        detector: a ``DeformDETR3D`` (put in eval mode by :func:`export_onnx`).
        img_shape: (H, W) of the camera images before padding (``img_shape`` of the metainfo).
        pad_shape: (H_pad, W_pad) of the padded batch (``batch_input_shape``).
        num_cams: cameras N.
        debug_outputs: also return ``query_ids``, ``cls_scores`` and ``bbox_codes``.
    """

    def __init__(
        self,
        detector: nn.Module,
        img_shape: Sequence[int],
        pad_shape: Sequence[int],
        num_cams: int = 6,
        debug_outputs: bool = False,
    ) -> None:
        super().__init__()
        if len(img_shape) != 2 or len(pad_shape) != 2 or any(i > p for i, p in zip(img_shape, pad_shape)):
            raise ValueError(
                "img_shape and pad_shape must be (H, W) with img_shape <= pad_shape, "
                f"got {img_shape} and {pad_shape}"
            )
        self.detector = detector
        # the visible-pair path's slot count K is data-dependent (a host read of the visibility):
        # the graph samples every (query, camera) pair and masks, the same result to float rounding;
        # it projects every cell before sampling (the MSDA node keeps the model's heads and channels)
        for module in detector.modules():
            if isinstance(module, MultiViewDeformableAttention3D):
                module.dense, module.project_values = True, "cells"
        self.pad_shape = (int(pad_shape[0]), int(pad_shape[1]))
        self.num_cams = num_cams
        self.debug_outputs = debug_outputs
        # the model's own factory for the static sizes; lidar2img is replaced by the graph input
        meta = dict(
            lidar2img=np.zeros((num_cams, 4, 4)), img_shape=tuple(img_shape), batch_input_shape=pad_shape
        )
        self.cams = CameraGeometry.from_metas([meta], "cpu")

    def forward(self, images: Tensor, lidar2img: Tensor) -> tuple[Tensor, ...]:
        """images (1, N, 3, H_pad, W_pad), lidar2img (1, N, 4, 4) -> boxes (1, k, 9), scores (1, k),
        labels (1, k), valid (1, k) [, query_ids (1, k), cls_scores (1, Q, K), bbox_codes (1, Q, 10)]."""
        expected = (1, self.num_cams, 3, *self.pad_shape)
        if tuple(images.shape) != expected:
            raise ValueError(
                f"images must be (1, N, 3, H_pad, W_pad) = {expected}, got {tuple(images.shape)}"
            )
        if tuple(lidar2img.shape) != (1, self.num_cams, 4, 4):
            raise ValueError(f"lidar2img must be (1, {self.num_cams}, 4, 4), got {tuple(lidar2img.shape)}")
        cams = self.cams._replace(lidar2img=lidar2img)  # the rest: static sizes
        feats = self.detector.extract_feat(dict(imgs=images), cams)  # cams: for an img_encoder
        head = self.detector.bbox_head
        outs = head(feats, cams)
        cls_scores, bbox_codes = (
            outs["all_cls_scores"][-1],
            outs["all_bbox_preds"][-1],
        )  # (1, Q, K), (1, Q, 10)
        det = head.bbox_coder.decode_fixed(cls_scores, bbox_codes)
        outputs = (det.boxes, det.scores, det.labels, det.valid)
        if self.debug_outputs:
            outputs += (det.query_ids, cls_scores.sigmoid(), bbox_codes)
        return outputs


def image_shapes(cfg, img_shape: Sequence[int] | None = None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(H, W) of the images before padding (``img_shape``, else the config's ``input_size``) and
    (H_pad, W_pad) after padding to the model's data preprocessor ``pad_size_divisor``.

    Raises:
        ValueError: when neither ``img_shape`` nor the config's ``input_size`` is given.
    """
    if img_shape is None:
        if "input_size" not in cfg:
            raise ValueError(
                "the config has no `input_size` (H, W); give the image size with --img-shape H W"
            )
        img_shape = cfg["input_size"]
    divisor = (cfg["model"].get("data_preprocessor") or {}).get("pad_size_divisor", 1)
    img_shape = (int(img_shape[0]), int(img_shape[1]))
    return img_shape, padded_shape(img_shape, divisor)


def build_detector(cfg, checkpoint: str | None) -> nn.Module:
    """The config's model on CPU in eval mode with ``checkpoint``'s weights (initialised ones when None)."""
    from mmengine.registry import DefaultScope, init_default_scope
    from mmengine.runner import load_checkpoint

    from bev_deform.registry import MODELS

    scope = cfg.get("default_scope", "bev_deform")
    init_default_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg["model"])
    if checkpoint is None:
        model.init_weights()
    else:
        load_checkpoint(model, checkpoint, map_location="cpu")
    return model.eval()


def padded_shape(img_shape: Sequence[int], divisor: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``divisor``, as the data preprocessor pads the batch."""
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    return tuple(int(math.ceil(int(s) / divisor) * divisor) for s in img_shape)


def export_onnx(
    detector: nn.Module,
    path: str,
    img_shape: Sequence[int],
    pad_shape: Sequence[int],
    msda: str = "decomposed",
    opset: int = DEFAULT_OPSET,
    num_cams: int = 6,
    debug_outputs: bool = False,
    example_inputs: tuple[Tensor, Tensor] | None = None,
) -> ExportReport:
    """Trace ``detector`` (eval mode, CPU) into an ONNX file and check it with ``onnx.checker``.

    Args:
        detector: a ``DeformDETR3D``; it is put in eval mode.
        path: the .onnx file to write.
        img_shape: (H, W) of the images before padding; pad_shape: (H_pad, W_pad) after.
        msda: ``"decomposed"`` (GridSample; ONNX Runtime runs it) or ``"trt"`` (TensorRT's
            ``MultiscaleDeformableAttnPlugin_TRT`` node), see ``bev_deform.ops.export``.
        opset: ai.onnx opset, one of :data:`SUPPORTED_OPSETS`.
        num_cams: cameras N.
        debug_outputs: add ``query_ids``, ``cls_scores`` and ``bbox_codes`` to the outputs.
        example_inputs: (images, lidar2img) to trace with; zeros and identity cameras when None
            (the graph does not depend on their values).

    Returns:
        :class:`ExportReport`.

    Raises:
        ValueError: for an unknown ``msda`` or an opset outside :data:`SUPPORTED_OPSETS`.
    """
    import onnx

    if msda not in EXPORT_IMPLEMENTATIONS:
        raise ValueError(f"msda must be one of {sorted(EXPORT_IMPLEMENTATIONS)}, got {msda!r}")
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset must be one of {SUPPORTED_OPSETS} (GridSample, TensorRT), got {opset}")
    model = DeformDETR3DForExport(detector.eval(), img_shape, pad_shape, num_cams, debug_outputs).eval()
    if example_inputs is None:
        example_inputs = (
            torch.zeros(1, num_cams, 3, *model.pad_shape),
            torch.eye(4).expand(1, num_cams, 4, 4).contiguous(),
        )
    names = OUTPUT_NAMES + (DEBUG_OUTPUT_NAMES if debug_outputs else ())
    with torch.no_grad(), msda_implementation(msda), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        torch.onnx.export(
            model,
            example_inputs,
            path,
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(names),
        )
    proto = onnx.load(path)
    meta = dict(img_shape=img_shape, pad_shape=model.pad_shape, msda=msda)
    onnx.helper.set_model_props(
        proto, {k: v if isinstance(v, str) else ",".join(map(str, v)) for k, v in meta.items()}
    )
    onnx.checker.check_model(proto, full_check=msda == "decomposed")
    onnx.save(proto, path)
    traced = Counter()
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            traced[(f"{w.filename}:{w.lineno}", str(w.message).split(". ")[0])] += 1
        else:  # not ours to hide
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return ExportReport(path=str(path), trace_warnings=dict(traced))
