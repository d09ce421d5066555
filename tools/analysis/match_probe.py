"""Does the decoder's ``history_match`` find where each object was? For every ground-truth object
of the probed classes in the BEV grid, the query of the last searching decoder layer whose
reference point is nearest (within ``--max-dist`` m in x, y) gives its expected displacement (the
mean over heads of each head's softmax-weighted candidate offsets, metres), compared with where the
object truly was in the frame the decoder reads: minus its velocity times the time gap to that
frame (``history_stride`` frames before in its scene, from the samples' timestamps), in the current LIDAR_TOP
frame, with the ego motion taken out as the search takes it out. With ``--at object`` the search
runs at each object's own centre instead (what ``history_match``'s loss trains it on), which tells
a search that cannot find the object from queries whose points are not on it.

    python tools/analysis/match_probe.py CONFIG CHECKPOINT [--classes pedestrian car] \\
        [--min-speed 0.5] [--max-dist 1.0] [--at query|object] [--split val] [--data-root D]

The model runs as ``tools/test.py`` runs it (video testing, each scene in order). Printed per
class, movers (at least ``--min-speed`` m/s) and standing objects apart: how many, the mean error
of the found displacement, the mean error of guessing no motion (the true displacement's size),
and for the movers the share whose found displacement points the right way (positive cosine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from bev_deform.checkpoint import check_checkpoint
from bev_deform.geometry import denormalize_points, normalize_points
from bev_deform.runtime import DictAction, build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bev_probe import config_and_classes, objects_in_grid, split_loader  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Does history_match find where each object was?")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--classes", nargs="+", default=["pedestrian", "car"], help="class names, each apart")
    parser.add_argument("--min-speed", type=float, default=0.5, help="m/s; slower stands")
    parser.add_argument("--max-dist", type=float, default=1.0, help="m from an object to its query's point")
    parser.add_argument(
        "--at",
        choices=("query", "object"),
        default="query",
        help="search at the query nearest each object (what the decoder reads) or at the object's own "
        "centre (what history_match's loss trains)",
    )
    parser.add_argument("--split", default="val", help="nuscenes_infos_<split>.pkl")
    parser.add_argument("--limit", type=int, help="stop after this many frames (a quick look)")
    parser.add_argument("--data-root", help="nuScenes-format root for the config's datasets")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, default={}, help="key=value overrides of the config"
    )
    args = parser.parse_args(argv)
    if args.min_speed <= 0 or args.max_dist <= 0:
        parser.error(f"--min-speed and --max-dist must be > 0, got {args.min_speed} and {args.max_dist}")
    return args


def displacement_stats(found: np.ndarray, true: np.ndarray, moving: np.ndarray) -> dict:
    """(P, 2) found and true displacements (metres) and (P,) bool movers -> per group ('moving',
    'standing'): n, the found displacement's mean error, guessing no motion's mean error, and for
    the movers the share pointing the right way (positive dot product with the truth)."""
    found, true = np.asarray(found, dtype=np.float64), np.asarray(true, dtype=np.float64)
    out = {}
    for name, sel in (("moving", moving), ("standing", ~moving)):
        f, t = found[sel], true[sel]
        row = dict(n=int(sel.sum()), error=float("nan"), zero_error=float("nan"), right=float("nan"))
        if len(f):
            row.update(
                error=float(np.linalg.norm(f - t, axis=1).mean()),
                zero_error=float(np.linalg.norm(t, axis=1).mean()),
            )
            if name == "moving":
                row["right"] = float(((f * t).sum(1) > 0).mean())
        out[name] = row
    return out


def time_gap(seen: dict, meta: dict, stride: int) -> float | None:
    """Record the sample's timestamp under its scene in ``seen`` (the test visits each scene in
    order) and return the seconds back to the frame ``stride`` before it there (None: none)."""
    stamps = seen.setdefault(meta.get("scene_token"), [])
    stamps.append(float(meta["timestamp"]))
    return stamps[-1] - stamps[-1 - stride] if len(stamps) > stride else None


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg, classes = config_and_classes(args)
    check_checkpoint(args.checkpoint)
    model = build_model(cfg, args.checkpoint).eval()
    decoder = getattr(getattr(getattr(model, "bbox_head", None), "transformer", None), "decoder", None)
    layers = [
        layer for layer in getattr(decoder, "layers", []) if getattr(layer, "history_match", None) is not None
    ]
    if not layers:
        raise SystemExit(
            "the model's decoder has no history_match (decoder=dict(history_match=...)), got "
            f"{type(model).__name__}"
        )
    search = layers[-1].history_match
    stride = int(cfg.model.get("history_stride", 1))
    loader, by_idx = split_loader(cfg, args.split)
    seen = {}
    captured, match = {}, search.match

    def spy(ref_points, past, present):
        prob, usable = match(ref_points, past, present)
        captured.update(ref=ref_points, prob=prob, usable=usable, past=past, present=present)
        return prob, usable

    search.match = spy
    if hasattr(model, "reset_history"):
        model.reset_history()
    rows = {c: ([], [], []) for c in args.classes}
    skipped = dict.fromkeys(args.classes, 0)  # no query near enough, or its search saw nothing
    offsets = search.offsets.double().numpy()  # (J, 2)
    for k, batch in enumerate(loader):
        captured.clear()
        with torch.no_grad():
            model.test_step(batch)
        if len(batch["data_samples"]) != 1:
            raise SystemExit(f"the probe needs test batches of 1 sample, got {len(batch['data_samples'])}")
        meta = batch["data_samples"][0].metainfo
        idx, gap = meta["sample_idx"], time_gap(seen, meta, stride)
        if "prob" in captured and gap:
            ref = denormalize_points(captured["ref"][0].double(), search.pc_range)[:, :2].numpy()  # (Q, 2)
            found = captured["prob"][0].mean(1).double().numpy() @ offsets  # (Q, H, J) -> (Q, 2)
            usable = captured["usable"][0].numpy()
            for c in args.classes:
                xyz, vel = objects_in_grid(
                    by_idx[idx], {classes.index(c)}, model.bbox_head.grid, gravity=True
                )
                if not len(xyz):
                    continue
                if args.at == "object":  # each object searched at its own centre
                    with torch.no_grad():
                        pts = normalize_points(
                            torch.as_tensor(xyz, dtype=captured["ref"].dtype), search.pc_range
                        )
                        pts = pts[None]
                        prob, seen_ = match(pts, captured["past"], captured["present"])
                    near, ok = prob[0].mean(1).double().numpy() @ offsets, seen_[0].numpy()
                else:  # the query nearest each object
                    dist = np.linalg.norm(xyz[:, None, :2] - ref[None], axis=-1)  # (P, Q)
                    q = dist.argmin(1)
                    near, ok = found[q], (dist[np.arange(len(q)), q] <= args.max_dist) & usable[q]
                for f, good, v in zip(near, ok, vel):
                    if good:
                        rows[c][0].append(f)
                        rows[c][1].append(-v * gap)
                        rows[c][2].append(np.linalg.norm(v) >= args.min_speed)
                    else:
                        skipped[c] += 1
        if k % 20 == 0 or k == len(loader) - 1:
            print(f"frame {k + 1}/{len(loader)}", flush=True)
        if args.limit and k + 1 >= args.limit:
            break
    search.match = match
    where = "at each object's centre" if args.at == "object" else "at the query nearest each object"
    print(f"the last searching decoder layer's history_match {where}, {args.split}, ", end="")
    print(f"history {stride} frames back")
    print(f"{'class':<12}{'group':<10}{'n':>6}{'error m':>10}{'no-motion m':>13}{'right way':>11}")
    for c, (found, true, moving) in rows.items():
        why = (
            "its search saw nothing"
            if args.at == "object"
            else f"no query within {args.max_dist} m, or its search saw nothing"
        )
        print(f"{c:<12}skipped {skipped[c]} ({why})")
        if not found:
            continue
        stats = displacement_stats(np.stack(found), np.stack(true), np.asarray(moving))
        for group, s in stats.items():
            print(
                f"{c:<12}{group:<10}{s['n']:>6}{s['error']:>10.3f}{s['zero_error']:>13.3f}{s['right']:>11.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
