#!/usr/bin/env bash
# Install bev_deform's stack into .venv on a CPU-only machine (or a CUDA one, see README):
# torch 2.13.0 (CPU wheel where there is no CUDA), numpy 1.26, mmengine 0.10, mmcv 2.1.0 built
# from source with its compiled ops, mmdet 3.3.0, mmdet3d 1.4.0, nuscenes-devkit 1.2.0, and
# bev_deform itself (editable). Idempotent: a finished install is detected by a stamp file, and
# pip caches the mmcv wheel, so a rebuild of .venv takes minutes, not the ~21 min first build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
C=requirements/constraints.txt
STAMP="$VENV/.bev_deform_setup_ok"

step() { echo "[setup] $(date +%H:%M:%S) $*"; CURRENT_STEP="$*"; STEP_T0=$(date +%s); }
done_step() { echo "[setup] ... done in $(( $(date +%s) - STEP_T0 )) s"; }
trap 'echo "[setup] FAILED at step: ${CURRENT_STEP:-start} (see the pip output above)" >&2' ERR

if [[ -f "$STAMP" && "$STAMP" -nt pyproject.toml && "$STAMP" -nt "$C" && "$STAMP" -nt setup.py && "${FORCE_SETUP:-0}" != 1 ]]; then
  echo "[setup] $VENV is up to date (delete $STAMP or set FORCE_SETUP=1 to re-run)"
  exit 0
fi

step "1/6 virtual environment $VENV"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip install --progress-bar off -c $C"
done_step

step "2/6 pip < 25.3, build tools, numpy < 2 and torch 2.13.0"
# pip first, on its own: `python3 -m venv` brings whatever pip the interpreter ships, and pip 25.3+
# dropped --no-use-pep517 (legacy `setup.py develop`), which step 6 needs; constraints.txt caps it.
$PIP "pip>=23.2"
# setuptools 79.x: >= 77 for torch, still ships pkg_resources (mmcv's setup.py and openmim import
# it; 81+ removed it), and still has the legacy `setup.py develop` (80+ turned it into a PEP 660
# editable install, whose location openmim cannot resolve to this checkout).
$PIP "setuptools==79.0.1" wheel ninja "numpy==1.26.4"
if ! $PY -c "import torch" 2>/dev/null; then $PIP "torch==2.13.0"; fi
# from here on, pip may not replace the torch we have (CPU 2.13.0, or a CUDA build installed first)
TORCH_C="$VENV/torch-constraint.txt"
$PY -c "import torch; print('torch==' + torch.__version__)" > "$TORCH_C"
PIP="$PIP -c $TORCH_C"
done_step

step "3/6 runtime and test requirements"
$PIP -r requirements/runtime.txt -r requirements/tests.txt
$PIP -r requirements/deploy.txt  # the `deploy` extra: onnx, onnxruntime, onnxscript (tools/deploy, tests/deploy)
done_step

step "4/6 mmdet3d and lyft_dataset_sdk without their open3d / waymo / lint pins"
$PIP --no-deps "mmdet3d==1.4.0" "lyft_dataset_sdk==0.0.8"
done_step

step "5/6 mmcv 2.1.0 with compiled ops (about 21 min on 2 cores when pip has no cached wheel)"
if $PY -c "import mmcv, sys; from mmcv.ops import MultiScaleDeformableAttnFunction; sys.exit(mmcv.__version__ != '2.1.0')" 2>/dev/null; then
  echo "[setup] mmcv 2.1.0 with ops already installed"
else
  MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" $PIP --no-build-isolation "mmcv==2.1.0"
fi
done_step

step "6/6 bev_deform (editable) and import checks"
# legacy develop mode: the distribution location is this checkout, which openmim needs (pip < 25.3)
$PIP --no-use-pep517 --no-deps -e .
$PY - <<'PY'
import mmcv, mmdet, mmdet3d, mmengine, nuscenes, numpy, torch
import mmcv.ops  # compiled extension
import mmdet3d.models, mmdet3d.evaluation  # noqa: F401
import bev_deform
print(f"[setup] torch {torch.__version__} (cuda: {torch.cuda.is_available()}), numpy {numpy.__version__}, "
      f"mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, "
      f"mmdet3d {mmdet3d.__version__}, nuscenes-devkit ok, bev_deform {bev_deform.__version__}")
print("[setup] imports ok: mmcv.ops, mmdet3d.models, mmdet3d.evaluation, nuscenes, bev_deform")
PY
done_step
touch "$STAMP"
