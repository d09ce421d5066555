"""Resize + crop (+ optional flip) of all camera views, with ``cam2img`` and ``lidar2img`` kept exact.

Pixel convention (DESIGN.md): continuous image coordinates in which pixel ``i`` covers
``[i, i + 1)``, so its centre is ``i + 0.5``. In these coordinates mmcv's (OpenCV's) resize by
``(sx, sy)`` maps ``u -> sx * u`` exactly, a crop at ``(x0, y0)`` maps ``u -> u - x0``, and a
horizontal flip of a ``W``-wide image maps ``u -> W - u``. A projection gives homogeneous image
coordinates ``(u d, v d, d, 1)``, so the three steps are the 4x4 matrix

    A = [[sx, 0, -x0, 0],          (flipped: row 0 = [-sx, 0, W + x0, 0])
         [0, sy, -y0, 0],
         [0,  0,   1, 0],
         [0,  0,   0, 1]]

and every view gets ``cam2img <- A @ cam2img`` and ``lidar2img <- A @ lidar2img``.
"""

from __future__ import annotations

from collections.abc import Sequence

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from bev_deform.registry import TRANSFORMS

from .loading import pad_to_4x4


def image_aug_matrix(
    scale_xy: tuple[float, float], crop_xy: tuple[int, int], flip_width: int | None
) -> np.ndarray:
    """The (4, 4) matrix ``A`` of the module docstring.

    Args:
        scale_xy: (sx, sy) resize factors.
        crop_xy: (x0, y0) top-left corner of the crop window in the resized image (may be negative).
        flip_width: output width ``W`` when the view is flipped horizontally, else None.
    """
    sx, sy = scale_xy
    x0, y0 = crop_xy
    aug = np.eye(4)
    aug[0, 0], aug[0, 2] = sx, -x0
    aug[1, 1], aug[1, 2] = sy, -y0
    if flip_width is not None:
        aug[0] = [-sx, 0.0, flip_width + x0, 0.0]
    return aug


def crop_with_padding(img: np.ndarray, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """Crop the window ``[y0, y0 + height) x [x0, x0 + width)`` of (H, W, ...) ``img``; parts of the
    window outside the image are zeros. Returns (height, width, ...)."""
    out = np.zeros((height, width) + img.shape[2:], dtype=img.dtype)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + height, img.shape[0]), min(x0 + width, img.shape[1])
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = img[ys:ye, xs:xe]
    return out


def _check_range(name: str, value: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
        raise ValueError(f"{name} must be (low, high) with {lo} <= low <= high <= {hi}, got {value}")
    return float(value[0]), float(value[1])


@TRANSFORMS.register_module()
class MultiViewResizeCrop(BaseTransform):
    """Resize, crop and optionally flip every view with one set of parameters per sample.

    Required keys: ``img`` (list of N (H, W, C) arrays of one shape), ``cam2img`` and
    ``lidar2img`` (lists of N (4, 4) arrays, e.g. from :class:`LoadMultiViewImages`).
    Modified keys: ``img`` (N arrays of ``final_size``), ``cam2img``, ``lidar2img``,
    ``img_shape`` and ``pad_shape`` (``final_size``). Added keys: ``scale_factor`` (sx, sy),
    ``img_crop_offset`` (x0, y0), ``flip`` (bool), ``flip_direction``.

    The resized image is ``round(W * s) x round(H * s)``; the crop window of ``final_size`` has
    its bottom edge at ``(1 - b)`` of the resized height (``b`` from ``bottom_crop_range``, the
    road stays in view) and, in training, a random horizontal position, else the centre.

    Args:
        final_size: (H, W) of the output images.
        scale_range: (low, high) resize factors; training draws one uniformly per sample,
            test mode uses the mean.
        bottom_crop_range: (low, high) fraction of the resized height cut at the bottom;
            drawn like ``scale_range``.
        flip: in training, mirror all views horizontally with probability 0.5 (``lidar2img``
            is mirrored with them, so 3D boxes stay valid). Defaults to False.
        test_mode: deterministic parameters (mean scale and bottom crop, centred, no flip).
    """

    def __init__(
        self,
        final_size: Sequence[int],
        scale_range: Sequence[float] = (1.0, 1.0),
        bottom_crop_range: Sequence[float] = (0.0, 0.0),
        flip: bool = False,
        test_mode: bool = False,
    ) -> None:
        if len(final_size) != 2 or min(final_size) <= 0:
            raise ValueError(f"final_size must be (H, W) with positive ints, got {final_size}")
        self.final_size = (int(final_size[0]), int(final_size[1]))
        self.scale_range = _check_range("scale_range", scale_range, 1e-3, 100.0)
        self.bottom_crop_range = _check_range("bottom_crop_range", bottom_crop_range, 0.0, 0.99)
        self.flip = flip
        self.test_mode = test_mode

    def sample_params(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int], bool]:
        """Draw the resized (H', W'), the crop corner (x0, y0) and the flip for an (H, W) input."""
        if self.test_mode:
            scale, bottom = np.mean(self.scale_range), np.mean(self.bottom_crop_range)
        else:
            scale, bottom = np.random.uniform(*self.scale_range), np.random.uniform(*self.bottom_crop_range)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        out_h, out_w = self.final_size
        y0 = int((1.0 - bottom) * new_h) - out_h
        if self.test_mode or new_w <= out_w:
            x0 = (new_w - out_w) // 2
        else:
            x0 = int(np.random.randint(0, new_w - out_w + 1))
        do_flip = self.flip and not self.test_mode and np.random.rand() < 0.5
        return (new_h, new_w), (x0, y0), bool(do_flip)

    def transform(self, results: dict) -> dict:
        """Apply one resize/crop/flip to all views; see the class docstring for the keys."""
        for key in ("img", "cam2img", "lidar2img"):
            if key not in results:
                raise KeyError(
                    f"MultiViewResizeCrop needs results[{key!r}]; load the views with LoadMultiViewImages"
                )
        imgs = results["img"]
        if len({img.shape for img in imgs}) != 1:
            raise ValueError(f"all views must have one shape, got {[img.shape for img in imgs]}")
        height, width = imgs[0].shape[:2]
        (new_h, new_w), (x0, y0), do_flip = self.sample_params(height, width)
        out_h, out_w = self.final_size
        aug = image_aug_matrix((new_w / width, new_h / height), (x0, y0), out_w if do_flip else None)
        out = []
        for img in imgs:
            img = mmcv.imresize(img, (new_w, new_h), interpolation="bilinear")
            img = crop_with_padding(img, x0, y0, out_h, out_w)
            out.append(mmcv.imflip(img, direction="horizontal") if do_flip else img)
        results["img"] = out
        results["cam2img"] = [aug @ pad_to_4x4(k) for k in results["cam2img"]]
        results["lidar2img"] = [aug @ pad_to_4x4(m) for m in results["lidar2img"]]
        results["img_shape"] = results["pad_shape"] = self.final_size
        results["scale_factor"] = (new_w / width, new_h / height)
        results["img_crop_offset"] = (x0, y0)
        results["flip"] = do_flip
        results["flip_direction"] = "horizontal" if do_flip else None
        return results

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(final_size={self.final_size}, scale_range={self.scale_range}, "
            f"bottom_crop_range={self.bottom_crop_range}, flip={self.flip}, test_mode={self.test_mode})"
        )
