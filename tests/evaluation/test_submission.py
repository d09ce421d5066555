"""The test-server path on the synthetic data presented as the nuScenes test split (the val infos
with no annotations, version 'v1.0-test', as mmdet3d's converter writes ``nuscenes_infos_test.pkl``):
``BevNuScenesMetric(format_only=True)`` and ``tools/test.py CONFIG CKPT --format-only --out-dir D``
write the submission JSON that the devkit's loader reads, with the camera-only ``meta`` and every
sample token; ground truth fed through it comes out as the devkit's global-frame annotations."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import mmengine
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.common.loaders import load_prediction
from nuscenes.eval.detection.data_classes import DetectionBox

from bev_deform.datasets import BevNuScenesDataset
from bev_deform.datasets.transforms import NUSCENES_CAMERAS
from bev_deform.evaluation import BevNuScenesMetric
from bev_deform.evaluation.nuscenes_metric import CAMERA_SUBMISSION_META
from bev_deform.registry import MODELS

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py"
CLASSES = Config.fromfile(str(REPO / "configs/_base_/datasets/nus_3d_cam.py")).class_names
MAX_BOXES = config_factory("detection_cvpr_2019").max_boxes_per_sample


@pytest.fixture(scope="module")
def test_split_root(synthetic_nuscenes_tiny, tmp_path_factory):
    """A copy of the tiny synthetic root with ``nuscenes_infos_test.pkl``: the val samples with
    empty ``instances``, no ``cam_instances`` and version 'v1.0-test'."""
    root = tmp_path_factory.mktemp("test_split") / "nuscenes"
    shutil.copytree(synthetic_nuscenes_tiny, root)
    infos = mmengine.load(root / "nuscenes_infos_val.pkl")
    for info in infos["data_list"]:
        info["instances"] = []  # as mmdet3d's converter writes a sample without annotations
        info.pop("cam_instances", None)
    infos["metainfo"]["version"] = "v1.0-test"
    mmengine.dump(infos, root / "nuscenes_infos_test.pkl")
    return root


def sample_tokens(root: Path) -> list[str]:
    return [info["token"] for info in mmengine.load(root / "nuscenes_infos_test.pkl")["data_list"]]


def load_submission(path: Path):
    assert path.is_file(), f"no submission at {path}"
    return load_prediction(str(path), MAX_BOXES, DetectionBox)


def test_format_only_writes_the_ground_truth_as_a_submission_the_devkit_loads(
    synthetic_nuscenes_tiny, test_split_root, tmp_path
):
    val = BevNuScenesDataset(
        data_root=str(synthetic_nuscenes_tiny),
        ann_file="nuscenes_infos_val.pkl",
        data_prefix={cam: f"samples/{cam}" for cam in NUSCENES_CAMERAS},
        modality=dict(use_camera=True, use_lidar=False),
        metainfo=dict(classes=CLASSES, version="v1.0-mini"),
        test_mode=True,
    )
    results = []
    for i in range(len(val)):
        info = val.get_data_info(i)
        gt = info["eval_ann_info"]
        boxes, labels = gt["gt_bboxes_3d"], torch.as_tensor(gt["gt_labels_3d"])
        pred = InstanceData(bboxes_3d=boxes, scores_3d=torch.ones(len(boxes)), labels_3d=labels)
        results.append(dict(pred_instances_3d=pred, pred_instances=InstanceData(), sample_idx=i))
    out = tmp_path / "submission"
    metric = BevNuScenesMetric(
        data_root=str(test_split_root),
        ann_file=str(test_split_root / "nuscenes_infos_test.pkl"),
        format_only=True,
        jsonfile_prefix=str(out),
    )
    metric.dataset_meta = dict(classes=CLASSES, version="v1.0-test")
    assert metric.compute_metrics(results) == {}

    boxes, meta = load_submission(out / "pred_instances_3d" / "results_nusc.json")
    assert meta == CAMERA_SUBMISSION_META
    tokens = sample_tokens(test_split_root)
    assert sorted(boxes.sample_tokens) == sorted(tokens) and len(tokens) == len(val) == 6
    # every submitted box is one of its sample's annotations (global frame, devkit tables)
    annotations = defaultdict(list)
    for ann in json.loads((test_split_root / "v1.0-mini" / "sample_annotation.json").read_text()):
        annotations[ann["sample_token"]].append(ann)
    submitted = 0
    for token in tokens:
        for box in boxes[token]:
            dists = [
                np.linalg.norm(np.subtract(box.translation, a["translation"])) for a in annotations[token]
            ]
            dist, ann = min(zip(dists, annotations[token]), key=lambda pair: pair[0])
            assert dist < 1e-3 and np.allclose(box.size, ann["size"], atol=1e-3), (token, box)
            submitted += 1
    assert submitted > 0


def test_the_test_split_is_only_formatted():
    with pytest.raises(ValueError, match="'v1.0-test', which has no annotations"):
        BevNuScenesMetric(data_root="x", ann_file="y", version="v1.0-test")
    with pytest.raises(ValueError, match="format_only=True needs jsonfile_prefix"):
        BevNuScenesMetric(data_root="x", ann_file="y", version="v1.0-test", format_only=True)
    with pytest.raises(ValueError, match=r"\['use_external', 'use_map', 'use_radar'\] missing"):
        BevNuScenesMetric(data_root="x", ann_file="y", modality=dict(use_camera=True, use_lidar=False))
    metric = BevNuScenesMetric(data_root="x", ann_file="y")  # version from the dataset's metainfo
    metric.dataset_meta = dict(classes=CLASSES, version="v1.0-test")
    with pytest.raises(ValueError, match="no annotations to evaluate"):
        metric.compute_metrics([])
    assert metric.modality == CAMERA_SUBMISSION_META  # not mmdet3d's lidar default


def load_test_tool():
    spec = importlib.util.spec_from_file_location("bev_deform_test_tool", REPO / "tools" / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_format_only_points_the_test_set_at_the_configs_test_split(tmp_path):
    tool = load_test_tool()
    cfg = Config.fromfile(str(REPO / "configs/deform_detr3d/deform_detr3d_r50_fpn_8xb1-24e_nus-800x450.py"))
    assert cfg.test_split == dict(ann_file="nuscenes_infos_test.pkl", version="v1.0-test")
    tool.enable_format_only(cfg, "sub")
    dataset, evaluator = cfg.test_dataloader.dataset, cfg.test_evaluator
    assert dataset.ann_file == "nuscenes_infos_test.pkl" and dataset.metainfo.version == "v1.0-test"
    assert dataset.metainfo.classes == CLASSES and dataset.test_mode is True
    assert evaluator.ann_file == "data/nuscenes/nuscenes_infos_test.pkl" and evaluator.version == "v1.0-test"
    assert evaluator.format_only is True and evaluator.jsonfile_prefix == os.path.abspath("sub")
    assert evaluator.modality == CAMERA_SUBMISSION_META
    # the val set is left as it was
    assert cfg.val_dataloader.dataset.ann_file == "nuscenes_infos_val.pkl"
    assert cfg.val_evaluator.version == "v1.0-trainval" and not cfg.val_evaluator.get("format_only")
    with pytest.raises(ValueError, match="needs `test_split"):
        tool.enable_format_only(Config(dict(test_dataloader=cfg.test_dataloader)), "sub")
    with pytest.raises(SystemExit):
        tool.parse_args(["c.py", "k.pth", "--format-only"])  # no --out-dir


@pytest.mark.slow
def test_tools_test_format_only_writes_a_submission_for_every_test_sample(test_split_root, tmp_path):
    """The CLI, with an untrained CPU-config checkpoint: every sample token is in the submission."""
    cfg = Config.fromfile(str(CPU_CONFIG))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("bev_deform"):
        model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = tmp_path / "random.pth"
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = tmp_path / "submission"
    opts = ["test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False"]
    cmd = [sys.executable, str(REPO / "tools/test.py"), str(CPU_CONFIG), str(ckpt), "--format-only"]
    cmd += ["--out-dir", str(out), "--work-dir", str(tmp_path / "work"), "--data-root", str(test_split_root)]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [*cmd, "--cfg-options", *opts], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    boxes, meta = load_submission(out / "pred_instances_3d" / "results_nusc.json")
    assert meta == CAMERA_SUBMISSION_META
    assert sorted(boxes.sample_tokens) == sorted(sample_tokens(test_split_root))
    assert "nuScenes submission (v1.0-test) written to" in proc.stdout + proc.stderr
