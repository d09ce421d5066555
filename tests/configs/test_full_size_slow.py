"""Every real-nuScenes config (``configs/deform_detr3d/*nus-*.py``, found by glob so that a new one is
covered without editing this file) trains two iterations and predicts at its full input size, on CPU,
through mmengine's Runner, on the synthetic ``native`` preset (nuScenes' own 1600x900 images): the
config's own resize/crop, the data preprocessor's padding, the loss and the predict path.

No weights are downloaded: the backbone's ``init_cfg`` (an ImageNet checkpoint) is dropped. Also
changed: the data (root, info files, ``version='v1.0-mini'``), the loader workers, the loop (two
iterations, no validation; the test loader, on the val samples, predicts after training) and the
backbone's activation checkpointing (``with_cp=True``: the same shapes and results; without it
ResNet-101 training at 1600x896 keeps an estimated 25 GiB of activations, more than this 24 GiB
machine has; with it the process peaks at about 10 GiB). Everything else is the config as a user
trains it.

Slow (minutes per config on CPU; ResNet-101 at 1600x900 about 8 min on 2 cores): run it alone, and
print the measured times with ``-s``:

    python -m pytest -m slow tests/configs/test_full_size_slow.py -s
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from nuscenes.nuscenes import NuScenes

from bev_deform.datasets.create_infos import create_nuscenes_infos
from bev_deform.datasets.synthetic import VERSION, generate_synthetic_nuscenes
from bev_deform.datasets.synthetic.rig import CAMERA_CHANNELS as CAMERAS
from bev_deform.runtime import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "deform_detr3d").glob("*nus-*.py"))
TRAIN_ITERS = 2
NDS_KEY = "NuScenes metric/pred_instances_3d_NuScenes/NDS"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def native_root(tmp_path_factory) -> Path:
    """The ``native`` preset (1600x900; 2 train + 2 val samples) with its info files."""
    root = generate_synthetic_nuscenes(
        tmp_path_factory.mktemp("native") / "nuscenes", "native", 0, progress=False
    )
    create_nuscenes_infos(root, VERSION)
    return root


def innermost(dataset: dict) -> dict:
    """The dataset config inside dataset wrappers (e.g. ``CBGSDataset(dataset=...)``)."""
    while "dataset" in dataset:
        dataset = dataset["dataset"]
    return dataset


def resize_crop_size(pipeline: list) -> tuple[int, int]:
    """(H, W) that the pipeline's resize/crop step (the one with ``final_size``) outputs."""
    sizes = [tuple(step["final_size"]) for step in pipeline if "final_size" in step]
    assert len(sizes) == 1, f"expected one resize/crop step with final_size, got {sizes}"
    return sizes[0]


def full_size_cfg(config: Path, root: Path, work_dir: Path):
    """``config`` on the native synthetic data, with pretrained backbone (and neck) weights and workers
    removed and a two-iteration training loop; model, pipelines, preprocessor, optimizer as the config
    has them."""
    cfg = load_config(str(config), None, str(work_dir))
    cfg.model.img_backbone.pop("init_cfg", None)
    cfg.model.img_backbone.pop("pretrained", None)
    neck_init = cfg.model.get("img_neck", {}).get("init_cfg")
    if isinstance(neck_init, dict) and neck_init.get("type") == "Pretrained":  # the FCOS3D variant's
        cfg.model.img_neck.pop("init_cfg")
    cfg.model.img_backbone["with_cp"] = True  # activation checkpointing: memory only, see the docstring
    cfg.load_from, cfg.resume = None, False
    cfg.val_dataloader, cfg.val_cfg, cfg.val_evaluator = None, None, None  # no validation inside train()
    for split, ann_file in (("train", "train"), ("test", "val")):
        loader = cfg[f"{split}_dataloader"]
        loader.update(num_workers=0, persistent_workers=False)
        dataset = innermost(loader["dataset"])
        dataset.update(data_root=f"{root}/", ann_file=f"nuscenes_infos_{ann_file}.pkl")
        dataset["metainfo"] = dict(dataset.get("metainfo", {}), version=VERSION)
    evaluators = cfg.test_evaluator
    for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
        evaluator.update(data_root=f"{root}/", ann_file=str(root / "nuscenes_infos_val.pkl"), version=VERSION)
        evaluator.pop("jsonfile_prefix", None)
        if evaluator.get("format_only"):  # a test-split config: score the synthetic val instead
            evaluator["format_only"] = False
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=TRAIN_ITERS)
    return cfg


