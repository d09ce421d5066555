"""DAT's local building blocks on (B, C, H, W) maps: the channel LayerNorm, the MLP, and the
window and shifted-window attention of stages 1-2 (and the local blocks of stages 3-4).

Module and parameter names follow the official DAT v1 code (``norm``, ``chunk.linear1``,
``proj_qkv``, ``relative_position_bias_table``, ``relative_position_index``, ``attn_mask``) so
that its ImageNet checkpoints load with ``strict=True``.

Unlike the official code, a map whose size is not a multiple of the window is padded at the
bottom and right, and the padded keys are masked out of every window (the official v1 code
requires the map to be a multiple of the window; mmdet's Swin pads without masking).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the additive logit the official code uses for a blocked (query, key) pair; its shifted-window
# checkpoints store masks with this value, and exp(-100) is 0 in float32
MASK_VALUE = -100.0


def biased_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T / sqrt(d) + bias) v, the attention of every DAT block.

    On CUDA torch's fused kernel (it takes the additive bias and returns its gradient); elsewhere
    the explicit product, which on CPU runs up to twice as fast as torch's fused path does for a
    bias that needs a gradient (it then falls back to its reference implementation, with checks).

    Args:
        q: (..., Nq, d) queries.
        k, v: (..., Nk, d) keys and values.
        bias: additive logits broadcastable to (..., Nq, Nk).
        dropout_p: dropout on the attention weights.

    Returns:
        (..., Nq, d).
    """
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p)
    attn = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + bias  # (..., Nq, Nk)
    attn = F.dropout(attn.softmax(-1), dropout_p) if dropout_p > 0 else attn.softmax(-1)
    return torch.matmul(attn.to(v.dtype), v)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (the official ``LayerNormProxy``: the
    parameters live in ``.norm``).

    Args:
        embed_dims: channels C.
    """

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        # (B, C, H, W) -> (B, H, W, C) -> LayerNorm over C -> (B, C, H, W)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TransformerMLP(nn.Module):
    """The per-token MLP: Linear(C, r*C) -> GELU -> Dropout -> Linear(r*C, C) -> Dropout.

    Args:
        embed_dims: channels C.
        mlp_ratio: hidden channels per input channel (4 in DAT).
        drop: dropout after each linear layer.
    """

    def __init__(self, embed_dims: int, mlp_ratio: int = 4, drop: float = 0.0) -> None:
        super().__init__()
        hidden = embed_dims * mlp_ratio
        self.chunk = nn.Sequential(
            OrderedDict(
                linear1=nn.Linear(embed_dims, hidden),
                act=nn.GELU(),
                drop1=nn.Dropout(drop),
                linear2=nn.Linear(hidden, embed_dims),
                drop2=nn.Dropout(drop),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        # (B, C, H, W) -> (B, H, W, C) -> MLP per token -> (B, C, H, W)
        return self.chunk(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, C, H, W) with H, W multiples of ``window_size`` -> (B, nW, ws*ws, C), windows in
    row-major order, tokens row-major within each window."""
    b, c, h, w = x.shape
    ws = window_size
    # (B, C, H, W) -> (B, H, W, C) (a view, contiguous for channels-last maps) -> (B, rows, ws, cols, ws, C)
    x = x.permute(0, 2, 3, 1).reshape(b, h // ws, ws, w // ws, ws, c)
    # (B, rows, ws, cols, ws, C) -> (B, rows, cols, ws, ws, C) -> (B, nW, ws*ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_merge(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """The inverse of :func:`window_partition`: (B, nW, ws*ws, C) -> (B, C, height, width), in
    channels-last memory."""
    b, _, _, c = windows.shape
    ws = window_size
    x = windows.reshape(b, height // ws, width // ws, ws, ws, c)  # (B, rows, cols, ws, ws, C)
    # (B, rows, cols, ws, ws, C) -> (B, rows, ws, cols, ws, C) -> (B, H, W, C) -> (B, C, H, W)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, c).permute(0, 3, 1, 2)


def relative_position_index(window_size: int) -> Tensor:
    """(ws*ws, ws*ws) int64: for query token i and key token j of a window, the row of the
    ((2 ws - 1)^2, heads) bias table for their displacement ``pos_i - pos_j`` (Swin's index)."""
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], -1)  # (N, 2) as (y, x)
    rel = pos[:, None, :] - pos[None, :, :] + (window_size - 1)  # (N, N, 2) in [0, 2 ws - 2]
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]  # (N, N)


