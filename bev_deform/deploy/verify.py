"""An exported model against the PyTorch detector on one preprocessed sample: the largest
differences of the pre-top-k scores and codes, and the detections matched by (query, class)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .onnx_runtime import run_session


class SampleDiff(NamedTuple):
    """ONNX Runtime vs PyTorch on one sample.

    Attributes:
        score_diff: max |sigmoid score difference| over the (Q, K) pre-top-k scores; None when
            the export has no debug outputs.
        code_diff: max |difference| over the (Q, 10) pre-top-k box codes; None likewise.
        num_torch: detections ``NMSFreeCoder.decode`` keeps in PyTorch.
        num_onnx: entries the export marks ``valid``.
        num_matched: detections in both, matched by (query, class) (by rank without debug outputs).
        num_unmatched: detections in only one of them.
        num_boundary: of those, the ones whose score is within ``atol`` of the k-th score (a
            near-tie swapped across the top-k boundary).
        box_diff: max |difference| of the matched boxes' 9 values.
        det_score_diff: max |difference| of the matched detections' scores.
    """

    score_diff: float | None
    code_diff: float | None
    num_torch: int
    num_onnx: int
    num_matched: int
    num_unmatched: int
    num_boundary: int
    box_diff: float
    det_score_diff: float

    def ok(self, atol: float) -> bool:
        """Raw outputs within ``atol``, the same detections up to boundary near-ties, boxes and
        scores of matched ones within ``atol``."""
        raw = all(d is None or d <= atol for d in (self.score_diff, self.code_diff))
        same = self.num_unmatched == self.num_boundary
        return raw and same and self.box_diff <= atol and self.det_score_diff <= atol


def compare_with_pytorch(detector: nn.Module, session, data: dict, atol: float = 1e-4) -> SampleDiff:
    """Run ``data`` (a batch of one through ``detector.data_preprocessor``) in both and compare.

    Raises:
        ValueError: when the batch's image shapes differ from those the model was exported for.
    """
    imgs = data["inputs"]["imgs"]
    meta = data["data_samples"][0].metainfo
    _check_shapes(session, imgs, meta)
    lidar2img = np.asarray(meta["lidar2img"], dtype=np.float32)[None]  # (1, N, 4, 4)
    out = run_session(session, imgs.numpy(), lidar2img)
    with torch.no_grad():
        all_cls, all_codes = detector(**data, mode="tensor")
    cls_scores, codes = all_cls[-1][0], all_codes[-1][0]  # (Q, K), (Q, 10)
    pred = detector.bbox_head.bbox_coder.decode(cls_scores, codes)
    score_diff = code_diff = None
    if "cls_scores" in out:
        score_diff = float(np.abs(out["cls_scores"][0] - cls_scores.sigmoid().numpy()).max())
        code_diff = float(np.abs(out["bbox_codes"][0] - codes.numpy()).max())

    valid = out["valid"][0]
    num_classes = cls_scores.shape[1]
    torch_keys = (pred.query_ids * num_classes + pred.labels_3d).tolist()
    if "query_ids" in out:
        onnx_keys = (out["query_ids"][0] * num_classes + out["labels"][0])[valid].tolist()
    else:  # by rank
        torch_keys, onnx_keys = list(range(len(torch_keys))), list(range(int(valid.sum())))
    onnx_rows = {key: i for i, key in enumerate(onnx_keys)}
    torch_rows = {key: i for i, key in enumerate(torch_keys)}
    matched = [(torch_rows[k], onnx_rows[k]) for k in torch_keys if k in onnx_rows]
    t_idx = np.array([t for t, _ in matched], dtype=np.int64)
    o_idx = np.array([o for _, o in matched], dtype=np.int64)
    boxes_t, scores_t = pred.bboxes_3d.tensor.numpy(), pred.scores_3d.numpy()
    boxes_o, scores_o = out["boxes"][0][valid], out["scores"][0][valid]
    kth = float(out["scores"][0][-1])
    unmatched = [scores_t[torch_rows[k]] for k in torch_keys if k not in onnx_rows]
    unmatched += [scores_o[onnx_rows[k]] for k in onnx_keys if k not in torch_rows]
    boundary = sum(abs(float(s) - kth) <= atol for s in unmatched)
    box_diff = _box_diff(boxes_o[o_idx], boxes_t[t_idx])
    return SampleDiff(
        score_diff=score_diff,
        code_diff=code_diff,
        num_torch=len(torch_keys),
        num_onnx=len(onnx_keys),
        num_matched=len(matched),
        num_unmatched=len(unmatched),
        num_boundary=boundary,
        box_diff=box_diff,
        det_score_diff=_max_abs(scores_o[o_idx], scores_t[t_idx]),
    )


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max()) if a.size else 0.0


def _box_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over (n, 9) boxes, yaw (slot 6) compared modulo 2 pi (atan2 may flip pi to -pi)."""
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b)
    diff[:, 6] = np.abs((a[:, 6] - b[:, 6] + np.pi) % (2 * np.pi) - np.pi)
    return float(diff.max())


def _check_shapes(session, imgs: torch.Tensor, meta: dict) -> None:
    """The sample's padded batch and image size are the ones the model was exported for."""
    props = session.get_modelmeta().custom_metadata_map
    expected = tuple(session.get_inputs()[0].shape)
    if tuple(imgs.shape) != expected:
        raise ValueError(f"the sample's images {tuple(imgs.shape)} differ from the model's input {expected}")
    img_shape = props.get("img_shape")
    got = ",".join(str(int(s)) for s in np.asarray(meta["img_shape"]).ravel()[:2])
    if img_shape is not None and got != img_shape:
        raise ValueError(f"the sample's img_shape ({got}) differs from the exported model's ({img_shape})")
