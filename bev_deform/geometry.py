"""The one home of camera and feature-level geometry, shared by the model, the visualiser and the tests.

Conventions (DESIGN.md): points are in the LIDAR_TOP frame; ``lidar2img = cam2img @ lidar2cam``
is a 4x4 matrix per camera, already updated by every image transform that resized or cropped
the image; pixel coordinates are those of the (transformed, unpadded) image, in edge
coordinates (pixel i spans [i, i + 1]).

Feature levels: a level of stride ``s`` computed from the padded batch (``pad_hw``) has
``ceil(pad / s)`` cells per axis (what a chain of stride-2, "same"-padded convolutions and
poolings gives), and its cell ``j`` spans image pixels ``[s j, s (j + 1)]``. A level therefore
covers ``size * s`` pixels, which is more than the padded image when ``pad / s`` is not an
integer (the stride-64 level of a 448x800 input is 7x13 and covers 448x832). Sampling locations
of a level are normalised by that extent (:class:`FeatureLevels`), so that mmcv's
``pixel = loc * size - 0.5`` lands on the cell under the image pixel at every level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

DEPTH_EPS = 1e-5
# the six cameras in nuScenes order (DESIGN.md), the order of every multi-view tensor
CAM_NAMES = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


def denormalize_points(points: Tensor, pc_range: Sequence[float]) -> Tensor:
    """Map points from [0, 1]^3 to metres inside ``pc_range``.

    Args:
        points: (..., 3) normalised (x, y, z).
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) in metres.

    Returns:
        (..., 3) metric points.
    """
    lo, hi = _range_tensors(pc_range, points)
    return points * (hi - lo) + lo


def normalize_points(points: Tensor, pc_range: Sequence[float]) -> Tensor:
    """Inverse of :func:`denormalize_points`: (..., 3) metres -> (..., 3) in [0, 1] inside pc_range."""
    lo, hi = _range_tensors(pc_range, points)
    return (points - lo) / (hi - lo)


def moved_back(ref_points: Tensor, velocity: Tensor, gap: Tensor, pc_range: Sequence[float]) -> Tensor:
    """Where each query's object was ``gap`` seconds ago if it kept its velocity: the reference
    points moved by ``-velocity * gap`` in x and y (the BEV decoder's ``motion_compensation``).

    Args:
        ref_points: (B, Q, 3) normalised in pc_range.
        velocity: (B, Q, 2) (vx, vy) m/s in the same LIDAR_TOP frame.
        gap: (B,) seconds from the earlier frame to the current one (0: not moved).
        pc_range: (x0, y0, z0, x1, y1, z1) metres.

    Returns:
        (B, Q, 3) normalised in pc_range, z unchanged; outside [0, 1] where the object came from
        outside the range.
    """
    metres = denormalize_points(ref_points, pc_range)
    xy = metres[..., :2] - velocity.to(metres) * gap.to(metres)[:, None, None]
    return normalize_points(torch.cat((xy, metres[..., 2:]), -1), pc_range)


def _range_tensors(pc_range: Sequence[float], like: Tensor) -> tuple[Tensor, Tensor]:
    if len(pc_range) != 6:
        raise ValueError(f"pc_range must have 6 values (x0, y0, z0, x1, y1, z1), got {list(pc_range)}")
    if like.shape[-1] != 3:
        raise ValueError(f"points must have a last dimension of 3 (x, y, z), got shape {tuple(like.shape)}")
    r = torch.as_tensor(pc_range, dtype=like.dtype, device=like.device)
    return r[:3], r[3:]


def project_points(
    points: Tensor, lidar2img: Tensor, img_hw: tuple[int, int] | Tensor, eps: float = DEPTH_EPS
) -> tuple[Tensor, Tensor, Tensor]:
    """Project 3D points into every camera.

    Args:
        points: (B, Q, 3) metric points in the LIDAR_TOP frame.
        lidar2img: (B, N, 4, 4) per-camera projection matrices.
        img_hw: (H, W) of the image the normalised coordinates refer to, shared by all cameras,
            or a (B, N, 2) tensor of per-camera (H, W).
        eps: points with depth <= eps are behind the camera.

    Returns:
        uv: (B, N, Q, 2) normalised image coordinates (u / W, v / H); meaningful where valid.
        valid: (B, N, Q) bool, depth > eps and 0 <= uv <= 1.
        depth: (B, N, Q) camera depth in metres.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, Q, 3), got shape {tuple(points.shape)}")
    if lidar2img.dim() != 4 or lidar2img.shape[-2:] != (4, 4) or lidar2img.shape[0] != points.shape[0]:
        raise ValueError(
            f"lidar2img must be (B={points.shape[0]}, N, 4, 4), got shape {tuple(lidar2img.shape)}"
        )
    lidar2img = lidar2img.to(points.dtype)
    homo = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)  # (B, Q, 4)
    # (B, N, 4, 4) @ (B, 1, 4, Q) -> (B, N, 4, Q) -> (B, N, Q, 4)
    cam = torch.matmul(lidar2img, homo.transpose(1, 2).unsqueeze(1)).transpose(2, 3)
    depth = cam[..., 2]  # (B, N, Q)
    in_front = depth > eps
    pix = cam[..., :2] / depth.clamp(min=eps).unsqueeze(-1)  # (B, N, Q, 2) pixels (u, v)
    if isinstance(img_hw, Tensor):
        wh = img_hw.to(pix).flip(-1).unsqueeze(-2)  # (B, N, 1, 2) as (W, H)
    else:
        wh = pix.new_tensor([float(img_hw[1]), float(img_hw[0])])  # (2,) as (W, H)
    uv = pix / wh  # (B, N, Q, 2) in [0, 1] inside the image
    inside = ((uv >= 0) & (uv <= 1)).all(dim=-1)
    valid = in_front & inside
    return uv, valid, depth


