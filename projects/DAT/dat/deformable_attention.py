"""DAT's deformable attention (Xia et al., CVPR 2022; the official ``DAttentionBaseline``).

Every query of a (H, W) map attends to the same Hk x Wk keys and values, sampled from the map at
a deformed grid: the uniform reference grid plus offsets that an offset network predicts from the
queries, one offset field per group of channels.

Conventions (one for all sampling here, mmcv's and the rest of bev_deform's): a location is in
grid_sample's normalised [-1, 1] frame with ``align_corners=False``, i.e. pixel = (loc + 1) / 2 *
size - 0.5, so pixel centres sit at integer pixel coordinates; reference points are the centres of
the Hk x Wk key cells, so a zero offset at stride 1 samples every pixel of the map exactly. (The
official v1 code builds the same centres but samples with ``align_corners=True``, so its zero
offset lands between pixels: LeapLabTHU/DAT#12.)

The relative position bias is a (heads, 2 Hq - 1, 2 Wq - 1) table, Hq x Wq the map size at the
model's ``img_size``. For a query q and a sampled key p, both in the map's pixel units, the
displacement d = q - p is read from the table, bilinearly, at ``d / (size - 1)`` of its half
extent: at the construction size entry ``d + Hq - 1`` exactly, at any other size the table
stretched over the map (offsets beyond the map read zero, as in the official code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ChannelLayerNorm, biased_attention


def reference_points(height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(height, width, 2) centres of a height x width grid as normalised (y, x) in [-1, 1]
    (``align_corners=False``): cell (i, j) -> ((2 i + 1) / height - 1, (2 j + 1) / width - 1)."""
    ys = (torch.arange(height, dtype=dtype, device=device) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=dtype, device=device) * 2 + 1) / width - 1
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)  # (H, W, 2) as (y, x)


