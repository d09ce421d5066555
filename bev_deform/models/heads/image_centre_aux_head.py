"""A training-only dense head on the camera features: where the 3D box centres project, what class,
how deep, which way they face and how big they are.

Query heads learn the image features only through the few points their queries sample, which
is slow when the backbone starts from scratch. This head gives every feature pixel a target, in
the manner of CenterNet / FCOS3D and of the 2D auxiliary heads of StreamPETR and Far3D: each
ground-truth box centre is projected with ``lidar2img`` (the same :func:`project_points` as the
attention) into every camera that sees it, and marks, on one neck level,

- a Gaussian peak in its class's heatmap (mmdet's ``gen_gaussian_target``, radius from the
  projected box extent by ``gaussian_radius``), trained with mmdet's ``GaussianFocalLoss``;
- at the peak pixel, the regression target ``(log depth, sin a, cos a, log l, log w, log h)``
  with L1: the camera depth of the centre, the observation angle ``a = yaw - azimuth of the
  centre`` (what a box looks like from the camera, invariant to where it is in the image), and
  the box size.

With ``loss_depth`` set it also learns dense depth from the lidar points of the sample (training
only, as BEVDepth's depth supervision and the dense depth losses of Sparse4D v2 / Far3D): every
LIDAR_TOP point is projected into every camera, each feature cell keeps the smallest depth of the
points that land in it (the surface the camera sees), and a 1x1 conv predicts log depth at every
cell, with L1 on the cells that hold a point. The pipeline must then load the points
(``LoadPointsFromFile``) and pack them (``keys=[..., 'points']``).

It adds nothing at inference unless the detector selects queries from it (DINO's mixed query
selection in 3D, ``DeformDETR3D(query_selection=k)``): :meth:`select_reference_points` lifts the
k strongest centre peaks over all cameras to 3D with the predicted depth and ``lidar2img``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.models.utils.gaussian_target import gaussian_radius, gen_gaussian_target
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from bev_deform.geometry import (
    CameraGeometry,
    level_stride,
    normalize_points,
    project_points,
    unproject_pixels,
)
from bev_deform.registry import MODELS

REG_SIZE = 6  # (log depth, sin a, cos a, log l, log w, log h)
MIN_DEPTH = 0.5  # metres: nearer corners are left out of a box's extent; the depth target is clamped to it


def check_labels(labels: Tensor, num_classes: int, who: str) -> None:
    """A named error where ``labels`` (G,) has a class outside [0, num_classes) (a -1 'ignore'
    label would otherwise draw into the last class's heatmap)."""
    if not bool(((labels >= 0) & (labels < num_classes)).all()):  # True for no labels
        bad = sorted({int(v) for v in labels.tolist() if not 0 <= v < num_classes})
        raise ValueError(f"{who}: labels_3d must be in [0, {num_classes}), got {bad}")


def centre_losses(
    loss_heatmap: nn.Module,
    loss_reg: nn.Module,
    heat_logits: Tensor,
    heat_t: Tensor,
    reg_pred: Tensor,
    reg_t: Tensor,
) -> tuple[Tensor, Tensor]:
    """A dense centre head's two losses: ``loss_heatmap`` (a ``GaussianFocalLoss``, which takes
    probabilities) of the heatmap logits against the Gaussian targets, averaged over the P centres,
    and ``loss_reg`` of the (P, R) regression picked at the centres against its (P, R) targets,
    averaged over the P * R entries; in float32, also under fp16 autocast (in fp16, 1 - 1e-4
    rounds to 1 and log(1 - p) to -inf). Shared by the image and the BEV aux heads."""
    num_pos = max(int(reg_t.shape[0]), 1)
    with torch.autocast(device_type=heat_logits.device.type, enabled=False):
        heat = heat_logits.float().sigmoid().clamp(1e-4, 1 - 1e-4)
        loss_h = loss_heatmap(heat, heat_t, avg_factor=num_pos)
        loss_r = loss_reg(reg_pred.float(), reg_t.float(), avg_factor=num_pos * reg_t.shape[1])
    return loss_h, loss_r


@MODELS.register_module()
class ImageCentreAuxHead(BaseModule):
    """Per-camera centre heatmaps and centre regression on one neck level, as auxiliary losses.

    Config dict, as the detector's ``aux_head`` (which passes ``num_classes`` and ``in_channels``
    down from its query head)::

        dict(type='ImageCentreAuxHead', level=0,
             loss_heatmap=dict(type='mmdet.GaussianFocalLoss', loss_weight=1.0),
             loss_reg=dict(type='mmdet.L1Loss', loss_weight=0.5))

    Args:
        num_classes: K heatmap channels.
        in_channels: channels of the neck level.
        feat_channels: channels of the shared 3x3 conv.
        level: which neck level (index into the detector's feature list) the head reads.
        min_overlap: ``gaussian_radius``'s IoU for the peak's radius.
        loss_heatmap: heatmap loss config, averaged over the projected centres.
        loss_reg: regression loss config, averaged over the projected centres and 6 entries.
        loss_depth: dense depth loss config (e.g. ``dict(type='mmdet.L1Loss', loss_weight=1.0)``)
            on log depth, averaged over the cells that hold a lidar point; None (default): no
            depth branch and no lidar points needed.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 64,
        level: int = 0,
        min_overlap: float = 0.7,
        loss_heatmap: dict | None = None,
        loss_reg: dict | None = None,
        loss_depth: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if num_classes < 1 or in_channels < 1 or feat_channels < 1:
            raise ValueError(
                f"num_classes, in_channels and feat_channels must be >= 1, got "
                f"{num_classes}, {in_channels}, {feat_channels}"
            )
        self.num_classes, self.level, self.min_overlap = num_classes, level, min_overlap
        self.shared = nn.Sequential(
            nn.Conv2d(in_channels, feat_channels, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.heatmap = nn.Conv2d(feat_channels, num_classes, 1)
        self.reg = nn.Conv2d(feat_channels, REG_SIZE, 1)
        # dense log depth from the lidar points (only with loss_depth, so other state dicts stay as they were)
        self.depth = nn.Conv2d(feat_channels, 1, 1) if loss_depth is not None else None
        self.loss_depth = MODELS.build(loss_depth) if loss_depth is not None else None
        loss_heatmap = loss_heatmap or dict(type="mmdet.GaussianFocalLoss", loss_weight=1.0)
        self.loss_heatmap = MODELS.build(loss_heatmap)
        self.loss_reg = MODELS.build(loss_reg or dict(type="mmdet.L1Loss", loss_weight=0.5))

    def init_weights(self) -> None:
        """Heatmap biases for a prior probability of 0.1 (CenterNet's -2.19)."""
        super().init_weights()
        nn.init.constant_(self.heatmap.bias, bias_init_with_prob(0.1))

    def select_reference_points(
        self, feat: Tensor, cams: CameraGeometry, num_points: int, pc_range: Sequence[float]
    ) -> tuple[Tensor, Tensor]:
        """The ``num_points`` strongest centre peaks of a sample, over all its cameras, lifted to 3D.

        A peak is a pixel whose best class score is the largest of its 3x3 neighbourhood (CenterNet's
        max-pool NMS); its image pixel is the cell centre ``((x + 0.5) s, (y + 0.5) s)`` on the level
        of stride s, its depth ``exp`` of the predicted log depth, and :func:`unproject_pixels` with
        that camera's ``lidar2img`` gives the point, normalised in ``pc_range`` and clamped to it.

        Args:
            feat: (B, N, C, H, W) the head's neck level.
            cams: the batch's cameras.
            num_points: k.
            pc_range: (x0, y0, z0, x1, y1, z1) metres.

        Returns:
            reference points (B, k, 3) normalised in pc_range and their scores (B, k), detached.
        """
        heat, reg = self(feat)  # (B, N, K, H, W), (B, N, 6, H, W)
        b, n, _, h, w = heat.shape
        if not 1 <= num_points <= n * h * w:
            raise ValueError(f"num_points must be in [1, N*H*W={n * h * w}], got {num_points}")
        score = heat.detach().sigmoid().amax(2)  # (B, N, H, W) best class
        pooled = nn.functional.max_pool2d(score.flatten(0, 1), 3, stride=1, padding=1).view_as(score)
        score = score * (score == pooled)  # peaks only
        top, idx = score.flatten(1).topk(num_points, dim=1)  # (B, k) over N*H*W
        cam, pix = idx // (h * w), idx % (h * w)
        stride = level_stride(cams.pad_hw, (h, w))
        uv = torch.stack([(pix % w).to(top) + 0.5, (pix // w).to(top) + 0.5], -1) * stride  # (B, k, 2)
        depth = reg.detach()[:, :, 0].flatten(1).gather(1, idx).exp()  # (B, N*H*W) -> (B, k)
        l2i = cams.lidar2img[torch.arange(b, device=idx.device)[:, None], cam]  # (B, k, 4, 4)
        points = unproject_pixels(uv, depth, l2i)  # (B, k, 3) metres
        return normalize_points(points, pc_range).clamp(0.0, 1.0).to(feat.dtype), top

    def forward(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, C, H, W) level -> heatmap logits (B, N, K, H, W) and regression (B, N, 6, H, W)."""
        return self._branches(self.shared(feat.flatten(0, 1)), feat.shape[:2])

    def _branches(self, x: Tensor, bn: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The heatmap and regression convs on the shared (B*N, C', H, W) features."""
        return self.heatmap(x).unflatten(0, tuple(bn)), self.reg(x).unflatten(0, tuple(bn))

    def loss(
        self,
        mlvl_feats: Sequence[Tensor],
        batch_data_samples: Sequence,
        points: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``aux_loss_heatmap`` and ``aux_loss_reg`` for the detector's levels (B, N, C, H_l, W_l) and
        ``Det3DDataSample``s with ``gt_instances_3d`` and camera metainfo; with ``loss_depth`` also
        ``aux_loss_depth`` from ``points``, B tensors (P_i, >= 3) of LIDAR_TOP (x, y, z, ...)."""
        if not -len(mlvl_feats) <= self.level < len(mlvl_feats):
            raise ValueError(f"level={self.level} is not one of the {len(mlvl_feats)} feature levels")
        if self.loss_depth is not None and (points is None or len(points) != len(batch_data_samples)):
            got = None if points is None else f"{len(points)} point clouds"
            raise ValueError(
                f"loss_depth needs the lidar points of each of the {len(batch_data_samples)} samples "
                f"(batch_inputs_dict['points']: LoadPointsFromFile in the pipeline and 'points' in the "
                f"packed keys), got {got}"
            )
        feat = mlvl_feats[self.level]
        x = self.shared(feat.flatten(0, 1))  # (B, N, C, H, W) -> (B*N, C', H, W)
        heat_logits, reg = self._branches(x, feat.shape[:2])
        cams = CameraGeometry.from_metas([s.metainfo for s in batch_data_samples], feat.device)
        heat_t, reg_t, index = self.targets(
            [s.gt_instances_3d for s in batch_data_samples], cams, tuple(feat.shape[-2:])
        )
        # (B, N, 6, H, W) -> (B, N, H, W, 6), picked at the centre pixels (b, n, y, x) -> (P, 6)
        reg_pred = reg.permute(0, 1, 3, 4, 2)[index.unbind(1)]
        loss_heatmap, loss_reg = centre_losses(
            self.loss_heatmap, self.loss_reg, heat_logits, heat_t, reg_pred, reg_t
        )
        losses = dict(aux_loss_heatmap=loss_heatmap, aux_loss_reg=loss_reg)
        if self.loss_depth is not None:
            depth_t = self.depth_targets(points, cams, tuple(feat.shape[-2:]))  # (B, N, H, W), 0: no point
            hit = depth_t > 0
            with torch.autocast(device_type=feat.device.type, enabled=False):
                pred = self.depth(x).float().view_as(depth_t)[hit]  # (B*N, 1, H, W) -> (B, N, H, W) -> (D,)
                losses["aux_loss_depth"] = self.loss_depth(
                    pred, depth_t[hit].log(), avg_factor=max(int(hit.sum()), 1)
                )
        return losses

    @torch.no_grad()
    def depth_targets(
        self, points: Sequence[Tensor], cams: CameraGeometry, feat_hw: tuple[int, int]
    ) -> Tensor:
        """The smallest camera depth of the lidar points in each feature cell of each camera.

        Args:
            points: B tensors (P_i, >= 3), LIDAR_TOP (x, y, z, ...) in metres.
            cams: the batch's cameras (the feature map was computed from a ``cams.pad_hw`` batch).
            feat_hw: (H, W) of the feature level.

        Returns:
            (B, N, H, W) depth in metres of the nearest point that projects into the cell (inside
            the camera's image, at least ``MIN_DEPTH`` in front of it), 0 where no point does.
        """
        b, n = cams.lidar2img.shape[:2]
        h, w = feat_hw
        stride = level_stride(cams.pad_hw, feat_hw)
        out = cams.lidar2img.new_full((b, n, h * w), torch.inf, dtype=torch.float32)
        for i, pts in enumerate(points):
            xyz = pts[:, :3].to(device=out.device, dtype=torch.float32)[None]  # (1, P, 3)
            uv, valid, depth = project_points(xyz, cams.lidar2img[i : i + 1], cams.img_hw[i : i + 1])
            pix = uv[0] * cams.img_hw[i].flip(-1)[:, None, :].to(uv)  # (N, P, 2) image (x, y) pixels
            cell = (pix / stride).floor().long()  # (N, P, 2) cells of the level
            keep = valid[0] & (depth[0] >= MIN_DEPTH) & (cell[..., 0] < w) & (cell[..., 1] < h)
            flat = (cell[..., 1] * w + cell[..., 0]).clamp(0, h * w - 1)  # (N, P)
            out[i].scatter_reduce_(1, flat, depth[0].float().where(keep, torch.inf), reduce="amin")
        return out.where(out.isfinite(), 0.0).view(b, n, h, w)

    @torch.no_grad()
    def targets(
        self, batch_gt_instances_3d: Sequence[InstanceData], cams: CameraGeometry, feat_hw: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Heatmaps and regression targets of a batch on a (H, W) feature map.

        Args:
            batch_gt_instances_3d: B ``InstanceData`` with ``bboxes_3d`` (LiDARInstance3DBoxes)
                and ``labels_3d`` (G,).
            cams: the batch's cameras (the feature map was computed from a ``cams.pad_hw`` batch).
            feat_hw: (H, W) of the feature level.

        Returns:
            heatmap (B, N, K, H, W) in [0, 1]; reg (P, 6) targets and index (P, 4) long
            ``(b, n, y, x)`` of their centre pixels, one row per (box, camera that sees its centre).
        """
        b, n = cams.lidar2img.shape[:2]
        h, w = feat_hw
        device = cams.lidar2img.device
        heatmap = torch.zeros(b, n, self.num_classes, h, w, device=device)
        regs, index = [], []
        # feature cells per image pixel: 1 / the level's stride (its cell j spans pixels [s j, s (j + 1)])
        scale = torch.full((2,), 1.0 / level_stride(cams.pad_hw, feat_hw), device=device)
        for i, gt in enumerate(batch_gt_instances_3d):
            boxes = gt.bboxes_3d.to(device)
            if len(boxes) == 0:
                continue
            check_labels(gt.labels_3d, self.num_classes, "ImageCentreAuxHead")
            centres = boxes.gravity_center.float()  # (G, 3)
            corners = boxes.corners.float()  # (G, 8, 3)
            l2i = cams.lidar2img[i : i + 1]  # (1, N, 4, 4)
            pix_wh = cams.img_hw[i].flip(-1)[None, :, None, :]  # (1, N, 1, 2) image (W, H) per camera
            uv, valid, depth = project_points(centres[None], l2i, cams.img_hw[i : i + 1])  # (1, N, G, *)
            cuv, _, cdepth = project_points(corners.flatten(0, 1)[None], l2i, cams.img_hw[i : i + 1])
            # extent of the corners in front of the camera: (1, N, G*8, *) -> (N, G, 8, *), feature pixels
            corner_pix = (cuv * pix_wh)[0].unflatten(1, (len(boxes), 8)) * scale
            front = (cdepth[0] > MIN_DEPTH).unflatten(1, (len(boxes), 8))[..., None]  # (N, G, 8, 1)
            extent = corner_pix.where(front, -torch.inf).amax(2) - corner_pix.where(front, torch.inf).amin(2)
            extent = extent.nan_to_num(posinf=0.0, neginf=0.0).clamp(min=0.0)  # (N, G, 2) as (w, h)
            extent = torch.minimum(extent, scale.new_tensor([w, h]))
            centre_pix = uv[0] * pix_wh[0] * scale  # (N, G, 2) feature pixels
            alpha = boxes.yaw.float() - torch.atan2(centres[:, 1], centres[:, 0])  # (G,)
            size = boxes.dims.float().clamp(min=1e-3).log()  # (G, 3) log (l, w, h)
            # (N, G, 1) log depth | (G, 2) -> (N, G, 2) sin/cos a | (G, 3) -> (N, G, 3) -> (N, G, 6)
            reg_all = torch.cat(
                [
                    depth[0].clamp(min=MIN_DEPTH).log()[..., None],
                    torch.stack([alpha.sin(), alpha.cos()], -1).expand(n, -1, -1),
                    size.expand(n, -1, -1),
                ],
                dim=-1,
            )
            for cam, g in valid[0].nonzero().tolist():
                x, y = centre_pix[cam, g].floor().long().tolist()
                if not (0 <= x < w and 0 <= y < h):
                    continue
                ext_w, ext_h = extent[cam, g].tolist()
                radius = max(0, int(gaussian_radius((ext_h, ext_w), self.min_overlap)))
                gen_gaussian_target(heatmap[i, cam, int(gt.labels_3d[g])], [x, y], radius)
                index.append((i, cam, y, x))
                regs.append(reg_all[cam, g])
        reg = torch.stack(regs) if regs else heatmap.new_zeros(0, REG_SIZE)
        index = torch.tensor(index, dtype=torch.long, device=device).view(-1, 4)
        return heatmap, reg, index
