"""GridMask: known masked fractions, identity in eval mode, reproducible under a generator,
mask built on the input's device."""

import pytest
import torch

from bev_deform.models.layers.grid_mask import GridMask


def masked_fraction(out: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) output of ones -> (...) fraction of zeroed pixels per image."""
    return (out[..., 0, :, :] == 0).float().mean(dim=(-2, -1))


@pytest.mark.parametrize(
    "mode,ratio,use_h,use_w,expected",
    [
        (1, 0.5, True, True, 0.25),  # squares of (8 - 4)^2 / 8^2 dropped
        (0, 0.5, True, True, 0.75),  # stripes dropped: 1 - (4 / 8)^2
        (1, 0.25, True, True, 0.5625),  # l = 2: (6 / 8)^2
        (0, 0.25, True, False, 0.25),  # row stripes only: 2 / 8
        (1, 0.5, False, True, 0.5),  # column stripes kept: 4 / 8 dropped
    ],
)
def test_masked_fraction_known_answer(mode, ratio, use_h, use_w, expected):
    grid = GridMask(use_h=use_h, use_w=use_w, period_range=(8, 8), ratio=ratio, mode=mode, prob=1.0)
    gen = torch.Generator().manual_seed(0)
    out = grid(torch.ones(2, 6, 3, 64, 64), generator=gen)  # (B, N, C, H, W): H, W multiples of d
    torch.testing.assert_close(masked_fraction(out), torch.full((2, 6), expected))


def test_channels_share_one_mask_and_images_differ():
    grid = GridMask(period_range=(6, 20), prob=1.0)
    out = grid(torch.ones(4, 3, 48, 64), generator=torch.Generator().manual_seed(3))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert not all(torch.equal(out[0, 0], out[i, 0]) for i in range(1, 4))  # a mask per image


def test_rotated_grid_keeps_the_expected_fraction():
    grid = GridMask(period_range=(16, 16), ratio=0.5, rotate_deg=90.0, mode=1, prob=1.0)
    out = grid(torch.ones(8, 1, 256, 256), generator=torch.Generator().manual_seed(1))
    frac = masked_fraction(out)
    assert torch.all((frac - 0.25).abs() < 0.03), frac  # rotation only moves the grid
    assert not torch.equal(out[0], out[1])


def test_eval_mode_and_prob_zero_are_identity():
    x = torch.rand(2, 3, 32, 32)
    grid = GridMask(prob=1.0).eval()
    assert grid(x) is x
    never = GridMask(prob=0.0).train()
    assert never(x) is x


def test_prob_draw_applies_sometimes():
    grid = GridMask(period_range=(8, 8), prob=0.5)
    gen = torch.Generator().manual_seed(0)
    applied = [
        not torch.equal(grid(torch.ones(1, 3, 16, 16), generator=gen), torch.ones(1, 3, 16, 16))
        for _ in range(64)
    ]
    assert 16 < sum(applied) < 48


def test_deterministic_under_a_generator_and_dtype_kept():
    grid = GridMask(period_range=(4, 30), rotate_deg=30.0, prob=1.0)
    x = torch.rand(2, 3, 40, 50, dtype=torch.float64)
    a = grid(x, generator=torch.Generator().manual_seed(7))
    b = grid(x, generator=torch.Generator().manual_seed(7))
    c = grid(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float64
    # kept pixels are untouched, the others are exactly zero
    kept = a != 0
    torch.testing.assert_close(a[kept], x[kept])


def test_default_period_range_follows_the_image():
    grid = GridMask(prob=1.0)
    mask = grid.make_mask(16, 12, 30, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert mask.shape == (16, 12, 30) and mask.dtype == torch.bool


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(use_h=False, use_w=False), "use_h"),
        (dict(period_range=(1, 4)), "period_range"),
        (dict(ratio=1.0), "ratio"),
        (dict(mode=2), "mode"),
        (dict(prob=1.5), "prob"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridMask(**kwargs)
    with pytest.raises(ValueError, match="imgs"):
        GridMask(prob=1.0)(torch.ones(4, 4))


@pytest.mark.cuda
def test_mask_is_built_on_the_cuda_device_and_matches_cpu():
    grid = GridMask(period_range=(8, 8), rotate_deg=0.0, prob=1.0)
    x = torch.ones(2, 3, 64, 64, device="cuda")
    out = grid(x, generator=torch.Generator().manual_seed(0))
    assert out.device.type == "cuda"
    ref = grid(x.cpu(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.cpu(), ref)
