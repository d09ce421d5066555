"""Build script for bev_deform's one compiled piece; all metadata lives in pyproject.toml.

It adds the optional CPU extension ``bev_deform.ops._msda_cpu`` (multi-scale deformable
attention, forward and backward, ``bev_deform/ops/csrc/msda_cpu.cpp``), built in place by the
editable install of ``tools/setup_env.sh`` (step 6, ``pip install --no-use-pep517 --no-deps -e .``;
``pip install --no-build-isolation --no-deps -e .`` works too) or by
``python setup.py build_ext --inplace``.

The extension is optional: where torch's C++ toolchain is missing or the compile fails, or with
``BEV_DEFORM_NO_EXT=1``, the install still succeeds and ``bev_deform.ops`` falls back to its
pure-PyTorch path with a one-time warning. Flags: ``-O3`` and, on Linux, ``-fopenmp`` (without
it ``at::parallel_for`` runs on one thread); never ``-march=native``, so a build runs on any
machine of its architecture.
"""

import os
import subprocess
import sys

from setuptools import setup
from setuptools.errors import BaseError, CCompilerError

EXT_NAME = "bev_deform.ops._msda_cpu"
EXT_SOURCES = ["bev_deform/ops/csrc/msda_cpu.cpp"]
# lets the channel dot products vectorise (reordered sums); keeps NaN / inf handling (no -ffast-math)
FAST_MATH = ["-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros", "-fassociative-math"]
# keeps the short per-pixel row copies inline and vectorised instead of one memcpy call per row
NO_LIBCALLS = ["-fno-tree-loop-distribute-patterns"]


def _warn(message):
    print(
        f"WARNING (bev_deform): {message}; bev_deform.ops will use its pure-PyTorch CPU path", file=sys.stderr
    )


def _extension_build():
    """Returns (ext_modules, cmdclass) for setup(); both empty when the extension is skipped."""
    if os.environ.get("BEV_DEFORM_NO_EXT", "0") == "1":
        _warn("BEV_DEFORM_NO_EXT=1, not building " + EXT_NAME)
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as err:  # torch is not importable at build time (build isolation)
        _warn(f"torch is not importable at build time ({err}), not building {EXT_NAME}")
        return [], {}

    class OptionalBuildExtension(BuildExtension):
        """torch's BuildExtension that skips the extension instead of failing the install."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except (BaseError, CCompilerError, OSError, RuntimeError, subprocess.CalledProcessError) as err:
                _warn(f"building {EXT_NAME} failed ({type(err).__name__}: {err})")
                self.extensions = []  # nothing to copy into the wheel or the source tree
                self.distribution.ext_modules = []

    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    extension = CppExtension(
        EXT_NAME,
        EXT_SOURCES,
        extra_compile_args=["-O3", *FAST_MATH, *NO_LIBCALLS, *openmp],
        extra_link_args=openmp,
    )
    return [extension], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = _extension_build()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
