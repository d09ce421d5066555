"""Rebatching of the visible (query, camera) pairs, shared by the attentions that sample cameras.

A query (a 3D point, a BEV pillar) is seen by few of the six cameras. Instead of sampling every
(query, camera) pair and masking, each camera row ``(b, n)`` of the camera-batched value
(B*N, S, ...) gets its own visible queries, moved to the front in query order and padded to the
largest count K of any camera in the batch, so that one MSDA call over (B*N, K) serves them all;
the results are added back into their queries with one ``index_add``. Every sample and camera has
its own list: nothing is taken from sample 0 for the others (BEVFormer#90, #123).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class VisiblePairs(NamedTuple):
    """The visible (query, camera) pairs of a batch, rebatched per camera row.

    Attributes:
        order: (B*N, K) long query ids; the first K_n of row ``b * N + n`` are the queries camera
            n of sample b sees, in query order; the slots past K_n hold queries it does not see.
        keep: (B*N, K) bool, True for the real (visible) slots.
        batch_of: (B*N,) long, the sample of each camera row.
        num_samples: B.
        num_queries: Q.
    """

    order: Tensor
    keep: Tensor
    batch_of: Tensor
    num_samples: int
    num_queries: int

    @classmethod
    def from_valid(cls, valid: Tensor) -> VisiblePairs:
        """Pairs from a (B, N, Q) bool visibility mask (one host sync, for K)."""
        if valid.dim() != 3 or valid.dtype != torch.bool:
            raise ValueError(f"valid must be a (B, N, Q) bool tensor, got {valid.dtype} {tuple(valid.shape)}")
        b, n, q = valid.shape
        flat = valid.flatten(0, 1)  # (B, N, Q) -> (B*N, Q)
        k = int(flat.sum(1).max()) if flat.numel() else 0  # K, the most queries any camera sees
        # (B*N, Q) -> (B*N, K): visible query ids first, in query order (stable sort)
        order = torch.sort((~flat).to(torch.uint8), dim=1, stable=True).indices[:, :k]
        batch_of = torch.arange(b, device=valid.device).repeat_interleave(n)  # (B*N,) camera row -> sample
        return cls(order=order, keep=flat.gather(1, order), batch_of=batch_of, num_samples=b, num_queries=q)

    @property
    def num_slots(self) -> int:
        """K, the slots per camera row (0 when no camera sees any query)."""
        return self.order.shape[1]

    def per_camera(self, x: Tensor) -> Tensor:
        """Gather a per-camera tensor: (B*N, Q, ...) -> (B*N, K, ...).

        Whole rows are picked with ``index_select``, whose backward is one row-wise ``index_add``
        (an expanded ``gather`` would scatter element by element)."""
        bn, q = x.shape[:2]
        rows = (torch.arange(bn, device=x.device)[:, None] * q + self.order).flatten()  # (B*N*K,)
        # (B*N, Q, ...) -> (B*N*Q, prod(...)) -> (B*N*K, prod(...)) -> (B*N, K, ...)
        return x.reshape(bn * q, -1).index_select(0, rows).view(*self.order.shape, *x.shape[2:])

    def per_sample(self, x: Tensor) -> Tensor:
        """Gather a tensor shared by a sample's cameras: (B, Q, ...) -> (B*N, K, ...) (row-wise, as
        :meth:`per_camera`)."""
        b, q = x.shape[:2]
        rows = (self.batch_of[:, None] * q + self.order).flatten()  # (B*N*K,) row of (b, query)
        # (B, Q, ...) -> (B*Q, prod(...)) -> (B*N*K, prod(...)) -> (B*N, K, ...)
        return x.reshape(b * q, -1).index_select(0, rows).view(*self.order.shape, *x.shape[2:])

    def scatter_sum(self, sampled: Tensor) -> Tensor:
        """Add each slot's result into its query: (B*N, K, C) -> (B, Q, C), summed over the cameras.

        The padding slots must hold zeros (give them zero attention weights)."""
        if sampled.dim() != 3 or sampled.shape[:2] != self.order.shape:
            raise ValueError(
                f"sampled must be (B*N, K, C) with (B*N, K)={tuple(self.order.shape)}, "
                f"got {tuple(sampled.shape)}"
            )
        b, q, c = self.num_samples, self.num_queries, sampled.shape[-1]
        target = (self.batch_of[:, None] * q + self.order).flatten()  # (B*N*K,) row of (b, query) in (B*Q, C)
        summed = sampled.new_zeros(b * q, c).index_add(0, target, sampled.flatten(0, 1))
        return summed.view(b, q, c)  # (B*Q, C) -> (B, Q, C)