class Recorder(Hook):
    """Keeps each training iteration's loss and each test iteration's predictions."""

    def __init__(self) -> None:
        self.losses, self.predictions = [], []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses.append(float(outputs["loss"]))

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.predictions.extend(outputs)


def test_native_preset_is_the_nuscenes_rig_at_1600x900(native_root):
    """Unscaled intrinsics (DESIGN.md's table) and 1600x900 JPEGs, as real nuScenes."""
    nusc = NuScenes(version=VERSION, dataroot=str(native_root), verbose=False)
    sample_data = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])
    calib = nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
    np.testing.assert_allclose(
        calib["camera_intrinsic"], [[1266.42, 0, 816.27], [0, 1266.42, 491.51], [0, 0, 1]]
    )
    assert len(nusc.sample) == 4
    for sample in nusc.sample:
        for channel in CAMERAS:
            image = cv2.imread(
                str(native_root / nusc.get("sample_data", sample["data"][channel])["filename"])
            )
            assert image.shape == (900, 1600, 3)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_trains_and_predicts_at_full_size_on_cpu(config, native_root, tmp_path):
    cfg = full_size_cfg(config, native_root, tmp_path / "work")
    train_hw = resize_crop_size(innermost(cfg.train_dataloader.dataset).pipeline)
    test_hw = resize_crop_size(innermost(cfg.test_dataloader.dataset).pipeline)
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    runner.register_hook(recorder, priority="LOWEST")
    backbone_inputs = []
    runner.model.img_backbone.register_forward_pre_hook(lambda _, args: backbone_inputs.append(args[0].shape))

    start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - start
    seen_in_training = list(backbone_inputs)
    start = time.perf_counter()
    metrics = runner.test()
    test_s = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"\n[full size] {config.stem}: train {TRAIN_ITERS} iters {train_s:.1f} s, predict "
        f"{len(recorder.predictions)} samples {test_s:.1f} s, peak RSS of this process {peak_gib:.1f} GiB"
    )

    pad = lambda hw: tuple(32 * math.ceil(s / 32) for s in hw)  # the preprocessor's pad_size_divisor
    batch = cfg.train_dataloader.batch_size
    # (B * 6 cameras, 3, H, W) into the backbone: the crop's size, padded to a multiple of 32
    assert seen_in_training == [torch.Size((batch * 6, 3, *pad(train_hw)))] * TRAIN_ITERS
    seen_in_test = backbone_inputs[TRAIN_ITERS:]
    assert {s[1:] for s in seen_in_test} == {torch.Size((3, *pad(test_hw)))}
    assert sum(s[0] for s in seen_in_test) == 6 * len(recorder.predictions)
    assert len(recorder.losses) == TRAIN_ITERS and all(math.isfinite(loss) for loss in recorder.losses)
    assert len(recorder.predictions) == 2  # the native preset's val samples
    max_num = cfg.model.bbox_head.bbox_coder.max_num
    for sample in recorder.predictions:
        assert sample.batch_input_shape == pad(test_hw)
        boxes = sample.pred_instances_3d.bboxes_3d.tensor
        assert 0 < boxes.shape[0] <= max_num and boxes.shape[1] == 9 and torch.isfinite(boxes).all()
    assert math.isfinite(metrics[NDS_KEY])
