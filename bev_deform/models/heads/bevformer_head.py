"""The BEVFormer head: a BEV encoder over the cameras, object queries decoded on the BEV, and the
branches, losses, matching and decoding of :class:`QueryHeadBase` (shared with the DETR3D-style
head)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.structures import InstanceData
from torch import Tensor

from bev_deform.geometry import BEVGrid, CameraGeometry, FeatureLevels, earlier_lidar2img, meta_matrix
from bev_deform.models.heads.bev_centre_aux_head import BEVCentreAuxHead
from bev_deform.models.heads.query_head_base import QueryHeadBase
from bev_deform.models.layers.bevformer_decoder import PastCameras
from bev_deform.models.layers.bevformer_transformer import BEVFormerTransformer
from bev_deform.models.layers.history_track import HistoryTrack, PastDetections, past_detections
from bev_deform.models.layers.query_propagation import PastQueries, QueryPropagation, past_queries
from bev_deform.models.task_modules.nms_free_coder import VELOCITY_SLOTS, with_velocity
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS

# the head's parameter names that differ from the official BEVFormer checkpoint's (``pts_bbox_head.``
# there, ``bbox_head.`` here; every other name is the same): the BEV queries, their positional
# encoding and the camera and level embeddings live in our encoder
OFFICIAL_PREFIXES = {
    "transformer.encoder.bev_embedding.": "bev_embedding.",
    "transformer.encoder.positional_encoding.": "positional_encoding.",
    "transformer.encoder.cams_embeds": "transformer.cams_embeds",
    "transformer.encoder.level_embeds": "transformer.level_embeds",
}


def official_param_name(name: str) -> str:
    """The official BEVFormer name (under ``pts_bbox_head.``) of a ``BEVFormerHead`` parameter.

    Official parameters with no counterpart here: ``transformer.can_bus_mlp.*`` (no CAN bus) and
    ``code_weights`` (a buffer here); the official ``transformer.level_embeds`` has 4 rows even
    for the 1-level tiny and small models (only the first is used there)."""
    for ours, official in OFFICIAL_PREFIXES.items():
        if name.startswith(ours):
            return official + name[len(ours) :]
    return name


@MODELS.register_module()
class BEVFormerHead(QueryHeadBase):
    """BEVFormer-style head: cameras -> BEV (``transformer.encoder``) -> object queries on the BEV
    (``transformer.decoder``) -> per-layer classification and regression branches.

    Module names and shapes follow the official BEVFormer state dict (``transformer.encoder.
    layers.N.attentions.{0,1}``, ``transformer.decoder.layers.N.attentions.{0,1}``,
    ``transformer.reference_points``, ``query_embedding`` (Q, 2C), ``cls_branches``,
    ``reg_branches``), except that the BEV queries, their positional encoding and the camera and
    level embeddings are the encoder's (``transformer.encoder.{bev_embedding,
    positional_encoding, cams_embeds, level_embeds}``), and there is no CAN-bus MLP.

    With ``denoising``, training adds groups of noised ground-truth queries after the matching
    queries (DINO's contrastive denoising in 3D, :class:`Denoising3D`, as in
    ``DeformDETR3DHead``): each starts at its noised box centre on the BEV, the decoder's
    self-attention mask hides it from the matching queries, and it has its own losses
    (``dn_loss_*``, :meth:`QueryHeadBase.loss_by_outputs`); inference never builds them, so
    predictions do not depend on it. Its parameters are under ``denoising.``, outside the
    official state-dict layout.

    With the decoder's ``history_attn`` (``decoder=dict(..., history_attn=dict(num_heads=4,
    num_points=4))``, :class:`HistoryCameraAttention`) every decoder layer also reads an earlier
    frame's neck levels around each query's 3D reference point (``past_cameras``, from
    :meth:`past_cameras`; the detector passes the frame its history BEV comes from); its
    parameters are under ``transformer.decoder.layers.N.history_attn.``, outside the official
    layout. With its ``history_match`` (:class:`HistoryMatch`) the searching layers also compare
    this frame's neck levels at each query's point with that frame's around it, to find where the
    object was (parameters under ``transformer.decoder.layers.N.history_match.``).

    With ``query_propagation`` (:class:`QueryPropagation`, ``query_propagation=dict(top_k=100)``)
    the detector decodes the frame its history comes from too, and that frame's top-k queries
    (:meth:`past_queries`), moved into the current frame by the ego motion from the poses, start
    the last top-k matching queries (StreamPETR's propagation): each from its box centre then, with
    its content and position read from its earlier output and that centre, and the displacement of
    its box since then, over the time gap, blended into its velocity by a learned gate (parameters
    under ``query_propagation.``; a sample without that frame keeps the learned queries).

    With ``history_track`` (:class:`HistoryTrack`, ``history_track=dict(num_frames=2, top_k=100)``)
    the last layer's velocities are blended with the displacement of each query's object since
    earlier frames: the detector decodes the frames its history comes from (the queue's earlier
    frames, 2 s and 4 s before in the temporal CPU config) with this head, and
    :meth:`past_detections` moves their top-k boxes into the current frame by the ego motion from
    the poses; each query is associated softly with where its object was, and a gate that starts
    closed mixes ``(now - then) / gap`` into its velocity (parameters under ``history_track.``; a
    frame without earlier detections is unchanged).

    Config dict (embed_dims, num_levels and pc_range are stated here once and passed down)::

        dict(type='BEVFormerHead', num_classes=10, pc_range=point_cloud_range,
             embed_dims=256, num_query=900, num_levels=4,
             encoder=dict(bev_h=200, bev_w=200, num_layers=6, layer_cfg=dict(...)),
             decoder=dict(num_layers=6, layer_cfg=dict(...)),
             bbox_coder=..., loss_cls=..., loss_bbox=..., train_cfg=...,  # as DeformDETR3DHead
             denoising=dict(num_groups=5, box_noise_scale=1.0, label_noise_ratio=0.25,
                            loss_weight=1.0),  # optional, off by default
             bev_aux=dict(loss_reg=dict(type='mmdet.L1Loss', loss_weight=1.0)))  # optional, off

    Args:
        encoder: ``BEVFormerEncoder`` config.
        decoder: ``BEVFormerDecoder`` config.
        denoising: optional 3D contrastive denoising config; type defaults to ``Denoising3D``,
            whose num_classes, embed_dims and pc_range are passed down; None (default): off
            (see :meth:`QueryHeadBase._init_denoising`).
        bev_aux: optional dense BEV head in training (:class:`BEVCentreAuxHead`: centre heatmaps,
            centre offset and velocity on every BEV cell, ``bev_aux_loss_*``), whose num_classes,
            embed_dims and grid are passed down; None (default): off. Nothing at inference.
        history_track: optional :class:`HistoryTrack` config (num_classes passed down); None
            (default): off. Built from forked generators, so every other parameter draws the same
            initial values with it as without it.
        query_propagation: optional :class:`QueryPropagation` config (embed_dims and pc_range
            passed down), e.g. ``dict(top_k=100)``; None (default): off. Forked generators too.
        the others: those of :class:`QueryHeadBase`.
    """

    def __init__(
        self,
        num_classes: int,
        pc_range: Sequence[float],
        embed_dims: int = 256,
        num_query: int = 900,
        num_levels: int = 4,
        encoder: dict | None = None,
        decoder: dict | None = None,
        bbox_coder: dict | None = None,
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        code_weights: Sequence[float] | None = None,
        train_cfg: dict | None = None,
        denoising: dict | None = None,
        init_cfg: dict | None = None,
        query_groups: int = 1,
        yaw_frame: str = "ego",
        bev_aux: dict | None = None,
        history_track: dict | None = None,
        query_propagation: dict | None = None,
    ) -> None:
        super().__init__(
            num_classes, pc_range, embed_dims, num_query, num_levels, bbox_coder, loss_cls, loss_bbox,
            code_weights, train_cfg, init_cfg, query_groups=query_groups, yaw_frame=yaw_frame,
        )  # fmt: skip
        transformer = dict(type=BEVFormerTransformer, encoder=encoder, decoder=decoder)
        self.transformer = MODELS.build(
            with_shared(
                transformer,
                "transformer",
                embed_dims=embed_dims,
                num_levels=num_levels,
                pc_range=self.pc_range,
            )
        )
        self._init_branches(self.transformer.decoder.num_layers)
        self._init_denoising(denoising)
        # the dense BEV head (training only), drawn from a forked generator: every other parameter
        # draws the same initial values with it as without it
        self.bev_aux = None
        if bev_aux is not None:
            bev_aux = {"type": BEVCentreAuxHead, **bev_aux}
            shared = dict(num_classes=num_classes, embed_dims=embed_dims, grid=self.grid)
            with torch.random.fork_rng(devices=[]):
                self.bev_aux = MODELS.build(with_shared(bev_aux, "bev_aux", **shared))
        # the earlier frames' detections in the last layer's velocity (forked generators too)
        self.history_track = None
        if history_track is not None:
            history_track = {"type": HistoryTrack, **history_track}
            with torch.random.fork_rng(devices=[]):
                self.history_track = MODELS.build(
                    with_shared(history_track, "history_track", num_classes=num_classes)
                )
        # the earlier frame's decoded queries as the last top_k matching queries (forked generators)
        self.query_propagation = None
        if query_propagation is not None:
            query_propagation = {"type": QueryPropagation, **query_propagation}
            shared = dict(embed_dims=embed_dims, pc_range=self.pc_range)
            with torch.random.fork_rng(devices=[]):
                self.query_propagation = MODELS.build(
                    with_shared(query_propagation, "query_propagation", **shared)
                )
            if self.query_propagation.top_k > num_query:
                raise ValueError(
                    f"query_propagation.top_k={self.query_propagation.top_k} must not exceed "
                    f"num_query={num_query}"
                )

    @property
    def decodes_past(self) -> bool:
        """Whether the detector decodes the earlier frames (``history_track`` reads their boxes,
        ``query_propagation`` their queries), not only encodes their BEV."""
        return self.history_track is not None or self.query_propagation is not None

    @property
    def grid(self) -> BEVGrid:
        """The encoder's BEV grid."""
        return self.transformer.encoder.grid

    def _split_fine(self, mlvl_feats: Sequence[Tensor]) -> tuple[Sequence[Tensor], Tensor | None]:
        """The neck's L levels and, for a decoder whose ``history_match`` reads ``level='fine'``,
        the (B, N, C_f, H_f, W_f) fine level after them (the detector's ``fine_level``)."""
        if not self.transformer.decoder.reads_fine:
            return mlvl_feats, None
        if len(mlvl_feats) != self.num_levels + 1:
            raise ValueError(
                f"history_match with level='fine' needs the neck's {self.num_levels} levels and the fine "
                f"level after them, got {len(mlvl_feats)} levels. Fix: BEVFormer(fine_level=True)"
            )
        fine = mlvl_feats[-1]
        if fine.dim() != 5:
            raise ValueError(f"the fine level must be (B, N, C_f, H_f, W_f), got {tuple(fine.shape)}")
        return mlvl_feats[:-1], fine

    @staticmethod
    def _flatten_fine(
        fine: Tensor | None, pad_hw: tuple[int, int]
    ) -> tuple[Tensor, FeatureLevels] | tuple[None, None]:
        """(B, N, C_f, H_f, W_f) -> (B*N, H_f * W_f, C_f) and its one level (:class:`PastCameras`'
        ``fine`` and ``fine_levels``); (None, None) for None."""
        if fine is None:
            return None, None
        value = fine.flatten(0, 1).flatten(2).transpose(1, 2)
        return value, FeatureLevels.from_shapes([fine.shape[-2:]], pad_hw, value.device)

    def encode_bev(
        self,
        mlvl_feats: Sequence[Tensor],
        batch_input_metas: Sequence[dict],
        history: Tensor | None = None,
        history_valid: Tensor | None = None,
        ego_motion: Tensor | None = None,
    ) -> Tensor:
        """The encoder alone (a queue's earlier frames need their BEV, not boxes): arguments as
        :meth:`forward`; returns the (B, H*W, C) BEV."""
        mlvl_feats, _ = self._split_fine(mlvl_feats)
        self._check_feats(mlvl_feats)
        cams = CameraGeometry.from_metas(batch_input_metas, mlvl_feats[0].device)
        value, levels = self._flatten_levels(mlvl_feats, cams.pad_hw)
        return self.transformer.encoder(
            value, levels, cams, history=history, history_valid=history_valid, ego_motion=ego_motion
        )

    def past_cameras(
        self,
        mlvl_feats: Sequence[Tensor],
        earlier_metas: Sequence[dict | None],
        batch_input_metas: Sequence[dict],
    ) -> PastCameras | None:
        """What the decoder's ``history_attn`` and ``history_match`` read of an earlier frame: its neck levels
        ``mlvl_feats`` (L x (B, N, C, H_l, W_l)), and per sample the earlier frame's metainfo
        (``lidar2img``, ``img_shape``, ``lidar2global``; None: the sample has no earlier frame, and
        its features, whatever they are, are read by no query), with its cameras seeing the
        current frame's (``batch_input_metas``) LIDAR_TOP points
        (:func:`~bev_deform.geometry.earlier_lidar2img`). None for a decoder without
        ``history_attn`` and ``history_match`` or a batch in which no sample has an earlier frame."""
        if not self.transformer.decoder.reads_past or all(m is None for m in earlier_metas):
            return None
        if len(earlier_metas) != len(batch_input_metas):
            raise ValueError(
                f"earlier_metas must hold one entry per sample ({len(batch_input_metas)}), got "
                f"{len(earlier_metas)}"
            )
        like = next(m for m in earlier_metas if m is not None)
        metas, gaps = [], []
        for earlier, cur in zip(earlier_metas, batch_input_metas):
            if earlier is None:
                # no camera sees a point
                l2i = np.zeros_like(np.asarray(like["lidar2img"], dtype=np.float64))
                earlier, gap = like, 0.0
            else:
                l2i = earlier_lidar2img(
                    meta_matrix(earlier, "lidar2img", "earlier_metas"),
                    meta_matrix(earlier, name="earlier_metas"),
                    meta_matrix(cur, name="batch_input_metas"),
                ).numpy()
                stamps = (earlier.get("timestamp"), cur.get("timestamp"))
                gap = None if None in stamps else float(stamps[1]) - float(stamps[0])
            gaps.append(gap)
            shape = earlier.get("batch_input_shape", cur["batch_input_shape"])
            metas.append(dict(lidar2img=l2i, img_shape=earlier["img_shape"], batch_input_shape=shape))
        mlvl_feats, fine = self._split_fine(mlvl_feats)
        cams = CameraGeometry.from_metas(metas, mlvl_feats[0].device)
        value, levels = self._flatten_levels(mlvl_feats, cams.pad_hw)
        gap = None if None in gaps else torch.tensor(gaps, dtype=torch.float32, device=value.device)
        return PastCameras(value, levels, cams, gap, *self._flatten_fine(fine, cams.pad_hw))

    def past_detections(
        self, frames: Sequence[tuple[dict, Sequence[dict | None]]], batch_input_metas: Sequence[dict]
    ) -> PastDetections | None:
        """What ``history_track`` reads: earlier frames decoded by this head, most recent first, each
        ``(outs, metas)`` (:meth:`forward`'s outputs, per sample its metainfo or None where the
        sample does not have that frame), their detections moved into the current frame of
        ``batch_input_metas`` (:func:`~bev_deform.models.layers.history_track.past_detections`).
        None without ``history_track``, without any frame, or where no sample has one."""
        if self.history_track is None or not frames:
            return None
        decoded = [(o["all_cls_scores"][-1], o["all_bbox_preds"][-1], m) for o, m in frames]
        track = self.history_track
        dets = past_detections(decoded, batch_input_metas, track.num_frames, track.top_k)
        return dets if bool(dets.valid.any()) else None

    def past_queries(
        self, outs: dict | None, earlier_metas: Sequence[dict | None], batch_input_metas: Sequence[dict]
    ) -> PastQueries | None:
        """What ``query_propagation`` reads: the top-k queries of an earlier frame decoded by this
        head (``outs``, :meth:`forward`'s outputs; per sample that frame's metainfo or None where the
        sample does not continue from it) moved into the frames of ``batch_input_metas``
        (:func:`~bev_deform.models.layers.query_propagation.past_queries`). None without
        ``query_propagation``, without ``outs`` or where no sample has the frame."""
        if self.query_propagation is None or outs is None or all(m is None for m in earlier_metas):
            return None
        past = past_queries(
            outs["all_cls_scores"][-1],
            outs["all_bbox_preds"][-1],
            outs["query_hidden"],
            earlier_metas,
            batch_input_metas,
            self.query_propagation.top_k,
        )
        return past if bool(past.valid.any()) else None

    def forward(
        self,
        mlvl_feats: Sequence[Tensor],
        batch_input_metas: Sequence[dict],
        batch_gt_instances_3d: Sequence[InstanceData] | None = None,
        history: Tensor | None = None,
        history_valid: Tensor | None = None,
        ego_motion: Tensor | None = None,
        selected_refs: Tensor | None = None,
        past_cameras: PastCameras | None = None,
        past_detections: PastDetections | None = None,
        past_queries: PastQueries | None = None,
    ) -> dict:
        """Encode the cameras into the BEV and decode the queries on it.

        Args:
            mlvl_feats: L tensors (B, N, C, H_l, W_l), the neck's levels per camera (and after
                them the fine level, for a ``history_match`` that reads it).
            batch_input_metas: B metainfo dicts with ``lidar2img`` (N, 4, 4), ``img_shape`` and
                ``batch_input_shape`` (see :meth:`CameraGeometry.from_metas`).
            batch_gt_instances_3d: the ground truth, from which training with ``denoising`` builds
                the denoising queries; ignored otherwise.
            history: (B, H*W, C) history BEV aligned with this frame's grid, or None (the current
                BEV is its own history).
            history_valid: (B, H*W) bool, where that history has a previous cell, or None.
            ego_motion: (B, 6) ego-motion features since the history frame (zeros without
                history), or None; read by an encoder with ``ego_motion_embed``.
            selected_refs: (B, k, 3) reference points normalised in pc_range for the first k
                queries (query selection from the image side, ``BEVFormer(query_selection=k)``):
                (x, y) place them on the BEV, z starts the regressed height; their content queries
                stay learned, the other queries keep their learned reference points.
            past_cameras: an earlier frame's cameras (:meth:`past_cameras`) for a decoder with
                ``history_attn``, or None.
            past_detections: earlier frames' detections (:meth:`past_detections`) for
                ``history_track``, or None (the last layer's velocities are the branch's).
            past_queries: an earlier frame's queries (:meth:`past_queries`) for
                ``query_propagation``, or None (the learned queries alone).

        Returns:
            ``bev_embed`` (B, H*W, C), ``all_cls_scores`` (num_layers, B, Q, K) logits and
            ``all_bbox_preds`` (num_layers, B, Q, 10) codes with the centre in metres, of the
            matching queries; with denoising queries also ``dn_cls_scores`` (num_layers, B, D, K),
            ``dn_bbox_preds`` (num_layers, B, D, 10) and ``dn`` (:class:`DenoisingQueries`, their
            targets); with ``query_propagation`` also ``query_hidden`` (B, Q, C), the last layer's
            outputs of group 0's matching queries (what the next frame propagates).
        """
        mlvl_feats, fine = self._split_fine(mlvl_feats)
        self._check_feats(mlvl_feats)
        cams = CameraGeometry.from_metas(batch_input_metas, mlvl_feats[0].device)
        value, levels = self._flatten_levels(mlvl_feats, cams.pad_hw)
        present = None  # the current frame's cameras, for history_match (the decoder's and its loss)
        if past_cameras is not None and self.transformer.decoder.reads_present:
            present = PastCameras(value, levels, cams, None, *self._flatten_fine(fine, cams.pad_hw))
        query_pos, query = self._split_queries(cams.lidar2img.shape[0])  # (B, Q, C) each
        ref_points = self.transformer.initial_ref_points(query_pos)  # (B, Q, 3) normalised in pc_range
        ref_points = self._with_selected(ref_points, selected_refs)
        q = self.num_query  # group 0's matching queries: the propagated ones are its last top_k
        propagate = self.query_propagation is not None and past_queries is not None
        if propagate:
            group0 = (query[:, :q], query_pos[:, :q], ref_points[:, :q])
            parts = self.query_propagation.queries(*group0, past_queries)
            query, query_pos, ref_points = (
                torch.cat([new, old[:, q:]], 1) for new, old in zip(parts, (query, query_pos, ref_points))
            )
        dn = self._denoising_queries(batch_gt_instances_3d, value.device)
        query, query_pos, ref_points, attn_mask, key_padding_mask = self._with_denoising(
            query, query_pos, ref_points, dn
        )  # (B, Q + D, .) with denoising queries
        bev, hidden, refs, raw_codes = self.transformer(
            value,
            levels,
            cams,
            query,
            query_pos,
            self.reg_branches,
            history=history,
            history_valid=history_valid,
            ego_motion=ego_motion,
            ref_points=ref_points,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            past=past_cameras,
            present=present,
        )
        outs = dict(bev_embed=bev, **self._outputs(hidden, refs, raw_codes, dn))
        if self.query_propagation is not None:
            outs["query_hidden"] = hidden[-1][:, :q]  # (B, Q, C), what the next frame propagates
        if propagate:
            preds = outs["all_bbox_preds"]
            blended = self.query_propagation.velocity(hidden[:, :, :q], preds[:, :, :q], past_queries)
            outs["all_bbox_preds"] = torch.cat([blended, preds[:, :, q:]], 2)
        if self.history_track is not None and past_detections is not None:
            last = outs["all_bbox_preds"][-1]  # (B, G*Q, 10), the matching queries
            probs = outs["all_cls_scores"][-1].sigmoid().detach()
            vel = self.history_track(
                last[..., :2].detach(), probs, last[..., list(VELOCITY_SLOTS)], past_detections
            )
            last = with_velocity(last, vel)
            outs["all_bbox_preds"] = torch.cat([outs["all_bbox_preds"][:-1], last[None]])
        if self.training and batch_gt_instances_3d is not None and present is not None:
            # the search's own training (history_match with a loss_weight) on the current cameras
            decoder = self.transformer.decoder
            outs["match_losses"] = decoder.match_losses(batch_gt_instances_3d, past_cameras, present)
        return outs

    def loss_by_outputs(self, outs: dict, batch_gt_instances_3d: Sequence[InstanceData]) -> dict[str, Tensor]:
        """:meth:`QueryHeadBase.loss_by_outputs` and, with ``bev_aux``, the dense BEV head's
        ``bev_aux_loss_heatmap`` and ``bev_aux_loss_reg`` on ``outs['bev_embed']``."""
        losses = super().loss_by_outputs(outs, batch_gt_instances_3d)
        losses.update(outs.get("match_losses", {}))
        if self.bev_aux is not None:
            losses.update(self.bev_aux.loss(outs["bev_embed"], batch_gt_instances_3d))
        return losses
