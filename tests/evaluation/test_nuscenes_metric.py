"""BevNuScenesMetric: ground truth fed back as predictions through the real dataset class and the
real nuscenes-devkit scores NDS ~ 1; boxes shifted by 1.5 m miss at 0.5 m and 1 m; an empty
submission returns the "nothing detected" values with a warning."""

import math

import numpy as np
import pytest
import torch
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.evaluator import Evaluator
from mmengine.structures import InstanceData

from bev_deform.evaluation import BevNuScenesMetric
from bev_deform.evaluation.nuscenes_metric import TP_ERRORS, count_predicted_boxes

CLASSES = tuple(NuScenesDataset.METAINFO["classes"])  # mmdet3d's, in label order
PREFIX = "pred_instances_3d_NuScenes"


def prediction(boxes: LiDARInstance3DBoxes, labels, sample_idx: int) -> dict:
    """One data sample as a detector's predict() returns it (the dict form NuScenesMetric reads)."""
    n = len(boxes)
    pred_3d = InstanceData(bboxes_3d=boxes, scores_3d=torch.ones(n), labels_3d=torch.as_tensor(labels).long())
    return dict(pred_instances_3d=pred_3d, pred_instances=InstanceData(), sample_idx=sample_idx)


def empty_prediction(sample_idx: int) -> dict:
    return prediction(LiDARInstance3DBoxes(torch.zeros(0, 9), box_dim=9), torch.zeros(0), sample_idx)


def make_metric(data_root="unused", ann_file="unused.pkl", **kwargs) -> BevNuScenesMetric:
    metric = BevNuScenesMetric(data_root=data_root, ann_file=ann_file, **kwargs)
    metric.dataset_meta = dict(classes=CLASSES, version="v1.0-mini")
    return metric


# ------------------------------------------------------------ without data


def test_empty_submission_warns_and_returns_nothing_detected_values():
    metric = make_metric()
    results = [empty_prediction(0), dict(pred_instances_3d=InstanceData(), sample_idx=1)]
    assert count_predicted_boxes(results) == 0
    with pytest.warns(UserWarning, match="predicted no box in any of the 2 samples"):
        out = metric.compute_metrics(results)
    assert out[f"{PREFIX}/NDS"] == 0.0 and out[f"{PREFIX}/mAP"] == 0.0
    assert out[f"{PREFIX}/car_AP_dist_0.5"] == 0.0 and out[f"{PREFIX}/barrier_AP_dist_4.0"] == 0.0
    assert out[f"{PREFIX}/mATE"] == 1.0 and out[f"{PREFIX}/pedestrian_vel_err"] == 1.0
    # 10 classes x (4 APs + 5 TP errors) + 5 mean errors + NDS + mAP
    assert len(out) == 10 * 9 + 5 + 2


def test_version_must_be_known():
    with pytest.raises(ValueError, match="version must be one of"):
        BevNuScenesMetric(data_root="x", ann_file="y", version="v1.0-trainval-typo")
    with pytest.raises(ValueError, match="has no annotations"):  # the test split is only formatted
        BevNuScenesMetric(data_root="x", ann_file="y", version="v1.0-test")
    metric = make_metric()
    metric.dataset_meta = dict(classes=CLASSES)  # the dataset config forgot metainfo.version
    with pytest.raises(ValueError, match=r"set metainfo=dict\(version=...\)"):
        metric.compute_metrics([empty_prediction(0)])
    metric = BevNuScenesMetric(data_root="x", ann_file="y")
    with pytest.raises(ValueError, match="dataset_meta"):
        metric.compute_metrics([empty_prediction(0)])


def test_table_lists_every_class_with_aps_errors_and_summary():
    metric = make_metric()
    values = metric.no_detection_metrics(list(CLASSES))
    values[f"{PREFIX}/car_AP_dist_0.5"] = 0.5
    values[f"{PREFIX}/car_AP_dist_1.0"] = 1.0
    values[f"{PREFIX}/NDS"] = 0.4321
    text = metric.format_table(values, list(CLASSES), PREFIX)
    lines = text.splitlines()
    car = next(line for line in lines if line.startswith("| car "))
    cells = [c.strip() for c in car.strip("|").split("|")]
    # class, AP@0.5, AP@1, AP@2, AP@4, mean AP, ATE, ASE, AOE, AVE, AAE
    assert cells == ["car", "0.5000", "1.0000", "0.0000", "0.0000", "0.3750"] + ["1.0000"] * 5
    assert all(any(line.startswith(f"| {c} ") for line in lines) for c in CLASSES)
    assert lines[-1] == "mAP: 0.0000  NDS: 0.4321"


# ------------------------------------------------------------ with the synthetic tiny data


