"""The static world every synthetic scene shares: a 400 m x 400 m town with two north-south and two
east-west straight roads, sidewalks and a sandy verge, all on the ground plane z = 0 (global frame).

The same layout gives the map PNG (drivable area at nuScenes' 0.1 m / pixel), the ground texture
the cameras see and the lidar intensity of ground returns, so all three agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORLD_SIZE = 400.0  # metres, the map covers [0, WORLD_SIZE]^2
ROAD_CENTRES = (100.0, 300.0)  # x of the north-south roads and y of the east-west roads
ROAD_HALF_WIDTH = 10.0  # four 3.5 m lanes + a 3 m parking lane each side
SIDEWALK_HALF_WIDTH = 14.0
MAP_RESOLUTION = 0.1  # metres per map pixel, fixed by the devkit's MapMask
ASPHALT, MARKING, SIDEWALK, VERGE = 0, 1, 2, 3

MATERIAL_RGB = np.array([(72, 72, 76), (235, 235, 225), (168, 162, 150), (176, 160, 120)], dtype=np.float32)
MATERIAL_INTENSITY = np.array([8.0, 100.0, 20.0, 30.0], dtype=np.float32)
SKY_HORIZON_RGB = np.array([205, 218, 232], dtype=np.float32)
SKY_ZENITH_RGB = np.array([105, 150, 215], dtype=np.float32)


@dataclass(frozen=True)
class Road:
    """A straight road through the town; (s, d) are the along-road and leftward coordinates.

    origin: (2,) centreline point at s = 0 (where the road enters the map); direction: (2,) unit e_s.
    """

    origin: tuple[float, float]
    direction: tuple[float, float]

    @property
    def yaw(self) -> float:
        return float(np.arctan2(self.direction[1], self.direction[0]))

    def to_world(self, s, d) -> np.ndarray:
        """s, d: (...,) road coordinates -> (..., 2) global x, y."""
        e_s = np.asarray(self.direction)
        e_d = np.array([-e_s[1], e_s[0]])  # left normal
        s, d = np.asarray(s, dtype=np.float64), np.asarray(d, dtype=np.float64)
        return np.asarray(self.origin) + s[..., None] * e_s + d[..., None] * e_d


def town_roads() -> list[Road]:
    """The 8 drivable (road, direction) pairs of the town: 4 roads, both ways."""
    roads = []
    for c in ROAD_CENTRES:
        roads += [Road((c, 0.0), (0.0, 1.0)), Road((c, WORLD_SIZE), (0.0, -1.0))]
        roads += [Road((0.0, c), (1.0, 0.0)), Road((WORLD_SIZE, c), (-1.0, 0.0))]
    return roads


def _road_offsets(coord: np.ndarray) -> np.ndarray:
    """(N,) x or y -> (N,) signed offset from the nearest road centreline along that axis."""
    offset = coord - ROAD_CENTRES[0]
    for centre in ROAD_CENTRES[1:]:
        other = coord - centre
        offset = np.where(np.abs(other) < np.abs(offset), other, offset)
    return offset


def _markings(d: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Lane markings on one road, from the signed offset d and along-road s: (N,) bool."""
    ad = np.abs(d)
    centre = ad < 0.12
    dashed = (np.abs(ad - 3.5) < 0.08) & (np.mod(s, 9.0) < 3.0)
    edge = np.abs(ad - 7.0) < 0.1
    return centre | dashed | edge


def ground_material(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x, y: (N,) global metres -> (N,) material id (ASPHALT, MARKING, SIDEWALK, VERGE)."""
    ox, oy = _road_offsets(x), _road_offsets(y)
    dx, dy = np.abs(ox), np.abs(oy)
    on_ns, on_ew = dx < ROAD_HALF_WIDTH, dy < ROAD_HALF_WIDTH
    material = np.full(x.shape, VERGE, dtype=np.int64)
    material[(dx < SIDEWALK_HALF_WIDTH) | (dy < SIDEWALK_HALF_WIDTH)] = SIDEWALK
    material[on_ns | on_ew] = ASPHALT
    # markings only away from the intersections
    mark = (on_ns & ~on_ew & _markings(_road_offsets(x), y)) | (
        on_ew & ~on_ns & _markings(_road_offsets(y), x)
    )
    material[mark] = MARKING
    return material


def ground_rgb(x: np.ndarray, y: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Ground colour: x, y (N,) metres, noise (T, T) in [-1, 1] -> (N, 3) float RGB in [0, 255].

    The noise table is tiled over 0.5 m cells; sidewalks get a 2 m paving grid.
    """
    material = ground_material(x, y)
    rgb = MATERIAL_RGB[material]  # (N, 3)
    size = noise.shape[0]
    jitter = noise[np.floor(x * 2).astype(np.int64) % size, np.floor(y * 2).astype(np.int64) % size]  # (N,)
    amplitude = np.where(material == MARKING, 6.0, np.where(material == VERGE, 22.0, 14.0))
    rgb = rgb + (jitter * amplitude)[:, None]
    grid = (np.mod(x, 2.0) < 0.08) | (np.mod(y, 2.0) < 0.08)
    rgb[(material == SIDEWALK) & grid] *= 0.7
    return np.clip(rgb, 0, 255)


def sky_rgb(dir_z: np.ndarray) -> np.ndarray:
    """dir_z: (N,) z of unit ray directions -> (N, 3) float sky colour (horizon to zenith)."""
    a = np.clip(dir_z, 0.0, 1.0)[:, None] ** 0.5
    return SKY_HORIZON_RGB * (1 - a) + SKY_ZENITH_RGB * a


def drivable_area_png() -> np.ndarray:
    """The map mask: (H, W) uint8, 255 on the roads, 0 elsewhere, at MAP_RESOLUTION.

    Row 0 is the north edge (y = WORLD_SIZE), as the devkit's MapMask.to_pixel_coords expects.
    """
    n = int(round(WORLD_SIZE / MAP_RESOLUTION))
    centres = (np.arange(n) + 0.5) * MAP_RESOLUTION  # (n,)
    on_x = np.abs(_road_offsets(centres)) < ROAD_HALF_WIDTH  # (n,) columns on a N-S road
    on_y = np.abs(_road_offsets(centres[::-1])) < ROAD_HALF_WIDTH  # (n,) rows on an E-W road, north first
    mask = on_y[:, None] | on_x[None, :]  # (H, W)
    return mask.astype(np.uint8) * 255
