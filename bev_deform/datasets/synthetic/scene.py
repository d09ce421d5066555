"""One synthetic scene: the ego vehicle driving straight along a town road at constant speed, and
object tracks on the road's strips (lanes, parking, sidewalk, verge), all moving at constant velocity
so that nuScenes' finite-difference velocity is exact.

Road coordinates (s, d): s along the ego's driving direction, d to the left; traffic keeps right, so
the ego drives in the lane at d = -1.75 and the lanes with d > 0 carry the opposite traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .classes import DETECTION_CLASSES, MEAN_SIZE_LWH
from .world import ROAD_CENTRES, SIDEWALK_HALF_WIDTH, WORLD_SIZE, Road, town_roads

EGO_LANE_D = -1.75
EGO_RESERVED_S = (-12.0, 14.0)  # ego-lane interval (relative to the ego) kept free of other vehicles
SIZE_JITTER = 0.08  # +-8 % per dimension around the nuScenes mean size
MAP_MARGIN = 60.0  # the ego stays this far inside the map (the devkit crops the map around it)
SHOWCASE_SPACING = 8.0  # m between showcase objects on one side, so neighbours do not hide each other
NEAR_DISTANCE = 60.0  # objects are placed so that they come this close to the ego


@dataclass(frozen=True)
class Strip:
    """A band along the road holding one kind of object: lanes carry moving traffic (``d`` is the
    lane centre), the others static objects or walking pedestrians. A static strip spans
    [d, d + width] across the road; an object keeps its inner side within ``spread`` of ``d`` and
    its footprint inside the band, so that the strips never overlap."""

    name: str
    d: float
    moving: bool
    classes: dict
    density: float  # objects per metre
    width: float = 0.0
    spread: float = 0.0


STRIPS = (
    Strip(
        "lane_inner",
        1.75,
        True,
        {"car": 0.7, "truck": 0.12, "bus": 0.1, "trailer": 0.05, "construction_vehicle": 0.03},
        1 / 28,
    ),
    Strip(
        "lane_outer",
        5.25,
        True,
        {"car": 0.45, "motorcycle": 0.2, "bicycle": 0.15, "truck": 0.1, "bus": 0.1},
        1 / 30,
    ),
    Strip(
        "parking",
        7.05,
        False,
        {"car": 0.5, "truck": 0.1, "motorcycle": 0.1, "trailer": 0.08, "traffic_cone": 0.07, "barrier": 0.07},
        1 / 12,
        width=3.2,
        spread=0.2,
    ),
    Strip("walkway", 11.0, True, {"pedestrian": 1.0}, 1 / 16),
    Strip(
        "curb",
        12.0,
        False,
        {"pedestrian": 0.35, "traffic_cone": 0.2, "barrier": 0.2, "bicycle": 0.15, "motorcycle": 0.1},
        1 / 10,
        width=1.6,
        spread=0.3,
    ),
    Strip(
        "verge",
        14.5,
        False,
        {
            "construction_vehicle": 0.2,
            "barrier": 0.2,
            "trailer": 0.15,
            "traffic_cone": 0.15,
            "pedestrian": 0.15,
            "truck": 0.15,
        },
        1 / 14,
        width=12.0,
        spread=10.0,
    ),
)
SHOWCASE_STRIP = {c: "parking" for c in ("car", "truck", "trailer", "bus", "construction_vehicle")}
SHOWCASE_STRIP.update({c: "curb" for c in ("bicycle", "motorcycle", "pedestrian", "traffic_cone", "barrier")})


@dataclass(frozen=True)
class Track:
    """One object, constant velocity: centre(t) = (xy0 + velocity * t, h / 2).

    size: (l, w, h) metres; yaw: radians about +z in the global frame; tint: brightness factor.
    """

    cls: str
    size: tuple[float, float, float]
    yaw: float
    xy0: tuple[float, float]
    velocity: tuple[float, float]
    tint: float

    def centre(self, t: float) -> np.ndarray:
        """(3,) global box centre at time t (seconds from the scene start)."""
        xy = np.asarray(self.xy0) + np.asarray(self.velocity) * t
        return np.array([xy[0], xy[1], self.size[2] / 2])

    @property
    def speed(self) -> float:
        return float(np.hypot(*self.velocity))


@dataclass
class SceneLayout:
    """The ego's road, start s0 (m) and speed (m/s), the scene duration (s) and the object tracks."""

    road: Road
    ego_s0: float
    ego_speed: float
    duration: float
    tracks: list = field(default_factory=list)

    def ego_pose(self, t: float) -> tuple[np.ndarray, float]:
        """Ego (rear axle on the ground) at time t -> ((3,) global translation, yaw)."""
        xy = self.road.to_world(self.ego_s0 + self.ego_speed * t, EGO_LANE_D)
        return np.array([xy[0], xy[1], 0.0]), self.road.yaw


