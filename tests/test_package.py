"""The toolbox installs as users expect: it imports, its registries sit under mmdet3d's so
that ``default_scope='bev_deform'`` finds our classes and mmdet3d's, and openmim finds our
train/test scripts and configs."""

import importlib
import os.path as osp
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.registry import DefaultScope

import bev_deform
from bev_deform import registry

REPO = Path(__file__).resolve().parents[1]

# (registry, one of ours, one of mmdet3d's)
REGISTRY_CASES = [
    ("MODELS", "DeformDETR3D", "Det3DDataPreprocessor"),
    ("TASK_UTILS", "HungarianAssigner3D", "BboxOverlaps3D"),
    ("TRANSFORMS", "MultiViewResizeCrop", "LoadMultiViewImageFromFiles"),
    ("DATASETS", "BevNuScenesDataset", "NuScenesDataset"),
    ("METRICS", "BevNuScenesMetric", "NuScenesMetric"),
    ("VISUALIZERS", "SamplingPointsVisualizer", "Det3DLocalVisualizer"),
    ("HOOKS", "SamplingPointsVisualizationHook", "Det3DVisualizationHook"),
]


def test_package_imports_with_version():
    assert bev_deform.__version__ == "0.1.0"
    for mod in ("ops", "geometry", "models", "datasets", "evaluation", "visualization", "runtime"):
        importlib.import_module(f"bev_deform.{mod}")


@pytest.mark.parametrize("name,ours,theirs", REGISTRY_CASES)
def test_registry_resolves_ours_and_mmdet3d(name, ours, theirs):
    reg = getattr(registry, name)
    assert reg.scope == "bev_deform"
    assert reg.parent is not None and reg.parent.scope == "mmdet3d"
    with DefaultScope.overwrite_default_scope("bev_deform"):
        our_cls = reg.get(ours)
        their_cls = reg.get(theirs)
    assert our_cls is not None and our_cls.__module__.startswith("bev_deform."), (name, ours)
    assert their_cls is not None and their_cls.__module__.startswith("mmdet3d."), (name, theirs)


def test_mmdet_modules_resolve_with_scope_prefix():
    with DefaultScope.overwrite_default_scope("bev_deform"):
        resnet = registry.MODELS.get("mmdet.ResNet")
    assert resnet.__module__.startswith("mmdet.models.backbones")


def test_mim_finds_train_test_scripts_and_configs():
    # from another folder, as a user runs mim: the installed location must be this checkout
    code = "from mim.utils import get_installed_path; print(get_installed_path('bev_deform'))"
    cmd = [sys.executable, "-W", "ignore", "-c", code]
    out = subprocess.run(cmd, cwd="/", capture_output=True, text=True)
    pkg_root = out.stdout.strip().splitlines()[-1]
    assert osp.realpath(pkg_root) == str(REPO / "bev_deform"), "editable install must point at this checkout"
    for script in ("train.py", "test.py"):
        path = osp.join(pkg_root, ".mim", "tools", script)
        assert osp.realpath(path) == str(REPO / "tools" / script)
    from mim.utils import recursively_find

    found = recursively_find(pkg_root, "default_runtime.py", followlinks=True)
    assert [osp.realpath(f) for f in found] == [str(REPO / "configs" / "_base_" / "default_runtime.py")]
