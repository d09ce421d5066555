"""The CBGS config wraps the train set in mmdet3d's ``CBGSDataset``, which repeats samples of rare
classes as CBGS specifies (mmdet3d 1.4): with K classes, n_c the samples containing class c and
D = sum_c n_c, every class draws floor(D / K) samples (with replacement) from its n_c samples, so
the epoch has K * floor(D / K) samples, in class order.

Known answer on a hand-made info set: 30 samples with only a car and 9 with a car and one of the
9 other classes: n_car = 39, n_c = 1 for the others, D = 48, floor(48 / 10) = 4, so 40 samples:
4 drawn from the 39 car samples, then each rare sample 4 times (it is the only one of its class).
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import mmengine
import numpy as np
import pytest
from mmdet3d.datasets.dataset_wrappers import CBGSDataset
from mmengine.config import Config

from bev_deform.datasets import BevNuScenesDataset
from bev_deform.datasets.transforms import NUSCENES_CAMERAS
from bev_deform.registry import DATASETS
from bev_deform.runtime import set_data_root

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/deform_detr3d/deform_detr3d_r101-dcn_fpn_8xb1-24e-cbgs_nus-1600x900.py"
CLASSES = Config.fromfile(str(REPO / "configs/_base_/datasets/nus_3d_cam.py")).class_names


def hand_made_infos(root: Path, out: Path) -> list[set[int]]:
    """Write 39 train infos (copies of the first synthetic train sample) whose boxes carry the
    labels above; returns each sample's set of labels."""
    infos = mmengine.load(root / "nuscenes_infos_train.pkl")
    template = infos["data_list"][0]
    box = dict(template["instances"][0], bbox_3d_isvalid=True)
    labels = [{0}] * 30 + [{0, c} for c in range(1, 10)]
    data_list = []
    for i, sample_labels in enumerate(labels):
        info = copy.deepcopy(template)
        info.update(token=f"hand-made-{i}", sample_idx=i)
        info["instances"] = [dict(box, bbox_label=c, bbox_label_3d=c) for c in sorted(sample_labels)]
        info.pop("cam_instances", None)
        data_list.append(info)
    mmengine.dump(dict(metainfo=infos["metainfo"], data_list=data_list), out)
    return labels


def train_dataset(root: Path, ann_file: str) -> BevNuScenesDataset:
    return BevNuScenesDataset(
        data_root=str(root),
        ann_file=ann_file,
        data_prefix={cam: f"samples/{cam}" for cam in NUSCENES_CAMERAS},
        modality=dict(use_camera=True, use_lidar=False),
        metainfo=dict(classes=CLASSES, version="v1.0-mini"),
        test_mode=False,
        use_valid_flag=True,
    )


def test_cbgs_repeats_rare_classes_as_counted_by_hand(synthetic_nuscenes_tiny, tmp_path):
    labels = hand_made_infos(synthetic_nuscenes_tiny, tmp_path / "hand_made.pkl")
    dataset = train_dataset(synthetic_nuscenes_tiny, str(tmp_path / "hand_made.pkl"))
    assert [dataset.get_cat_ids(i) for i in range(len(dataset))] == labels
    np.random.seed(0)
    cbgs = CBGSDataset(dataset)
    indices = cbgs.sample_indices
    assert len(cbgs) == len(indices) == 40
    assert all(0 <= i < 39 for i in indices[:4])  # the car block: any of the 39 samples
    for c in range(1, 10):  # sample 29 + c is the only one with class c
        assert indices[4 * c : 4 * c + 4] == [29 + c] * 4, CLASSES[c]
    counts = Counter(indices)
    assert all(counts[29 + c] >= 4 for c in range(1, 10)) and sum(counts[i] for i in range(30)) <= 4
    # a rare class is in 1 of the 39 original samples, in at least 4 of the 40 balanced ones
    shown = Counter(c for i in indices for c in labels[i])
    assert all(shown[c] >= 4 for c in range(10)) and shown[0] == 40
    # the wrapper hands out the wrapped samples' annotations
    assert cbgs.get_cat_ids(4) == {0, 1} and cbgs.get_data_info(4)["token"] == "hand-made-30"


def test_cbgs_fails_loudly_on_a_train_set_without_some_class(synthetic_nuscenes_tiny, tmp_path):
    """mmdet3d divides by each class's share: a class with no sample raises (nuScenes train has all 10)."""
    hand_made_infos(synthetic_nuscenes_tiny, tmp_path / "hand_made.pkl")
    infos = mmengine.load(tmp_path / "hand_made.pkl")
    for info in infos["data_list"]:
        info["instances"] = [box for box in info["instances"] if box["bbox_label_3d"] != 9]  # no barrier
    mmengine.dump(infos, tmp_path / "no_barrier.pkl")
    with pytest.raises(ZeroDivisionError):
        CBGSDataset(train_dataset(synthetic_nuscenes_tiny, str(tmp_path / "no_barrier.pkl")))


def expected_cbgs(info_file: Path, num_classes: int) -> tuple[int, dict[int, list[int]]]:
    """From the raw infos (valid boxes of the K classes, no dataset class): the CBGS epoch
    length K * floor(D / K) and, per class, the samples that contain it."""
    data_list = mmengine.load(info_file)["data_list"]
    with_class = {c: [] for c in range(num_classes)}
    for i, info in enumerate(data_list):
        present = {b["bbox_label_3d"] for b in info["instances"] if b["bbox_3d_isvalid"]}
        for c in sorted(present & set(range(num_classes))):
            with_class[c].append(i)
    total = sum(len(v) for v in with_class.values())
    return num_classes * (total // num_classes), with_class


def test_cbgs_config_wraps_the_train_set_and_balances_it(synthetic_nuscenes_tiny):
    cfg = Config.fromfile(str(CONFIG))
    set_data_root(cfg, str(synthetic_nuscenes_tiny))
    wrapper = cfg.train_dataloader.dataset
    assert wrapper.type is CBGSDataset and wrapper.dataset.ann_file == "nuscenes_infos_train.pkl"
    assert wrapper.dataset.data_root == str(synthetic_nuscenes_tiny) + "/"
    assert cfg.train_cfg.max_epochs == 24  # epoch-based as DETR3D's CBGS config: epochs are longer
    length, with_class = expected_cbgs(synthetic_nuscenes_tiny / "nuscenes_infos_train.pkl", len(CLASSES))
    assert all(with_class.values()), "the tiny synthetic train split holds all 10 classes"
    np.random.seed(0)
    cbgs = DATASETS.build(wrapper)
    per_class = length // len(CLASSES)
    assert len(cbgs) == length and per_class >= 1
    for c, samples in with_class.items():
        block = cbgs.sample_indices[c * per_class : (c + 1) * per_class]
        assert set(block) <= set(samples), CLASSES[c]
