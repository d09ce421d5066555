"""Two models' errors on the same objects: match each model's predictions to the ground truth
(greedy by score, same class, bird's-eye centre distance within ``--max-dist`` m, as the
nuScenes devkit matches at its 2 m threshold), then compare the velocity and centre errors on
the objects that both models detect, and on those that only one of them does; and each model's
heading error on its static and its moving objects, with the share of each it turns around (off
by more than 135 degrees: front and back swapped), overall and per class; and per class, on the
moving objects, the velocity error split into the share predicted reversed (more than 135 degrees
off) and the share predicted standing (slower than 0.5 m/s), and the error split along the line of
sight from the LiDAR origin and across it, beside the truth's own speed along and across it (what a
standing prediction would cost).

    python tools/test.py CONFIG_A CKPT_A --out a.pkl      # the raw predictions of each model
    python tools/test.py CONFIG_B CKPT_B --out b.pkl
    python tools/analysis/compare_matched.py a.pkl b.pkl \
        --infos data/nuscenes-synth/nuscenes_infos_val.pkl [--score-thr 0.2] [--max-dist 2.0]

A TP error in the devkit averages over each model's own matches, so a model that detects more,
harder objects can show a larger error without estimating any object worse; the ``both`` rows
remove that effect. Ground truth: the info file's instances with at least one lidar point,
within the devkit's class range (its ``detection_cvpr_2019`` config: 50 m for vehicles, 40 m for
two-wheelers and pedestrians, 30 m for cones and barriers) of the lidar origin (the devkit
measures from the ego, about a metre away); velocity errors over the classes that have velocity
(not cones and barriers); heading errors by the devkit's ``angle_diff`` with its periods (pi for
barriers, none for cones). Written for the query groups' velocity and the heading errors (CPU
config docstring); the line-of-sight split for the walkers' velocity of the temporal config
(README, 7 Dec 2026): a camera sees motion across its line of sight as image motion and motion
along it only as a change of size and of image row, so a model limited by that geometry errs
along it. Pass one dump twice for one model's figures.
"""

from __future__ import annotations

import argparse
import pickle
from typing import NamedTuple

import numpy as np
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.common.utils import angle_diff

from bev_deform.datasets.synthetic.classes import DETECTION_CLASSES

# the devkit's evaluation ranges (metres) per class, in the label order of the info files
CLASS_RANGE = tuple(config_factory("detection_cvpr_2019").class_range[c] for c in DETECTION_CLASSES)
# the devkit scores no velocity for traffic cones and barriers
VELOCITY_LABELS = frozenset(
    i for i, c in enumerate(DETECTION_CLASSES) if c not in ("traffic_cone", "barrier")
)
# the devkit's heading period per label: none for cones, pi for barriers, 2 pi for the others
YAW_PERIOD = tuple({"traffic_cone": None, "barrier": np.pi}.get(c, 2 * np.pi) for c in DETECTION_CLASSES)
MOVING = 0.5  # m/s: faster ground truth counts as moving
TURNED_AROUND = 0.75 * np.pi  # a heading error above it: front and back swapped


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Two models' errors on the objects both detect")
    parser.add_argument("dump_a", help="tools/test.py --out pickle of model A")
    parser.add_argument("dump_b", help="tools/test.py --out pickle of model B")
    parser.add_argument("--infos", required=True, help="the split's mmdet3d info file (ground truth)")
    parser.add_argument("--score-thr", type=float, default=0.2, help="predictions below are ignored")
    parser.add_argument("--max-dist", type=float, default=2.0, help="match threshold in metres")
    return parser.parse_args(argv)


def _load(path: str, what: str):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        raise SystemExit(f"{what} {path!r} does not exist") from None


def _ground_truth(info: dict) -> list[tuple[int, int, np.ndarray, np.ndarray, float]]:
    """(instance index, label, centre xy, velocity xy, yaw) of the instances the devkit would evaluate."""
    out = []
    for idx, inst in enumerate(info["instances"]):
        label, box = inst["bbox_label_3d"], np.asarray(inst["bbox_3d"], dtype=np.float64)
        if label < 0 or inst.get("num_lidar_pts", 1) <= 0 or np.hypot(*box[:2]) >= CLASS_RANGE[label]:
            continue
        out.append((idx, label, box[:2], np.asarray(inst["velocity"], dtype=np.float64), float(box[6])))
    return out


class Match(NamedTuple):
    """One matched ground-truth object: its label, the centre error (m), the velocity error (m/s),
    its speed (m/s), the heading error (rad; NaN for cones), the angle between the predicted and the
    true velocity (rad; NaN where either is zero), the predicted speed (m/s), the predicted
    centre (x, y) in the sample's LIDAR_TOP frame (m), and the absolute velocity error along the
    line of sight from the LiDAR origin to the true centre and across it, with the true
    velocity's absolute components along and across it (m/s)."""

    label: int
    centre_err: float
    vel_err: float
    speed: float
    yaw_err: float
    vel_dir_err: float
    pred_speed: float
    pred_xy: tuple[float, float]
    vel_err_along: float
    vel_err_across: float
    speed_along: float
    speed_across: float


