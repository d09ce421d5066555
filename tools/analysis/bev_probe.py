"""Does a model's BEV carry the objects' direction of motion? A linear probe: the BEV the encoder
returns (``bev_embed``, after any history fusion) is sampled bilinearly at the 3x3 cells around
every ground-truth object of the probed classes, and a logistic regression learns from those 9 x C features
whether it stands, moves along +axis or along -axis; fit on one split, scored on another.

    python tools/analysis/bev_probe.py CONFIG CHECKPOINT [--classes pedestrian] [--axis y] \\
        [--min-speed 0.5] [--fit-split train] [--score-split val] [--reg 0.1] [--data-root D]

The model runs as ``tools/test.py`` runs it (a video-testing config carries its history from frame
to frame, each split's scenes in order). A head that cannot read a direction the probe finds has a
learning problem; a direction that this linear read-out does not find either is hardly in the BEV,
and a change of the head is unlikely to read it there. The motion labels use the velocity
component along ``--axis`` of the LIDAR_TOP frame: standing below ``--min-speed`` m/s, else its
sign. Neighbour cells outside the grid read zeros.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bev_deform.checkpoint import check_checkpoint
from bev_deform.geometry import BEVGrid
from bev_deform.runtime import DictAction, build_model, load_config, set_data_root

STANDING, PLUS, MINUS = 0, 1, 2
OFFSETS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # cells, row by row


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Linear probe: is the objects' motion in the BEV?")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--classes", nargs="+", default=["pedestrian"], help="class names probed together")
    parser.add_argument("--axis", choices=("x", "y"), default="y", help="LIDAR_TOP axis of the motion")
    parser.add_argument("--min-speed", type=float, default=0.5, help="m/s along the axis; slower stands")
    parser.add_argument("--fit-split", default="train", help="nuscenes_infos_<split>.pkl the probe learns on")
    parser.add_argument("--score-split", default="val", help="nuscenes_infos_<split>.pkl it is scored on")
    parser.add_argument("--data-root", help="nuScenes-format root for the config's datasets")
    parser.add_argument("--reg", type=float, default=0.1, help="inverse L2 strength of the regression (C)")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, default={}, help="key=value overrides of the config"
    )
    args = parser.parse_args(argv)
    if args.min_speed <= 0 or args.reg <= 0:
        parser.error(f"--min-speed and --reg must be > 0, got {args.min_speed} and {args.reg}")
    return args


def motion_labels(velocity: np.ndarray, axis: int, min_speed: float) -> np.ndarray:
    """(P, 2) velocities (m/s) -> (P,) STANDING where the component along ``axis`` (0: x, 1: y) is
    below ``min_speed`` in size, else PLUS or MINUS by its sign."""
    v = np.asarray(velocity, dtype=np.float64).reshape(-1, 2)[:, axis]
    return np.where(v >= min_speed, PLUS, np.where(v <= -min_speed, MINUS, STANDING))


def sample_neighbourhood(bev: Tensor, grid: BEVGrid, xy: Tensor) -> Tensor:
    """(H*W, C) flat BEV (row-major, :class:`BEVGrid`'s order) and (P, 2) metric (x, y) -> (P, 9 C):
    bilinear samples at each point and at the 8 points one cell away, the C channels of one offset
    after the other in ``OFFSETS`` order; zeros outside the grid."""
    (h, w), c = grid.shape, bev.shape[-1]
    if bev.shape != (h * w, c):
        raise ValueError(f"bev must be (H*W, C) = ({h * w}, C) for a {h}x{w} grid, got {tuple(bev.shape)}")
    dx, dy = grid.cell_size
    points = xy[:, None, :] + xy.new_tensor([[ox * dx, oy * dy] for ox, oy in OFFSETS])  # (P, 9, 2)
    where = grid.metres_to_locations(points) * 2 - 1  # grid_sample's [-1, 1], align_corners=False
    bev_map = bev.T.reshape(1, c, h, w)
    out = F.grid_sample(bev_map, where[None].to(bev.dtype), align_corners=False, padding_mode="zeros")
    return out[0].permute(1, 2, 0).reshape(len(xy), 9 * c)  # (C, P, 9) -> (P, 9 C)


def objects_in_grid(
    info: dict, labels: set[int], grid: BEVGrid, gravity: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) centres and (P, 2) velocities of the info's instances of ``labels`` inside the grid;
    with ``gravity`` (P, 3) gravity centres (the info's bottom centre raised by half the height)."""
    x0, y0, _, x1, y1, _ = grid.pc_range
    dims = 3 if gravity else 2
    rows = [
        (
            [*inst["bbox_3d"][:2], inst["bbox_3d"][2] + inst["bbox_3d"][5] / 2][:dims],
            inst["velocity"],
        )
        for inst in info["instances"]
        if inst["bbox_label_3d"] in labels
        and x0 < inst["bbox_3d"][0] < x1
        and y0 < inst["bbox_3d"][1] < y1
        and np.all(np.isfinite(inst["velocity"]))
    ]
    xy = np.asarray([r[0] for r in rows], dtype=np.float64).reshape(-1, dims)
    return xy, np.asarray([r[1] for r in rows], dtype=np.float64).reshape(-1, 2)


def probe_scores(fit_x, fit_y, score_x, score_y, reg: float = 0.1) -> dict:
    """Fit a standardised logistic regression on (fit_x, fit_y) and score it on the other split:
    accuracy, standing recall, and among the movers the share given the right direction and the
    share given the reverse one."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn: a nuscenes-devkit requirement
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(fit_y)) < 2:
        raise ValueError(f"the fit split needs two motion labels or more, got {np.unique(fit_y).tolist()}")
    scaler = StandardScaler().fit(fit_x)
    model = LogisticRegression(C=reg, max_iter=3000).fit(scaler.transform(fit_x), fit_y)
    pred = model.predict(scaler.transform(score_x))
    movers = score_y != STANDING
    reversed_ = ((pred == PLUS) & (score_y == MINUS)) | ((pred == MINUS) & (score_y == PLUS))
    standing = score_y == STANDING
    return dict(
        n=len(score_y),
        counts=np.bincount(score_y, minlength=3).tolist(),
        accuracy=float((pred == score_y).mean()),
        standing_recall=float((pred[standing] == STANDING).mean()) if standing.any() else float("nan"),
        right=float((pred[movers] == score_y[movers]).mean()) if movers.any() else float("nan"),
        reversed=float(reversed_[movers].mean()) if movers.any() else float("nan"),
    )


def split_loader(cfg, split: str):
    """The config's test dataloader (its pipeline and sampler, no workers) over
    ``nuscenes_infos_<split>.pkl`` of its data root, and that file's infos by ``sample_idx``."""
    from mmengine.runner import Runner

    dataset = dict(cfg.test_dataloader.dataset, ann_file=f"nuscenes_infos_{split}.pkl")
    info_file = Path(dataset["data_root"]) / dataset["ann_file"]
    if not info_file.is_file():
        raise SystemExit(f"split {split!r}: no info file {info_file} (expected nuscenes_infos_<split>.pkl)")
    with open(info_file, "rb") as f:
        infos = {d["sample_idx"]: d for d in pickle.load(f)["data_list"]}
    loader = Runner.build_dataloader(
        dict(cfg.test_dataloader, dataset=dataset, num_workers=0, persistent_workers=False)
    )
    return loader, infos


def config_and_classes(args) -> tuple:
    """The config of ``args`` (``config``, ``cfg_options``, ``data_root``) and its class names,
    which must hold ``args.classes``."""
    cfg = load_config(args.config, args.cfg_options, None)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    classes = list(cfg.get("class_names") or cfg.test_dataloader.dataset.metainfo["classes"])
    unknown = [c for c in args.classes if c not in classes]
    if unknown:
        raise SystemExit(f"--classes {unknown} are not the config's classes {classes}")
    return cfg, classes


def collect(model, cfg, split: str, labels: set[int], grid: BEVGrid, axis: int, min_speed: float):
    """Run ``model`` over ``nuscenes_infos_<split>.pkl`` of the config's data root as the test does
    (its test pipeline and sampler); (P, 9 C) features and (P,) motion labels of every object of
    ``labels`` in the grid."""
    loader, infos = split_loader(cfg, split)
    model.eval()
    if hasattr(model, "reset_history"):
        model.reset_history()
    captured = {}
    hook = model.bbox_head.register_forward_hook(lambda m, i, o: captured.__setitem__("bev", o["bev_embed"]))
    feats, vels = [], []
    try:
        for k, batch in enumerate(loader):
            with torch.no_grad():
                model.test_step(batch)
            if len(batch["data_samples"]) != 1:
                raise SystemExit(
                    f"the probe needs test batches of 1 sample, got {len(batch['data_samples'])}"
                )
            xy, vel = objects_in_grid(infos[batch["data_samples"][0].metainfo["sample_idx"]], labels, grid)
            if len(xy):
                bev = captured["bev"][0].detach().float().cpu()
                feats.append(
                    sample_neighbourhood(bev, grid, torch.as_tensor(xy, dtype=torch.float32)).numpy()
                )
                vels.append(vel)
            if k % 40 == 0 or k == len(loader) - 1:
                print(
                    f"{split}: frame {k + 1}/{len(loader)}, {sum(len(v) for v in vels)} objects", flush=True
                )
    finally:
        hook.remove()
    if not feats:
        raise SystemExit(f"split {split!r}: no object of the probed classes inside the BEV grid")
    return np.concatenate(feats), motion_labels(np.concatenate(vels), axis, min_speed)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg, classes = config_and_classes(args)
    labels = {classes.index(c) for c in args.classes}
    check_checkpoint(args.checkpoint)
    model = build_model(cfg, args.checkpoint)
    grid = getattr(getattr(model, "bbox_head", None), "grid", None)
    if not isinstance(grid, BEVGrid):
        raise SystemExit(f"the probe needs a BEV model (a head with a BEVGrid), got {type(model).__name__}")
    axis = "xy".index(args.axis)
    fit = collect(model, cfg, args.fit_split, labels, grid, axis, args.min_speed)
    score = collect(model, cfg, args.score_split, labels, grid, axis, args.min_speed)
    out = probe_scores(*fit, *score, reg=args.reg)
    print(
        f"{'+'.join(args.classes)} along {args.axis}, fit on {args.fit_split} ({len(fit[1])} objects), "
        f"scored on {args.score_split}: {out['n']} objects, standing / +{args.axis} / -{args.axis} "
        f"{out['counts'][0]} / {out['counts'][1]} / {out['counts'][2]}"
    )
    print(
        f"accuracy {out['accuracy']:.2f}  standing recall {out['standing_recall']:.2f}  "
        f"movers' direction right {out['right']:.2f}  reversed {out['reversed']:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
