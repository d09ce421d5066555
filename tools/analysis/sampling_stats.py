"""Where a DETR3D-style model's 3D attentions sample, in numbers: per decoder layer and feature
level, how far the sampling points lie from the projected reference point (in pixels of that
level and as a share of the level's width), how many land outside the camera's image, and how
the attention weight splits over the levels; and over how many cameras the queries are seen.

    python tools/analysis/sampling_stats.py CONFIG CHECKPOINT [--num-samples 8] [--split val] \
        [--object-radius 2.0] [--cfg-options ...]
    python tools/analysis/sampling_stats.py CONFIG --init   # the untrained model, as initialised

Two populations of queries, both over every (query, camera) pair where the camera sees the
query's reference point: ``all`` queries, and ``object`` queries, whose last-layer reference
point lies within ``--object-radius`` metres (bird's-eye distance) of a ground-truth box centre.
Statistics are weighted by nothing: every sampling point counts once.

Columns: ``offset px`` the median (and 90th percentile) distance from the projected reference
point in pixels of the level (image pixels / stride); ``/ width`` the median as a share of the
level's width; ``outside`` the share of points outside the camera's image; ``weight`` the
average attention weight the level gets (for softmax weights per head the levels sum to 1).
Written for issue 12's "measure each, do not guess": the CPU config's stride-32/64 levels are
7x13 and 4x7 cells, where Deformable DETR's 1..P pixel offsets span much of the map.
"""

from __future__ import annotations

import argparse

import torch
from mmengine.dataset import pseudo_collate

from bev_deform.geometry import CameraGeometry
from bev_deform.runtime import DictAction, build_eval_dataset, build_model, load_config, set_data_root
from bev_deform.visualization import SamplingRecorder
from bev_deform.visualization.recorder import LayerRecord


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Sampling-point statistics of a DETR3D-style model")
    parser.add_argument("config")
    parser.add_argument("checkpoint", nargs="?", help="weights to load (omit with --init)")
    parser.add_argument("--init", action="store_true", help="the model as initialised, no checkpoint")
    parser.add_argument("--num-samples", type=int, default=8, help="samples of --split, from the first")
    parser.add_argument("--split", choices=["train", "val", "test"], default="val")
    parser.add_argument("--object-radius", type=float, default=2.0, help="metres, bird's-eye")
    parser.add_argument("--data-root", help="nuScenes-format root for the config's datasets")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (not args.init):
        parser.error("give a CHECKPOINT or --init, not both or neither")
    if args.num_samples < 1:
        parser.error(f"--num-samples must be >= 1, got {args.num_samples}")
    return args


def gt_centres(data_sample) -> torch.Tensor:
    """(G, 2) bird's-eye centres of a data sample's ground truth (eval annotations or instances)."""
    info = data_sample.get("eval_ann_info") or {}
    boxes = info.get("gt_bboxes_3d")
    if boxes is None and "gt_instances_3d" in data_sample and "bboxes_3d" in data_sample.gt_instances_3d:
        boxes = data_sample.gt_instances_3d.bboxes_3d
    if boxes is None or len(boxes) == 0:
        return torch.zeros(0, 2)
    return boxes.gravity_center[:, :2].float()


