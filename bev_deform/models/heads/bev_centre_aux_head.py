"""A training-only dense head on the BEV: where the box centres are, what class, and how fast they
move.

The object queries teach the BEV encoder only through the few points their cross-attention
samples, and velocity only through the matched queries' regression. This head gives every BEV
cell a target, as CenterPoint's head does on a lidar BEV (and the dense BEV heads of BEVDet /
BEVDepth): each ground-truth box centre marks, on the encoder's (H_bev, W_bev) grid,

- a Gaussian peak in its class's heatmap (mmdet's ``gen_gaussian_target``, radius from the box
  footprint in cells by ``gaussian_radius``, at least ``min_radius``), trained with mmdet's
  ``GaussianFocalLoss``;
- at its centre cell, the regression target ``(dc, dr, vx, vy)`` with L1: where in the cell the
  centre lies (column and row offsets in [0, 1)) and the box's velocity in m/s (LiDAR frame).

With a history BEV (the temporal config) the dense velocity target asks the encoder, and BEVDet4D's
fusion where it is on, to write the motion it sees between the frames into every object's cell.
Nothing at inference: the detector never reads it, and its parameters (``bev_aux.*``) are outside
the official BEVFormer state-dict layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.models.utils.gaussian_target import gaussian_radius, gen_gaussian_target
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from bev_deform.geometry import BEVGrid
from bev_deform.models.heads.image_centre_aux_head import centre_losses, check_labels
from bev_deform.registry import MODELS

REG_SIZE = 4  # (dc, dr) centre offset in its cell, (vx, vy) m/s


@MODELS.register_module()
class BEVCentreAuxHead(BaseModule):
    """Centre heatmaps and centre regression (offset, velocity) on the BEV, as auxiliary losses.

    Config dict, as ``BEVFormerHead``'s ``bev_aux`` (which passes ``num_classes``, ``embed_dims``
    and its encoder's ``grid`` down)::

        dict(feat_channels=64, min_overlap=0.1, min_radius=1,
             loss_heatmap=dict(type='mmdet.GaussianFocalLoss', loss_weight=1.0),
             loss_reg=dict(type='mmdet.L1Loss', loss_weight=1.0))

    Args:
        num_classes: K heatmap channels.
        embed_dims: channels C of the BEV.
        grid: the encoder's BEV grid (cells <-> metres).
        feat_channels: channels of the shared 3x3 conv.
        min_overlap: ``gaussian_radius``'s IoU for a peak's radius (CenterPoint's 0.1).
        min_radius: smallest peak radius in cells (a pedestrian is a third of a 2 m cell).
        loss_heatmap: heatmap loss config, averaged over the box centres on the grid.
        loss_reg: regression loss config, averaged over those centres and the 4 entries.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dims: int,
        grid: BEVGrid,
        feat_channels: int = 64,
        min_overlap: float = 0.1,
        min_radius: int = 1,
        loss_heatmap: dict | None = None,
        loss_reg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if num_classes < 1 or embed_dims < 1 or feat_channels < 1 or min_radius < 0:
            raise ValueError(
                f"num_classes, embed_dims and feat_channels must be >= 1 and min_radius >= 0, got "
                f"{num_classes}, {embed_dims}, {feat_channels}, {min_radius}"
            )
        self.num_classes, self.grid = num_classes, grid
        self.min_overlap, self.min_radius = min_overlap, min_radius
        self.shared = nn.Sequential(nn.Conv2d(embed_dims, feat_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.heatmap = nn.Conv2d(feat_channels, num_classes, 1)
        self.reg = nn.Conv2d(feat_channels, REG_SIZE, 1)
        loss_heatmap = loss_heatmap or dict(type="mmdet.GaussianFocalLoss", loss_weight=1.0)
        self.loss_heatmap = MODELS.build(loss_heatmap)
        self.loss_reg = MODELS.build(loss_reg or dict(type="mmdet.L1Loss", loss_weight=1.0))

    def init_weights(self) -> None:
        """Heatmap biases for a prior probability of 0.1 (CenterNet's -2.19)."""
        super().init_weights()
        nn.init.constant_(self.heatmap.bias, bias_init_with_prob(0.1))

    def forward(self, bev: Tensor) -> tuple[Tensor, Tensor]:
        """(B, H*W, C) BEV (row-major cells) -> heatmap logits (B, K, H, W) and regression (B, 4, H, W)."""
        b, q, c = bev.shape
        h, w = self.grid.shape
        if q != h * w:
            raise ValueError(f"bev must be (B, H*W={h * w}, C) for the {h}x{w} grid, got {tuple(bev.shape)}")
        x = self.shared(bev.transpose(1, 2).reshape(b, c, h, w))  # (B, H*W, C) -> (B, C, H, W)
        return self.heatmap(x), self.reg(x)

    def loss(self, bev: Tensor, batch_gt_instances_3d: Sequence[InstanceData]) -> dict[str, Tensor]:
        """``bev_aux_loss_heatmap`` and ``bev_aux_loss_reg`` of the (B, H*W, C) BEV against B
        ``InstanceData`` with ``bboxes_3d`` (LiDARInstance3DBoxes with velocity) and ``labels_3d``."""
        heat_logits, reg = self(bev)
        heat_t, reg_t, index = self.targets(batch_gt_instances_3d, bev.device)
        # (B, 4, H, W) -> (B, H, W, 4), picked at the centre cells (b, row, column) -> (P, 4)
        reg_pred = reg.permute(0, 2, 3, 1)[index.unbind(1)]
        loss_heatmap, loss_reg = centre_losses(
            self.loss_heatmap, self.loss_reg, heat_logits, heat_t, reg_pred, reg_t
        )
        return dict(bev_aux_loss_heatmap=loss_heatmap, bev_aux_loss_reg=loss_reg)

    @torch.no_grad()
    def targets(
        self, batch_gt_instances_3d: Sequence[InstanceData], device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Heatmaps and regression targets of a batch on the BEV grid.

        Args:
            batch_gt_instances_3d: B ``InstanceData`` with ``bboxes_3d`` (LiDARInstance3DBoxes of
                at least 9 values: the velocity (vx, vy) is the last two) and ``labels_3d`` (G,).
            device: where the targets go.

        Returns:
            heatmap (B, K, H, W) in [0, 1]; reg (P, 4) targets ``(dc, dr, vx, vy)`` and index (P, 3)
            long ``(b, row, column)`` of their centre cells, one row per box whose centre is on
            the grid (a box centred outside it has none).
        """
        h, w = self.grid.shape
        dx, dy = self.grid.cell_size
        heatmap = torch.zeros(len(batch_gt_instances_3d), self.num_classes, h, w, device=device)
        regs, index = [], []
        for i, gt in enumerate(batch_gt_instances_3d):
            boxes = gt.bboxes_3d.to(device)
            if len(boxes) == 0:
                continue
            if boxes.tensor.shape[1] < 9:
                raise ValueError(
                    f"bev_aux needs the boxes' velocity (bboxes_3d of 9 values, (vx, vy) last), got "
                    f"{boxes.tensor.shape[1]} values per box"
                )
            check_labels(gt.labels_3d, self.num_classes, "BEVCentreAuxHead")
            cells = self.grid.metres_to_cells(boxes.tensor[:, :2].float())  # (G, 2) (column, row)
            corner = cells.floor()
            for g, ((col, row), (length, width)) in enumerate(
                zip(corner.long().tolist(), boxes.tensor[:, 3:5].float().tolist())
            ):
                if not (0 <= col < w and 0 <= row < h):
                    continue
                # the footprint in cells, as CenterPoint (l along x, w along y, the heading left out)
                radius = int(gaussian_radius((width / dy, length / dx), self.min_overlap))
                radius = max(self.min_radius, radius)
                gen_gaussian_target(heatmap[i, int(gt.labels_3d[g])], [col, row], radius)
                index.append((i, row, col))
                regs.append(torch.cat([cells[g] - corner[g], boxes.tensor[g, 7:9].float()]))
        reg = torch.stack(regs) if regs else heatmap.new_zeros(0, REG_SIZE)
        index = torch.tensor(index, dtype=torch.long, device=device).view(-1, 3)
        return heatmap, reg, index
