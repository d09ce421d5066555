"""Draw where each query's 3D deformable attention sampled, camera by camera.

For the chosen queries of one sample and one decoder layer: the projected reference point
(magenta disc), the sampling points coloured by feature level and sized by attention weight,
predicted (blue) and ground-truth (green) boxes as projected 3D wireframes, on each of the six
camera images; a 2x3 mosaic in the nuScenes layout with a bird's-eye panel and a legend.

For a BEVFormer-style model the camera panels show where the encoder's spatial cross-attention
sampled for the BEV cells under the chosen boxes (each cell's pillar anchors as magenta discs),
and the bird's-eye panel where the decoder's queries sampled on the BEV (red, sized by weight)
around their reference points, with those cells as grey squares.

Coordinates: the images are the network inputs (after resize/crop, before padding), and
locations are drawn where mmcv's op samples them, converted to image pixels per level by
:mod:`bev_deform.geometry` (edge coordinates: pixel i spans [i, i + 1]); a projected point (u, v)
of ``lidar2img`` is drawn at (u, v), so the principal point lands on pixel (cx, cy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from mmdet3d.structures import LiDARInstance3DBoxes  # noqa: E402
from mmdet3d.visualization import Det3DLocalVisualizer  # noqa: E402

from bev_deform.geometry import CAM_NAMES, project_points  # noqa: E402
from bev_deform.registry import VISUALIZERS  # noqa: E402
from bev_deform.visualization.recorder import BEVLayerRecord, LayerRecord  # noqa: E402

# nuScenes' own 2x3 layout: front row left-to-right, then the back row
MOSAIC_ORDER = ((2, 0, 1), (4, 3, 5))
LEVEL_COLORS = ("#ffe119", "#3cb44b", "#00e5ff", "#f58231", "#ffffff", "#911eb4")
REF_COLOR = "#ff00ff"
PRED_COLOR, GT_COLOR = "#4363d8", "#2ecc40"
BEV_SAMPLE_COLOR, CELL_COLOR = "#e6194b", "#808080"


@dataclass
class CameraDrawing:
    """One annotated camera image and how many sampling points were drawn on it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    num_points: int
    num_refs: int


def valid_sample_mask(record: LayerRecord, img_hw: Sequence[int]) -> torch.Tensor:
    """(N, K, M, L, P) bool: the samples that land inside camera n's image, for the cameras
    that see the reference point. ``record`` holds one sample (batch dim 1)."""
    pix = record.pixels[0].double()  # (N, K, M, L, P, 2) edge coordinates
    inside = (pix[..., 0] >= 0) & (pix[..., 0] <= img_hw[1]) & (pix[..., 1] >= 0) & (pix[..., 1] <= img_hw[0])
    return inside & record.valid[0][:, :, None, None, None]  # (N, K, M, L, P)


