"""What every 3D set-prediction query head here shares: per-layer classification and regression
branches, the learned object queries, the box code relative to the reference points,
Hungarian matching, focal + L1 losses in float32 and NMS-free decoding into
``LiDARInstance3DBoxes``, and the optional 3D contrastive denoising queries of training (their
building, their place after the matching queries, their losses). The DETR3D-style head and the
BEVFormer head differ only in how their decoder reaches the image features (directly, or through a
BEV)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from mmdet.models.layers import inverse_sigmoid
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from bev_deform.geometry import FeatureLevels, denormalize_points
from bev_deform.models.heads.denoising_3d import Denoising3D, DenoisingQueries
from bev_deform.models.task_modules.hungarian_assigner_3d import HungarianAssigner3D
from bev_deform.models.task_modules.nms_free_coder import CENTER_SLOTS, CODE_SIZE, NMSFreeCoder
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS, TASK_UTILS

NUM_BRANCH_FCS = 2  # hidden layers of each classification / regression branch
YAW_FRAMES = ("ego", "ray", "ego+ray")  # what the (sin, cos) slots encode (QueryHeadBase's yaw_frame)


def group_attn_mask(
    num_query: int, num_groups: int, dn_mask: Tensor | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """The self-attention mask over ``[group 0 | ... | group G-1 | denoising (D)]`` with
    ``num_query`` (Q) matching queries per group (Group DETR).

    Args:
        num_query: Q.
        num_groups: G.
        dn_mask: the denoising queries' (Q + D, Q + D) mask over ``[matching (Q) | denoising]``
            (:func:`denoising_attn_mask`), or None without denoising queries.
        device: where to build the mask.

    Returns:
        (G*Q + D, G*Q + D) bool, True where query i (row) must not see key j: a matching query sees
        its own group only; the denoising queries see group 0 and among themselves what
        ``dn_mask`` lets them, and no group sees them.
    """
    if min(num_query, num_groups) < 1:
        raise ValueError(f"num_query and num_groups must be >= 1, got {num_query} and {num_groups}")
    q, gq = num_query, num_groups * num_query
    d = 0 if dn_mask is None else dn_mask.shape[0] - q
    if dn_mask is not None and (dn_mask.shape != (q + d, q + d) or d < 0):
        raise ValueError(f"dn_mask must be (Q + D, Q + D) with Q={q}, got {tuple(dn_mask.shape)}")
    mask = torch.ones(gq + d, gq + d, dtype=torch.bool, device=device)
    group = torch.arange(num_groups, device=device).repeat_interleave(q)  # (G*Q,)
    mask[:gq, :gq] = group[:, None] != group[None, :]  # (G*Q, 1) != (1, G*Q)
    if dn_mask is not None:
        mask[gq:, :q] = dn_mask[q:, :q]  # denoising -> group 0
        mask[gq:, gq:] = dn_mask[q:, q:]  # denoising -> denoising
    return mask


def ray_to_ego_yaw(sin_cos: Tensor, xy: Tensor, eps: float = 1e-6) -> Tensor:
    """(..., 2) (sin a, cos a) of a yaw a relative to the ray from the origin to (..., 2) points
    (x, y) -> (..., 2) (sin, cos) of the yaw a + atan2(y, x) in the points' frame.

    A rotation of the 2-vector by the azimuth, so unnormalised branch outputs stay unnormalised
    and the L1 loss on them keeps its meaning; built from x / r and y / r (no atan2, which ONNX
    lacks). A point within ``eps`` of the origin has azimuth 0.
    """
    r = xy.norm(dim=-1, keepdim=True)  # (..., 1)
    unit = torch.where(r > eps, xy / r.clamp_min(eps), xy.new_tensor([1.0, 0.0]))  # (cos t, sin t)
    cos_t, sin_t = unit[..., 0:1], unit[..., 1:2]
    s, c = sin_cos[..., 0:1], sin_cos[..., 1:2]
    # sin(a + t) = sin a cos t + cos a sin t; cos(a + t) = cos a cos t - sin a sin t
    return torch.cat([s * cos_t + c * sin_t, c * cos_t - s * sin_t], dim=-1)


class QueryHeadBase(BaseModule):
    """Branches, object queries, losses, assigner and coder of a 3D set-prediction head.

    A subclass builds its decoder, then calls :meth:`_init_branches` with the number of decoder
    layers and, last, :meth:`_init_denoising` with its ``denoising`` config, and implements
    ``forward(mlvl_feats, batch_input_metas, batch_gt_instances_3d=None, **kwargs)`` returning
    :meth:`_outputs`: ``all_cls_scores`` (num_layers, B, Q, K) and ``all_bbox_preds``
    (num_layers, B, Q, 10), plus the denoising outputs in training with ``denoising``;
    :meth:`loss`, :meth:`loss_by_outputs`, :meth:`loss_by_feat`, :meth:`predict` and
    :meth:`predict_by_feat` are shared.

    Every layer has its own classification branch (sigmoid logits, K classes) and regression
    branch, which predicts the box code ``(cx, cy, log w, log l, cz, log h, sin, cos, vx, vy)``
    with the centre relative to the layer's reference point (:meth:`_to_code`). Training:
    Hungarian matching per layer, focal loss and weighted L1 on codes. Inference: the last
    layer's top-k, without NMS.

    With ``denoising`` (DINO's contrastive denoising in 3D, :class:`Denoising3D`), training appends
    groups of noised ground-truth queries after the matching queries (:meth:`_denoising_queries`,
    :meth:`_with_denoising`); the self-attention mask hides them from the matching queries, their
    outputs are split off (:meth:`_outputs`) and get their own losses (:meth:`loss_denoising`,
    ``dn_loss_*``). Inference never builds them, so predictions do not depend on it.

    With ``query_groups`` G > 1 (Group DETR's one-to-many training), training decodes G groups of
    ``num_query`` matching queries: group 0 is ``query_embedding``, groups 1..G-1 have their own
    learned queries (``group_query_embedding``, ((G - 1) * Q, 2C)); the self-attention mask keeps
    each group from seeing the others (and the denoising queries see group 0 only), each group is
    matched to the ground truth on its own, and the losses are averaged over the groups. So every
    box trains G queries per layer instead of one, while inference decodes group 0 alone, as
    without groups (:func:`group_attn_mask`).

    Args:
        num_classes: K object classes (sigmoid classification, no background logit).
        pc_range: (x0, y0, z0, x1, y1, z1) metres; reference points are normalised in it.
        embed_dims: channels C (the neck's output channels).
        num_query: number of object queries.
        num_levels: feature levels L from the neck.
        bbox_coder: box coder config; type defaults to ``NMSFreeCoder``.
        loss_cls: classification loss config (sigmoid focal loss by default).
        loss_bbox: regression loss config (L1 by default).
        code_weights: (10,) per-entry weights of the regression loss; velocity 0.2 by default.
        train_cfg: ``dict(assigner=...)``; ``HungarianAssigner3D`` with focal + L1 costs by default.
        init_cfg: mmengine init config.
        query_groups: G groups of matching queries in training (Group DETR); 1 (default): off.
        yaw_frame: what the regression branch's (sin, cos) slots encode. ``'ego'`` (default): the
            yaw itself, in the LiDAR frame. ``'ray'``: the yaw relative to the ray from the LiDAR
            origin to the box's predicted centre (the allocentric or observation angle of monocular
            3D detectors, which is what a camera sees of an object: a box showing a camera its
            front has ray-relative yaw pi wherever it stands); :meth:`_to_code` rotates it by the
            ray's azimuth into the yaw, so the codes, losses, matching and decoding are unchanged.
            ``'ego+ray'``: both, summed: the branch's slots in the LiDAR frame plus, from one more
            linear layer per decoder layer on the query (``ray_yaw_branches``, zero at
            initialisation), a ray-relative (sin, cos) rotated by the azimuth, so that a heading
            that is the road's wherever the object stands and one that shows in how the object
            looks from the camera can each be read in its own frame.
    """

    def __init__(
        self,
        num_classes: int,
        pc_range: Sequence[float],
        embed_dims: int = 256,
        num_query: int = 900,
        num_levels: int = 4,
        bbox_coder: dict | None = None,
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        code_weights: Sequence[float] | None = None,
        train_cfg: dict | None = None,
        init_cfg: dict | None = None,
        query_groups: int = 1,
        yaw_frame: str = "ego",
    ) -> None:
        super().__init__(init_cfg)
        if yaw_frame not in YAW_FRAMES:
            raise ValueError(f"yaw_frame must be one of {YAW_FRAMES}, got {yaw_frame!r}")
        self.yaw_frame = yaw_frame
        self.ray_yaw_branches = None  # _init_branches builds them for yaw_frame='ego+ray'
        if int(query_groups) != query_groups or query_groups < 1:
            raise ValueError(f"query_groups must be an integer >= 1, got {query_groups}")
        self.query_groups = int(query_groups)
        if len(pc_range) != 6:
            raise ValueError(f"pc_range must be (x0, y0, z0, x1, y1, z1), got {pc_range}")
        code_weights = [1.0] * 8 + [0.2, 0.2] if code_weights is None else list(code_weights)
        if len(code_weights) != CODE_SIZE:
            raise ValueError(f"code_weights must have {CODE_SIZE} values, got {code_weights}")
        self.num_classes, self.num_query, self.num_levels = num_classes, num_query, num_levels
        self.embed_dims, self.pc_range = embed_dims, [float(v) for v in pc_range]
        self.bbox_coder = TASK_UTILS.build(bbox_coder or dict(type=NMSFreeCoder))
        self.assigner = TASK_UTILS.build((train_cfg or {}).get("assigner", dict(type=HungarianAssigner3D)))
        self.loss_cls = MODELS.build(
            loss_cls or dict(type="mmdet.FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0)
        )
        self.loss_bbox = MODELS.build(loss_bbox or dict(type="mmdet.L1Loss", loss_weight=0.25))
        self.register_buffer("code_weights", torch.tensor(code_weights), persistent=False)
        self.denoising = None  # the subclass's _init_denoising builds it

    def _init_branches(self, num_layers: int) -> None:
        """One classification and one regression branch per decoder layer, then the object queries
        ``query_embedding`` (Q, 2C): position and content halves."""
        c = self.embed_dims
        cls_branch, reg_branch = [], []
        for _ in range(NUM_BRANCH_FCS):
            cls_branch += [nn.Linear(c, c), nn.LayerNorm(c), nn.ReLU(inplace=True)]
            reg_branch += [nn.Linear(c, c), nn.ReLU(inplace=True)]
        cls_branch.append(nn.Linear(c, self.num_classes))
        reg_branch.append(nn.Linear(c, CODE_SIZE))
        self.cls_branches = nn.ModuleList(
            [copy.deepcopy(nn.Sequential(*cls_branch)) for _ in range(num_layers)]
        )
        self.reg_branches = nn.ModuleList(
            [copy.deepcopy(nn.Sequential(*reg_branch)) for _ in range(num_layers)]
        )
        self.query_embedding = nn.Embedding(self.num_query, 2 * c)  # (position, content)
        if self.yaw_frame == "ego+ray":  # zero: the head starts as the one in the LiDAR frame
            with torch.random.fork_rng(devices=[]):  # and every other parameter draws as without them
                self.ray_yaw_branches = nn.ModuleList([nn.Linear(c, 2) for _ in range(num_layers)])
            for branch in self.ray_yaw_branches:
                nn.init.zeros_(branch.weight), nn.init.zeros_(branch.bias)
        if self.query_groups > 1:  # only then, so that without groups the parameters draw as before
            self.group_query_embedding = nn.Embedding((self.query_groups - 1) * self.num_query, 2 * c)

    def _init_denoising(self, denoising: dict | None) -> None:
        """``self.denoising``: the denoising query builder of the ``denoising`` config (type
        defaults to ``Denoising3D``; num_classes, embed_dims and pc_range are passed down), or
        None without one. Called last by the subclass, so that its other parameters are drawn
        from the random generator as without denoising."""
        if denoising is not None:
            shared = dict(num_classes=self.num_classes, embed_dims=self.embed_dims, pc_range=self.pc_range)
            self.denoising = MODELS.build(
                with_shared({"type": Denoising3D, **denoising}, "denoising", **shared)
            )

    def init_weights(self) -> None:
        """Children's own initialisation and classification biases for a prior probability of 0.01
        (focal loss)."""
        super().init_weights()
        for branch in self.cls_branches:
            nn.init.constant_(branch[-1].bias, bias_init_with_prob(0.01))
        for branch in self.ray_yaw_branches or []:  # zero, whatever an init_cfg did
            nn.init.zeros_(branch.weight), nn.init.zeros_(branch.bias)

    @property
    def active_groups(self) -> int:
        """The groups of matching queries decoded now: ``query_groups`` in training, 1 otherwise."""
        return self.query_groups if self.training else 1

    def _split_queries(self, batch: int) -> tuple[Tensor, Tensor]:
        """The object queries for a batch: position and content, (B, G*Q, C) each, G =
        :attr:`active_groups` (group 0 first)."""
        weight = self.query_embedding.weight  # (Q, 2C)
        if self.active_groups > 1:
            weight = torch.cat([weight, self.group_query_embedding.weight])  # (G*Q, 2C)
        query_pos, query = weight.split(self.embed_dims, dim=1)  # (G*Q, C) each
        return query_pos[None].expand(batch, -1, -1), query[None].expand(batch, -1, -1)

    def _denoising_queries(
        self, batch_gt_instances_3d: Sequence[InstanceData] | None, device: torch.device
    ) -> DenoisingQueries | None:
        """The batch's denoising queries in training with ``denoising`` and ground truth; None
        otherwise (inference, no ``denoising``, no ground truth given, or no sample has a box)."""
        if not self.training or self.denoising is None or batch_gt_instances_3d is None:
            return None
        codes = [self.bbox_coder.encode(g.bboxes_3d.to(device)) for g in batch_gt_instances_3d]  # (G_b, 10)
        labels = [g.labels_3d.to(device) for g in batch_gt_instances_3d]
        return self.denoising(codes, labels, self.num_query)

    def _with_selected(self, ref_points: Tensor, selected_refs: Tensor | None) -> Tensor:
        """The matching queries' initial reference points with the first k replaced by
        ``selected_refs`` (query selection from the image side; their content queries stay
        learned): (B, Q, 3) and (B, k, 3), normalised in pc_range -> (B, Q, 3)."""
        if selected_refs is None:
            return ref_points
        k = selected_refs.shape[1]
        if selected_refs.shape != (ref_points.shape[0], k, 3) or k > self.num_query:
            raise ValueError(
                f"selected_refs must be (B={ref_points.shape[0]}, k <= {self.num_query}, 3), got "
                f"{tuple(selected_refs.shape)}"
            )
        # (B, k, 3) selected and (B, Q - k, 3) learned -> (B, Q, 3)
        return torch.cat([selected_refs.to(ref_points.dtype), ref_points[:, k:]], 1)

    def _with_denoising(
        self, query: Tensor, query_pos: Tensor, ref_points: Tensor, dn: DenoisingQueries | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """The decoder's queries ``[matching (G*Q) | denoising (D)]`` and self-attention masks.

        Args:
            query, query_pos: (B, G*Q, C) the matching queries' content and position
                (G = :attr:`active_groups`).
            ref_points: (B, G*Q, 3) their reference points normalised in pc_range.
            dn: the denoising queries (built for Q matching queries), or None.

        Returns:
            query, query_pos (B, Q', C), ref_points (B, Q', 3), attn_mask (Q', Q') bool and
            key_padding_mask (B, Q') bool (True: hidden) with Q' = G*Q + D
            (:func:`group_attn_mask`); without ``dn`` and groups the inputs and no masks (None,
            None), without ``dn`` no key padding mask.
        """
        g, q = self.active_groups, self.num_query
        if dn is None:
            attn_mask = group_attn_mask(q, g, None, query.device) if g > 1 else None
            return query, query_pos, ref_points, attn_mask, None
        # (B, G*Q, .) and (B, D, .) -> (B, G*Q + D, .)
        query, query_pos = torch.cat([query, dn.query], 1), torch.cat([query_pos, dn.query_pos], 1)
        ref_points = torch.cat([ref_points, dn.ref_points], 1)
        if g == 1:
            return query, query_pos, ref_points, dn.attn_mask, dn.key_padding_mask
        # the padding of the denoising slots; every matching query is real
        padding = dn.key_padding_mask.new_zeros(query.shape[0], (g - 1) * q)  # (B, (G - 1) * Q)
        padding = torch.cat([padding, dn.key_padding_mask], 1)
        return query, query_pos, ref_points, group_attn_mask(q, g, dn.attn_mask, query.device), padding

    def _outputs(
        self, hidden: Tensor, refs: Tensor, raw_codes: Tensor, dn: DenoisingQueries | None = None
    ) -> dict:
        """Decoder outputs (num_layers, B, Q', C), reference points (num_layers, B, Q', 3) and branch
        outputs (num_layers, B, Q', 10) -> the head's outputs.

        Returns:
            ``all_cls_scores`` (num_layers, B, G*Q, K) and ``all_bbox_preds`` (num_layers, B, G*Q,
            10) of the matching queries (G = :attr:`active_groups`, group 0 first); with ``dn``
            (Q' = G*Q + D) also ``dn_cls_scores``
            (num_layers, B, D, K), ``dn_bbox_preds`` (num_layers, B, D, 10) and ``dn`` itself
            (the denoising queries' targets).
        """
        all_cls = torch.stack([branch(h) for branch, h in zip(self.cls_branches, hidden)])
        ray_yaw = None
        if self.ray_yaw_branches is not None:  # 'ego+ray': the ray-relative part of the heading
            ray_yaw = torch.stack([branch(h) for branch, h in zip(self.ray_yaw_branches, hidden)])
        all_bbox = self._to_code(raw_codes, refs, ray_yaw)
        if dn is None:
            return dict(all_cls_scores=all_cls, all_bbox_preds=all_bbox)
        q = self.active_groups * self.num_query
        # (num_layers, B, G*Q + D, .) -> the matching (.., :G*Q, .) and the denoising (.., G*Q:, .) queries
        return dict(
            all_cls_scores=all_cls[:, :, :q],
            all_bbox_preds=all_bbox[:, :, :q],
            dn_cls_scores=all_cls[:, :, q:],
            dn_bbox_preds=all_bbox[:, :, q:],
            dn=dn,
        )

    def _to_code(self, raw: Tensor, ref_points: Tensor, ray_yaw: Tensor | None = None) -> Tensor:
        """(..., Q, 10) branch output + (..., Q, 3) normalised reference -> (..., Q, 10) code, centre
        in m; with ``yaw_frame='ray'`` the branch's (sin, cos) rotated by the azimuth of the
        predicted centre (:func:`ray_to_ego_yaw`), and ``ray_yaw`` (..., Q, 2) (``'ego+ray'``'s
        ray-relative part) rotated alike and added to them."""
        center = (raw[..., list(CENTER_SLOTS)] + inverse_sigmoid(ref_points)).sigmoid()  # (B, Q, 3)
        center = denormalize_points(center, self.pc_range)
        # the orientation loss does not move the centre: the azimuth is a constant for it
        xy = center[..., :2].detach()
        yaw = raw[..., 6:8]
        if self.yaw_frame == "ray":
            yaw = ray_to_ego_yaw(yaw, xy)
        if ray_yaw is not None:
            yaw = yaw + ray_to_ego_yaw(ray_yaw, xy)
        parts = [center[..., :2], raw[..., 2:4], center[..., 2:3], raw[..., 5:6], yaw, raw[..., 8:]]
        return torch.cat(parts, dim=-1)

    def _flatten_levels(
        self, mlvl_feats: Sequence[Tensor], pad_hw: tuple[int, int]
    ) -> tuple[Tensor, FeatureLevels]:
        """L x (B, N, C, H_l, W_l) computed from a ``pad_hw`` batch -> value (B*N, S, C) and the levels."""
        self._check_feats(mlvl_feats)
        # (B, N, C, H, W) -> (B*N, C, H*W) -> (B*N, H*W, C), concatenated over levels
        value = torch.cat([f.flatten(0, 1).flatten(2).transpose(1, 2) for f in mlvl_feats], dim=1)
        levels = FeatureLevels.from_shapes([f.shape[-2:] for f in mlvl_feats], pad_hw, value.device)
        return value, levels

    def _check_feats(self, mlvl_feats: Sequence[Tensor]) -> None:
        if len(mlvl_feats) != self.num_levels:
            raise ValueError(
                f"mlvl_feats must have num_levels={self.num_levels} levels, got {len(mlvl_feats)}"
            )
        for feat in mlvl_feats:
            if feat.dim() != 5 or feat.shape[2] != self.embed_dims:
                raise ValueError(
                    f"each level must be (B, N, C={self.embed_dims}, H, W), got {tuple(feat.shape)}"
                )

    def loss(
        self, mlvl_feats: Sequence[Tensor], batch_data_samples: Sequence, **forward_kwargs
    ) -> dict[str, Tensor]:
        """Losses (:meth:`loss_by_outputs`) for ``Det3DDataSample``s with ``gt_instances_3d``;
        ``forward_kwargs`` go to the head's ``forward`` (e.g. the DETR3D-style head's
        ``selected_refs``, the BEVFormer head's ``history``)."""
        gts = [s.gt_instances_3d for s in batch_data_samples]
        outs = self(mlvl_feats, [s.metainfo for s in batch_data_samples], gts, **forward_kwargs)
        return self.loss_by_outputs(outs, gts)

    def loss_by_outputs(self, outs: dict, batch_gt_instances_3d: Sequence[InstanceData]) -> dict[str, Tensor]:
        """The losses of the head's ``forward`` outputs: those of every decoder layer
        (:meth:`loss_by_feat`) and, with ``denoising``, those of the denoising queries times its
        ``loss_weight`` (:meth:`loss_denoising`: ``dn_loss_cls``, ``dn_loss_bbox``,
        ``d{i}.dn_loss_*``), zero where ``outs`` has none (a batch without any box).

        Args:
            outs: the head's ``forward`` outputs (see :meth:`_outputs`).
            batch_gt_instances_3d: B ``InstanceData``, as :meth:`loss_by_feat`.
        """
        losses = self.loss_by_feat(
            outs["all_cls_scores"], outs["all_bbox_preds"], batch_gt_instances_3d, self.active_groups
        )
        if self.denoising is None:
            return losses
        if "dn" in outs:
            dn_losses = self.loss_denoising(outs["dn_cls_scores"], outs["dn_bbox_preds"], outs["dn"])
        else:  # zero losses that still reach the denoising parameters (every parameter gets a grad)
            zero = sum(p.sum() for p in self.denoising.parameters()) * 0.0
            dn_losses = {k.replace("loss_", "dn_loss_"): zero for k in losses}
        losses.update({k: v * self.denoising.loss_weight for k, v in dn_losses.items()})
        return losses

    def loss_by_feat(
        self,
        all_cls_scores: Tensor,
        all_bbox_preds: Tensor,
        batch_gt_instances_3d: Sequence[InstanceData],
        num_groups: int = 1,
    ) -> dict[str, Tensor]:
        """Losses per layer: ``loss_cls`` / ``loss_bbox`` for the last, ``d{i}.loss_*`` for the others.

        Args:
            all_cls_scores: (num_layers, B, Q, K) logits.
            all_bbox_preds: (num_layers, B, Q, 10) codes.
            batch_gt_instances_3d: B ``InstanceData`` with ``bboxes_3d`` (LiDARInstance3DBoxes,
                box_dim 9) and ``labels_3d`` (n,) long.
            num_groups: G groups of Q / G queries (``query_groups``), each matched on its own,
                the losses averaged over them.
        """
        losses = {}
        num_layers = all_cls_scores.shape[0]
        # costs, matching and losses in float32, also under fp16 autocast: in fp16 the focal cost of
        # a confident logit is -inf, which scipy's assignment rejects
        all_cls_scores, all_bbox_preds = all_cls_scores.float(), all_bbox_preds.float()
        with torch.autocast(device_type=all_cls_scores.device.type, enabled=False):
            for i in range(num_layers):
                loss_cls, loss_bbox = self._loss_single(
                    all_cls_scores[i], all_bbox_preds[i], batch_gt_instances_3d, num_groups
                )
                prefix = "" if i == num_layers - 1 else f"d{i}."
                losses[f"{prefix}loss_cls"] = loss_cls
                losses[f"{prefix}loss_bbox"] = loss_bbox
        return losses

    def _loss_single(
        self,
        cls_scores: Tensor,
        bbox_preds: Tensor,
        batch_gt_instances_3d: Sequence[InstanceData],
        num_groups: int = 1,
    ) -> tuple[Tensor, Tensor]:
        """(B, G*Q, K) logits and (B, G*Q, 10) codes of one layer -> focal and L1 losses; each of
        the G = ``num_groups`` groups of Q queries is matched on its own, and the losses are
        averaged over them (their positives normalise them together)."""
        if num_groups < 1 or cls_scores.shape[1] % num_groups:
            raise ValueError(
                f"num_groups={num_groups} must divide the {cls_scores.shape[1]} queries into equal groups"
            )
        q = cls_scores.shape[1] // num_groups
        # per sample, per group (in the order of (B, G*Q) flattened): (Q,) labels, (Q, 10) x 2
        targets = [
            self._targets_single(c, p, g)
            for cs, ps, g in zip(cls_scores, bbox_preds, batch_gt_instances_3d)
            for c, p in zip(cs.split(q), ps.split(q))
        ]
        # (B*G*Q,), (B*G*Q, 10) x 2
        labels, code_targets, code_weights = (torch.cat(t) for t in zip(*targets))
        num_pos = code_weights[:, 0].sum()
        avg_factor = reduce_mean(num_pos).clamp(min=1.0).item()  # same normaliser on every GPU
        # (B, G*Q, K) -> (B*G*Q, K) and (B, G*Q, 10) -> (B*G*Q, 10), in the order of the targets
        loss_cls = self.loss_cls(cls_scores.flatten(0, 1), labels, avg_factor=avg_factor)
        loss_bbox = self.loss_bbox(
            bbox_preds.flatten(0, 1), code_targets, code_weights * self.code_weights, avg_factor=avg_factor
        )
        return loss_cls, loss_bbox

    def loss_denoising(
        self, dn_cls_scores: Tensor, dn_bbox_preds: Tensor, dn: DenoisingQueries
    ) -> dict[str, Tensor]:
        """Losses of the denoising queries per layer, against the targets they were built from (no
        matching): focal loss on every real query (background for negatives), L1 on the codes of
        the positives, both averaged over the positives. ``dn_loss_cls`` / ``dn_loss_bbox`` for
        the last layer, ``d{i}.dn_loss_*`` for the others.

        Args:
            dn_cls_scores: (num_layers, B, D, K) logits.
            dn_bbox_preds: (num_layers, B, D, 10) codes.
            dn: the queries' targets (``labels``, ``label_weights``, ``code_targets``, ``code_weights``).
        """
        losses = {}
        num_layers = dn_cls_scores.shape[0]
        num_pos = dn.code_weights[..., 0].sum()
        avg_factor = reduce_mean(num_pos).clamp(min=1.0).item()  # same normaliser on every GPU
        # (B, D, ...) -> (B*D, ...)
        labels, label_weights = dn.labels.flatten(), dn.label_weights.flatten().float()
        code_targets, code_weights = (
            dn.code_targets.flatten(0, 1).float(),
            dn.code_weights.flatten(0, 1).float(),
        )
        dn_cls_scores, dn_bbox_preds = dn_cls_scores.float(), dn_bbox_preds.float()
        with torch.autocast(device_type=dn_cls_scores.device.type, enabled=False):
            for i in range(num_layers):
                prefix = "" if i == num_layers - 1 else f"d{i}."
                # (B, D, K) -> (B*D, K) and (B, D, 10) -> (B*D, 10)
                losses[f"{prefix}dn_loss_cls"] = self.loss_cls(
                    dn_cls_scores[i].flatten(0, 1), labels, label_weights, avg_factor=avg_factor
                )
                losses[f"{prefix}dn_loss_bbox"] = self.loss_bbox(
                    dn_bbox_preds[i].flatten(0, 1),
                    code_targets,
                    code_weights * self.code_weights,
                    avg_factor=avg_factor,
                )
        return losses

    def _targets_single(
        self, cls_scores: Tensor, bbox_preds: Tensor, gt_instances_3d: InstanceData
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Match one sample's (Q, K) logits and (Q, 10) codes to its ground truth.

        Returns:
            labels (Q,) long (K = background), code targets (Q, 10), code weights (Q, 10)
            (1 for matched queries, 0 otherwise).
        """
        gt_codes = self.bbox_coder.encode(gt_instances_3d.bboxes_3d.to(bbox_preds.device))  # (G, 10)
        gt_labels = gt_instances_3d.labels_3d.to(bbox_preds.device)
        assign = self.assigner.assign(
            InstanceData(scores=cls_scores.detach(), bboxes=bbox_preds.detach()),
            InstanceData(labels=gt_labels, bboxes=gt_codes),
        )
        pos = assign.gt_inds > 0  # (Q,)
        matched = assign.gt_inds[pos] - 1
        labels = gt_labels.new_full((cls_scores.shape[0],), self.num_classes)
        labels[pos] = gt_labels[matched]
        code_targets = torch.zeros_like(bbox_preds)
        code_targets[pos] = gt_codes[matched].to(bbox_preds.dtype)
        code_weights = torch.zeros_like(bbox_preds)
        code_weights[pos] = 1.0
        return labels, code_targets, code_weights

    def predict(
        self, mlvl_feats: Sequence[Tensor], batch_data_samples: Sequence, **forward_kwargs
    ) -> list[InstanceData]:
        """Boxes per sample: ``InstanceData`` with ``bboxes_3d`` (``LiDARInstance3DBoxes``, box_dim 9),
        ``scores_3d`` and ``labels_3d``; ``forward_kwargs`` go to the head's ``forward`` (e.g. the
        DETR3D-style head's ``selected_refs``)."""
        outs = self(mlvl_feats, [s.metainfo for s in batch_data_samples], **forward_kwargs)
        return self.predict_by_feat(outs["all_cls_scores"], outs["all_bbox_preds"])

    def predict_by_feat(self, all_cls_scores: Tensor, all_bbox_preds: Tensor) -> list[InstanceData]:
        """Decode the last layer's (B, Q, K) logits and (B, Q, 10) codes of
        (num_layers, B, Q, ...) outputs, NMS-free."""
        cls_scores, bbox_preds = all_cls_scores[-1], all_bbox_preds[-1]
        return [self.bbox_coder.decode(c, p) for c, p in zip(cls_scores, bbox_preds)]
