"""Draw where a trained model's queries sampled, camera by camera, for one sample.

    python tools/vis_sampling_points.py CONFIG CHECKPOINT --sample-idx I --out-dir D \
        [--queries top-20 | --queries 3 17 42] [--layer -1] [--split test|val|train] [--device cuda:0]

Writes ``D/{sample_idx}_mosaic.png`` (the six cameras in the nuScenes 2x3 layout with a
bird's-eye panel and a legend) and ``D/{sample_idx}_{CAM}.png`` per camera: the projected
reference point of each chosen query (magenta), its sampling points coloured by feature level
and sized by attention weight, predicted (blue) and ground-truth (green) boxes.
"""

from __future__ import annotations

import argparse

import torch
from mmengine.dataset import pseudo_collate

from bev_deform.runtime import DictAction, build_eval_dataset, build_model, load_config, set_data_root
from bev_deform.visualization import SamplingPointsVisualizer, SamplingRecorder, draw_data_sample


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Draw the sampling points of chosen queries")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--sample-idx", type=int, default=0, help="index in the dataset of --split")
    parser.add_argument("--out-dir", default="vis_sampling")
    parser.add_argument("--queries", nargs="+", default=["top-20"], help="'top-k' or query ids")
    parser.add_argument("--layer", type=int, default=-1, help="decoder layer (-1: the last)")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test")
    parser.add_argument("--data-root", help="nuScenes-format root for the config's datasets")
    parser.add_argument("--device", default="cpu", help="torch device to run the model on, e.g. cuda:0")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    return parser.parse_args(argv)


def parse_queries(values: list[str]) -> str | list[int]:
    if len(values) == 1 and values[0].startswith("top"):
        return values[0]
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--queries takes 'top-k' or integer query ids, got {values}") from None


def load_sample(cfg, split: str, idx: int) -> dict:
    """One test-pipeline sample of the chosen split, as a batch of one."""
    dataset = build_eval_dataset(cfg, split)
    if not 0 <= idx < len(dataset):
        raise ValueError(f"--sample-idx must be in [0, {len(dataset) - 1}] for the {split} split, got {idx}")
    return pseudo_collate([dataset[idx]])


def main(argv=None):
    args = parse_args(argv)
    queries = parse_queries(args.queries)
    cfg = load_config(args.config, args.cfg_options, None)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    model = build_model(cfg, args.checkpoint).to(args.device)  # the preprocessor moves batches there
    data = load_sample(cfg, args.split, args.sample_idx)
    with torch.no_grad(), SamplingRecorder(model) as rec:
        outputs = model.test_step(data)
    visualizer = SamplingPointsVisualizer.get_instance("vis_sampling_points")
    paths = draw_data_sample(
        visualizer,
        rec.layers,
        0,
        data["inputs"]["img"][0],
        outputs[0],
        args.out_dir,
        args.layer,
        queries,
        encoder_layers=rec.encoder_layers,
    )
    for name, path in paths.items():
        print(f"{name:>16}: {path}")


if __name__ == "__main__":
    main()
