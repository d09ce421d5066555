"""A thin wrapper over mmdet3d's ``NuScenesMetric`` (which calls the real nuscenes-devkit)."""

from __future__ import annotations

import logging
import math
import os.path as osp
import warnings
from collections.abc import Sequence

import mmengine
from mmdet3d.evaluation.metrics import NuScenesMetric
from mmengine.logging import MMLogger, print_log
from mmengine.structures import InstanceData
from terminaltables import AsciiTable

from bev_deform.registry import METRICS

# nuScenes version -> the devkit's evaluation split, as mmdet3d's NuScenesMetric maps them
EVAL_SPLITS = {"v1.0-mini": "mini_val", "v1.0-trainval": "val"}
# the test split has no annotations: its predictions are only formatted, for the evaluation server
TEST_VERSION = "v1.0-test"
VERSIONS = (*EVAL_SPLITS, TEST_VERSION)
# the ``meta`` block of a submission (the devkit's five keys): a camera-only method without map or
# external data (ImageNet pre-training is allowed in the nuScenes vision track)
CAMERA_SUBMISSION_META = dict(
    use_camera=True, use_lidar=False, use_radar=False, use_map=False, use_external=False
)
TP_ERRORS = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")


def count_predicted_boxes(results: list[dict]) -> int:
    """Number of 3D boxes over all processed samples (a sample without ``bboxes_3d`` counts 0)."""
    total = 0
    for result in results:
        pred = result.get("pred_instances_3d")
        if pred is not None and "bboxes_3d" in pred:
            total += len(pred["bboxes_3d"])
    return total


def warn_no_boxes(reason: str, format_only: bool = False) -> None:
    """Warn (Python warning and the current logger) that the devkit is skipped because of ``reason``."""
    if format_only:
        msg = f"BevNuScenesMetric: {reason}; no submission file is written"
    else:
        msg = (
            f"BevNuScenesMetric: {reason}; returning AP/mAP/NDS 0 and TP errors 1 without running the devkit"
        )
    warnings.warn(msg, stacklevel=3)
    print_log(msg, logger="current", level=logging.WARNING)


def check_version(version: str | None, format_only: bool, what: str) -> None:
    """Raise ``ValueError`` unless ``version`` is a nuScenes version this metric can handle:
    an evaluation split, or the test split when only formatting."""
    if version not in VERSIONS:
        raise ValueError(
            f"{what} must be one of {list(VERSIONS)}, got {version!r}: set metainfo=dict(version=...) "
            f"on the val/test dataset or version=... on the metric"
        )
    if version == TEST_VERSION and not format_only:
        raise ValueError(
            f"{what} is {TEST_VERSION!r}, which has no annotations to evaluate: set format_only=True and "
            f"jsonfile_prefix to write the submission (tools/test.py CONFIG CKPT --format-only --out-dir D)"
        )