@VISUALIZERS.register_module()
class SamplingPointsVisualizer(Det3DLocalVisualizer):
    """Det3DLocalVisualizer that also draws recorded deformable-attention sampling points.

    Args:
        name: instance name (mmengine's ManagerMixin).
        point_size: marker area (pt^2) of a sampling point with the largest weight drawn.
        ref_radius: radius in pixels of the reference-point disc.
        **kwargs: passed to :class:`Det3DLocalVisualizer` (e.g. ``vis_backends``, ``save_dir``).
    """

    def __init__(
        self, name: str = "sampling_visualizer", point_size: float = 40.0, ref_radius: float = 4.0, **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.point_size, self.ref_radius = point_size, ref_radius

    def draw_camera(
        self,
        image: np.ndarray,
        cam: int,
        record: LayerRecord,
        meta: dict,
        boxes: dict[str, LiDARInstance3DBoxes | None],
    ) -> CameraDrawing:
        """Annotate camera ``cam`` of one sample.

        Args:
            image: (H, W, 3) uint8 RGB network input of this camera (unpadded).
            cam: camera index n.
            record: one sample's selected queries (see :meth:`LayerRecord.select`).
            meta: the sample's metainfo with ``lidar2img`` (N, 4, 4).
            boxes: ``{'pred': boxes or None, 'gt': boxes or None}`` in the LIDAR_TOP frame.
        """
        h, w = image.shape[:2]
        self.set_image(image)
        for key, color in (("gt", GT_COLOR), ("pred", PRED_COLOR)):
            self._draw_boxes(boxes.get(key), np.asarray(meta["lidar2img"][cam]), (h, w), color)
        mask = valid_sample_mask(record, (h, w))[cam]  # (K, M, L, P)
        loc = record.pixels[0, cam].double()  # (K, M, L, P, 2) image pixels
        weights = record.weights[0].double()  # (K, M, L, P)
        w_max = float(weights.max()) if weights.numel() else 1.0
        for lvl in range(loc.shape[2]):  # L
            sel = mask[:, :, lvl]  # (K, M, P)
            if sel.any():
                pts = loc[:, :, lvl][sel]  # (n, 2)
                sizes = 4.0 + self.point_size * (weights[:, :, lvl][sel] / w_max)
                self.draw_points(
                    pts.numpy(), colors=LEVEL_COLORS[lvl % len(LEVEL_COLORS)], sizes=sizes.numpy()
                )
        # (K, 2) with (K,) validity, or (K, R, 2) with (K, R) for R reference points per query
        ref_valid = record.valid[0, cam] if record.ref_valid is None else record.ref_valid[0, cam]
        refs = record.ref_pixels[0, cam][ref_valid].double()  # (k, 2) image pixels
        if len(refs):
            self.draw_circles(
                refs.numpy(),
                np.full(len(refs), self.ref_radius),
                edge_colors=REF_COLOR,
                face_colors=REF_COLOR,
                alpha=1.0,
            )
        self.ax_save.set_xlim(0, w)  # drawings outside the image must not rescale it
        self.ax_save.set_ylim(h, 0)
        return CameraDrawing(self.get_image(), num_points=int(mask.sum()), num_refs=len(refs))

    def _draw_boxes(self, boxes, lidar2img: np.ndarray, hw: tuple[int, int], color: str) -> None:
        """Projected wireframes of the boxes whose 8 corners are all in front of the camera
        (a corner behind it would project to a mirrored, huge polygon)."""
        if boxes is None or len(boxes) == 0:
            return
        corners = boxes.corners.double().reshape(1, -1, 3)  # (K, 8, 3) -> (1, K*8, 3)
        _, _, depth = project_points(corners, torch.from_numpy(lidar2img).double()[None, None], hw)
        front = (depth[0, 0].view(-1, 8) > 0.1).all(dim=1)  # (K,)
        if front.any():
            self.draw_proj_bboxes_3d(
                boxes[front], {"lidar2img": lidar2img}, edge_colors=[color] * int(front.sum()),
                face_colors="none", alpha=1.0, line_widths=1.5, img_size=(hw[1], hw[0])
            )  # fmt: skip

    def draw_sample(
        self,
        images: np.ndarray,
        record: LayerRecord,
        meta: dict,
        boxes: dict[str, LiDARInstance3DBoxes | None],
        title: str = "",
        bev: BEVLayerRecord | None = None,
    ) -> tuple[list[CameraDrawing], np.ndarray]:
        """All cameras of one sample and the mosaic.

        Args:
            images: (N, H, W, 3) uint8 RGB network inputs.
            record, meta, boxes: as in :meth:`draw_camera`.
            title: mosaic title (sample token, layer, queries).
            bev: one sample's chosen queries of a BEV decoder layer (:meth:`BEVLayerRecord.select`),
                drawn in the bird's-eye panel; ``record`` then holds BEV cells (drawn there too).

        Returns:
            The N camera drawings, and the mosaic (2x3 cameras + BEV panel + legend) as an
            (H', W', 3) uint8 RGB array.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8 RGB, got shape {images.shape}")
        drawings = [self.draw_camera(img, n, record, meta, boxes) for n, img in enumerate(images)]
        return drawings, self._mosaic(drawings, record, boxes, title, bev)

    def _mosaic(self, drawings, record: LayerRecord, boxes, title: str, bev=None) -> np.ndarray:
        n_cams = len(drawings)
        order = MOSAIC_ORDER if n_cams == 6 else (tuple(range(n_cams)),)
        names = CAM_NAMES if n_cams == 6 else [f"cam {i}" for i in range(n_cams)]
        h, w = drawings[0].image.shape[:2]
        rows, cols = len(order), len(order[0])
        fig = plt.figure(figsize=(cols * w / 100 + rows * h / 100, rows * h / 100 + 0.4), dpi=100)
        grid = fig.add_gridspec(rows, cols + rows, wspace=0.02, hspace=0.08)
        for r, row in enumerate(order):
            for c, cam in enumerate(row):
                ax = fig.add_subplot(grid[r, c])
                ax.imshow(drawings[cam].image)
                ax.set_title(f"{names[cam]}  ({drawings[cam].num_points} samples)", fontsize=8)
                ax.axis("off")
        self._bev_panel(fig.add_subplot(grid[:, cols:]), record, boxes, bev)
        fig.suptitle(title, fontsize=9)
        fig.canvas.draw()
        mosaic = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return mosaic

    def _bev_panel(self, ax, record: LayerRecord, boxes, bev: BEVLayerRecord | None = None) -> None:
        """Bird's-eye view (LIDAR_TOP frame, +y forward up) with boxes, reference points, legend;
        with ``bev``, the decoder's BEV samples and the cells of ``record``."""
        for key, color in (("gt", GT_COLOR), ("pred", PRED_COLOR)):
            b = boxes.get(key)
            if b is None or len(b) == 0:
                continue
            corners = b.corners[:, [0, 3, 7, 4, 0], :2].numpy()  # (K, 5, 2) bottom face, closed
            for poly in corners:
                ax.plot(poly[:, 0], poly[:, 1], color=color, lw=1)
                ax.plot(poly[2:4, 0], poly[2:4, 1], color=color, lw=2.5)  # front edge (x1 side)
        handles = []
        if bev is None:
            refs = record.ref_points[0].numpy()  # (K, 3)
        else:
            cells = record.ref_points[0].numpy()  # (K, 3) the SCA cells drawn in the cameras
            ax.scatter(cells[:, 0], cells[:, 1], marker="s", c=CELL_COLOR, s=14, zorder=2)
            pts = bev.points[0].reshape(-1, 2).double().numpy()  # (K*M*L*P, 2) metres
            weights = bev.weights[0].reshape(-1).double()
            sizes = 2.0 + self.point_size * 0.5 * (weights / max(float(weights.max()), 1e-12))
            ax.scatter(pts[:, 0], pts[:, 1], c=BEV_SAMPLE_COLOR, s=sizes.numpy(), alpha=0.6, lw=0, zorder=3)
            refs = bev.ref_points[0].numpy()  # (K, 2)
            handles += [
                Line2D(
                    [], [], color=BEV_SAMPLE_COLOR, marker="o", ls="", label="BEV samples (size = weight)"
                ),
                Line2D([], [], color=CELL_COLOR, marker="s", ls="", label="BEV cells sampled in the cameras"),
            ]
        ax.scatter(refs[:, 0], refs[:, 1], c=REF_COLOR, s=12, zorder=4)
        ax.scatter([0], [0], marker="^", c="k", s=40, zorder=4)
        ax.set_aspect("equal")
        ax.set_title("bird's-eye view (LIDAR_TOP, forward up)", fontsize=8)
        ax.tick_params(labelsize=6)
        ref_label = "reference point" if bev is None else "reference point / pillar anchor"
        handles = [Line2D([], [], color=REF_COLOR, marker="o", ls="", label=ref_label)] + handles
        handles += [
            Line2D([], [], color=c, marker="o", ls="", label=f"samples, level {i} (size = weight)")
            for i, c in enumerate(LEVEL_COLORS[: record.pixels.shape[-3]])
        ]
        handles += [
            Line2D([], [], color=PRED_COLOR, label="predicted box"),
            Line2D([], [], color=GT_COLOR, label="ground truth"),
        ]
        ax.legend(handles=handles, fontsize=6, loc="lower left", facecolor="#dddddd")