class DeformableAttention(nn.Module):
    """Deformable multi-head self-attention on a (B, C, H, W) map.

    q = proj_q(x); per group g of C/G channels an offset network (depthwise k x k conv with stride
    ``stride``, LayerNorm, GELU, 1x1 conv to 2 channels without bias) maps q to offsets (dy, dx) on
    an Hk x Wk grid, bounded by ``tanh`` to ``offset_range_factor / Hk`` and ``/ Wk`` (normalised
    units, i.e. ``offset_range_factor / 2`` key cells); keys and values are ``proj_k``/``proj_v`` of
    x bilinearly sampled at reference + offset; heads attend over the Hk*Wk samples with the
    relative position bias; ``proj_out`` maps back.

    Args:
        embed_dims: channels C; divisible by ``num_heads``.
        num_heads: attention heads; divisible by ``num_groups`` (each group's heads share offsets).
        num_groups: offset groups G.
        fmap_size: (Hq, Wq) map size at the model's ``img_size``: the bias table's resolution.
        offset_kernel: the offset network's depthwise kernel (odd; DAT v1: 5 in stage 3, 3 in stage 4).
        offset_range_factor: the offset bound s > 0 (DAT v1: 2).
        stride: key grid stride: Hk = ceil(H / stride) (DAT v1: 1).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after ``proj_out``.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        num_groups: int,
        fmap_size: tuple[int, int],
        offset_kernel: int,
        offset_range_factor: float = 2.0,
        stride: int = 1,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dims % num_heads != 0 or num_heads % num_groups != 0:
            raise ValueError(
                f"embed_dims={embed_dims} must be divisible by num_heads={num_heads}, and num_heads "
                f"by num_groups={num_groups}"
            )
        if offset_kernel % 2 != 1 or offset_range_factor <= 0 or stride < 1:
            raise ValueError(
                "offset_kernel must be odd, offset_range_factor > 0 and stride >= 1, got "
                f"{offset_kernel}, {offset_range_factor}, {stride}"
            )
        self.num_heads, self.num_groups = num_heads, num_groups
        self.offset_range_factor = float(offset_range_factor)
        self.attn_drop = attn_drop
        gc = embed_dims // num_groups
        self.conv_offset = nn.Sequential(
            nn.Conv2d(gc, gc, offset_kernel, stride, offset_kernel // 2, groups=gc),
            ChannelLayerNorm(gc),
            nn.GELU(),
            nn.Conv2d(gc, 2, 1, 1, 0, bias=False),
        )
        self.proj_q, self.proj_k, self.proj_v, self.proj_out = (
            nn.Conv2d(embed_dims, embed_dims, 1) for _ in range(4)
        )
        self.proj_drop = nn.Dropout(proj_drop)
        fh, fw = fmap_size
        self.rpe_table = nn.Parameter(torch.zeros(num_heads, 2 * fh - 1, 2 * fw - 1))
        nn.init.trunc_normal_(self.rpe_table, std=0.01)

    def sampling_locations(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Deformed and reference points of each group.

        Args:
            q: (B, C, H, W) projected queries.

        Returns:
            (locations, references), each (B*G, Hk, Wk, 2), normalised (x, y) in grid_sample's
            order; ``locations - references`` is the bounded offset.
        """
        b, c, h, w = q.shape
        # (B, G*C/G, H, W) -> (B*G, C/G, H, W) -> offset net -> (B*G, 2, Hk, Wk) as (dy, dx)
        offset = self.conv_offset(q.reshape(b * self.num_groups, c // self.num_groups, h, w))
        offset = offset.to(torch.promote_types(offset.dtype, torch.float32))  # locations in >= fp32 under AMP
        hk, wk = offset.shape[-2:]
        bound = offset.new_tensor([self.offset_range_factor / hk, self.offset_range_factor / wk])
        offset = offset.tanh() * bound.view(1, 2, 1, 1)  # |dy| <= s / Hk, |dx| <= s / Wk
        ref = reference_points(hk, wk, offset.dtype, q.device)  # (Hk, Wk, 2) as (y, x)
        loc = ref + offset.permute(0, 2, 3, 1)  # (B*G, 2, Hk, Wk) -> (B*G, Hk, Wk, 2)
        return loc.flip(-1), ref.flip(-1).expand_as(loc)  # (y, x) -> (x, y)

    def sample(self, x: Tensor, locations: Tensor) -> Tensor:
        """x (B, C, H, W) sampled bilinearly (zeros outside) at ``locations`` (B*G, Hk, Wk, 2),
        each group at its own points -> (B, C, Hk*Wk)."""
        b, c, h, w = x.shape
        x = x.reshape(b * self.num_groups, c // self.num_groups, h, w)  # (B, C, H, W) -> (B*G, C/G, H, W)
        out = F.grid_sample(
            x, locations.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return out.reshape(b, c, -1)  # (B*G, C/G, Hk, Wk) -> (B, C, Hk*Wk)

    def position_bias(self, locations: Tensor, height: int, width: int) -> Tensor:
        """Bias of every (query, sampled key) pair.

        Args:
            locations: (B*G, Hk, Wk, 2) normalised (x, y) of the samples.
            height, width: the query map's size.

        Returns:
            (B, heads, H*W, Hk*Wk).
        """
        bg = locations.shape[0]
        size = locations.new_tensor([width, height])  # (x, y)
        per_pixel = 1 / (size - 1).clamp(min=1)  # pixels -> fractions of the map's extent (size - 1)
        keys = ((locations.reshape(bg, 1, -1, 2) + 1) / 2 * size - 0.5) * per_pixel  # (B*G, 1, Nk, 2)
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=keys.dtype, device=keys.device),
            torch.arange(width, dtype=keys.dtype, device=keys.device),
            indexing="ij",
        )
        queries = torch.stack([xs, ys], -1).reshape(1, -1, 1, 2) * per_pixel  # (1, H*W, 1, 2) pixel centres
        # displacement query - key, (B*G, H*W, Nk, 2); +-1 are the table's first and last entries
        # (align_corners=True), i.e. +-(size - 1) pixels
        disp = queries - keys
        table = self.rpe_table.to(locations.dtype)  # (heads, 2Hq-1, 2Wq-1)
        b = bg // self.num_groups
        # (heads, ...) -> (B*G, heads/G, 2Hq-1, 2Wq-1): each group reads its own heads' tables
        table = table[None].expand(b, -1, -1, -1).reshape(bg, -1, *table.shape[-2:])
        bias = F.grid_sample(table, disp, mode="bilinear", padding_mode="zeros", align_corners=True)
        # (B*G, heads/G, H*W, Nk) -> (B, heads, H*W, Nk)
        return bias.reshape(b, self.num_heads, height * width, -1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        heads = self.num_heads
        q = self.proj_q(x)  # (B, C, H, W)
        loc, _ = self.sampling_locations(q)
        sampled = self.sample(x, loc)[..., None, :]  # (B, C, 1, Nk)
        k = self.proj_k(sampled).reshape(b, heads, c // heads, -1).transpose(2, 3)  # (B, heads, Nk, C/h)
        v = self.proj_v(sampled).reshape(b, heads, c // heads, -1).transpose(2, 3)  # (B, heads, Nk, C/h)
        q = q.reshape(b, heads, c // heads, h * w).transpose(2, 3)  # (B, C, H, W) -> (B, heads, H*W, C/h)
        bias = self.position_bias(loc, h, w)  # (B, heads, H*W, Nk)
        out = biased_attention(
            q, k, v, bias, self.attn_drop if self.training else 0.0
        )  # (B, heads, H*W, C/h)
        out = out.transpose(2, 3).reshape(b, c, h, w)  # (B, heads, C/h, H*W) -> (B, C, H, W)
        return self.proj_drop(self.proj_out(out))
