"""Synthetic nuScenes: a seeded generator of small datasets in the exact nuScenes v1.0-mini format,
rendered with the real camera rig, for the demo and the tests (no download needed)."""

from .generator import META_FILE, PRESETS, VERSION, Preset, generate_synthetic_nuscenes, get_preset

__all__ = ["META_FILE", "PRESETS", "VERSION", "Preset", "generate_synthetic_nuscenes", "get_preset"]