@METRICS.register_module()
class BevNuScenesMetric(NuScenesMetric):
    """mmdet3d's :class:`NuScenesMetric` (NDS, mAP, per-class AP and TP errors from the
    nuscenes-devkit) with these additions:

    - a submission without a single box does not reach the devkit, which would crash on it
      (``Exception: Error: Invalid box type: None``; mmdet3d itself fails earlier with an
      ``AttributeError`` when ``pred_instances_3d`` has no ``bboxes_3d``). This happens with
      an untrained model, a too high score threshold, or boxes all beyond the class ranges
      (40 / 50 m, dropped while formatting). A warning is issued and every metric key of a
      normal run is returned with the value for "nothing detected": AP, mAP and NDS 0.0,
      TP errors (mATE ... mAAE, per-class ``*_err``) 1.0, their worst value;
    - the nuScenes version may be given here; otherwise it is read from the dataset's
      metainfo (``metainfo=dict(version='v1.0-mini')`` in the dataset config), and an
      unsupported one raises ``ValueError`` before any work is done;
    - a per-class table (AP at each distance threshold and the five TP errors) and the
      mAP / NDS line are logged after the evaluation;
    - the test split ('v1.0-test', no annotations) is accepted with ``format_only=True``:
      mmdet3d's formatting writes the submission ``{jsonfile_prefix}/pred_instances_3d/
      results_nusc.json`` (``meta`` = ``modality``, ``results`` keyed by every sample token of
      ``ann_file``) and nothing is evaluated (``tools/test.py CONFIG CKPT --format-only
      --out-dir D`` sets this up);
    - ``modality`` (the submission's ``meta``) defaults to a camera-only method
      (:data:`CAMERA_SUBMISSION_META`) instead of mmdet3d's lidar one, and must have the
      devkit's five keys.

    Args:
        data_root: nuScenes root holding ``v1.0-*/`` tables (the devkit reads the GT there).
        ann_file: the info file the predictions' ``sample_idx`` index into.
        version: 'v1.0-mini', 'v1.0-trainval' or 'v1.0-test' (only with ``format_only``); None
            reads ``dataset_meta['version']``.
        modality: the submission's ``meta`` block: use_camera, use_lidar, use_radar, use_map,
            use_external; None is :data:`CAMERA_SUBMISSION_META`.
        format_only: write the submission to ``jsonfile_prefix`` and return no metrics.
        jsonfile_prefix: the directory of the submission (required with ``format_only``).
        **kwargs: the other arguments of :class:`NuScenesMetric` (metric, prefix, eval_version,
            collect_device, backend_args).
    """

    def __init__(
        self,
        data_root: str,
        ann_file: str,
        version: str | None = None,
        modality: dict | None = None,
        format_only: bool = False,
        jsonfile_prefix: str | None = None,
        **kwargs,
    ) -> None:
        if version is not None:
            check_version(version, format_only, "version")
        if format_only and not jsonfile_prefix:
            raise ValueError(
                "format_only=True needs jsonfile_prefix (the directory the submission JSON is written to)"
            )
        modality = dict(CAMERA_SUBMISSION_META if modality is None else modality)
        missing = sorted(set(CAMERA_SUBMISSION_META) - set(modality))
        if missing:
            raise ValueError(
                f"modality is the submission's meta block and needs the keys "
                f"{sorted(CAMERA_SUBMISSION_META)}; {missing} missing in {modality}"
            )
        super().__init__(
            data_root=data_root,
            ann_file=ann_file,
            modality=modality,
            format_only=format_only,
            jsonfile_prefix=jsonfile_prefix,
            **kwargs,
        )
        self.nus_version = version

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each sample's ``pred_instances_3d`` and ``sample_idx``; a sample without 2D
        predictions (``pred_instances``, which mmdet3d's metric requires) gets an empty one."""
        for sample in data_samples:
            sample.setdefault("pred_instances", InstanceData())
        super().process(data_batch, data_samples)

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        """Evaluate ``results`` (one dict per sample, from :meth:`process`) with the devkit.

        Returns:
            ``{'pred_instances_3d_NuScenes/NDS': ..., '.../mAP': ..., '.../car_AP_dist_0.5': ..., ...}``.
        """
        if not self.dataset_meta or "classes" not in self.dataset_meta:
            raise ValueError(
                "dataset_meta with 'classes' is not set; the Runner sets it from the val dataset, "
                "elsewhere set metric.dataset_meta = dataset.metainfo"
            )
        version = self.nus_version or self.dataset_meta.get("version")
        check_version(version, self.format_only, "the nuScenes version (metainfo or metric)")
        self.dataset_meta = dict(self.dataset_meta, version=version)
        classes = list(self.dataset_meta["classes"])
        if count_predicted_boxes(results) == 0:
            warn_no_boxes(
                f"the model predicted no box in any of the {len(results)} samples", self.format_only
            )
            return {} if self.format_only else self.no_detection_metrics(classes)
        metrics = super().compute_metrics(results)
        if self.format_only:
            path = osp.join(self.jsonfile_prefix, "pred_instances_3d", "results_nusc.json")
            print_log(f"nuScenes submission ({version}) written to {path}", logger="current")
        for prefix in sorted({key.rsplit("/", 1)[0] for key in metrics if key.endswith("/NDS")}):
            print_log(
                "\n" + self.format_table(metrics, classes, prefix), logger=MMLogger.get_current_instance()
            )
        return metrics

    def _evaluate_single(
        self, result_path: str, classes: list[str] | None = None, result_name: str = "pred_instances_3d"
    ) -> dict[str, float]:
        """Run the devkit on the submission at ``result_path`` unless it holds no box."""
        submission = mmengine.load(result_path)
        if not any(submission["results"].values()):
            warn_no_boxes("no predicted box is within the nuScenes class ranges (all were dropped)")
            return self.no_detection_metrics(classes, result_name)
        return super()._evaluate_single(result_path, classes, result_name)

    def no_detection_metrics(
        self, classes: list[str], result_name: str = "pred_instances_3d"
    ) -> dict[str, float]:
        """The keys of a devkit run with the values for nothing detected: AP, mAP and NDS 0, TP errors 1."""
        prefix = f"{result_name}_NuScenes"
        out = {}
        for name in classes:
            for dist in self.eval_detection_configs.dist_ths:
                out[f"{prefix}/{name}_AP_dist_{float(dist)}"] = 0.0
            for err in TP_ERRORS:
                out[f"{prefix}/{name}_{err}"] = 1.0
        for err in TP_ERRORS:
            out[f"{prefix}/{self.ErrNameMapping[err]}"] = 1.0
        out[f"{prefix}/NDS"] = 0.0
        out[f"{prefix}/mAP"] = 0.0
        return out

    def format_table(self, metrics: dict[str, float], classes: list[str], prefix: str) -> str:
        """Per-class AP at every distance threshold and TP errors, then mAP and NDS, as text."""
        dists = [float(d) for d in self.eval_detection_configs.dist_ths]
        header = ["class"] + [f"AP@{d:g}m" for d in dists] + ["AP", "ATE", "ASE", "AOE", "AVE", "AAE"]
        rows = [header]
        for name in classes:
            aps = [metrics.get(f"{prefix}/{name}_AP_dist_{d}", math.nan) for d in dists]
            errs = [metrics.get(f"{prefix}/{name}_{err}", math.nan) for err in TP_ERRORS]
            rows.append([name] + [f"{v:.4f}" for v in aps + [sum(aps) / len(aps)] + errs])
        means = [metrics[f"{prefix}/{self.ErrNameMapping[err]}"] for err in TP_ERRORS]
        rows.append(["mean"] + [""] * len(dists) + [f"{v:.4f}" for v in [metrics[f"{prefix}/mAP"]] + means])
        table = AsciiTable(rows, title=f" {prefix} ")
        table.inner_footing_row_border = True
        return f"{table.table}\nmAP: {metrics[f'{prefix}/mAP']:.4f}  NDS: {metrics[f'{prefix}/NDS']:.4f}"
