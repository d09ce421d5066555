"""GridMask augmentation (Chen et al., 2020) as a model layer that runs on the input's device.

BEVFormer and DETR3D build the mask with numpy and PIL and copy it to CUDA; here the mask is
one closed-form expression of the pixel coordinates, evaluated with torch on the images'
device, and its random parameters come from an optional ``torch.Generator``.

Per image, with pixel centres ``(x, y)`` rotated by ``theta`` to ``(u, v)``, period ``d``,
stripe width ``l = clip(round(ratio * d), 1, d - 1)`` and offsets ``(ox, oy)``:
``in_row = (v + oy) mod d < l`` and ``in_col = (u + ox) mod d < l``. Mode 0 drops the stripes
(``in_row or in_col``); mode 1 keeps the stripes and drops the squares between them, which is
``((d - l) / d) ** 2`` of the image without rotation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bev_deform.registry import MODELS


@MODELS.register_module()
class GridMask(nn.Module):
    """Zero a rotated grid pattern of every image in training; identity in eval mode.

    Args:
        use_h: draw row stripes.
        use_w: draw column stripes.
        period_range: (low, high) inclusive range of the grid period ``d`` in pixels;
            None means (2, min(H, W) - 1) of the input, as BEVFormer's GridMask.
        ratio: stripe width as a fraction of the period, in (0, 1).
        rotate_deg: the grid is rotated by an angle drawn from [0, rotate_deg) degrees.
        mode: 0 drops the stripes, 1 drops the squares between them.
        prob: probability that a forward call masks at all.
    """

    def __init__(
        self,
        use_h: bool = True,
        use_w: bool = True,
        period_range: Sequence[int] | None = None,
        ratio: float = 0.5,
        rotate_deg: float = 0.0,
        mode: int = 1,
        prob: float = 0.7,
    ) -> None:
        super().__init__()
        if not (use_h or use_w):
            raise ValueError("at least one of use_h, use_w must be True, got both False")
        if period_range is not None and (
            len(period_range) != 2 or not 2 <= period_range[0] <= period_range[1]
        ):
            raise ValueError(f"period_range must be (low, high) with 2 <= low <= high, got {period_range}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {ratio}")
        if mode not in (0, 1):
            raise ValueError(f"mode must be 0 (drop stripes) or 1 (drop squares), got {mode}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.use_h, self.use_w = use_h, use_w
        self.period_range = None if period_range is None else (int(period_range[0]), int(period_range[1]))
        self.ratio, self.rotate_deg, self.mode, self.prob = ratio, float(rotate_deg), mode, prob

    def forward(self, imgs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mask ``imgs`` (..., C, H, W), one mask per image shared by its channels.

        In eval mode, or when the draw against ``prob`` fails, ``imgs`` is returned as is.
        ``generator`` (on the CPU or on ``imgs``' device) makes the draws reproducible.
        """
        if imgs.dim() < 3:
            raise ValueError(f"imgs must be (..., C, H, W), got shape {tuple(imgs.shape)}")
        if not self.training or self.prob == 0.0:
            return imgs
        if torch.rand((), generator=generator, device=_gen_device(generator)).item() >= self.prob:
            return imgs
        lead, (height, width) = imgs.shape[:-3], imgs.shape[-2:]
        num = math.prod(lead)
        mask = self.make_mask(num, height, width, imgs.device, generator)  # (num, H, W)
        mask = mask.view(*lead, 1, height, width).to(imgs.dtype)  # (num, H, W) -> (..., 1, H, W)
        return imgs * mask

    def make_mask(
        self,
        num: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """(num, H, W) bool masks, True where the image is kept."""
        lo, hi = self.period_range or (2, max(2, min(height, width) - 1))
        gdev = _gen_device(generator)
        period = torch.randint(lo, hi + 1, (num,), generator=generator, device=gdev).float()
        offset = (
            torch.rand((num, 2), generator=generator, device=gdev) * period[:, None]
        )  # (num, 2) as (ox, oy)
        theta = torch.rand((num,), generator=generator, device=gdev) * math.radians(self.rotate_deg)
        period, offset, theta = period.to(device), offset.to(device), theta.to(device)
        stripe = (period * self.ratio).round().clamp(min=1.0)
        stripe = torch.minimum(stripe, period - 1)
        ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
        xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
        y, x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
        cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]  # (num, 1, 1)
        u = x * cos + y * sin  # (num, H, W) rotated column coordinate
        v = -x * sin + y * cos  # (num, H, W) rotated row coordinate
        d, stripe = period[:, None, None], stripe[:, None, None]  # (num, 1, 1)
        in_row = torch.remainder(v + offset[:, 1, None, None], d) < stripe
        in_col = torch.remainder(u + offset[:, 0, None, None], d) < stripe
        stripes = (in_row & self.use_h) | (in_col & self.use_w)  # (num, H, W)
        return ~stripes if self.mode == 0 else stripes

    def extra_repr(self) -> str:
        return (
            f"use_h={self.use_h}, use_w={self.use_w}, period_range={self.period_range}, ratio={self.ratio}, "
            f"rotate_deg={self.rotate_deg}, mode={self.mode}, prob={self.prob}"
        )


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device
