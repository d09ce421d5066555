"""The one home of projection math, shared by the model, the visualiser and the tests.

Conventions (DESIGN.md): points are in the LIDAR_TOP frame; ``lidar2img = cam2img @ lidar2cam``
is a 4x4 matrix per camera, already updated by every image transform that resized or cropped
the image; pixel coordinates are those of the (transformed, unpadded) image, and normalised
coordinates divide them by the image size the sampling grid refers to (the padded batch shape
in the model, so that feature maps and locations agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEPTH_EPS = 1e-5


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


def lidar2img_from_calib(cam2img: Tensor, lidar2cam: Tensor) -> Tensor:
    """Compose (..., 3|4, 3|4) intrinsics with (..., 4, 4) extrinsics into (..., 4, 4) lidar2img."""
    k = torch.eye(4, dtype=lidar2cam.dtype, device=lidar2cam.device).expand(lidar2cam.shape).clone()
    k[..., : cam2img.shape[-2], : cam2img.shape[-1]] = cam2img.to(lidar2cam)
    return k @ lidar2cam