def _sight_axes(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (2,) along the line of sight from the LiDAR origin to a bird's-eye ``centre``
    and across it (90 degrees anticlockwise); x and y for a centre at the origin."""
    dist = float(np.hypot(*centre))
    along = centre / dist if dist > 0 else np.array([1.0, 0.0])
    return along, np.array([-along[1], along[0]])


def match(results: list[dict], infos: list[dict], score_thr: float, max_dist: float) -> dict:
    """{(sample_idx, instance index): Match} of the ground truth that the predictions match
    (greedy by score, each object once)."""
    matches = {}
    for res in results:
        sample = res["sample_idx"]
        if not 0 <= sample < len(infos):
            raise SystemExit(
                f"a dump's sample_idx {sample} is not in --infos ({len(infos)} samples): another split?"
            )
        pred = res["pred_instances_3d"]
        boxes = pred["bboxes_3d"].tensor.detach().cpu().numpy().astype(np.float64)  # (P, 9)
        scores = pred["scores_3d"].detach().cpu().numpy()
        labels = pred["labels_3d"].detach().cpu().numpy()
        gts = _ground_truth(infos[sample])
        taken = set()
        for i in np.argsort(-scores, kind="stable"):
            if scores[i] < score_thr:
                break
            best, best_dist = None, max_dist
            for idx, label, centre, velocity, yaw in gts:
                if label != labels[i] or idx in taken:
                    continue
                dist = float(np.hypot(*(boxes[i, :2] - centre)))
                if dist <= best_dist:
                    best, best_dist = (idx, label, centre, velocity, yaw), dist
            if best is not None:
                idx, label, centre, velocity, yaw = best
                taken.add(idx)
                pred_vel = boxes[i, 7:9]
                vel_err = float(np.hypot(*(pred_vel - velocity)))
                period = YAW_PERIOD[label]
                yaw_err = float("nan") if period is None else abs(angle_diff(boxes[i, 6], yaw, period))
                speed, pred_speed = float(np.hypot(*velocity)), float(np.hypot(*pred_vel))
                vel_dir_err = float("nan")
                if speed > 0 and pred_speed > 0:
                    cos = float(np.dot(pred_vel, velocity)) / (speed * pred_speed)
                    vel_dir_err = float(np.arccos(np.clip(cos, -1.0, 1.0)))
                along, across = _sight_axes(centre)
                err_xy = pred_vel - velocity
                matches[(sample, idx)] = Match(
                    int(label), best_dist, vel_err, speed, yaw_err, vel_dir_err, pred_speed,
                    (float(boxes[i, 0]), float(boxes[i, 1])),
                    abs(float(err_xy @ along)), abs(float(err_xy @ across)),
                    abs(float(velocity @ along)), abs(float(velocity @ across)),
                )  # fmt: skip
    return matches


def _mean(matches: dict, keys, field: str, velocity_only: bool = False) -> float:
    vals = [
        getattr(matches[k], field) for k in keys if not velocity_only or matches[k].label in VELOCITY_LABELS
    ]
    return float(np.mean(vals)) if vals else float("nan")


def _headings(matches: dict, moving: bool, label: int | None = None) -> tuple[float, float, int]:
    """Mean heading error (rad), the share turned around, and how many, over the static or the
    moving matches that have a heading (of one label, or all)."""
    errs = [
        m.yaw_err
        for m in matches.values()
        if (m.speed > MOVING) == moving and not np.isnan(m.yaw_err) and label in (None, m.label)
    ]
    if not errs:
        return float("nan"), float("nan"), 0
    return float(np.mean(errs)), float(np.mean(np.asarray(errs) > TURNED_AROUND)), len(errs)


def _velocities(matches: dict, label: int) -> tuple[float, float, float, int]:
    """Over the moving matches (> 0.5 m/s) of one label: the mean velocity error (m/s), the share
    predicted moving but reversed (direction off by more than 135 degrees), the share predicted
    standing (slower than 0.5 m/s), and how many."""
    rows = [m for m in matches.values() if m.speed > MOVING and m.label == label]
    if not rows:
        return float("nan"), float("nan"), float("nan"), 0
    errs = np.asarray([m.vel_err for m in rows])
    standing = np.asarray([m.pred_speed <= MOVING for m in rows])
    # a standing prediction's direction says nothing: reversed counts the others (NaN compares False)
    reversed_ = np.asarray([m.vel_dir_err > TURNED_AROUND for m in rows]) & ~standing
    return float(errs.mean()), float(reversed_.mean()), float(standing.mean()), len(rows)


def _sight_split(matches: dict, label: int) -> tuple[float, float, float, float, int]:
    """Over the moving matches (> 0.5 m/s) of one label: the mean absolute velocity error along the
    line of sight and across it, the truth's mean absolute speed along and across it (m/s), and
    how many."""
    rows = [m for m in matches.values() if m.speed > MOVING and m.label == label]
    if not rows:
        return (float("nan"),) * 4 + (0,)
    cols = np.asarray([(m.vel_err_along, m.vel_err_across, m.speed_along, m.speed_across) for m in rows])
    return (*(float(c) for c in cols.mean(0)), len(rows))


def compare(a: dict, b: dict) -> dict:
    """Mean centre and velocity errors of each model on: its own matches, the objects both match,
    the moving ones (> 0.5 m/s) of those, and the objects only it matches; each model's heading
    error on its static and moving matches, with the share turned around (> 135 degrees); and per
    class its velocity error on the moving matches with the shares reversed and standing, and split
    along and across the line of sight."""
    both = a.keys() & b.keys()
    moving = {k for k in both if a[k].speed > MOVING}
    rows = {}
    for name, own, other in (("A", a, b), ("B", b, a)):
        rows[name] = {
            "matched": len(own),
            "centre_own": _mean(own, own, "centre_err"),
            "velocity_own": _mean(own, own, "vel_err", True),
            "centre_both": _mean(own, both, "centre_err"),
            "velocity_both": _mean(own, both, "vel_err", True),
            "velocity_both_moving": _mean(own, moving, "vel_err", True),
            "only": len(own.keys() - other.keys()),
            "velocity_only": _mean(own, own.keys() - other.keys(), "vel_err", True),
        }
        for kind in ("static", "moving"):
            err, turned, count = _headings(own, kind == "moving")
            rows[name].update({f"heading_{kind}": err, f"turned_{kind}": turned, f"n_{kind}": count})
            rows[name][f"turned_{kind}_by_class"] = {
                c: _headings(own, kind == "moving", i)[1:] for i, c in enumerate(DETECTION_CLASSES)
            }
        rows[name]["velocity_moving_by_class"] = {
            c: _velocities(own, i) for i, c in enumerate(DETECTION_CLASSES) if i in VELOCITY_LABELS
        }
        rows[name]["sight_moving_by_class"] = {
            c: _sight_split(own, i) for i, c in enumerate(DETECTION_CLASSES) if i in VELOCITY_LABELS
        }
    rows["both"], rows["both_moving"] = len(both), len(moving)
    return rows


def _print_by_class(header: str, classes, cell) -> None:
    """Print one per-class table, A | B: the line ``header``, then for each class of ``classes``
    the cells ``cell(model, class)`` of models A and B."""
    print(header)
    for c in classes:
        print(f"  {c:20s}  {cell('A', c)}  |  {cell('B', c)}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    infos = _load(args.infos, "--infos")["data_list"]
    dumps = [_load(p, "dump") for p in (args.dump_a, args.dump_b)]
    a, b = (match(d, infos, args.score_thr, args.max_dist) for d in dumps)
    rows = compare(a, b)
    print(
        f"score >= {args.score_thr}, centre within {args.max_dist} m; both detect {rows['both']} objects "
        f"({rows['both_moving']} moving > 0.5 m/s)"
    )
    print("model  matched  centre err own / both   velocity err own / both / both moving   only: n, vel err")
    for name in ("A", "B"):
        r = rows[name]
        centre = f"{r['centre_own']:.3f} / {r['centre_both']:.3f} m"
        velocity = f"{r['velocity_own']:.3f} / {r['velocity_both']:.3f} / {r['velocity_both_moving']:.3f} m/s"
        print(
            f"{name:5s}  {r['matched']:7d}  {centre:22s}  {velocity:37s}  "
            f"{r['only']:5d}, {r['velocity_only']:.3f}"
        )
    print(
        "model  heading err (rad), turned around (> 135 deg): "
        "static n / err / turned   moving n / err / turned"
    )
    for name in ("A", "B"):
        r = rows[name]
        print(
            f"{name:5s}  {r['n_static']:5d} / {r['heading_static']:.2f} / {r['turned_static']:.0%}"
            f"   {r['n_moving']:5d} / {r['heading_moving']:.2f} / {r['turned_moving']:.0%}"
        )
    _print_by_class(
        "turned around per class, A | B: static (n)   moving (n)",
        DETECTION_CLASSES,
        lambda m, c: "{:4.0%} ({:3d})  {:4.0%} ({:3d})".format(
            *rows[m]["turned_static_by_class"][c], *rows[m]["turned_moving_by_class"][c]
        ),
    )
    _print_by_class(
        "moving objects per class, A | B: velocity err (m/s) / reversed (> 135 deg) / "
        "standing (< 0.5 m/s) (n)",
        rows["A"]["velocity_moving_by_class"],
        lambda m, c: "{:5.2f} / {:4.0%} / {:4.0%} ({:3d})".format(*rows[m]["velocity_moving_by_class"][c]),
    )
    _print_by_class(
        "moving objects per class, A | B: velocity err along / across the line of sight "
        "(truth's speed along / across) (m/s)",
        rows["A"]["sight_moving_by_class"],
        lambda m, c: "{:5.2f} / {:5.2f} ({:5.2f} / {:5.2f}) ({:3d})".format(
            *rows[m]["sight_moving_by_class"][c]
        ),
    )
    return rows


if __name__ == "__main__":
    main()
