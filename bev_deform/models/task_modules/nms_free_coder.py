"""The head's regression code for 3D boxes, and NMS-free top-k decoding.

Code (10 values), as in DETR3D/BEVFormer (DESIGN.md)::

    (cx, cy, log w, log l, cz, log h, sin yaw, cos yaw, vx, vy)

in the LIDAR_TOP frame, where (cx, cy, cz) is the box's *gravity* centre in metres, and l, w, h
and yaw are those of mmdet3d 1.x ``LiDARInstance3DBoxes`` ``(x, y, z, l, w, h, yaw, vx, vy)``:
l is the size along the box's heading (x_size), w across it (y_size), and ``z`` of the boxes is
the *bottom* centre. Note the order: w comes before l in the code, the other way round from the
box tensor. yaw is used as is (no conversion to the pre-1.x convention, since no legacy weights
are loaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from mmdet.models.task_modules import BaseBBoxCoder
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.structures import InstanceData
from torch import Tensor

from bev_deform.registry import TASK_UTILS

CODE_SIZE = 10
CENTER_SLOTS = (0, 1, 4)  # slots of the centre (cx, cy, cz) in the code
VELOCITY_SLOTS = (8, 9)  # slots of the velocity (vx, vy), m/s, in the code


def with_velocity(codes: Tensor, velocity: Tensor) -> Tensor:
    """``codes`` (..., CODE_SIZE) with the velocity slots replaced by ``velocity`` (..., 2), m/s."""
    lo, hi = VELOCITY_SLOTS
    return torch.cat([codes[..., :lo], velocity, codes[..., hi + 1 :]], dim=-1)


class TopKDetections(NamedTuple):
    """The fixed-size top-k of :meth:`NMSFreeCoder.decode_fixed`, by decreasing score.

    Attributes:
        boxes: (B, k, 9) (x, y, z, l, w, h, yaw, vx, vy), bottom centre, as ``LiDARInstance3DBoxes``.
        scores: (B, k) sigmoid scores.
        labels: (B, k) long class ids.
        valid: (B, k) bool, the box passes the score threshold and the post-centre range (the
            entries :meth:`NMSFreeCoder.decode` keeps).
        query_ids: (B, k) long, the query each box came from.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    valid: Tensor
    query_ids: Tensor


