"""Multi-scale deformable attention (MSDA): dispatcher, pure-PyTorch reference, CPU kernel.

``multi_scale_deformable_attn`` is the op models call (mmcv's CUDA op on GPU, the compiled
CPU kernel on CPU); ``multi_scale_deformable_attn_reference`` is the oracle the tests use;
``msda_implementation`` switches the op to a form that ONNX export records (``export.py``).
"""

from .checks import check_msda_inputs, compute_dtype
from .export import EXPORT_IMPLEMENTATIONS, msda_implementation
from .gather import multi_scale_deformable_attn_gather
from .msda import MSDAFunctionCPU, cpu_extension, cuda_im2col_step, multi_scale_deformable_attn
from .reference import multi_scale_deformable_attn_reference

__all__ = [
    "EXPORT_IMPLEMENTATIONS",
    "MSDAFunctionCPU",
    "check_msda_inputs",
    "compute_dtype",
    "cpu_extension",
    "cuda_im2col_step",
    "multi_scale_deformable_attn",
    "multi_scale_deformable_attn_gather",
    "multi_scale_deformable_attn_reference",
    "msda_implementation",
]