def unproject_pixels(pixels: Tensor, depth: Tensor, lidar2img: Tensor) -> Tensor:
    """The inverse of :func:`project_points`: image pixels at a camera depth -> LIDAR_TOP points.

    Args:
        pixels: (..., 2) image pixels (u, v), edge coordinates.
        depth: (...,) camera depth in metres (the third row of ``lidar2img`` applied to the point).
        lidar2img: (..., 4, 4) the camera of each pixel.

    Returns:
        (..., 3) metric points in the LIDAR_TOP frame.
    """
    if pixels.shape[-1] != 2 or depth.shape != pixels.shape[:-1] or lidar2img.shape != (*depth.shape, 4, 4):
        raise ValueError(
            "pixels (..., 2), depth (...) and lidar2img (..., 4, 4) must share their leading dimensions, got "
            f"{tuple(pixels.shape)}, {tuple(depth.shape)} and {tuple(lidar2img.shape)}"
        )
    dtype = torch.promote_types(pixels.dtype, torch.float32)
    d = depth.to(dtype)
    homo = torch.stack(
        [pixels[..., 0].to(dtype) * d, pixels[..., 1].to(dtype) * d, d, torch.ones_like(d)], -1
    )
    return (torch.linalg.inv(lidar2img.to(dtype)) @ homo[..., None])[..., :3, 0]  # (..., 4, 1) -> (..., 3)


def lidar2img_from_calib(cam2img: Tensor, lidar2cam: Tensor) -> Tensor:
    """Compose (..., 3|4, 3|4) intrinsics with (..., 4, 4) extrinsics into (..., 4, 4) lidar2img."""
    k = torch.eye(4, dtype=lidar2cam.dtype, device=lidar2cam.device).expand(lidar2cam.shape).clone()
    k[..., : cam2img.shape[-2], : cam2img.shape[-1]] = cam2img.to(lidar2cam)
    return k @ lidar2cam