def window_attention_mask(height: int, width: int, window_size: int, shift: int) -> Tensor | None:
    """Additive logit mask (nW, ws*ws, ws*ws) for the windows of a (height, width) map padded at
    the bottom/right to multiples of ``window_size`` and rolled by ``-shift`` on both axes.

    A (query, key) pair is blocked (``MASK_VALUE``) when the key is padding, or, for ``shift > 0``,
    when the two tokens lie in different regions of the rolled map (the last ``shift`` rows/columns
    wrapped round from the top/left, Swin's scheme, which is the official DAT v1 mask for an
    unpadded map). Returns None when nothing is blocked (no shift and no padding).
    """
    ws = window_size
    hp, wp = math.ceil(height / ws) * ws, math.ceil(width / ws) * ws
    valid = torch.zeros(hp, wp)
    valid[:height, :width] = 1.0
    label = torch.zeros(hp, wp)
    if shift > 0:
        valid = valid.roll((-shift, -shift), (0, 1))
        bands_y = (slice(0, hp - ws), slice(hp - ws, hp - shift), slice(hp - shift, hp))
        bands_x = (slice(0, wp - ws), slice(wp - ws, wp - shift), slice(wp - shift, wp))
        for i, sy in enumerate(bands_y):
            for j, sx in enumerate(bands_x):
                label[sy, sx] = 3 * i + j
    if shift == 0 and hp == height and wp == width:
        return None
    label_w = window_partition(label[None, None], ws)[0, :, :, 0]  # (1, 1, Hp, Wp) -> (nW, N)
    valid_w = window_partition(valid[None, None], ws)[0, :, :, 0] > 0.5  # (nW, N)
    blocked = (label_w[:, :, None] != label_w[:, None, :]) | ~valid_w[:, None, :]  # (nW, N_q, N_k)
    return torch.where(blocked, MASK_VALUE, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ws x ws windows, with Swin's learned
    relative position bias (DAT's ``LocalAttention``).

    Args:
        embed_dims: channels C, divisible by ``num_heads``.
        num_heads: attention heads.
        window_size: window side ws (any map size works: it is padded to multiples of ws).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
    """

    shift = 0

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        window_size: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f"embed_dims must be divisible by num_heads={num_heads}, got {embed_dims}")
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {window_size}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.proj_qkv = nn.Linear(embed_dims, 3 * embed_dims)
        self.proj_out = nn.Linear(embed_dims, embed_dims)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        self.register_buffer("relative_position_index", relative_position_index(window_size))

    def position_bias(self) -> Tensor:
        """(heads, ws*ws, ws*ws): the table's bias for every (query, key) pair of a window."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (N*N, heads)
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (N, N, heads) -> (heads, N, N)

    def attend(self, windows: Tensor, mask: Tensor | None) -> Tensor:
        """Self-attention within each window.

        Args:
            windows: (B, nW, N, C) tokens, N = ws*ws.
            mask: (nW, N, N) additive logit mask, or None.

        Returns:
            (B, nW, N, C).
        """
        b, nw, n, c = windows.shape
        qkv = self.proj_qkv(windows).view(b * nw, n, 3, self.num_heads, c // self.num_heads)
        # (B*nW, N, 3, heads, C/heads) -> (3, B*nW, heads, N, C/heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias()[None]  # (1, heads, N, N)
        if mask is not None:
            # (nW, 1, N, N) -> (nW, heads, N, N) -> (B*nW, heads, N, N): torch's fused CUDA kernel
            # takes 4-D inputs only (5-D ones fall back to its slow reference)
            bias = (bias + mask[:, None]).repeat(b, 1, 1, 1)
        out = biased_attention(
            q, k, v, bias, self.attn_drop if self.training else 0.0
        )  # (B*nW, heads, N, C/h)
        out = out.transpose(1, 2).reshape(b, nw, n, c)  # (B*nW, heads, N, C/h) -> (B, nW, N, C)
        return self.proj_drop(self.proj_out(out))

    def attention_mask(self, height: int, width: int, device: torch.device) -> Tensor | None:
        """The (nW, N, N) mask for a (height, width) map, or None (see :func:`window_attention_mask`)."""
        mask = window_attention_mask(height, width, self.window_size, self.shift)
        return None if mask is None else mask.to(device)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), any H, W >= 1."""
        _, _, h, w = x.shape
        ws, s = self.window_size, self.shift
        x = F.pad(x, (0, (-w) % ws, 0, (-h) % ws))  # (B, C, H, W) -> (B, C, Hp, Wp), zeros bottom/right
        hp, wp = x.shape[-2:]
        if s > 0:
            x = x.roll((-s, -s), (2, 3))
        out = self.attend(window_partition(x, ws), self.attention_mask(h, w, x.device))  # (B, nW, N, C)
        out = window_merge(out, ws, hp, wp)  # (B, nW, N, C) -> (B, C, Hp, Wp)
        if s > 0:
            out = out.roll((s, s), (2, 3))
        return out[:, :, :h, :w]


class ShiftedWindowAttention(WindowAttention):
    """:class:`WindowAttention` on windows shifted by ``ceil(ws / 2)`` (DAT's ``ShiftWindowAttention``;
    Swin's cyclic shift with the region mask).

    The mask for the construction-time map size is the buffer ``attn_mask`` (the official
    checkpoints hold it); other map sizes get theirs computed at run time.

    Args:
        embed_dims, num_heads, window_size, attn_drop, proj_drop: as :class:`WindowAttention`.
        fmap_size: (H, W) of the map at the model's ``img_size``, for the ``attn_mask`` buffer.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        window_size: int,
        fmap_size: tuple[int, int],
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(embed_dims, num_heads, window_size, attn_drop, proj_drop)
        self.shift = math.ceil(window_size / 2)
        self.fmap_size = tuple(fmap_size)
        self.register_buffer("attn_mask", window_attention_mask(*self.fmap_size, window_size, self.shift))

    def attention_mask(self, height: int, width: int, device: torch.device) -> Tensor:
        if (height, width) == self.fmap_size:
            return self.attn_mask
        return super().attention_mask(height, width, device)