@pytest.fixture(scope="module")
def val_dataset(synthetic_nuscenes_tiny):
    from bev_deform.datasets import BevNuScenesDataset
    from bev_deform.datasets.transforms import NUSCENES_CAMERAS

    return BevNuScenesDataset(
        data_root=str(synthetic_nuscenes_tiny),
        ann_file="nuscenes_infos_val.pkl",
        data_prefix={cam: f"samples/{cam}" for cam in NUSCENES_CAMERAS},
        modality=dict(use_camera=True, use_lidar=False),
        metainfo=dict(classes=CLASSES, version="v1.0-mini"),
        test_mode=True,
    )


def gt_as_predictions(dataset, shift_x: float = 0.0) -> list[dict]:
    """The evaluation GT of every val sample, read through the dataset class, as predictions."""
    results = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        gt = info["eval_ann_info"]
        boxes = gt["gt_bboxes_3d"].clone()
        boxes.tensor[:, 0] += shift_x
        results.append(prediction(boxes, gt["gt_labels_3d"], info["sample_idx"]))
    return results


def evaluate(root, dataset, results):
    metric = make_metric(data_root=str(root), ann_file=str(root / "nuscenes_infos_val.pkl"))
    metric.dataset_meta = dataset.metainfo
    return metric.compute_metrics(results)


def test_ground_truth_as_predictions_scores_nds_and_map_of_one(synthetic_nuscenes_tiny, val_dataset, capsys):
    """Through mmengine's Evaluator, as the Runner's ValLoop calls it, with Det3DDataSample
    predictions that carry no 2D ``pred_instances``."""
    results = gt_as_predictions(val_dataset)
    labels = np.concatenate([r["pred_instances_3d"].labels_3d.numpy() for r in results])
    assert set(labels.tolist()) == set(range(10)), "the synthetic val split must hold all 10 classes"
    root = synthetic_nuscenes_tiny
    evaluator = Evaluator(
        dict(type=BevNuScenesMetric, data_root=str(root), ann_file=str(root / "nuscenes_infos_val.pkl"))
    )
    evaluator.dataset_meta = val_dataset.metainfo
    samples = []
    for r in results:
        sample = Det3DDataSample(metainfo=dict(sample_idx=r["sample_idx"]))
        sample.pred_instances_3d = r["pred_instances_3d"]
        samples.append(sample)
    evaluator.process(data_samples=samples)
    out = {k.removeprefix("NuScenes metric/"): v for k, v in evaluator.evaluate(len(samples)).items()}
    assert out[f"{PREFIX}/NDS"] >= 0.99 and out[f"{PREFIX}/mAP"] >= 0.99, out
    assert out[f"{PREFIX}/mATE"] < 0.01 and out[f"{PREFIX}/mAOE"] < 0.01 and out[f"{PREFIX}/mAVE"] < 0.01
    empty = make_metric().no_detection_metrics(list(CLASSES))
    assert set(out) == set(empty), "an empty submission must return the keys of a devkit run"
    logged = capsys.readouterr()
    assert "construction_vehicle" in logged.out + logged.err and "NDS:" in logged.out + logged.err


def test_boxes_shifted_by_1_5_m_miss_at_half_and_one_metre(synthetic_nuscenes_tiny, val_dataset):
    out = evaluate(synthetic_nuscenes_tiny, val_dataset, gt_as_predictions(val_dataset, shift_x=1.5))
    for cls in CLASSES:
        assert out[f"{PREFIX}/{cls}_AP_dist_0.5"] == 0.0 and out[f"{PREFIX}/{cls}_AP_dist_1.0"] == 0.0, cls
        assert out[f"{PREFIX}/{cls}_AP_dist_2.0"] > 0.9, cls  # 1.5 m < 2 m: matched again
    assert not math.isnan(out[f"{PREFIX}/NDS"]) and out[f"{PREFIX}/NDS"] < 0.8


def test_empty_predictions_on_real_data_return_zeros(synthetic_nuscenes_tiny, val_dataset):
    results = [empty_prediction(val_dataset.get_data_info(i)["sample_idx"]) for i in range(len(val_dataset))]
    with pytest.warns(UserWarning, match="predicted no box"):
        out = evaluate(synthetic_nuscenes_tiny, val_dataset, results)
    assert out[f"{PREFIX}/NDS"] == 0.0 and out[f"{PREFIX}/mAP"] == 0.0
    assert all(out[f"{PREFIX}/{cls}_{err}"] == 1.0 for cls in CLASSES for err in TP_ERRORS)


def test_boxes_all_beyond_the_class_ranges_return_zeros(synthetic_nuscenes_tiny, val_dataset):
    """mmdet3d drops boxes beyond the class ranges while formatting; an all-dropped submission
    must not reach the devkit (which raises 'Invalid box type: None' on it)."""
    results = gt_as_predictions(val_dataset, shift_x=100.0)
    assert count_predicted_boxes(results) > 0
    with pytest.warns(UserWarning, match="no predicted box is within the nuScenes class ranges"):
        out = evaluate(synthetic_nuscenes_tiny, val_dataset, results)
    assert out[f"{PREFIX}/NDS"] == 0.0 and out[f"{PREFIX}/mAP"] == 0.0 and out[f"{PREFIX}/mAAE"] == 1.0
