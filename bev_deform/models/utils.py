"""Helpers shared by the model rooms: passing shared constants down into sub-module config
dicts without mutating them."""

from __future__ import annotations

from typing import Any


def with_shared(cfg: dict | None, name: str, **shared: Any) -> dict:
    """Return a copy of the sub-module config ``cfg`` with the shared constants filled in.

    Shared constants (pc_range, num_levels, embed_dims, ...) are stated once per config, on the
    head or the detector, and passed down in code (DESIGN.md); a sub-module dict that repeats one
    is a config error, because the two values could silently disagree.

    Args:
        cfg: the sub-module's config dict (not modified), or None for an empty one.
        name: the argument the dict came from, for the error message.
        **shared: the constants to set.

    Returns:
        A new dict: ``cfg`` plus ``shared``.
    """
    out = dict(cfg or {})
    repeated = sorted(key for key in shared if key in out)
    if repeated:
        raise ValueError(
            f"{name} must not set {repeated}: these are shared constants passed down from the "
            f"enclosing module; remove them from {name} (got {name}={cfg})"
        )
    out.update(shared)
    return out
