"""The BEVFormer-style detector: as thin as ``DeformDETR3D``, whose image path it shares, plus the
history BEV that video testing carries from one frame to the next."""

from __future__ import annotations

from numbers import Integral
from typing import NamedTuple

import torch
from mmdet3d.structures import Det3DDataSample
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from bev_deform.geometry import ego_motion_features, lidar_motion, meta_matrix, no_ego_motion
from bev_deform.models.detectors.deform_detr3d import DeformDETR3D
from bev_deform.models.layers.bevformer_decoder import PastCameras
from bev_deform.models.layers.history_track import PastDetections
from bev_deform.models.layers.query_propagation import PastQueries
from bev_deform.models.task_modules.velocity_refiner import VelocityRefiner
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


class Frame(NamedTuple):
    """A recent frame, as video testing with ``history_depth`` keeps it: its neck levels, L x
    (1, N, C, H_l, W_l), and its metainfo."""

    feats: list[Tensor]
    meta: dict


def _temporal_meta(meta: dict) -> tuple[str, float, Tensor]:
    """(scene_token, timestamp, lidar2global (4, 4) float64) of one sample's metainfo."""
    missing = [k for k in ("scene_token", "timestamp", "lidar2global") if meta.get(k) is None]
    if missing:
        raise ValueError(
            f"video testing needs {missing} in every sample's metainfo, got keys {sorted(meta)}. Fix: build "
            "the dataset with BevNuScenesDataset(scene_info=True) and pack with "
            "bev_deform.datasets.transforms.PackMultiViewInputs (its default meta_keys)"
        )
    return str(meta["scene_token"]), float(meta["timestamp"]), meta_matrix(meta)


def _temporal_pose(meta: dict) -> tuple[Tensor, str, float]:
    """(lidar2global, scene_token, timestamp) of one sample's metainfo, in :class:`History` order."""
    scene, stamp, pose = _temporal_meta(meta)
    return pose, scene, stamp


