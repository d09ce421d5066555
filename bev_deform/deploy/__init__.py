"""Deployment: ONNX export of the detectors and running the exports in ONNX Runtime.

Needs the ``deploy`` extra (``onnx``, ``onnxruntime``, ``onnxscript``); importing this package
does not, the functions that use them import them.
"""

from .onnx_export import (
    DEBUG_OUTPUT_NAMES,
    DEFAULT_OPSET,
    INPUT_NAMES,
    OUTPUT_NAMES,
    SUPPORTED_OPSETS,
    DeformDETR3DForExport,
    ExportReport,
    build_detector,
    export_onnx,
    image_shapes,
    padded_shape,
)
from .onnx_runtime import ort_session, run_session
from .verify import SampleDiff, compare_with_pytorch

__all__ = [
    "DEBUG_OUTPUT_NAMES",
    "DEFAULT_OPSET",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "SUPPORTED_OPSETS",
    "DeformDETR3DForExport",
    "ExportReport",
    "SampleDiff",
    "build_detector",
    "compare_with_pytorch",
    "export_onnx",
    "image_shapes",
    "ort_session",
    "padded_shape",
    "run_session",
]
