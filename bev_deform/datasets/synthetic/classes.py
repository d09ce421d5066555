"""The 10 nuScenes detection classes as the generator draws them: nuScenes category name, mean size,
colour, and the attribute a track gets from its speed.

Mean sizes (l, w, h) in metres are the nuScenes averages per detection class; colours are RGB,
one distinct colour per class, chosen to stand out from the asphalt, pavement and verge.
"""

from __future__ import annotations

DETECTION_CLASSES = (
    "car",
    "truck",
    "trailer",
    "bus",
    "construction_vehicle",
    "bicycle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "barrier",
)

# detection class -> the nuScenes category the annotation uses (category_to_detection_name maps it back)
CATEGORY_OF_CLASS = {
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "trailer": "vehicle.trailer",
    "bus": "vehicle.bus.rigid",
    "construction_vehicle": "vehicle.construction",
    "bicycle": "vehicle.bicycle",
    "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier",
}

MEAN_SIZE_LWH = {
    "car": (4.63, 1.97, 1.74),
    "truck": (6.93, 2.51, 2.84),
    "trailer": (12.29, 2.90, 3.87),
    "bus": (11.19, 2.94, 3.47),
    "construction_vehicle": (6.37, 2.85, 3.19),
    "bicycle": (1.70, 0.60, 1.28),
    "motorcycle": (2.11, 0.77, 1.47),
    "pedestrian": (0.73, 0.67, 1.77),
    "traffic_cone": (0.41, 0.41, 1.07),
    "barrier": (0.50, 2.53, 0.98),
}

CLASS_RGB = {
    "car": (215, 35, 35),
    "truck": (255, 140, 0),
    "trailer": (120, 75, 35),
    "bus": (245, 215, 30),
    "construction_vehicle": (140, 60, 210),
    "bicycle": (0, 210, 210),
    "motorcycle": (235, 70, 190),
    "pedestrian": (40, 90, 245),
    "traffic_cone": (150, 250, 40),
    "barrier": (10, 115, 60),
}

# lidar return intensity per class (0..255 like nuScenes)
CLASS_INTENSITY = {
    "car": 40.0,
    "truck": 35.0,
    "trailer": 30.0,
    "bus": 45.0,
    "construction_vehicle": 50.0,
    "bicycle": 20.0,
    "motorcycle": 25.0,
    "pedestrian": 15.0,
    "traffic_cone": 90.0,
    "barrier": 70.0,
}

# The full nuScenes v1.0 category list (the devkit's category.json, with its lidarseg 'index').
ALL_CATEGORIES = (
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)

ATTRIBUTES = (
    "vehicle.moving",
    "vehicle.stopped",
    "vehicle.parked",
    "cycle.with_rider",
    "cycle.without_rider",
    "pedestrian.sitting_lying_down",
    "pedestrian.standing",
    "pedestrian.moving",
)

VISIBILITY_LEVELS = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))

MOVING_SPEED = 0.2  # m/s; a track faster than this is 'moving'


def attribute_of(cls: str, speed: float) -> str | None:
    """The one attribute nuScenes gives a ``cls`` object moving at ``speed`` m/s (None for barriers/cones)."""
    moving = speed > MOVING_SPEED
    if cls in ("car", "truck", "trailer", "bus", "construction_vehicle"):
        return "vehicle.moving" if moving else "vehicle.parked"
    if cls in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if moving else "cycle.without_rider"
    if cls == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    if cls in ("traffic_cone", "barrier"):
        return None
    raise ValueError(f"cls must be one of {DETECTION_CLASSES}, got {cls!r}")


def visibility_token(fraction: float) -> str:
    """Visible fraction in [0, 1] -> nuScenes visibility token '1'..'4' (0-40, 40-60, 60-80, 80-100 %)."""
    if fraction < 0.4:
        return "1"
    if fraction < 0.6:
        return "2"
    if fraction < 0.8:
        return "3"
    return "4"