class Accumulator:
    """Per (population, layer, level): offsets in level pixels, shares of the width, outside
    flags and weights, gathered over samples."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, int], dict[str, list[torch.Tensor]]] = {}
        self.num_cams: dict[str, list[torch.Tensor]] = {"all": [], "object": []}

    def add(
        self,
        population: str,
        layer: int,
        record: LayerRecord,
        queries: torch.Tensor,
        level_hw: list[tuple[int, int]],
        pad_hw: tuple[int, int],
        img_hw: torch.Tensor,
    ) -> None:
        """One sample's record (batch of 1) restricted to ``queries`` (K,) ids; ``img_hw`` (N, 2)."""
        rec = record.select(0, queries)
        valid = rec.valid[0]  # (N, K)
        if layer == 0:
            self.num_cams[population].append(valid.sum(0))
        pixels = rec.pixels[0]  # (N, K, M, L, P, 2)
        ref = rec.ref_pixels[0][:, :, None, None, None]  # (N, K, 1, 1, 1, 2)
        h_img, w_img = img_hw[:, 0].view(-1, 1, 1, 1, 1), img_hw[:, 1].view(-1, 1, 1, 1, 1)  # (N, 1, ...)
        outside = (
            (pixels[..., 0] < 0) | (pixels[..., 0] > w_img) | (pixels[..., 1] < 0) | (pixels[..., 1] > h_img)
        )  # (N, K, M, L, P)
        dist = (pixels - ref).norm(dim=-1)  # (N, K, M, L, P) image pixels
        weights = rec.weights[0]  # (K, M, L, P)
        seen = valid.any(0)  # (K,) queries some camera sees
        for lvl, (_, w) in enumerate(level_hw):
            stride = pad_hw[1] / w
            row = self.rows.setdefault((population, layer, lvl), {"dist": [], "outside": [], "weight": []})
            row["dist"].append(dist[:, :, :, lvl][valid].flatten() / stride)
            row["outside"].append(outside[:, :, :, lvl][valid].flatten().float())
            # level mass per (query, head), over the queries some camera sees
            row["weight"].append(weights[seen][:, :, lvl].sum(-1).flatten())

    def report(self, level_hw: list[tuple[int, int]]) -> str:
        lines = []
        for population in ("all", "object"):
            cams = torch.cat(self.num_cams[population]) if self.num_cams[population] else torch.zeros(0)
            if cams.numel() == 0:
                lines.append(f"\n{population} queries: none")
                continue
            shares = [(cams == k).float().mean().item() for k in (0, 1)] + [(cams >= 2).float().mean().item()]
            lines.append(
                f"\n{population} queries ({cams.numel()}): seen by 0 / 1 / 2+ cameras: "
                + " / ".join(f"{s:.2f}" for s in shares)
            )
            lines.append(
                f"{'layer':>5} {'level':>5} {'map':>7} {'offset px (p50 / p90)':>22} {'/ width':>8} "
                f"{'outside':>8} {'weight':>7}"
            )
            for (pop, layer, lvl), row in sorted(self.rows.items()):
                if pop != population:
                    continue
                dist = torch.cat(row["dist"])
                if dist.numel() == 0:
                    continue
                h, w = level_hw[lvl]
                p50, p90 = dist.quantile(0.5).item(), dist.quantile(0.9).item()
                outside, weight = (
                    torch.cat(row["outside"]).mean().item(),
                    torch.cat(row["weight"]).mean().item(),
                )
                lines.append(
                    f"{layer:>5} {lvl:>5} {f'{h}x{w}':>7} {f'{p50:.2f} / {p90:.2f}':>22} {p50 / w:>8.3f} "
                    f"{outside:>8.3f} {weight:>7.3f}"
                )
        return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, None)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    model = build_model(cfg, None if args.init else args.checkpoint)
    dataset = build_eval_dataset(cfg, args.split)
    shapes: list[list[tuple[int, int]]] = []
    hook = model.bbox_head.register_forward_pre_hook(
        lambda mod, inputs: shapes.append([tuple(f.shape[-2:]) for f in inputs[0]])
    )
    acc = Accumulator()
    n = min(args.num_samples, len(dataset))
    try:
        for idx in range(n):
            data = pseudo_collate([dataset[idx]])
            with torch.no_grad(), SamplingRecorder(model) as rec:
                outputs = model.test_step(data)
            if not rec.layers or not isinstance(rec.layers[0], LayerRecord) or rec.encoder_layers:
                raise ValueError(f"{args.config} is not a DETR3D-style model (no 3D attention records)")
            meta = outputs[0].metainfo
            pad_hw = tuple(int(v) for v in meta["batch_input_shape"])
            img_hw = CameraGeometry.from_metas([meta], "cpu").img_hw[0]  # (N, 2) per camera
            level_hw = shapes[-1]
            num_query = rec.layers[0].valid.shape[2]
            all_q = torch.arange(num_query)
            centres = gt_centres(data["data_samples"][0])  # (G, 2)
            last_ref = rec.layers[-1].ref_points[0, :, :2]  # (Q, 2) metres
            near = (
                torch.cdist(last_ref, centres).min(1).values <= args.object_radius
                if len(centres)
                else torch.zeros(num_query, dtype=torch.bool)
            )
            for layer, record in enumerate(rec.layers):
                acc.add("all", layer, record, all_q, level_hw, pad_hw, img_hw)
                acc.add("object", layer, record, all_q[near], level_hw, pad_hw, img_hw)
            print(f"sample {idx + 1}/{n}: {int(near.sum())} object queries", flush=True)
    finally:
        hook.remove()
    print(f"\n{args.config} ({'as initialised' if args.init else args.checkpoint}), {n} {args.split} samples")
    print(acc.report(shapes[-1]))


if __name__ == "__main__":
    main()
