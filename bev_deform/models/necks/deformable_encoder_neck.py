"""The Deformable DETR / DINO encoder as a neck over each camera's FPN levels.

It takes the FPN's levels of the B*N camera images and returns levels of the same shapes, each
cell refined by multi-scale deformable self-attention over all levels of its own image
(:class:`DeformableEncoder`). What Deformable DETR's detector computes around its encoder is here:
the padding masks of the padded batch, the valid ratios, mmdet's sine positional encoding and
the level embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.models.detectors.deformable_detr import DeformableDETR
from mmdet.models.layers import SinePositionalEncoding
from mmengine.model import BaseModule
from torch import Tensor, nn

from bev_deform.geometry import FeatureLevels
from bev_deform.models.layers.deformable_encoder import DeformableEncoder
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS

# Deformable DETR's sine encoding (mmdet's deformable-detr config; temperature 10000, mmdet's default)
DEFAULT_POSITIONAL_ENCODING = dict(normalize=True, offset=-0.5)


@MODELS.register_module()
class DeformableEncoderNeck(BaseModule):
    """Deformable DETR's encoder over the L FPN levels of every image, between the neck and the head.

    Per image: the cells of every level are flattened into S queries; each gets the sine positional
    encoding of its (row, column) in the real image plus a learned embedding of its level; the
    encoder's layers (multi-scale deformable self-attention around the cell's centre, FFN,
    post-norm) refine them; the result is reshaped back into the levels. Cells in the padding of
    the batch (``FeatureLevels.padding_mask``) are never sampled, and the reference points and the
    positional encoding follow the real image's extent (valid ratios, as Deformable DETR).

    ``DeformableEncoderNeck.encoder`` loads the state dict of mmdet's
    ``DeformableDetrTransformerEncoder`` as it is, and ``level_embed`` is Deformable DETR's.

    Config dict (embed_dims and num_levels are passed down by the detector from its head)::

        dict(type='DeformableEncoderNeck',
             encoder=dict(num_layers=6, layer_cfg=dict(
                 self_attn_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
                 ffn_cfg=dict(feedforward_channels=1024, ffn_drop=0.1))),
             positional_encoding=dict(normalize=True, offset=-0.5))

    Args:
        embed_dims: channels C of the levels; even (C / 2 sine features per axis).
        num_levels: levels L.
        encoder: encoder config; type defaults to ``DeformableEncoder``.
        positional_encoding: kwargs of mmdet's ``SinePositionalEncoding`` other than ``num_feats``
            (C / 2); Deformable DETR's ``normalize=True, offset=-0.5`` by default.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_levels: int = 4,
        encoder: dict | None = None,
        positional_encoding: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if embed_dims % 2 != 0:
            raise ValueError(f"embed_dims must be even (C / 2 sine features per axis), got {embed_dims}")
        self.embed_dims, self.num_levels = embed_dims, num_levels
        encoder = {"type": DeformableEncoder, **(encoder or {})}
        self.encoder = MODELS.build(
            with_shared(encoder, "encoder", embed_dims=embed_dims, num_levels=num_levels)
        )
        pos = DEFAULT_POSITIONAL_ENCODING if positional_encoding is None else positional_encoding
        self.positional_encoding = SinePositionalEncoding(
            **with_shared(pos, "positional_encoding", num_feats=embed_dims // 2)
        )
        self.level_embed = nn.Parameter(torch.zeros(num_levels, embed_dims))  # (L, C)
        nn.init.normal_(self.level_embed)

    def init_weights(self) -> None:
        """Children's own initialisation and a normal level embedding (Deformable DETR's)."""
        super().init_weights()
        if self.init_cfg is None:
            nn.init.normal_(self.level_embed)

    def forward(
        self, mlvl_feats: Sequence[Tensor], img_hw: Tensor, pad_hw: Sequence[int]
    ) -> tuple[Tensor, ...]:
        """Encode the levels of K images.

        Args:
            mlvl_feats: L tensors (K, C, H_l, W_l), the FPN's levels of K images (K = B*N cameras)
                computed from a padded batch of ``pad_hw``.
            img_hw: (K, 2) (H, W) of each image's real (unpadded) extent, e.g.
                ``CameraGeometry.img_hw.flatten(0, 1)``.
            pad_hw: (H, W) of the padded batch (``batch_input_shape``).

        Returns:
            L tensors (K, C, H_l, W_l), the encoded levels.
        """
        self._check_inputs(mlvl_feats, img_hw)
        levels = FeatureLevels.from_shapes([f.shape[-2:] for f in mlvl_feats], pad_hw, mlvl_feats[0].device)
        padding = levels.padding_mask(img_hw.to(mlvl_feats[0].device, torch.float32))  # (K, S)
        sizes = [h * w for h, w in levels.shapes]
        k = img_hw.shape[0]
        # (K, S) -> L x (K, H_l * W_l) -> L x (K, H_l, W_l)
        masks = [m.view(k, h, w) for m, (h, w) in zip(padding.split(sizes, dim=1), levels.shapes)]
        valid_ratios = torch.stack([DeformableDETR.get_valid_ratio(m) for m in masks], 1)  # (K, L, 2)
        # (K, C, H_l, W_l) -> (K, C, H_l * W_l) -> (K, H_l * W_l, C), concatenated over levels: (K, S, C)
        value = torch.cat([f.flatten(2).transpose(1, 2) for f in mlvl_feats], dim=1)
        query_pos = torch.cat(
            [
                self.positional_encoding(m).flatten(2).transpose(1, 2)
                + self.level_embed[i]  # (K, H_l*W_l, C)
                for i, m in enumerate(masks)
            ],
            dim=1,
        ).to(value.dtype)  # (K, S, C)
        out = self.encoder(value, query_pos, levels, valid_ratios.to(value.dtype), padding)  # (K, S, C)
        # (K, S, C) -> L x (K, H_l * W_l, C) -> L x (K, C, H_l * W_l) -> L x (K, C, H_l, W_l)
        return tuple(
            o.transpose(1, 2).reshape(k, self.embed_dims, h, w)
            for o, (h, w) in zip(out.split(sizes, dim=1), levels.shapes)
        )

    def _check_inputs(self, mlvl_feats: Sequence[Tensor], img_hw: Tensor) -> None:
        if len(mlvl_feats) != self.num_levels:
            raise ValueError(
                f"mlvl_feats must have num_levels={self.num_levels} levels, got {len(mlvl_feats)}"
            )
        k = mlvl_feats[0].shape[0]
        for feat in mlvl_feats:
            if feat.dim() != 4 or feat.shape[:2] != (k, self.embed_dims):
                raise ValueError(
                    f"each level must be (K={k}, C={self.embed_dims}, H, W), got {tuple(feat.shape)}"
                )
        if img_hw.shape != (k, 2):
            raise ValueError(f"img_hw must be (K={k}, 2) real (H, W) per image, got {tuple(img_hw.shape)}")