class CameraGeometry(NamedTuple):
    """The cameras of one batch, as the attentions and heads need them.

    Attributes:
        lidar2img: (B, N, 4, 4) LIDAR_TOP -> pixel projection of each camera, after image transforms.
        img_hw: (B, N, 2) (H, W) of each camera's real image; points outside it are invalid, and
            feature cells beyond it are padding.
        pad_hw: (H, W) of the padded batch the feature maps were computed from.
    """

    lidar2img: Tensor
    img_hw: Tensor
    pad_hw: tuple[int, int]

    @classmethod
    def from_metas(cls, batch_input_metas: Sequence[dict], device: torch.device | str) -> CameraGeometry:
        """Build from ``Det3DDataSample.metainfo`` dicts with ``lidar2img`` (N, 4, 4),
        ``img_shape`` ((H, W) shared by the cameras, or one (H, W) per camera) and
        ``batch_input_shape`` (H, W) set by the data preprocessor."""
        if len(batch_input_metas) == 0:
            raise ValueError("batch_input_metas must hold one metainfo dict per sample, got none")
        lidar2img, img_hw = [], []
        for meta in batch_input_metas:
            for key in ("lidar2img", "img_shape", "batch_input_shape"):
                if key not in meta:
                    raise ValueError(f"batch_input_metas need {key!r}, got keys {sorted(meta)}")
            l2i = np.asarray(meta["lidar2img"], dtype=np.float32)  # (N, 4, 4)
            if l2i.ndim != 3 or l2i.shape[1:] != (4, 4):
                raise ValueError(f"meta['lidar2img'] must be (N, 4, 4), got shape {l2i.shape}")
            hw = np.asarray(meta["img_shape"], dtype=np.float32)
            if hw.ndim == 1:  # (H, W[, C]) shared by all cameras -> (N, 2)
                hw = np.broadcast_to(hw[:2], (l2i.shape[0], 2))
            elif hw.ndim != 2 or hw.shape[0] != l2i.shape[0]:
                raise ValueError(f"meta['img_shape'] must be (H, W) or (N, 2), got {meta['img_shape']}")
            lidar2img.append(l2i)
            img_hw.append(hw[:, :2])
        pad_h, pad_w = batch_input_metas[0]["batch_input_shape"][:2]
        return cls(
            lidar2img=torch.from_numpy(np.stack(lidar2img)).to(device),  # (B, N, 4, 4)
            img_hw=torch.from_numpy(np.stack(img_hw)).to(device),  # (B, N, 2)
            pad_hw=(int(pad_h), int(pad_w)),
        )


def level_stride(pad_hw: Sequence[int], level_hw: Sequence[int]) -> int:
    """The stride of a feature level of shape ``level_hw`` computed from a ``pad_hw`` input.

    The stride is the power of two nearest ``pad / size``, checked against the level's shape:
    ``ceil(pad / stride)`` must equal the level's size on both axes.

    Raises:
        ValueError: for a level shape that no power-of-two stride explains.
    """
    (ph, pw), (h, w) = (int(v) for v in pad_hw[:2]), (int(v) for v in level_hw[:2])
    if min(ph, pw, h, w) < 1:
        raise ValueError(f"pad_hw and level_hw must be positive, got {tuple(pad_hw)} and {tuple(level_hw)}")
    stride = 2 ** round(math.log2(max(ph / h, pw / w)))
    if math.ceil(ph / stride) != h or math.ceil(pw / stride) != w:
        raise ValueError(
            f"feature level of shape {(h, w)} is not a stride-{stride} level of the padded input "
            f"{(ph, pw)} (expected {(math.ceil(ph / stride), math.ceil(pw / stride))}); "
            "levels must have ceil(pad / stride) cells per axis for a power-of-two stride"
        )
    return stride