def _jittered_size(rng: np.random.Generator, cls: str) -> tuple[float, float, float]:
    scale = 1.0 + rng.uniform(-SIZE_JITTER, SIZE_JITTER, size=3)
    return tuple(float(v) for v in np.asarray(MEAN_SIZE_LWH[cls]) * scale)


def _footprint(size, rel_yaw: float) -> tuple[float, float]:
    """Extent along s and along d of an l x w box rotated by rel_yaw from the road direction."""
    c, s = abs(np.cos(rel_yaw)), abs(np.sin(rel_yaw))
    return size[0] * c + size[1] * s, size[0] * s + size[1] * c


def _static_rel_yaw(rng: np.random.Generator, cls: str, strip: Strip, size) -> float:
    """Heading relative to the road of a static object: parked along the road, or free on the verge;
    snapped to the nearest right angle if its footprint would stick out of the strip."""
    if cls == "barrier":
        rel_yaw = np.pi / 2 + rng.normal(0, 0.05)  # long side (w) along the road
    elif cls in ("pedestrian", "traffic_cone") or strip.name == "verge":
        rel_yaw = rng.uniform(-np.pi, np.pi)
    else:
        rel_yaw = rng.choice([0.0, np.pi]) + rng.normal(0, 0.05)
    if _footprint(size, rel_yaw)[1] > strip.width:
        rel_yaw = np.round(rel_yaw / (np.pi / 2)) * (np.pi / 2)
    return float(rel_yaw)


def _strip_speed(rng: np.random.Generator, strip: Strip, side: int, ego_speed: float) -> float:
    """Signed speed along e_s shared by all objects of one (strip, side): no overtaking, no collisions."""
    if not strip.moving:
        return 0.0
    if strip.name == "lane_inner":
        return ego_speed if side < 0 else -rng.uniform(5.0, 10.0)
    if strip.name == "lane_outer":
        return float(-side * rng.uniform(3.0, 6.0))
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 1.6))  # pedestrians on the walkway


def _clash(a: float, b: float, reserved: list) -> tuple[float, float] | None:
    """The first reserved (lo, hi) interval overlapping [a, b], if any."""
    for lo, hi in reserved:
        if a < hi and b > lo:
            return lo, hi
    return None


def _fill_interval(rng: np.random.Generator, strip: Strip, lo: float, hi: float, reserved: list) -> list:
    """Objects along [lo, hi] of one strip side: a list of (cls, size, rel_yaw, s_centre)."""
    names = list(strip.classes)
    weights = np.asarray([strip.classes[n] for n in names], dtype=np.float64)
    items = []
    cursor = lo + rng.exponential(1 / strip.density)
    while cursor < hi:
        cls = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        size = _jittered_size(rng, cls)
        rel_yaw = 0.0 if strip.moving else _static_rel_yaw(rng, cls, strip, size)
        ext_s = _footprint(size, rel_yaw)[0]
        clash = _clash(cursor - 0.5, cursor + ext_s + 0.5, reserved)
        if clash is not None:
            cursor = clash[1] + 0.51  # past the clash (by more than the margin, despite rounding)
            continue
        items.append((cls, size, rel_yaw, cursor + ext_s / 2))
        cursor += ext_s + 1.0 + rng.exponential(1 / strip.density)
    return items


def _make_track(rng, layout: SceneLayout, strip: Strip, side: int, item: tuple, speed: float) -> Track:
    """Turn a placed (cls, size, rel_yaw, s) on one strip side into a global constant-velocity Track."""
    cls, size, rel_yaw, s = item
    if strip.moving:
        d = side * strip.d
        rel_yaw = 0.0 if speed >= 0 else np.pi
    else:
        ext_d = _footprint(size, rel_yaw)[1]
        d = side * (strip.d + ext_d / 2 + rng.uniform(0.0, max(0.0, min(strip.spread, strip.width - ext_d))))
    e_s = np.asarray(layout.road.direction)
    xy0 = layout.road.to_world(s, d)
    yaw = float(np.arctan2(np.sin(layout.road.yaw + rel_yaw), np.cos(layout.road.yaw + rel_yaw)))
    return Track(
        cls=cls,
        size=size,
        yaw=yaw,
        xy0=(float(xy0[0]), float(xy0[1])),
        velocity=(float(speed * e_s[0]), float(speed * e_s[1])),
        tint=float(rng.uniform(0.85, 1.1)),
    )


def _span(layout: SceneLayout, speed: float, static: bool) -> tuple[float, float]:
    """s interval (at t = 0) whose objects come within NEAR_DISTANCE of the ego during the scene."""
    v, duration = layout.ego_speed, layout.duration
    if static:
        return layout.ego_s0 - NEAR_DISTANCE, layout.ego_s0 + v * duration + NEAR_DISTANCE
    lo = -NEAR_DISTANCE - max(0.0, (speed - v) * duration)
    hi = NEAR_DISTANCE + max(0.0, (v - speed) * duration)
    return layout.ego_s0 + lo, layout.ego_s0 + hi


