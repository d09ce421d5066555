"""The dataset, runtime and schedule base configs build: the synthetic config's datasets and
dataloaders on the tiny synthetic data (data_root overridden), one train sample through the
whole pipeline and the model's data preprocessor; the real-nuScenes config without data."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import MODELS
from mmengine.runner import Runner

from bev_deform.evaluation.nuscenes_metric import CAMERA_SUBMISSION_META

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "configs" / "_base_"
DATASET_CONFIGS = ["nus_3d_cam.py", "nus_3d_cam_1600x900.py", "synth_nus_3d_cam.py"]


def load(name: str, root: Path | None = None) -> Config:
    """Read a dataset base config; with ``root``, point its datasets and evaluators there."""
    cfg = Config.fromfile(str(BASE / "datasets" / name))
    if root is not None:
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
            cfg[loader].dataset.data_root = str(root)
            cfg[loader].update(num_workers=0, persistent_workers=False)
        for evaluator in ("val_evaluator", "test_evaluator"):
            cfg[evaluator].update(data_root=str(root), ann_file=str(root / "nuscenes_infos_val.pkl"))
    return cfg


@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_config_states_the_shared_constants_once(name):
    cfg = load(name)
    assert len(cfg.class_names) == 10 and len(cfg.point_cloud_range) == 6 and len(cfg.input_size) == 2
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = cfg[loader].dataset
        assert dataset.metainfo == dict(classes=cfg.class_names, version=cfg.version)
        assert dataset.data_root == cfg.data_root and dataset.modality == cfg.input_modality
    assert cfg.val_evaluator.ann_file == cfg.data_root + "nuscenes_infos_val.pkl"
    assert cfg.val_evaluator.version == cfg.version
    assert cfg.version == ("v1.0-mini" if name.startswith("synth") else "v1.0-trainval")
    # the modality is also the submission's meta block: the metric's camera-only default, stated
    assert (
        cfg.input_modality == CAMERA_SUBMISSION_META and cfg.val_evaluator.modality == CAMERA_SUBMISSION_META
    )
    assert cfg.test_split == dict(ann_file="nuscenes_infos_test.pkl", version="v1.0-test")


@pytest.mark.parametrize(
    "name, size", [("nus_3d_cam.py", (448, 800)), ("nus_3d_cam_1600x900.py", (896, 1600))]
)
def test_real_nuscenes_pipelines_build_without_data(name, size):
    cfg = load(name)
    assert tuple(cfg.input_size) == size and all(s % 32 == 0 for s in cfg.input_size)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        pipeline = cfg[loader].dataset.pipeline
        names = [type(t).__name__ for t in Compose(pipeline).transforms]
        assert names[0] == "LoadMultiViewImages" and names[1:].count("MultiViewResizeCrop") == 1
        (crop,) = [t for t in pipeline if t.type.__name__ == "MultiViewResizeCrop"]
        assert tuple(crop.final_size) == size
    assert cfg.data_root == "data/nuscenes/"


@pytest.fixture(scope="module")
def synth_cfg(synthetic_nuscenes_tiny):
    return load("synth_nus_3d_cam.py", synthetic_nuscenes_tiny)


def test_synthetic_config_dataloaders_build_on_tiny_data(synth_cfg):
    for loader, test_mode in (("train_dataloader", False), ("val_dataloader", True)):
        dataloader = Runner.build_dataloader(synth_cfg[loader])
        dataset = dataloader.dataset
        assert type(dataset).__name__ == "BevNuScenesDataset" and dataset.test_mode is test_mode
        assert len(dataset) == 6 and dataset.metainfo["version"] == "v1.0-mini"


def test_train_pipeline_packs_six_views_of_input_size_with_consistent_lidar2img(synth_cfg):
    np.random.seed(0)
    dataset = Runner.build_dataloader(synth_cfg.train_dataloader).dataset
    packed = dataset[0]
    h, w = synth_cfg.input_size
    imgs = packed["inputs"]["img"]
    assert tuple(imgs.shape) == (6, 3, h, w) and imgs.dtype == torch.float32
    sample = packed["data_samples"]
    meta = sample.metainfo
    assert len(sample.gt_instances_3d) > 0 and sample.gt_instances_3d.bboxes_3d.tensor.shape[1] == 9
    # lidar2img == (scale + crop) @ original cam2img @ lidar2cam, per camera, from the info file
    info = dataset.get_data_info(0)
    (sx, sy), (x0, y0) = meta["scale_factor"], meta["img_crop_offset"]
    aug = np.array([[sx, 0, -x0, 0], [0, sy, -y0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    for i, cam in enumerate(synth_cfg.cameras):
        k = np.eye(4)
        k[:3, :3] = info["images"][cam]["cam2img"]
        expected = aug @ k @ np.array(info["images"][cam]["lidar2cam"])
        np.testing.assert_allclose(meta["lidar2img"][i], expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(meta["cam2img"][i] @ meta["lidar2cam"][i], meta["lidar2img"][i], atol=1e-6)
    # the model's data preprocessor normalises and pads the six views to a multiple of 32
    preprocessor = MODELS.build(synth_cfg.img_data_preprocessor)
    batch = preprocessor(dict(inputs=dict(img=[imgs, imgs]), data_samples=[sample, sample]), training=True)
    out = batch["inputs"]["imgs"]
    pad_h, pad_w = -(-h // 32) * 32, -(-w // 32) * 32
    assert tuple(out.shape) == (2, 6, 3, pad_h, pad_w)
    assert batch["data_samples"][0].batch_input_shape == (pad_h, pad_w)
    assert abs(out[..., :h, :w].mean().item()) < 2.0 and torch.all(out[..., w:] == 0)


def test_val_pipeline_is_deterministic_and_keeps_eval_annotations(synth_cfg):
    dataset = Runner.build_dataloader(synth_cfg.val_dataloader).dataset
    a, b = dataset[0], dataset[0]
    assert torch.equal(a["inputs"]["img"], b["inputs"]["img"])
    assert tuple(a["inputs"]["img"].shape[-2:]) == tuple(synth_cfg.input_size)
    assert len(a["data_samples"].eval_ann_info["gt_bboxes_3d"]) > 0


def test_runtime_and_schedules_parse():
    runtime = Config.fromfile(str(BASE / "default_runtime.py"))
    assert runtime.default_scope == "bev_deform"
    # mmdet3d's Det3DLocalVisualizer, extended with the sampling-point drawing
    assert runtime.visualizer.type.__name__ == "SamplingPointsVisualizer"
    assert runtime.visualizer.type.__mro__[1].__name__ == "Det3DLocalVisualizer"
    assert runtime.default_hooks.visualization.type.__name__ == "SamplingPointsVisualizationHook"
    epochs = Config.fromfile(str(BASE / "schedules" / "adamw_cosine_24e.py"))
    assert epochs.train_cfg.max_epochs == 24 and epochs.optim_wrapper.optimizer.type.__name__ == "AdamW"
    iters = Config.fromfile(str(BASE / "schedules" / "adamw_cosine_iter.py"))
    assert iters.train_cfg.max_iters == iters.param_scheduler[1].end
    assert iters.default_hooks.logger.log_metric_by_epoch is False  # val NDS logged at its iteration
    assert iters.default_hooks.checkpoint.by_epoch is False and iters.log_processor.by_epoch is False


def test_the_temporal_cpu_config_trains_twice_the_static_schedule_with_every_end_moved():
    """Session 36: the temporal BEV CPU config trains 3600 iterations (its docstring's rows were
    trained so) with the warm-up, the cosine and the mid-run validation moved with them; the static
    BEV config keeps the _base_'s 1800, and both end at the same lr."""
    bev = REPO / "configs" / "bevformer"
    static = Config.fromfile(str(bev / "bevformer_r18_fpn_1xb2-cpu_synth-400x224.py"))
    temporal = Config.fromfile(str(bev / "bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py"))
    s_warmup, s_cosine = static.param_scheduler
    assert (static.train_cfg.max_iters, s_warmup.end, s_cosine.end, s_cosine.T_max) == (1800, 90, 1800, 1800)
    warmup, cosine = temporal.param_scheduler
    assert (temporal.train_cfg.max_iters, temporal.train_cfg.val_interval) == (3600, 1800)
    assert (warmup.end, cosine.end, cosine.T_max) == (180, 3600, 3600)
    assert (warmup.start_factor, cosine.eta_min) == (s_warmup.start_factor, s_cosine.eta_min)
    assert temporal.optim_wrapper.optimizer.lr == static.optim_wrapper.optimizer.lr


def test_string_types_resolve_under_the_default_scope_without_custom_imports():
    """default_runtime has no custom_imports: mmengine imports bev_deform.registry for the scope,
    and the registries import their modules on first use (fresh interpreter, nothing imported)."""
    code = (
        "from mmengine.registry import DefaultScope, TRANSFORMS, MODELS, METRICS\n"
        "DefaultScope.get_instance('t', scope_name='bev_deform')\n"
        "t = TRANSFORMS.build(dict(type='MultiViewResizeCrop', final_size=(8, 8)))\n"
        "g = MODELS.build(dict(type='GridMask'))\n"
        "m = METRICS.build(dict(type='BevNuScenesMetric', data_root='x', ann_file='y'))\n"
        "print(type(t).__module__, type(g).__module__, type(m).__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "bev_deform.datasets.transforms.resize_crop",
        "bev_deform.models.layers.grid_mask",
        "bev_deform.evaluation.nuscenes_metric",
    ]
