"""The Deformable Attention Transformer (DAT v1, Xia et al., CVPR 2022) as a camera backbone.

Four stages at strides 4, 8, 16 and 32 (a 4x4 patch embedding, then 2x2 strided convolutions
between stages). Stages 1-2 alternate window and shifted-window attention; stages 3-4 alternate
window and deformable attention; every block is pre-norm attention + MLP with drop path.

Module names are the official code's (``patch_proj``, ``stages.i.{layer_norms,mlps,attns}``,
``down_projs``; ``cls_norm``/``cls_head`` on :class:`DATClassifier`), so that an official v1
ImageNet checkpoint loads into :class:`DATClassifier` with ``strict=True``; the detection
backbone :class:`DAT` adds a LayerNorm per output (``norms.i``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from torch import Tensor, nn

from bev_deform.registry import MODELS

from .deformable_attention import DeformableAttention
from .layers import ChannelLayerNorm, ShiftedWindowAttention, TransformerMLP, WindowAttention

PATCH_SIZE = 4  # stage 1 is at stride 4; each of the three down-projections halves the map
STRIDES = (4, 8, 16, 32)

# The v1 ImageNet-1k configs (LeapLabTHU/DAT, configs/dat_{tiny,small,base}.yaml). deform_groups
# and offset_kernels are for stages 3 and 4, the stages with deformable attention.
ARCHS = {
    "tiny": dict(dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), deform_groups=(3, 6)),
    "small": dict(dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), heads=(3, 6, 12, 24), deform_groups=(3, 6)),
    "base": dict(
        dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), deform_groups=(4, 8)
    ),
}
ARCH_DEFAULTS = dict(window_sizes=(7, 7, 7, 7), offset_kernels=(5, 3), offset_range_factor=2.0, mlp_ratio=4)
ARCH_KEYS = ("dims", "depths", "heads", "deform_groups", *ARCH_DEFAULTS)


def resolve_arch(arch: str | dict) -> dict:
    """An arch name ('tiny', 'small', 'base') or dict -> the full arch dict, checked.

    A dict needs ``dims``, ``depths``, ``heads`` (4 each) and ``deform_groups`` (2: stages 3-4),
    and may set ``window_sizes`` (4), ``offset_kernels`` (2), ``offset_range_factor`` and
    ``mlp_ratio`` (defaults: ``ARCH_DEFAULTS``, DAT v1's).
    """
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)} or a dict, got {arch!r}")
        arch = ARCHS[arch]
    unknown = set(arch) - set(ARCH_KEYS)
    missing = {"dims", "depths", "heads", "deform_groups"} - set(arch)
    if unknown or missing:
        raise ValueError(f"arch dict: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    out = {**ARCH_DEFAULTS, **arch}
    lengths = {
        k: len(out[k]) for k in ("dims", "depths", "heads", "window_sizes", "deform_groups", "offset_kernels")
    }
    if list(lengths.values()) != [4, 4, 4, 4, 2, 2]:
        raise ValueError(
            f"arch: dims, depths, heads, window_sizes need 4 entries, the others 2; got {lengths}"
        )
    return out


def to_size(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or (H, W) -> (H, W), both positive multiples of 32 (the last stage's stride)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0 or h % STRIDES[-1] or w % STRIDES[-1]:
        raise ValueError(
            f"{name} must be (H, W) with H and W positive multiples of {STRIDES[-1]}, got {size}"
        )
    return h, w


class DATStage(nn.Module):
    """One stage: ``depth`` pre-norm blocks x + drop_path(attn(LN(x))), x + drop_path(MLP(LN(x))),
    the attention alternating window attention (even blocks) with shifted-window attention
    (``deform_groups=None``) or deformable attention (odd blocks).

    Args:
        embed_dims: channels C.
        depth: number of blocks.
        num_heads: attention heads.
        window_size: window side of the window attentions.
        fmap_size: (H, W) of this stage's map at the model's ``img_size``.
        deform_groups: offset groups of the deformable attention, or None for shifted windows.
        offset_kernel: the deformable attention's offset kernel (ignored for shifted windows).
        offset_range_factor: the deformable attention's offset bound.
        mlp_ratio: MLP hidden channels per channel.
        drop_path_rates: ``depth`` drop-path probabilities, one per block.
        with_cp: recompute each block in the backward pass (gradient checkpointing) to save memory.
    """

    def __init__(
        self,
        embed_dims: int,
        depth: int,
        num_heads: int,
        window_size: int,
        fmap_size: tuple[int, int],
        deform_groups: int | None,
        offset_kernel: int,
        offset_range_factor: float,
        mlp_ratio: int,
        drop_path_rates: Sequence[float],
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.layer_norms = nn.ModuleList(ChannelLayerNorm(embed_dims) for _ in range(2 * depth))
        self.mlps = nn.ModuleList(TransformerMLP(embed_dims, mlp_ratio) for _ in range(depth))
        self.attns = nn.ModuleList()
        for j in range(depth):
            if j % 2 == 0:
                attn = WindowAttention(embed_dims, num_heads, window_size)
            elif deform_groups is None:
                attn = ShiftedWindowAttention(embed_dims, num_heads, window_size, fmap_size)
            else:
                attn = DeformableAttention(
                    embed_dims, num_heads, deform_groups, fmap_size, offset_kernel, offset_range_factor
                )
            self.attns.append(attn)
        self.drop_path = nn.ModuleList(DropPath(p) if p > 0 else nn.Identity() for p in drop_path_rates)

    def block(self, j: int, x: Tensor) -> Tensor:
        """Block ``j``: (B, C, H, W) -> (B, C, H, W)."""
        x = x + self.drop_path[j](self.attns[j](self.layer_norms[2 * j](x)))
        return x + self.drop_path[j](self.mlps[j](self.layer_norms[2 * j + 1](x)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        for j in range(len(self.attns)):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(self.block, j, x, use_reentrant=False)
            else:
                x = self.block(j, x)
        return x


@MODELS.register_module()
class DAT(BaseModule):
    """DAT v1 as a multi-scale backbone: (B, 3, H, W) -> one (B, C_i, H / s_i, W / s_i) map per
    ``out_indices`` entry i, s_i = 4, 8, 16, 32, each through its own LayerNorm (``norms.i``).

    Any H, W that are multiples of 32 work (a ValueError names the input otherwise): window
    attention pads a map that is not a multiple of its window, and the deformable attention's
    bias table, built for ``img_size``, is stretched over maps of other sizes (see
    :mod:`.deformable_attention`). Keep ``img_size=224`` to load an ImageNet checkpoint: its
    tables then load as they are (converted by ``projects/DAT/tools/convert_dat_checkpoint.py``).

    Config::

        from projects.DAT.dat import DAT  # registers 'DAT' in bev_deform's MODELS

        img_backbone=dict(type=DAT, arch='tiny', out_indices=(1, 2, 3), drop_path_rate=0.2,
                          init_cfg=dict(type='Pretrained', checkpoint='dat-t_in1k_converted.pth'))
        img_neck=dict(type='mmdet.FPN', in_channels=[192, 384, 768], ...)  # DAT(...).out_channels

    Args:
        arch: 'tiny', 'small', 'base' (DAT-T/S/B) or an arch dict (:func:`resolve_arch`).
        img_size: (H, W) or int the bias tables and shifted-window masks are built for (224:
            the ImageNet checkpoints'); a multiple of 32.
        out_indices: the stages (0-3) whose maps are returned, in increasing order.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all blocks.
        with_cp: gradient checkpointing of every block (saves memory at detection sizes).
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=PATH)``.
    """

    def __init__(
        self,
        arch: str | dict = "tiny",
        img_size: int | Sequence[int] = 224,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        init_cfg: dict | list | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch = resolve_arch(arch)
        a = self.arch
        img_h, img_w = to_size(img_size, "img_size")
        self.out_indices = tuple(out_indices)
        if list(self.out_indices) != sorted(set(self.out_indices)) or not set(self.out_indices) <= {
            0,
            1,
            2,
            3,
        }:
            raise ValueError(f"out_indices must be increasing stage indices in 0..3, got {out_indices}")
        dims = a["dims"]
        self.out_channels = [dims[i] for i in self.out_indices]
        self.patch_proj = nn.Sequential(
            nn.Conv2d(3, dims[0], PATCH_SIZE, PATCH_SIZE), ChannelLayerNorm(dims[0])
        )
        n = sum(a["depths"])
        rates = [drop_path_rate * j / max(n - 1, 1) for j in range(n)]  # 0 -> drop_path_rate
        self.stages = nn.ModuleList()
        for i, depth in enumerate(a["depths"]):
            deform = i >= 2
            first = sum(a["depths"][:i])
            self.stages.append(
                DATStage(
                    dims[i],
                    depth,
                    a["heads"][i],
                    a["window_sizes"][i],
                    (img_h // STRIDES[i], img_w // STRIDES[i]),
                    deform_groups=a["deform_groups"][i - 2] if deform else None,
                    offset_kernel=a["offset_kernels"][i - 2] if deform else 0,
                    offset_range_factor=a["offset_range_factor"],
                    mlp_ratio=a["mlp_ratio"],
                    drop_path_rates=rates[first : first + depth],
                    with_cp=with_cp,
                )
            )
        self.down_projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 2, 2, bias=False), ChannelLayerNorm(dims[i + 1]))
            for i in range(3)
        )
        self.norms = nn.ModuleList(
            ChannelLayerNorm(dims[i]) if i in self.out_indices else nn.Identity() for i in range(4)
        )

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> the four stages' maps (B, C_i, H / s_i, W / s_i), before any norm."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % STRIDES[-1] or x.shape[3] % STRIDES[-1]:
            raise ValueError(
                f"DAT input must be (B, 3, H, W) with H and W multiples of {STRIDES[-1]}, "
                f"got {tuple(x.shape)}"
            )
        outs = []
        x = self.patch_proj(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(x)
            if i < 3:
                x = self.down_projs[i](x)
        return outs

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) -> tuple of (B, C_i, H / s_i, W / s_i) for i in ``out_indices``."""
        outs = self.stage_outputs(x)
        return tuple(self.norms[i](outs[i]) for i in self.out_indices)


class DATClassifier(DAT):
    """The ImageNet classifier of the official code: DAT -> LayerNorm (``cls_norm``) -> global
    average pool -> Linear (``cls_head``). An official v1 checkpoint's ``model`` state dict loads
    into it with ``strict=True`` (at ``img_size=224``); not registered: it is for loading and
    checking checkpoints, not a detector part.

    Args:
        arch: as :class:`DAT`.
        num_classes: classifier outputs (1000 for ImageNet-1k).
        img_size: as :class:`DAT` (224 for the 224 checkpoints).
    """

    def __init__(
        self, arch: str | dict = "tiny", num_classes: int = 1000, img_size: int | Sequence[int] = 224
    ):
        super().__init__(arch, img_size, out_indices=())
        dims = self.arch["dims"][-1]
        self.cls_norm = ChannelLayerNorm(dims)
        self.cls_head = nn.Linear(dims, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        x = self.cls_norm(self.stage_outputs(x)[-1])  # (B, C_4, H/32, W/32)
        return self.cls_head(x.mean((2, 3)))  # (B, C_4) -> (B, num_classes)
