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

import torch
from mmdet.models.task_modules import BaseBBoxCoder
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.structures import InstanceData
from torch import Tensor

from bev_deform.registry import TASK_UTILS

CODE_SIZE = 10
CENTER_SLOTS = (0, 1, 4)  # slots of the centre (cx, cy, cz) in the code


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
        w, length, h = codes[:, 2:3].exp(), codes[:, 3:4].exp(), codes[:, 5:6].exp()
        yaw = torch.atan2(codes[:, 6:7], codes[:, 7:8])
        z_bottom = codes[:, 4:5] - 0.5 * h
        boxes = torch.cat([codes[:, 0:2], z_bottom, length, w, h, yaw, codes[:, 8:10]], dim=1)  # (N, 9)
        return LiDARInstance3DBoxes(boxes, box_dim=9)

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
        keep = torch.ones_like(scores, dtype=torch.bool)
        if self.score_threshold is not None:
            keep &= scores > self.score_threshold
        if self.post_center_range is not None:
            lo_hi = codes.new_tensor(self.post_center_range)
            center = codes[:, [0, 1, 4]]  # (k, 3) gravity centre
            keep &= ((center >= lo_hi[:3]) & (center <= lo_hi[3:])).all(dim=1)
        results = InstanceData()
        results.bboxes_3d = self.decode_boxes(codes[keep])
        results.scores_3d = scores[keep]
        results.labels_3d = labels[keep]
        results.query_ids = query_ids[keep]
        return results