class FeatureLevels(NamedTuple):
    """The flattened feature levels of one batch and where their cells lie in the image.

    Attributes:
        spatial_shapes: (L, 2) long, (H_l, W_l) per level (the op's argument).
        level_start_index: (L,) long, start of each level in the flattened S = sum H_l * W_l.
        shapes: the same (H_l, W_l) as Python ints, for shape arithmetic without a device sync.
        strides: stride s_l of each level in image pixels.
    """

    spatial_shapes: Tensor
    level_start_index: Tensor
    shapes: tuple[tuple[int, int], ...]
    strides: tuple[int, ...]

    @classmethod
    def from_shapes(
        cls, shapes: Sequence[Sequence[int]], pad_hw: Sequence[int], device: torch.device | str = "cpu"
    ) -> FeatureLevels:
        """Levels of shapes (H_l, W_l) computed from a ``pad_hw`` input (strides by :func:`level_stride`)."""
        shapes = tuple((int(h), int(w)) for h, w in shapes)
        strides = tuple(level_stride(pad_hw, hw) for hw in shapes)
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device).view(-1, 2)
        sizes = spatial_shapes.prod(1)  # (L,)
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        return cls(spatial_shapes, level_start_index, shapes, strides)

    @property
    def num_levels(self) -> int:
        return len(self.shapes)

    @property
    def num_values(self) -> int:
        """S, the flattened length of all levels."""
        return sum(h * w for h, w in self.shapes)

    def extent_wh(self, like: Tensor) -> Tensor:
        """(L, 2) (W_l * s_l, H_l * s_l): the image pixels each level covers, in ``like``'s dtype."""
        ext = [(w * s, h * s) for (h, w), s in zip(self.shapes, self.strides)]
        return torch.tensor(ext, dtype=like.dtype, device=like.device)

    def pixels_to_locations(self, pixels: Tensor) -> Tensor:
        """(..., 2) image pixels (u, v) -> (..., L, 2) sampling locations normalised per level."""
        return pixels[..., None, :] / self.extent_wh(pixels)  # (..., 1, 2) / (L, 2)

    def locations_to_pixels(self, locations: Tensor, level_dim: int = -3) -> Tensor:
        """Sampling locations (..., L, ..., 2) normalised per level (level axis ``level_dim``, of the
        full tensor) -> image pixels, the inverse of :meth:`pixels_to_locations`."""
        view = [1] * locations.dim()
        view[level_dim], view[-1] = self.num_levels, 2
        return locations * self.extent_wh(locations).view(view)

    def valid_shapes(self, img_hw: Tensor) -> Tensor:
        """(K, 2) real image (H, W) of K cameras -> (K, L, 2) long (H_v, W_v): per level, the rows
        and columns of cells whose centre lies in the real image (the op's ``valid_shapes``). The
        complement of :meth:`padding_mask` is the rectangle of the first H_v rows and W_v columns.

        A cell i has its centre (i + 0.5) s inside an image of size h when i < h / s - 0.5, so
        H_v = ceil(h / s - 0.5), at most H_l (and likewise for W_v)."""
        strides = torch.tensor(self.strides, dtype=img_hw.dtype, device=img_hw.device)  # (L,)
        sizes = self.spatial_shapes.to(img_hw)  # (L, 2) (H_l, W_l)
        # (K, 1, 2) / (1, L, 1) -> (K, L, 2) cells whose centre is before the image's edge
        inside = torch.ceil(img_hw[:, None, :] / strides[None, :, None] - 0.5)
        return torch.minimum(inside.clamp(min=0), sizes).long()

    def padding_mask(self, img_hw: Tensor) -> Tensor:
        """(K, 2) real image (H, W) of K cameras -> (K, S) bool, True for the cells whose centre lies
        in the padding (beyond the real image) of that camera, in the flattened level order."""
        masks = []
        for (h, w), s in zip(self.shapes, self.strides):
            ys = (torch.arange(h, device=img_hw.device, dtype=img_hw.dtype) + 0.5) * s  # (H_l,) pixels
            xs = (torch.arange(w, device=img_hw.device, dtype=img_hw.dtype) + 0.5) * s  # (W_l,)
            # (1, H_l, 1) >= (K, 1, 1) | (1, 1, W_l) >= (K, 1, 1) -> (K, H_l, W_l)
            pad = (ys[None, :, None] >= img_hw[:, 0, None, None]) | (
                xs[None, None, :] >= img_hw[:, 1, None, None]
            )
            masks.append(pad.flatten(1))  # (K, H_l * W_l)
        return torch.cat(masks, dim=1)  # (K, S)


# BEVFormer's pillar anchors start and end this far (metres) inside pc_range's z extent
PILLAR_MARGIN = 0.5


