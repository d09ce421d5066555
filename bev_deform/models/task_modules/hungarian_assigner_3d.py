"""One-to-one matching of 3D box predictions to ground truth, and its 3D L1 match cost.

mmdet's ``HungarianAssigner`` does the matching (weighted sum of match costs, scipy's
``linear_sum_assignment``); this module only builds the costs from our registry, so that our
``BBox3DL1Cost`` and mmdet's ``FocalLossCost`` (``'mmdet.FocalLossCost'``) are found without a
default scope. Predictions and ground truth are compared in the head's regression code (see
:mod:`bev_deform.models.task_modules.nms_free_coder`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.models.task_modules.assigners import HungarianAssigner
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmengine.structures import InstanceData
from torch import Tensor

from bev_deform.registry import TASK_UTILS


@TASK_UTILS.register_module()
class BBox3DL1Cost(BaseMatchCost):
    """L1 distance between box codes, over the first ``num_dims`` code entries.

    The default 8 compares (cx, cy, log w, log l, cz, log h, sin, cos) and leaves velocity out of
    the matching, as DETR3D does.

    Config dict::

        dict(type='BBox3DL1Cost', weight=0.25)

    Args:
        weight: cost weight.
        num_dims: leading code entries compared.
    """

    def __init__(self, weight: float = 1.0, num_dims: int = 8) -> None:
        super().__init__(weight=weight)
        if num_dims < 1:
            raise ValueError(f"num_dims must be >= 1, got {num_dims}")
        self.num_dims = num_dims

    def __call__(
        self, pred_instances: InstanceData, gt_instances: InstanceData, img_meta: dict | None = None, **kwargs
    ) -> Tensor:
        """``pred_instances.bboxes`` (P, D) and ``gt_instances.bboxes`` (G, D) codes -> (P, G) cost."""
        pred, gt = pred_instances.bboxes, gt_instances.bboxes
        for name, codes in (("pred_instances.bboxes", pred), ("gt_instances.bboxes", gt)):
            if codes.dim() != 2 or codes.shape[1] < self.num_dims:
                raise ValueError(f"{name} must be (n, >= {self.num_dims}), got shape {tuple(codes.shape)}")
        return torch.cdist(pred[:, : self.num_dims], gt[:, : self.num_dims], p=1) * self.weight


@TASK_UTILS.register_module()
class HungarianAssigner3D(HungarianAssigner):
    """Hungarian matching of box-code predictions to ground-truth codes.

    ``assign(pred_instances, gt_instances)`` (inherited from mmdet) expects
    ``pred_instances.scores`` (P, K) class logits and ``.bboxes`` (P, 10) codes,
    ``gt_instances.labels`` (G,) and ``.bboxes`` (G, 10) codes, and returns an ``AssignResult``
    whose ``gt_inds`` are 0 for background and ``1 + gt index`` for matched predictions.

    Config dict::

        dict(type='HungarianAssigner3D', match_costs=[
            dict(type='mmdet.FocalLossCost', weight=2.0),
            dict(type='BBox3DL1Cost', weight=0.25)])

    Args:
        match_costs: match cost configs, summed.
    """

    def __init__(self, match_costs: Sequence[dict] | dict | None = None) -> None:
        if match_costs is None:
            match_costs = [
                dict(type="mmdet.FocalLossCost", weight=2.0),
                dict(type=BBox3DL1Cost, weight=0.25),
            ]
        if isinstance(match_costs, dict):
            match_costs = [match_costs]
        if len(match_costs) == 0:
            raise ValueError("match_costs must name at least one cost, got an empty list")
        self.match_costs = [TASK_UTILS.build(cost) for cost in match_costs]
