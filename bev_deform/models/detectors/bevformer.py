"""The BEVFormer-style detector: as thin as ``DeformDETR3D``, whose image path it shares, plus the
history BEV that video testing carries from one frame to the next."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from mmdet3d.structures import Det3DDataSample
from torch import Tensor

from bev_deform.geometry import lidar_motion
from bev_deform.models.detectors.deform_detr3d import DeformDETR3D
from bev_deform.registry import MODELS


class History(NamedTuple):
    """The previous frame, as video testing keeps it.

    Attributes:
        bev: (1, H*W, C) its BEV (detached).
        lidar2global: (4, 4) float64 its LIDAR_TOP pose.
        scene_token: its scene.
        timestamp: its time in seconds.
    """

    bev: Tensor
    lidar2global: Tensor
    scene_token: str
    timestamp: float


def _temporal_meta(meta: dict) -> tuple[str, float, Tensor]:
    """(scene_token, timestamp, lidar2global (4, 4) float64) of one sample's metainfo."""
    missing = [k for k in ("scene_token", "timestamp", "lidar2global") if meta.get(k) is None]
    if missing:
        raise ValueError(
            f"video testing needs {missing} in every sample's metainfo, got keys {sorted(meta)}. Fix: build "
            "the dataset with BevNuScenesDataset(scene_info=True) and pack with "
            "Pack3DDetInputs(meta_keys=bev_deform.datasets.PACK_META_KEYS)"
        )
    pose = torch.as_tensor(np.asarray(meta["lidar2global"], dtype=np.float64))
    return str(meta["scene_token"]), float(meta["timestamp"]), pose


@MODELS.register_module()
class BEVFormer(DeformDETR3D):
    """Camera images -> backbone + neck per camera -> ``BEVFormerHead`` (BEV encoder, decoder on
    the BEV, set-prediction branches).

    Everything but the head is ``DeformDETR3D``'s: the same data preprocessor, GridMask,
    optional image encoder after the neck (``img_encoder``), channels-last option and
    training-only auxiliary image head; ``loss()`` and ``predict()``
    call the head's. Without temporal fusion every frame is its own history (BEVFormer's first
    frame).

    Video testing (``video_test=True``): ``predict`` takes the samples of a batch in order as
    consecutive frames and carries each frame's BEV to the next, aligned by the exact ego motion
    between their LIDAR_TOP poses (:meth:`BEVGrid.align_history`, from the ``lidar2global`` of
    the metainfo; no CAN bus). The history is dropped (``num_history_resets`` counts it) at the
    first frame, at a scene change, and when the time gap to the previous frame exceeds
    ``max_history_gap`` seconds (a missing frame) or is not positive (out of order). A test
    must therefore feed each scene's samples in time order to one process
    (``SceneSequentialSampler``).

    Config dict::

        dict(type='BEVFormer', data_preprocessor=..., img_backbone=..., img_neck=...,
             grid_mask=..., bbox_head=dict(type='BEVFormerHead', ...), video_test=True)

    Args:
        video_test: carry the history BEV across ``predict`` calls.
        max_history_gap: seconds; a larger gap between frames resets the history.
        **kwargs: :class:`DeformDETR3D`'s arguments.
    """

    def __init__(self, *args, video_test: bool = False, max_history_gap: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if max_history_gap <= 0:
            raise ValueError(f"max_history_gap must be > 0 seconds, got {max_history_gap}")
        self.video_test = video_test
        self.max_history_gap = float(max_history_gap)
        self.num_history_resets = 0
        self.history: History | None = None

    def reset_history(self) -> None:
        """Forget the previous frame (the next one starts without history)."""
        self.history = None

    def _aligned_history(self, meta: dict, device: torch.device) -> tuple[Tensor | None, Tensor | None]:
        """The previous BEV aligned with this frame's grid and its validity, or (None, None) (and
        a counted reset) when this frame starts a sequence."""
        scene, stamp, pose = _temporal_meta(meta)
        prev = self.history
        gap = None if prev is None else stamp - prev.timestamp
        if prev is None or prev.scene_token != scene or not 0 < gap <= self.max_history_gap:
            self.num_history_resets += 1
            return None, None
        motion = lidar_motion(prev.lidar2global, pose)  # (4, 4) previous -> current LIDAR_TOP
        grid = self.bbox_head.grid
        aligned, valid = grid.align_history(prev.bev, motion[None].to(device))
        return aligned, valid

    def predict(
        self, batch_inputs_dict: dict, batch_data_samples: list[Det3DDataSample]
    ) -> list[Det3DDataSample]:
        """The data samples with ``pred_instances_3d``; with ``video_test`` the samples are run one
        by one in order, each with the aligned BEV of the one before (see the class docstring)."""
        if not self.video_test:
            return super().predict(batch_inputs_dict, batch_data_samples)
        metas = [s.metainfo for s in batch_data_samples]
        feats = self.extract_feat(batch_inputs_dict, metas)  # L x (B, N, C, H_l, W_l)
        results = []
        for b, meta in enumerate(metas):
            history, valid = self._aligned_history(meta, feats[0].device)
            outs = self.bbox_head([f[b : b + 1] for f in feats], [meta], history=history, history_valid=valid)
            scene, stamp, pose = _temporal_meta(meta)
            self.history = History(outs["bev_embed"].detach(), pose, scene, stamp)
            results += self.bbox_head.predict_by_feat(outs["all_cls_scores"], outs["all_bbox_preds"])
        return self.add_pred_to_datasample(batch_data_samples, results)