@dataclass(frozen=True)
class BEVGrid:
    """The bird's-eye-view grid over pc_range: the one home of BEV cell <-> metres conversions.

    ``bev_h`` rows along y and ``bev_w`` columns along x cover pc_range's (x, y) extent; cell
    (i, j), row i and column j, has the flat index ``i * bev_w + j`` (row-major, the order of the
    BEV queries and of a flattened (H, W) BEV map) and spans
    ``x in [x0 + j dx, x0 + (j + 1) dx]``, ``y in [y0 + i dy, y0 + (i + 1) dy]``.

    Normalised BEV coordinates ``(u, v) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0))`` are the
    pc_range-normalised (x, y) of :func:`normalize_points` and, with mmcv's sampling semantics
    (``column = u * W - 0.5``), the MSDA locations on the (H, W) BEV map: cell j's centre is
    ``u = (j + 0.5) / W``. Cell coordinates ``(c, r)`` are edge coordinates as for pixels:
    cell (i, j) spans ``[j, j + 1] x [i, i + 1]``.

    Attributes:
        bev_h: rows H (along y).
        bev_w: columns W (along x).
        pc_range: (x0, y0, z0, x1, y1, z1) metres.
    """

    bev_h: int
    bev_w: int
    pc_range: tuple[float, ...]

    def __post_init__(self) -> None:
        if int(self.bev_h) < 1 or int(self.bev_w) < 1:
            raise ValueError(f"bev_h and bev_w must be >= 1, got {self.bev_h} x {self.bev_w}")
        r = tuple(float(v) for v in self.pc_range)
        if len(r) != 6 or not all(lo < hi for lo, hi in zip(r[:3], r[3:])):
            raise ValueError(
                f"pc_range must be (x0, y0, z0, x1, y1, z1) with x0 < x1 etc., got {self.pc_range}"
            )
        object.__setattr__(self, "bev_h", int(self.bev_h))
        object.__setattr__(self, "bev_w", int(self.bev_w))
        object.__setattr__(self, "pc_range", r)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.bev_h, self.bev_w

    @property
    def num_cells(self) -> int:
        return self.bev_h * self.bev_w

    @property
    def cell_size(self) -> tuple[float, float]:
        """(dx, dy) in metres."""
        x0, y0, _, x1, y1, _ = self.pc_range
        return (x1 - x0) / self.bev_w, (y1 - y0) / self.bev_h

    def _xy_range(self, like: Tensor) -> tuple[Tensor, Tensor]:
        if like.shape[-1] != 2:
            raise ValueError(
                f"BEV coordinates must have a last dimension of 2 (x, y), got shape {tuple(like.shape)}"
            )
        x0, y0, _, x1, y1, _ = self.pc_range
        return like.new_tensor([x0, y0]), like.new_tensor([x1 - x0, y1 - y0])

    def metres_to_locations(self, xy: Tensor) -> Tensor:
        """(..., 2) metric (x, y) -> (..., 2) normalised BEV coordinates (u, v)."""
        lo, size = self._xy_range(xy)
        return (xy - lo) / size

    def locations_to_metres(self, uv: Tensor) -> Tensor:
        """(..., 2) normalised BEV coordinates (u, v) -> (..., 2) metric (x, y)."""
        lo, size = self._xy_range(uv)
        return uv * size + lo

    def metres_to_cells(self, xy: Tensor) -> Tensor:
        """(..., 2) metric (x, y) -> (..., 2) cell coordinates (column, row), edge convention."""
        return self.metres_to_locations(xy) * xy.new_tensor([float(self.bev_w), float(self.bev_h)])

    def cells_to_metres(self, cells: Tensor) -> Tensor:
        """(..., 2) cell coordinates (column, row) -> (..., 2) metric (x, y); cell centres are at +0.5."""
        return self.locations_to_metres(cells / cells.new_tensor([float(self.bev_w), float(self.bev_h)]))

    def cell_index(self, xy: Tensor) -> Tensor:
        """(..., 2) metric (x, y) -> (...,) long flat index of the cell that holds each point, -1 outside
        the grid."""
        cr = torch.floor(self.metres_to_cells(xy)).long()  # (..., 2) (column, row)
        inside = (cr[..., 0] >= 0) & (cr[..., 0] < self.bev_w) & (cr[..., 1] >= 0) & (cr[..., 1] < self.bev_h)
        return torch.where(inside, cr[..., 1] * self.bev_w + cr[..., 0], -1)

    def cell_locations(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """(H*W, 2) normalised (u, v) of every cell centre, in flat (row-major) order."""
        v = (torch.arange(self.bev_h, device=device, dtype=dtype) + 0.5) / self.bev_h  # (H,)
        u = (torch.arange(self.bev_w, device=device, dtype=dtype) + 0.5) / self.bev_w  # (W,)
        # (1, W) and (H, 1) -> (H, W, 2) -> (H*W, 2)
        uv = torch.stack([u[None, :].expand(self.bev_h, -1), v[:, None].expand(-1, self.bev_w)], dim=-1)
        return uv.flatten(0, 1)

    def cell_centres(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """(H*W, 2) metric (x, y) of every cell centre, in flat (row-major) order."""
        return self.locations_to_metres(self.cell_locations(device, dtype))

    def pillar_heights(
        self, num_points: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """(D,) metric heights of a pillar's D anchors: evenly spaced from ``PILLAR_MARGIN`` above
        pc_range's bottom to ``PILLAR_MARGIN`` below its top (BEVFormer's ``linspace(0.5, Z - 0.5, D)``
        over a Z-metre range), or the middle height for D = 1."""
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        z0, z1 = self.pc_range[2], self.pc_range[5]
        margin = min(PILLAR_MARGIN, (z1 - z0) / 2)
        if num_points == 1:
            return torch.full((1,), (z0 + z1) / 2, device=device, dtype=dtype)
        return torch.linspace(z0 + margin, z1 - margin, num_points, device=device, dtype=dtype)

    def pillar_points(
        self, num_points: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """(H*W, D, 3) metric (x, y, z) of every cell's D pillar anchors (cell centre, each height)."""
        xy = self.cell_centres(device, dtype)  # (H*W, 2)
        z = self.pillar_heights(num_points, device, dtype)  # (D,)
        # (H*W, 1, 2) and (1, D, 1) -> (H*W, D, 3)
        return torch.cat(
            [xy[:, None, :].expand(-1, num_points, -1), z[None, :, None].expand(xy.shape[0], -1, -1)], dim=-1
        )

    def levels(self, device: torch.device | str = "cpu") -> FeatureLevels:
        """The BEV map as the one level of an MSDA call: shape (H, W), stride 1."""
        return FeatureLevels.from_shapes([self.shape], self.shape, device)

    def align_history(self, prev_bev: Tensor, cur_from_prev: Tensor) -> tuple[Tensor, Tensor]:
        """Warp the previous frame's BEV into this frame's grid (the ego motion between the two).

        Each current cell centre ``p`` (x, y in metres, z = 0, in the current LIDAR_TOP frame) is
        taken into the previous frame, ``prev_from_cur @ p``, and the previous BEV is read there
        bilinearly (cell-centre convention, as the MSDA locations). The rotation is about the ego
        (the LIDAR_TOP origin), wherever it lies in the grid, for any H x W and pc_range (no fixed
        rotation centre: BEVFormer#96). A cell whose point falls outside the previous grid's extent
        is zero and not valid.

        Args:
            prev_bev: (B, H*W, C) the previous BEV, flat row-major (:class:`BEVGrid`).
            cur_from_prev: (B, 4, 4) maps previous LIDAR_TOP coordinates into the current ones
                (:func:`lidar_motion`).

        Returns:
            aligned (B, H*W, C) in this frame's grid, and valid (B, H*W) bool.
        """
        b, hw = prev_bev.shape[:2]
        if prev_bev.dim() != 3 or hw != self.num_cells:
            raise ValueError(
                f"prev_bev must be (B, H*W={self.num_cells}, C) for the {self.bev_h}x{self.bev_w} grid, "
                f"got shape {tuple(prev_bev.shape)}"
            )
        if cur_from_prev.shape != (b, 4, 4):
            raise ValueError(f"cur_from_prev must be (B={b}, 4, 4), got shape {tuple(cur_from_prev.shape)}")
        dtype = torch.promote_types(prev_bev.dtype, torch.float32)
        xy = self.cell_centres(prev_bev.device, dtype)  # (H*W, 2) current frame
        pts = torch.cat([xy, xy.new_zeros(hw, 1), xy.new_ones(hw, 1)], -1)  # (H*W, 4) homogeneous, z = 0
        prev_from_cur = torch.linalg.inv(cur_from_prev.to(dtype))  # (B, 4, 4)
        prev_xy = (prev_from_cur[:, None] @ pts[None, :, :, None])[..., :2, 0]  # (B, H*W, 2) previous frame
        uv = self.metres_to_locations(prev_xy)  # (B, H*W, 2) normalised in the previous grid
        valid = ((uv >= 0) & (uv < 1)).all(-1)  # (B, H*W)
        grid = (2.0 * uv - 1.0).view(b, self.bev_h, self.bev_w, 2)  # grid_sample's [-1, 1], cell centres
        # (B, H*W, C) -> (B, H, W, C) -> (B, C, H, W)
        image = prev_bev.view(b, self.bev_h, self.bev_w, -1).permute(0, 3, 1, 2).to(dtype)
        warped = torch.nn.functional.grid_sample(
            image, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B, C, H, W)
        aligned = warped.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
        aligned = aligned * valid[..., None].to(dtype)
        return aligned.to(prev_bev.dtype), valid


def lidar2global(lidar2ego: Tensor, ego2global: Tensor) -> Tensor:
    """(..., 4, 4) LIDAR_TOP -> global pose from the info files' ``lidar_points['lidar2ego']`` and
    ``ego2global`` (both (..., 4, 4); tensors, or numpy arrays as the dataset reads them)."""
    return ego2global @ lidar2ego


def meta_matrix(meta: dict, key: str = "lidar2global", name: str = "the metainfo") -> Tensor:
    """One sample's metainfo matrix, ``lidar2global`` (4, 4) or ``lidar2img`` (N, 4, 4), as the
    dataset packs it (numpy array, list or tensor), as a float64 CPU tensor: poses are composed in
    float64, where global coordinates kilometres from the origin keep their sub-millimetre digits.
    Raises a ``ValueError`` naming ``name`` (which metainfo) and the key where it lacks the key or
    the matrix is not (..., 4, 4)."""
    if meta.get(key) is None:
        raise ValueError(f"{name} needs {key!r} (a (..., 4, 4) matrix), got keys {sorted(meta)}")
    matrix = torch.as_tensor(np.asarray(meta[key], dtype=np.float64))
    if matrix.shape[-2:] != (4, 4):
        raise ValueError(f"{name}'s {key!r} must be (..., 4, 4), got {tuple(matrix.shape)}")
    return matrix


def lidar_motion(prev_lidar2global: Tensor, cur_lidar2global: Tensor) -> Tensor:
    """(..., 4, 4) that maps points in the previous frame's LIDAR_TOP into the current frame's:
    ``inv(cur_lidar2global) @ prev_lidar2global`` (the exact SE(3) ego motion; no CAN bus)."""
    return torch.linalg.inv(cur_lidar2global) @ prev_lidar2global


def earlier_lidar2img(
    earlier_lidar2img: Tensor, earlier_lidar2global: Tensor, cur_lidar2global: Tensor
) -> Tensor:
    """(..., N, 4, 4) projections of the *current* frame's LIDAR_TOP points into an earlier
    frame's N images, where a static point was seen then: ``earlier_lidar2img @
    lidar_motion(cur_lidar2global, earlier_lidar2global)`` (current -> earlier LIDAR_TOP, the exact
    ego motion from the poses), computed in float64. ``earlier_lidar2img`` (..., N, 4, 4), the
    poses (..., 4, 4)."""
    if earlier_lidar2img.shape[-2:] != (4, 4) or earlier_lidar2global.shape[-2:] != (4, 4):
        raise ValueError(
            f"earlier_lidar2img must be (..., N, 4, 4) and the poses (..., 4, 4), got "
            f"{tuple(earlier_lidar2img.shape)} and {tuple(earlier_lidar2global.shape)}"
        )
    earlier_from_cur = lidar_motion(cur_lidar2global.double(), earlier_lidar2global.double())
    return earlier_lidar2img.double() @ earlier_from_cur[..., None, :, :]


EGO_MOTION_DIMS = 6


def ego_motion_features(cur_from_prev: Tensor, time_gap: Tensor) -> Tensor:
    """What the BEV queries may know of the ego motion since the history frame, from the poses
    (in place of BEVFormer's CAN-bus vector): (..., 4, 4) :func:`lidar_motion` and (...) seconds
    -> (..., 6) ``[tx, ty, sin(yaw), cos(yaw) - 1, time_gap, 1]``, where (tx, ty) metres is where
    the previous LIDAR_TOP origin lies in the current frame and yaw the rotation about z from the
    previous frame's axes to the current one's. A frame without history has all six zero
    (:func:`no_ego_motion`), so the last entry tells the two apart; no motion in 0 s is
    ``[0, 0, 0, 0, 0, 1]``."""
    if cur_from_prev.shape[-2:] != (4, 4) or cur_from_prev.shape[:-2] != time_gap.shape:
        raise ValueError(
            f"cur_from_prev must be (..., 4, 4) and time_gap (...), got {tuple(cur_from_prev.shape)} and "
            f"{tuple(time_gap.shape)}"
        )
    yaw = torch.atan2(cur_from_prev[..., 1, 0], cur_from_prev[..., 0, 0])
    t = cur_from_prev[..., :2, 3]
    return torch.stack(
        [t[..., 0], t[..., 1], yaw.sin(), yaw.cos() - 1, time_gap.to(t.dtype), torch.ones_like(yaw)], -1
    )


def no_ego_motion(
    *batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Tensor:
    """(*batch, 6) zeros: the :func:`ego_motion_features` of frames without history."""
    return torch.zeros(*batch, EGO_MOTION_DIMS, device=device, dtype=dtype)
