"""Whether a model's own per-frame detections carry the objects' motion: for every moving object
(ground truth faster than 0.5 m/s) that the model detects at frame t and at frame t - g of the same
scene, the displacement between its two detections in global coordinates, projected on the true
direction of motion; per class and gap g, the share pointing the true way and the mean predicted
against the true displacement. A model whose velocity head does not read the history can still
have the motion in its detections: this tells the two apart. Also per class and gap: the error
(m/s) of the velocity the two detections give, displacement / time gap, against the error of the
head's own velocity on the same objects at frame t, and the share of the moving objects detected
at t (with a frame t - g in their scene) that are detected at t - g too (one without ground truth
there, out of range or without lidar points, counts as not detected): what a tracker on the
detections could reach, before it has to find which earlier detection is the object's.

    python tools/test.py CONFIG CKPT --out preds.pkl
    python tools/analysis/track_direction.py preds.pkl \\
        --infos data/nuscenes-synth/nuscenes_infos_val.pkl [--gaps 1 2 4] [--classes pedestrian car]

Matching is ``compare_matched.py``'s (greedy by score, same class, within ``--max-dist`` m of
the ground-truth centre). The same object at the two frames is found by its constant velocity,
as the synthetic tracks move: the ground truth at frame t - g within 0.1 m of its frame-t centre
moved back by velocity x time gap (the info files carry no instance tokens). Scenes and times
come from the dump (``scene_token``, ``timestamp``: every ``BevNuScenesDataset`` sample with the
nuScenes tables has them), poses from the info file (``ego2global @ lidar2ego``).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

from bev_deform.geometry import lidar2global

_spec = importlib.util.spec_from_file_location(
    "compare_matched", Path(__file__).with_name("compare_matched.py")
)
cm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cm)

SAME_OBJECT = 0.1  # m: the ground truth moved back by its velocity lands this close to its earlier self


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Do a model's detections move the way the objects do?")
    parser.add_argument("dump", help="tools/test.py --out pickle")
    parser.add_argument("--infos", required=True, help="the split's mmdet3d info file (ground truth, poses)")
    parser.add_argument("--gaps", type=int, nargs="+", default=[1, 2, 4], help="frame gaps g")
    parser.add_argument("--classes", nargs="+", default=["pedestrian", "car", "motorcycle"])
    parser.add_argument("--score-thr", type=float, default=0.2, help="predictions below are ignored")
    parser.add_argument("--max-dist", type=float, default=2.0, help="match threshold in metres")
    return parser.parse_args(argv)


def _lidar2global(info: dict) -> np.ndarray:
    """The sample's LIDAR_TOP -> global pose (4, 4), as ``BevNuScenesDataset`` adds it."""
    return lidar2global(
        np.asarray(info["lidar_points"]["lidar2ego"], dtype=np.float64),
        np.asarray(info["ego2global"], dtype=np.float64),
    )


def _to_global(pose: np.ndarray, xy) -> np.ndarray:
    return pose[:2, :2] @ np.asarray(xy, dtype=np.float64) + pose[:2, 3]


def displacements(
    results: list[dict], infos: list[dict], gap: int, matches: dict
) -> tuple[dict[int, list], dict[int, int]]:
    """Per label, (predicted displacement along the true direction, true displacement) in metres,
    then the errors (m/s) of the velocity the two detections give and of the head's at the later
    frame, of every moving object detected at both ends of a ``gap``-frame step of a scene; and per
    label the count of the moving objects detected at the later frame of a step (whether or not at
    the earlier)."""
    frames: dict[str, list[tuple[float, int]]] = {}
    for res in results:
        if "scene_token" not in res or "timestamp" not in res:
            raise SystemExit(f"dump entry of sample {res['sample_idx']} has no scene_token/timestamp")
        frames.setdefault(res["scene_token"], []).append((float(res["timestamp"]), res["sample_idx"]))
    out: dict[int, list] = {}
    detected_late: dict[int, int] = {}
    for scene in frames.values():
        order = [s for _, s in sorted(scene)]
        for early, late in zip(order[:-gap], order[gap:]):
            pose_a, pose_b = _lidar2global(infos[early]), _lidar2global(infos[late])
            dt = float(infos[late]["timestamp"]) - float(infos[early]["timestamp"])
            earlier = {idx: _to_global(pose_a, c) for idx, _, c, _, _ in cm._ground_truth(infos[early])}
            for idx, label, centre, velocity, _ in cm._ground_truth(infos[late]):
                speed = float(np.hypot(*velocity))
                if label not in cm.VELOCITY_LABELS or speed <= cm.MOVING or (late, idx) not in matches:
                    continue
                detected_late[label] = detected_late.get(label, 0) + 1
                direction = pose_b[:2, :2] @ velocity / speed  # global
                was = _to_global(pose_b, centre) - direction * speed * dt
                same = [j for j, c in earlier.items() if np.hypot(*(c - was)) <= SAME_OBJECT]
                if len(same) != 1 or (early, same[0]) not in matches:
                    continue
                moved = _to_global(pose_b, matches[(late, idx)].pred_xy) - _to_global(
                    pose_a, matches[(early, same[0])].pred_xy
                )
                track_err = float(np.hypot(*(moved / dt - direction * speed)))
                head_err = matches[(late, idx)].vel_err
                out.setdefault(label, []).append((float(moved @ direction), speed * dt, track_err, head_err))
    return out, detected_late


def main(argv=None) -> dict:
    args = parse_args(argv)
    infos = cm._load(args.infos, "--infos")["data_list"]
    results = cm._load(args.dump, "dump")
    unknown = [c for c in args.classes if c not in cm.DETECTION_CLASSES]
    if unknown:
        raise SystemExit(f"--classes {unknown} are not among {list(cm.DETECTION_CLASSES)}")
    if min(args.gaps) < 1:
        raise SystemExit(f"--gaps must be >= 1, got {args.gaps}")
    matches = cm.match(results, infos, args.score_thr, args.max_dist)
    rows = {}
    print(
        "class  gap (frames)  n  right way  predicted / true displacement along the motion (m)  "
        "velocity err (m/s): the two detections' / the head's  detected at t - g too"
    )
    for gap in args.gaps:
        per_label, detected_late = displacements(results, infos, gap, matches)
        for c in args.classes:
            label = cm.DETECTION_CLASSES.index(c)
            d = np.asarray(per_label.get(label, []), dtype=np.float64).reshape(-1, 4)
            right = float(np.mean(d[:, 0] > 0)) if len(d) else float("nan")
            pred, true, track_err, head_err = d.mean(0) if len(d) else (float("nan"),) * 4
            both = len(d) / detected_late[label] if detected_late.get(label) else float("nan")
            rows[(c, gap)] = dict(
                n=len(d), right=right, predicted=float(pred), true=float(true), track_err=float(track_err),
                head_err=float(head_err), both=both,
            )  # fmt: skip
            print(
                f"{c:12s}  {gap:3d}  {len(d):5d}  {right:6.0%}  {pred:6.2f} / {true:5.2f}  "
                f"{track_err:5.2f} / {head_err:5.2f}  {both:6.0%}"
            )
    return rows


if __name__ == "__main__":
    main()