def _intersections(road: Road) -> list:
    """s intervals of the crossing roads (static objects are kept off them)."""
    axis = 0 if abs(road.direction[0]) > 0.5 else 1
    sign = road.direction[axis]
    crossings = [(c - road.origin[axis]) * sign for c in ROAD_CENTRES]
    margin = SIDEWALK_HALF_WIDTH + 0.5
    return [(s - margin, s + margin) for s in crossings]


def _place_showcases(rng: np.random.Generator, layout: SceneLayout, reserved: dict) -> list:
    """One static object of every class beside the ego's path, so that every scene holds all 10 classes.

    A curb object's s interval is also reserved on the parking strip in front of it, so that no
    parked vehicle hides it from the road.
    """
    strips = {s.name: s for s in STRIPS}
    counts = {"parking": 0, "curb": 0}
    # the middle of the ego's drive: showcases sit as close to it as the strips allow, so that
    # they are within the devkit's smallest class range (30 m) of the ego in every sample
    mid = layout.ego_s0 + layout.ego_speed * layout.duration / 2 + rng.uniform(-2.0, 2.0)
    tracks = []
    for k in rng.permutation(len(DETECTION_CLASSES)):
        cls = DETECTION_CLASSES[int(k)]
        strip = strips[SHOWCASE_STRIP[cls]]
        side = -1 if counts[strip.name] % 2 == 0 else 1
        slot = counts[strip.name] // 2  # 0, 1, 2 on each side: centred, ahead, behind
        counts[strip.name] += 1
        size = _jittered_size(rng, cls)
        rel_yaw = _static_rel_yaw(rng, cls, strip, size)
        ext_s = _footprint(size, rel_yaw)[0]
        blocking = reserved[(strip.name, side)] + reserved[("parking", side)]
        offset = SHOWCASE_SPACING * (slot + 1) // 2 * (1 if slot % 2 else -1)
        start = _nearest_free_start(mid + offset - ext_s / 2, ext_s, blocking)
        interval = (start - 1.0, start + ext_s + 1.0)
        reserved[(strip.name, side)].append(interval)
        if strip.name == "curb":
            reserved[("parking", side)].append(interval)
        tracks.append(_make_track(rng, layout, strip, side, (cls, size, rel_yaw, start + ext_s / 2), 0.0))
    return tracks


def _nearest_free_start(hint: float, ext_s: float, blocking: list, step: float = 0.5) -> float:
    """The start s closest to ``hint`` whose [start - 1, start + ext_s + 1] clashes with nothing."""
    for i in range(2000):
        start = hint + (i + 1) // 2 * step * (1 if i % 2 else -1)  # hint, +step, -step, +2 step, ...
        if _clash(start - 1.0, start + ext_s + 1.0, blocking) is None:
            return start
    raise ValueError(f"no free place within {1000 * step} m of s = {hint:.1f} for a showcase object")


def sample_scene(rng: np.random.Generator, num_samples: int, dt: float = 0.5) -> SceneLayout:
    """Draw one scene: a road and direction of the town, the ego's start and speed, and the tracks.

    Args:
        rng: the scene's own seeded generator (the only source of randomness).
        num_samples: keyframes in the scene, ``dt`` seconds apart.
    """
    duration = (num_samples - 1) * dt
    roads = town_roads()
    road = roads[int(rng.integers(len(roads)))]
    speed = float(rng.uniform(4.0, 8.0))
    room = WORLD_SIZE - 2 * MAP_MARGIN - speed * duration
    if num_samples < 2 or room < 0:
        raise ValueError(
            f"num_samples must be in [2, {int((WORLD_SIZE - 2 * MAP_MARGIN) / (8.0 * dt))}] so that the ego "
            f"stays on the map, got {num_samples}"
        )
    layout = SceneLayout(road, MAP_MARGIN + float(rng.uniform(0.0, room)), speed, duration)
    reserved = {(s.name, side): [] if s.moving else _intersections(road) for s in STRIPS for side in (-1, 1)}
    reserved[("lane_inner", -1)].append(
        (layout.ego_s0 + EGO_RESERVED_S[0], layout.ego_s0 + EGO_RESERVED_S[1])
    )
    layout.tracks.extend(_place_showcases(rng, layout, reserved))
    for strip in STRIPS:
        for side in (-1, 1):
            speed_s = _strip_speed(rng, strip, side, layout.ego_speed)
            lo, hi = _span(layout, speed_s, static=not strip.moving)
            for item in _fill_interval(rng, strip, lo, hi, reserved[(strip.name, side)]):
                layout.tracks.append(_make_track(rng, layout, strip, side, item, speed_s))
    return layout