@MODELS.register_module()
class BEVFormer(DeformDETR3D):
    """Camera images -> backbone + neck per camera -> ``BEVFormerHead`` (BEV encoder, decoder on
    the BEV, set-prediction branches).

    Everything but the head is ``DeformDETR3D``'s: the same data preprocessor, GridMask,
    optional image encoder after the neck (``img_encoder``), channels-last option and
    training-only auxiliary image head, and query selection (``query_selection=k``: the first k
    object queries start at the aux head's top-k image peaks lifted to 3D, their (x, y) on the
    BEV); ``loss()`` and ``predict()`` call the head's. Without temporal fusion every frame is its
    own history (BEVFormer's first frame).

    Video testing (``video_test=True``): ``predict`` takes the samples of a batch in order as
    consecutive frames and carries each frame's BEV to the next, aligned by the exact ego motion
    between their LIDAR_TOP poses (:meth:`BEVGrid.align_history`, from the ``lidar2global`` of
    the metainfo; no CAN bus). The history is dropped (``num_history_resets`` counts it) at the
    first frame, at a scene change, and when the time gap to the previous frame exceeds
    ``max_history_gap`` seconds (a missing frame) or is not positive (out of order). A test
    must therefore feed each scene's samples in time order to one process
    (``SceneSequentialSampler``).

    The history is recurrent by default (``history_depth=None``): each frame's BEV, itself built
    on the history before it, is the next frame's history, so a frame late in a scene sees a
    chain of every frame before it, as BEVFormer tests. Queue training builds a chain of only
    T - 1 frames; ``history_depth=k`` tests the same way: each frame's history is rebuilt from its
    k previous frames of the sequence (their neck levels kept), the first of them encoded without
    history, as ``queue_length=k + 1`` trains (``k + 1`` encoder runs per frame, one backbone run).
    With ``history_stride=s`` the history frames are every s-th frame before (the frames s, 2 s,
    ..., k s before, their neck levels kept for the k s frames before), as the dataset's
    ``queue_stride=s`` trains: a history s frame gaps old, and each step of a chain may span up to
    s x ``max_history_gap``.

    Queue training: when the samples carry a ``queue`` of earlier frames
    (``BevNuScenesDataset(queue_length=T)``: their images ahead of the sample's own), ``loss``
    first runs the earlier frames, in eval mode and without gradients as BEVFormer does, through
    the backbone and the BEV encoder, each with the aligned BEV of the frame before, and trains
    the sample on the aligned BEV of the last one. The history is dropped where it would be at
    test time (padding frames before a scene start, time gaps), per sample. With
    ``queue_norm='batch'`` the batch-norm layers that train (``norm_eval=False``) normalise the
    earlier frames with their batch's statistics, as they normalise the sample's own frame,
    without updating their running statistics; ``'running'`` (default, BEVFormer's eval mode)
    normalises them with the running statistics, so that in training the decoder's
    ``history_attn`` / ``history_match`` compare frames normalised two ways (a frozen backbone,
    ``norm_eval=True``, is the same either way). With the head's ``history_track`` or
    ``query_propagation`` the earlier frames are decoded too (each reading the cameras of the
    frame before and, with ``query_propagation``, starting from its queries, as the sample's frame
    reads and starts from the last of them), and their detections
    (:meth:`BEVFormerHead.past_detections`) and the last one's queries
    (:meth:`BEVFormerHead.past_queries`) go to the sample's frame; video testing with
    ``history_depth`` decodes its chain the same way.

    Config dict::

        dict(type='BEVFormer', data_preprocessor=..., img_backbone=..., img_neck=...,
             grid_mask=..., bbox_head=dict(type='BEVFormerHead', ...), video_test=True)

    Args:
        video_test: carry the history BEV across ``predict`` calls.
        max_history_gap: seconds; a larger gap between frames resets the history.
        history_depth: None (the recurrent history), or k >= 1: video testing rebuilds each
            frame's history from its k previous frames, as queue training with ``queue_length=k + 1``.
        history_stride: s >= 1 (default 1): the history frames are every s-th frame before, as
            the dataset's ``queue_stride=s`` trains; s > 1 needs ``history_depth``.
        queue_norm: ``'running'`` (default) or ``'batch'``: the statistics with which the batch
            norms that train normalise a queue's earlier frames (see above).
        velocity_refine: None, or the config of a :class:`VelocityRefiner` (video testing only):
            each frame's velocities of the classes it names voted from the detections of the
            earlier frames of the sequence (test time; nothing learned).
        fine_level: keep the backbone's first output (its ``out_indices`` start with the stride-4
            stage, the neck's ``in_channels`` name the others) after the neck's levels, for a
            decoder whose ``history_match`` reads ``level='fine'`` (both or neither). The neck and
            every other module compute what they compute without it.
        **kwargs: :class:`DeformDETR3D`'s arguments.
    """

    def __init__(
        self,
        *args,
        video_test: bool = False,
        max_history_gap: float = 1.0,
        history_depth: int | None = None,
        history_stride: int = 1,
        queue_norm: str = "running",
        fine_level: bool = False,
        velocity_refine: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        reads_fine = getattr(self.bbox_head.transformer.decoder, "reads_fine", False)
        if bool(fine_level) != reads_fine:
            raise ValueError(
                f"fine_level={fine_level!r} but the decoder's history_match "
                f"{'reads' if reads_fine else 'does not read'} level='fine': set both or neither"
            )
        self.fine_level = bool(fine_level)
        if queue_norm not in ("running", "batch"):
            raise ValueError(f"queue_norm must be 'running' or 'batch', got {queue_norm!r}")
        self.queue_norm = queue_norm
        if max_history_gap <= 0:
            raise ValueError(f"max_history_gap must be > 0 seconds, got {max_history_gap}")
        if history_depth is not None and (
            isinstance(history_depth, bool) or not isinstance(history_depth, Integral) or history_depth < 1
        ):
            raise ValueError(
                f"history_depth must be None (recurrent) or an integer >= 1, got {history_depth!r}"
            )
        if isinstance(history_stride, bool) or not isinstance(history_stride, Integral) or history_stride < 1:
            raise ValueError(f"history_stride must be an integer >= 1, got {history_stride!r}")
        if history_stride > 1 and history_depth is None:
            raise ValueError(
                f"history_stride={history_stride} needs history_depth (the recurrent history is the "
                "previous frame's BEV); set history_depth to the queue length - 1"
            )
        if (
            video_test
            and history_depth is None
            and getattr(self.bbox_head.transformer.decoder, "reads_past", False)
        ):
            raise ValueError(
                "the decoder's history_attn reads an earlier frame's neck levels, which video testing keeps "
                "only with history_depth; set history_depth to the queue length - 1"
            )
        if video_test and history_depth is None and getattr(self.bbox_head, "decodes_past", False):
            raise ValueError(
                "the head's history_track / query_propagation read the earlier frames decoded, which video "
                "testing decodes only with history_depth; set history_depth to the queue length - 1"
            )
        if velocity_refine is not None and not video_test:
            raise ValueError(
                "velocity_refine votes from the earlier frames of a video test: set video_test=True, "
                f"got velocity_refine={velocity_refine!r} with video_test=False"
            )
        self.velocity_refiner = None if velocity_refine is None else VelocityRefiner(**velocity_refine)
        self.last_frame: tuple[str, float] | None = None  # (scene, timestamp) of the last frame tested
        self.video_test = video_test
        self.max_history_gap = float(max_history_gap)
        self.history_depth = None if history_depth is None else int(history_depth)
        self.history_stride = int(history_stride)
        self.num_history_resets = 0
        self.history: History | None = None
        self.recent: list[Frame] = []  # with history_depth: the last k x s frames of the sequence

    def reset_history(self) -> None:
        """Forget the previous frames (the next one starts without history)."""
        self.history = None
        self.recent = []
        self.last_frame = None
        if self.velocity_refiner is not None:
            self.velocity_refiner.reset()

    def _follows(self, prev_scene: str, prev_stamp: float, scene: str, stamp: float, steps: int = 1) -> bool:
        """Whether a frame (``scene``, ``stamp``) continues the sequence of a frame ``steps``
        frames before (``prev_scene``, ``prev_stamp``): the same scene, and a time gap in
        (0, ``steps`` x ``max_history_gap``]."""
        return scene == prev_scene and 0 < stamp - prev_stamp <= steps * self.max_history_gap

    def _continues(self, prev: History | None, meta: dict) -> bool:
        """Whether ``prev`` is the history of the frame of ``meta``: the same scene, a gap in
        (0, ``history_stride`` x ``max_history_gap``]."""
        if prev is None:
            return False
        scene, stamp, _ = _temporal_meta(meta)
        return self._follows(prev.scene_token, prev.timestamp, scene, stamp, self.history_stride)

    def _align(
        self, prev: History | None, meta: dict, device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """``prev``'s BEV aligned with the frame of ``meta``, its validity and the ego motion
        between the two, (1, H*W, C), (1, H*W) and (1, 6) (:func:`ego_motion_features`); None
        where the frame starts a sequence (no previous frame, another scene, a gap above
        ``history_stride`` x ``max_history_gap`` or not positive)."""
        if not self._continues(prev, meta):
            return None
        _, stamp, pose = _temporal_meta(meta)
        motion = lidar_motion(prev.lidar2global, pose)  # (4, 4) previous -> current LIDAR_TOP
        aligned, valid = self.bbox_head.grid.align_history(prev.bev, motion[None].to(device))
        ego = ego_motion_features(motion[None], torch.tensor([stamp - prev.timestamp], dtype=motion.dtype))
        return aligned, valid, ego.to(device=device, dtype=torch.float32)

    def _batch_history(
        self, prevs: list[History | None], metas: list[dict], device: torch.device
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Per sample :meth:`_align`, stacked: (B, H*W, C), (B, H*W) and (B, 6), zeros and False
        for the samples without history (TSA treats those cells as a first frame's, the
        ego-motion embedding sees no motion); (None, None, None) when no sample has one."""
        aligned = [self._align(p, m, device) for p, m in zip(prevs, metas)]
        if all(a is None for a in aligned):
            return None, None, None
        like = next(a for a in aligned if a is not None)
        bevs = [a[0] if a is not None else torch.zeros_like(like[0]) for a in aligned]
        valid = [a[1] if a is not None else torch.zeros_like(like[1]) for a in aligned]
        ego = [a[2] if a is not None else no_ego_motion(1, device=device) for a in aligned]
        return torch.cat(bevs), torch.cat(valid), torch.cat(ego)

    def _queue_history(
        self, imgs: Tensor, samples: list[Det3DDataSample], n: int
    ) -> tuple[tuple[Tensor | None, ...], PastCameras | None, PastDetections | None, PastQueries | None]:
        """The BEV history of each sample from its queue's T - 1 earlier frames (``imgs``
        (B, (T-1)*N, 3, H, W)), aligned with the sample's own frame (see the class docstring),
        the last of those frames' cameras for a decoder with ``history_attn``, with the head's
        ``history_track`` those frames' detections, and with its ``query_propagation`` the last
        frame's queries."""
        b, t = len(samples), imgs.shape[1] // n
        prevs: list[History | None] = [None] * b
        was_training = self.training
        # queue_norm='batch': the batch norms that train normalise with the batch's statistics,
        # their running statistics left as they are (momentum 0)
        batch_norms = []
        if self.queue_norm == "batch":
            batch_norms = [
                (m, m.momentum) for m in self.modules() if isinstance(m, _BatchNorm) and m.training
            ]
        self.eval()
        for m, _ in batch_norms:
            m.train()
            m.momentum = 0.0
        decoded = []  # with history_track / query_propagation: each earlier frame's outputs and metas
        feats = metas = outs = None
        try:
            with torch.no_grad():
                for k in range(t):
                    frames = [s.metainfo["queue"][k] for s in samples]
                    # a padding frame has no cameras of its own: the sample's stand in (result dropped)
                    prev_feats, prev_metas, prev_outs = feats, metas, outs
                    metas = [
                        dict(s.metainfo if f["pad"] else f, batch_input_shape=s.metainfo["batch_input_shape"])
                        for s, f in zip(samples, frames)
                    ]
                    history, valid, ego = self._batch_history(prevs, metas, imgs.device)
                    feats = self.extract_feat(dict(imgs=imgs[:, k * n : (k + 1) * n]), metas)
                    bev, outs = self._earlier_frame(
                        feats, metas, (history, valid, ego), prevs, prev_feats, prev_metas, prev_outs
                    )
                    if outs is not None:
                        decoded.append((outs, [None if f["pad"] else m for f, m in zip(frames, metas)]))
                    prevs = [
                        None if f["pad"] else History(bev[i : i + 1], *_temporal_pose(m))
                        for i, (f, m) in enumerate(zip(frames, metas))
                    ]
        finally:
            for m, momentum in batch_norms:
                m.momentum = momentum
            self.train(was_training)
        cur = [s.metainfo for s in samples]
        past = self._past_cameras(prevs, feats, metas, cur)  # the loop ran: t >= 1 (loss checks)
        dets = self._past_detections(decoded, cur)
        queries = self._past_queries(prevs, outs, metas, cur)
        return self._batch_history(prevs, cur, imgs.device), past, dets, queries

    def _past_cameras(
        self, prevs: list[History | None], feats: list[Tensor], then: list[dict], now: list[dict]
    ) -> PastCameras | None:
        """The head's ``past_cameras`` of an earlier frame (its neck levels ``feats``, metainfo
        ``then``) for the frames of ``now``, for the samples whose history it is (``prevs``, the
        same check as the BEV's)."""
        return self.bbox_head.past_cameras(feats, self._continued(prevs, then, now), now)

    def _continued(self, prevs: list[History | None], then: list[dict], now: list[dict]) -> list[dict | None]:
        """Per sample the earlier frame's metainfo (``then``) where ``prevs`` says it is the
        history of the frame of ``now``, else None."""
        return [m if self._continues(p, c) else None for p, c, m in zip(prevs, now, then)]

    def _past_queries(
        self, prevs: list[History | None], outs: dict | None, then: list[dict], now: list[dict]
    ) -> PastQueries | None:
        """The head's ``past_queries`` of an earlier frame decoded into ``outs`` (metainfo
        ``then``; None: not decoded) for the frames of ``now``, for the samples whose history it
        is (``prevs``)."""
        if outs is None:
            return None
        return self.bbox_head.past_queries(outs, self._continued(prevs, then, now), now)

    def _earlier_frame(
        self,
        feats: list[Tensor],
        metas: list[dict],
        history: tuple[Tensor | None, ...],
        prevs: list[History | None],
        prev_feats: list[Tensor] | None,
        prev_metas: list[dict] | None,
        prev_outs: dict | None = None,
    ) -> tuple[Tensor, dict | None]:
        """An earlier frame's BEV on ``history`` = (aligned BEV, validity, ego motion), and with
        the head's ``history_track`` or ``query_propagation`` its decoded outputs too (else None),
        its decoder reading the cameras of the frame before (``prev_feats``, ``prev_metas``) and
        starting from that frame's queries (``prev_outs``, its decoded outputs) where ``prevs``
        says that frame is its history, as the sample's frame reads the last earlier one."""
        hist, valid, ego = history
        if not self.bbox_head.decodes_past:
            bev = self.bbox_head.encode_bev(feats, metas, history=hist, history_valid=valid, ego_motion=ego)
            return bev, None
        past = None if prev_feats is None else self._past_cameras(prevs, prev_feats, prev_metas, metas)
        queries = None if prev_metas is None else self._past_queries(prevs, prev_outs, prev_metas, metas)
        outs = self.bbox_head(
            feats,
            metas,
            history=hist,
            history_valid=valid,
            ego_motion=ego,
            past_cameras=past,
            past_queries=queries,
            **self._selection(feats, metas),
        )
        return outs["bev_embed"], outs

    def _past_detections(
        self, decoded: list[tuple[dict, list[dict | None]]], cur: list[dict]
    ) -> PastDetections | None:
        """The head's ``past_detections`` of the decoded earlier frames (earliest first, each
        ``(outs, metas)``), a frame counting for a sample only where it continues the sample's
        sequence (the same scene, a gap of at most its steps x ``history_stride`` x
        ``max_history_gap``); None when nothing was decoded."""
        if not decoded:
            return None
        frames = []
        for steps, (outs, metas) in enumerate(reversed(decoded), start=1):
            kept = []
            for m, c in zip(metas, cur):
                ok = m is not None and self._follows(
                    *_temporal_meta(m)[:2], *_temporal_meta(c)[:2], steps * self.history_stride
                )
                kept.append(m if ok else None)
            frames.append((outs, kept))
        return self.bbox_head.past_detections(frames, cur)

    def loss(self, batch_inputs_dict: dict, batch_data_samples: list[Det3DDataSample]) -> dict[str, Tensor]:
        """``DeformDETR3D``'s losses (the head's ``loss_by_outputs``: every decoder layer's and,
        with the head's ``denoising``, the ``dn_loss_*``); with a queue (see the class docstring)
        on the sample's frame with the history its earlier frames built."""
        queues = [s.metainfo.get("queue") for s in batch_data_samples]
        if not queues[0]:
            return super().loss(batch_inputs_dict, batch_data_samples)
        t = len(queues[0])
        if any(len(q or ()) != t for q in queues):
            raise ValueError(
                f"every sample of a batch must have a queue of {t} frames, got "
                f"{[len(q or ()) for q in queues]}"
            )
        imgs = batch_inputs_dict["imgs"]  # (B, T*N, 3, H, W), earliest first
        if imgs.shape[1] % (t + 1):
            raise ValueError(
                f"imgs must hold {t + 1} frames of N cameras, got {imgs.shape[1]} images per sample"
            )
        n = imgs.shape[1] // (t + 1)
        (history, valid, ego), past, dets, queries = self._queue_history(
            imgs[:, : t * n], batch_data_samples, n
        )
        metas = [s.metainfo for s in batch_data_samples]
        feats = self.extract_feat(dict(batch_inputs_dict, imgs=imgs[:, t * n :]), metas)
        gts = [s.gt_instances_3d for s in batch_data_samples]
        outs = self.bbox_head(
            feats,
            metas,
            gts,
            history=history,
            history_valid=valid,
            ego_motion=ego,
            past_cameras=past,
            past_detections=dets,
            past_queries=queries,
            **self._selection(feats, metas),
        )
        losses = self.bbox_head.loss_by_outputs(outs, gts)  # with the head's denoising losses
        if self.aux_head is not None:
            losses.update(self.aux_head.loss(feats, batch_data_samples, batch_inputs_dict.get("points")))
        return losses

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
            frame = [f[b : b + 1] for f in feats]
            earlier = None  # the last history frame, for a decoder with history_attn
            decoded = []  # the history frames decoded, for history_track and query_propagation
            if self.history_depth is not None:
                self.history, earlier, decoded = self._rebuild_history(meta)
            aligned = self._align(self.history, meta, feats[0].device)
            self.num_history_resets += aligned is None
            history, valid, ego = (None, None, None) if aligned is None else aligned
            past = (
                None
                if aligned is None or earlier is None
                else self.bbox_head.past_cameras(earlier.feats, [earlier.meta], [meta])
            )
            outs = self.bbox_head(
                frame,
                [meta],
                history=history,
                history_valid=valid,
                ego_motion=ego,
                past_cameras=past,
                past_detections=None if aligned is None else self._past_detections(decoded, [meta]),
                past_queries=None
                if aligned is None or not decoded
                else self.bbox_head.past_queries(decoded[-1][0], decoded[-1][1], [meta]),
                **self._selection(frame, [meta]),
            )
            if self.history_depth is None:
                self.history = History(outs["bev_embed"].detach(), *_temporal_pose(meta))
            else:
                # cloned: a slice would keep the whole batch's levels alive
                kept = Frame([f.detach().clone() for f in frame], meta)
                self.recent = [*self.recent, kept][-self.history_depth * self.history_stride :]
            results += self.bbox_head.predict_by_feat(outs["all_cls_scores"], outs["all_bbox_preds"])
            self._refine_velocity(results[-1], meta)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _refine_velocity(self, instances, meta: dict) -> None:
        """With ``velocity_refine``: one frame's ``InstanceData`` (``bboxes_3d``, ``scores_3d``,
        ``labels_3d``) gets the refined velocities, the refiner restarted where the frame does not
        follow the last one tested (another scene, a gap above ``max_history_gap``)."""
        if self.velocity_refiner is None:
            return
        scene, stamp, pose = _temporal_meta(meta)
        if self.last_frame is None or not self._follows(*self.last_frame, scene, stamp):
            self.velocity_refiner.reset()
        self.last_frame = (scene, stamp)
        boxes = instances.bboxes_3d
        refined = self.velocity_refiner(boxes.tensor, instances.scores_3d, instances.labels_3d, pose, stamp)
        instances.bboxes_3d = boxes.new_box(refined)

    def _rebuild_history(self, meta: dict) -> tuple[History | None, Frame | None, list]:
        """With ``history_depth``: the BEV of the frame ``history_stride`` frames before, encoded
        on a chain of every ``history_stride``-th kept frame (the first without history), as queue
        training builds it, that frame, and with the head's ``history_track`` or
        ``query_propagation`` the chain's frames decoded (earliest first, ``(outs, [meta])``);
        (None, None, []) (and the kept frames dropped) where the frame of ``meta`` does not
        continue their sequence."""
        if self.recent:
            last_scene, last_stamp, _ = _temporal_meta(self.recent[-1].meta)
            scene, stamp, _ = _temporal_meta(meta)
            if not self._follows(last_scene, last_stamp, scene, stamp):
                self.recent = []
        prev, s = None, self.history_stride
        chain = self.recent[-s::-s][::-1] if len(self.recent) >= s else []  # s, 2 s, ... frames before
        decoded, before, outs = [], None, None
        for frame in chain:
            aligned = self._align(prev, frame.meta, frame.feats[0].device)
            history = (None, None, None) if aligned is None else aligned
            prev_feats, prev_metas = (None, None) if before is None else (before.feats, [before.meta])
            bev, outs = self._earlier_frame(
                frame.feats, [frame.meta], history, [prev], prev_feats, prev_metas, outs
            )
            if outs is not None:  # as queue training decodes its earlier frames
                decoded.append((outs, [frame.meta]))
            prev, before = History(bev, *_temporal_pose(frame.meta)), frame
        return prev, (chain[-1] if chain else None), decoded