@TASK_UTILS.register_module()
class NMSFreeCoder(BaseBBoxCoder):
    """Encode boxes into the head's code; decode the top-k of a set prediction without NMS.

    Config dict::

        dict(type='NMSFreeCoder', max_num=300, score_threshold=None,
             post_center_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0])

    Args:
        max_num: boxes kept per sample (top-k over all query-class scores).
        score_threshold: drop boxes whose sigmoid score is not above it; None keeps all top-k.
        post_center_range: (x0, y0, z0, x1, y1, z1) metres; drop boxes whose gravity centre is
            outside it; None keeps all.
    """

    def __init__(
        self,
        max_num: int = 300,
        score_threshold: float | None = None,
        post_center_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if max_num < 1:
            raise ValueError(f"max_num must be >= 1, got {max_num}")
        if post_center_range is not None and len(post_center_range) != 6:
            raise ValueError(f"post_center_range must be (x0, y0, z0, x1, y1, z1), got {post_center_range}")
        self.max_num = max_num
        self.score_threshold = score_threshold
        self.post_center_range = None if post_center_range is None else [float(v) for v in post_center_range]

    def encode(self, boxes: LiDARInstance3DBoxes) -> Tensor:
        """(N,) boxes with velocity (box_dim 9) -> (N, 10) code."""
        if boxes.box_dim != 9:
            raise ValueError(
                f"boxes must have box_dim 9 (x, y, z, l, w, h, yaw, vx, vy), got {boxes.box_dim}"
            )
        t = boxes.tensor  # (N, 9) bottom centre
        center = boxes.gravity_center  # (N, 3)
        w, length, h, yaw = t[:, 4:5], t[:, 3:4], t[:, 5:6], t[:, 6:7]
        code = [
            center[:, :2],
            w.log(),
            length.log(),
            center[:, 2:3],
            h.log(),
            yaw.sin(),
            yaw.cos(),
            t[:, 7:9],
        ]
        return torch.cat(code, dim=1)  # (N, 10)

    def decode_boxes(self, codes: Tensor) -> LiDARInstance3DBoxes:
        """(N, 10) code -> (N,) ``LiDARInstance3DBoxes`` with velocity (bottom-centre origin)."""
        if codes.dim() != 2 or codes.shape[1] != CODE_SIZE:
            raise ValueError(f"codes must be (N, {CODE_SIZE}), got shape {tuple(codes.shape)}")
        return LiDARInstance3DBoxes(self.codes_to_box_tensor(codes), box_dim=9)

    @staticmethod
    def codes_to_box_tensor(codes: Tensor) -> Tensor:
        """(..., 10) code -> (..., 9) box tensor (x, y, z, l, w, h, yaw, vx, vy), bottom centre."""
        w, length, h = codes[..., 2:3].exp(), codes[..., 3:4].exp(), codes[..., 5:6].exp()
        yaw = torch.atan2(codes[..., 6:7], codes[..., 7:8])
        z_bottom = codes[..., 4:5] - 0.5 * h
        return torch.cat([codes[..., 0:2], z_bottom, length, w, h, yaw, codes[..., 8:10]], dim=-1)

    def decode(self, cls_scores: Tensor, bbox_preds: Tensor) -> InstanceData:
        """Keep the top ``max_num`` (query, class) pairs of one sample; no NMS.

        Args:
            cls_scores: (Q, K) class logits.
            bbox_preds: (Q, 10) codes.

        Returns:
            ``InstanceData`` with ``bboxes_3d`` (``LiDARInstance3DBoxes``, box_dim 9),
            ``scores_3d`` (M,), ``labels_3d`` (M,) long, and ``query_ids`` (M,) long, the query
            each box came from (for the sampling-point visualiser); M <= max_num, by decreasing score.
        """
        num_classes = cls_scores.shape[-1]
        k = min(self.max_num, cls_scores.numel())
        scores, index = cls_scores.sigmoid().flatten().topk(k)  # (Q*K,) -> (k,)
        labels = index % num_classes
        query_ids = torch.div(index, num_classes, rounding_mode="floor")  # (k,)
        codes = bbox_preds[query_ids]  # (k, 10)
        keep = self._keep(scores, codes)
        results = InstanceData()
        results.bboxes_3d = self.decode_boxes(codes[keep])
        results.scores_3d = scores[keep]
        results.labels_3d = labels[keep]
        results.query_ids = query_ids[keep]
        return results

    def decode_fixed(self, cls_scores: Tensor, bbox_preds: Tensor) -> TopKDetections:
        """:meth:`decode`'s top-k at a fixed size, for export: no boolean indexing, no
        data-dependent shape; the score threshold and the post-centre range become ``valid``.

        The entries where ``valid`` is True are, in order, what :meth:`decode` returns.

        Args:
            cls_scores: (B, Q, K) class logits.
            bbox_preds: (B, Q, 10) codes.

        Returns:
            :class:`TopKDetections` of k = min(max_num, Q * K) boxes per sample.
        """
        if cls_scores.dim() != 3:
            raise ValueError(f"cls_scores must be (B, Q, K), got shape {tuple(cls_scores.shape)}")
        b, q, num_classes = cls_scores.shape
        if tuple(bbox_preds.shape) != (b, q, CODE_SIZE):
            raise ValueError(
                f"bbox_preds must be (B, Q, {CODE_SIZE}) = {(b, q, CODE_SIZE)}, got {tuple(bbox_preds.shape)}"
            )
        k = min(self.max_num, q * num_classes)
        scores, index = cls_scores.sigmoid().flatten(1).topk(k, dim=1)  # (B, Q*K) -> (B, k)
        labels = index % num_classes
        query_ids = torch.div(index, num_classes, rounding_mode="floor")  # (B, k)
        # (B, Q, 10) gathered at (B, k, 10) copies of each box's query -> (B, k, 10)
        codes = bbox_preds.gather(1, query_ids[..., None].expand(b, k, CODE_SIZE))
        boxes = self.codes_to_box_tensor(codes)  # (B, k, 9)
        return TopKDetections(boxes, scores, labels, self._keep(scores, codes), query_ids)

    def _keep(self, scores: Tensor, codes: Tensor) -> Tensor:
        """(...) scores and (..., 10) codes -> (...) bool: above the score threshold and with the
        gravity centre inside the post-centre range (all True where neither is set)."""
        keep = torch.ones_like(scores, dtype=torch.bool)
        if self.score_threshold is not None:
            keep = keep & (scores > self.score_threshold)
        if self.post_center_range is not None:
            lo_hi = codes.new_tensor(self.post_center_range)
            center = codes[..., [0, 1, 4]]  # (..., 3) gravity centre
            keep = keep & ((center >= lo_hi[:3]) & (center <= lo_hi[3:])).all(dim=-1)
        return keep
