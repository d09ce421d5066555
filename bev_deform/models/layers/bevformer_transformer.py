"""BEVFormer's transformer: the BEV encoder, the object queries' initial reference points and the
decoder on the BEV (BEVFormer's ``PerceptionTransformer`` without its CAN-bus MLP)."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.model import BaseModule, xavier_init
from torch import Tensor, nn

from bev_deform.geometry import CameraGeometry, FeatureLevels
from bev_deform.models.layers.bevformer_decoder import BEVFormerDecoder, PastCameras
from bev_deform.models.layers.bevformer_encoder import BEVFormerEncoder
from bev_deform.models.utils import with_shared
from bev_deform.registry import MODELS


@MODELS.register_module()
class BEVFormerTransformer(BaseModule):
    """Camera features -> BEV (``encoder``) -> object queries decoded on the BEV (``decoder``).

    The object queries' initial reference points are ``sigmoid(reference_points(query_pos))``
    (B, Q, 3), normalised in pc_range (:meth:`initial_ref_points`), unless the caller gives its own
    (the head's denoising queries): (x, y) place them on the BEV, z is refined and regressed with
    them.

    Args:
        encoder: ``BEVFormerEncoder`` config (type defaults to it).
        decoder: ``BEVFormerDecoder`` config (type defaults to it).
        embed_dims: channels C (passed down to both).
        num_levels: camera feature levels L (passed down to the encoder).
        pc_range: (x0, y0, z0, x1, y1, z1) metres (passed down to the encoder).
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        encoder: dict | None = None,
        decoder: dict | None = None,
        embed_dims: int = 256,
        num_levels: int = 4,
        pc_range: Sequence[float] | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        encoder = {"type": BEVFormerEncoder, **(encoder or {})}
        decoder = {"type": BEVFormerDecoder, **(decoder or {})}
        shared = dict(embed_dims=embed_dims, num_levels=num_levels, pc_range=pc_range)
        self.encoder = MODELS.build(with_shared(encoder, "encoder", **shared))
        self.decoder = MODELS.build(with_shared(decoder, "decoder", **shared))
        self.reference_points = nn.Linear(embed_dims, 3)

    def init_weights(self) -> None:
        """Children's own initialisation and a xavier reference-point layer."""
        super().init_weights()
        xavier_init(self.reference_points, distribution="uniform", bias=0.0)

    def initial_ref_points(self, query_pos: Tensor) -> Tensor:
        """The object queries' initial reference points: (B, Q, C) positions -> (B, Q, 3)
        ``sigmoid(reference_points(query_pos))``, normalised in pc_range."""
        return self.reference_points(query_pos).sigmoid()

    def forward(
        self,
        value: Tensor,
        levels: FeatureLevels,
        cams: CameraGeometry,
        query: Tensor,
        query_pos: Tensor,
        reg_branches: nn.ModuleList,
        history: Tensor | None = None,
        history_valid: Tensor | None = None,
        ego_motion: Tensor | None = None,
        ref_points: Tensor | None = None,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        past: PastCameras | None = None,
        present: PastCameras | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encode the BEV and decode the object queries on it.

        Args:
            value: (B*N, S, C) camera-batched flattened feature levels.
            levels: the camera feature levels.
            cams: the batch's cameras.
            query: (B, Q, C) object queries; query_pos: (B, Q, C) their positions.
            reg_branches: the head's per-layer regression branches (for the refinement).
            history: (B, H*W, C) history BEV aligned with this frame's grid, or None.
            history_valid: (B, H*W) bool, where that history has a previous cell, or None.
            ego_motion: (B, 6) ego-motion features since the history frame, or None (see
                :class:`BEVFormerEncoder`).
            ref_points: (B, Q, 3) initial reference points normalised in pc_range, or None for
                :meth:`initial_ref_points` of ``query_pos`` (a head with denoising queries gives
                theirs after the matching queries').
            attn_mask: (Q, Q) bool decoder self-attention mask (True: blocked), or None.
            key_padding_mask: (B, Q) bool, True for queries that no query may see, or None.
            past: an earlier frame's cameras for a decoder with ``history_attn`` or
                ``history_match``, or None.
            present: this frame's cameras (with its fine level where the search reads it) for a
                decoder with ``history_match``, which runs only with both; or None.

        Returns:
            bev (B, H*W, C), and the decoder's hidden (num_layers, B, Q, C), refs
            (num_layers, B, Q, 3) and raw_codes (num_layers, B, Q, 10).
        """
        bev = self.encoder(
            value, levels, cams, history=history, history_valid=history_valid, ego_motion=ego_motion
        )
        if ref_points is None:
            ref_points = self.initial_ref_points(query_pos)  # (B, Q, 3)
        if ref_points.shape != (*query.shape[:2], 3):
            raise ValueError(
                f"ref_points must be (B, Q, 3) = {(*query.shape[:2], 3)} as query, got "
                f"{tuple(ref_points.shape)}"
            )
        bev_levels = self.encoder.grid.levels(bev.device)
        hidden, refs, raw_codes = self.decoder(
            query,
            query_pos,
            bev,
            ref_points,
            bev_levels,
            reg_branches,
            attn_mask,
            key_padding_mask,
            past,
            present,
        )
        return bev, hidden, refs, raw_codes
