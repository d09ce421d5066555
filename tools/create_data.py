"""Create nuScenes-format data and the mmdet3d v2 info files bev_deform trains on.

Synthetic data (no download; the exact nuScenes v1.0-mini format, with info files):
    python tools/create_data.py synthetic --out data/nuscenes-synth --preset tiny --seed 0
    python tools/create_data.py synthetic --out data/nuscenes-synth --preset learn --seed 0
    python tools/create_data.py synthetic --out data/nuscenes-native --preset native  # 1600x900, 4 samples

Info files for real nuScenes (through mmdet3d's own converter):
    python tools/create_data.py nuscenes --root data/nuscenes --version v1.0-trainval
    python tools/create_data.py nuscenes --root data/nuscenes --version v1.0-mini

A partial download (some trainval blobs only) stops with one error that counts the missing files and
names the first few; --skip-missing writes the infos of the samples whose files are all there instead
(and says how many were dropped). Existing info files are replaced only by a run that succeeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bev_deform.datasets.checks import NUSCENES_VERSIONS
from bev_deform.datasets.create_infos import create_nuscenes_infos
from bev_deform.datasets.synthetic import PRESETS, VERSION, generate_synthetic_nuscenes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    syn = sub.add_parser("synthetic", help="generate a synthetic nuScenes-format dataset and its info files")
    syn.add_argument("--out", default="data/nuscenes-synth", help="dataset root to create")
    syn.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="tiny: tests; learn: training; native: 1600x900 checks",
    )
    syn.add_argument("--seed", type=int, default=0, help="same seed, identical dataset")
    syn.add_argument("--overwrite", action="store_true", help="replace a synthetic dataset already in --out")
    syn.add_argument("--no-infos", action="store_true", help="only write the nuScenes files, no info pkl")
    nus = sub.add_parser("nuscenes", help="create info files for real nuScenes")
    nus.add_argument("--root", required=True, help="nuScenes dataroot (holds samples/ and v1.0-*/)")
    nus.add_argument("--version", choices=NUSCENES_VERSIONS, default="v1.0-trainval")
    nus.add_argument("--out-dir", default=None, help="where to write the info files (default: --root)")
    nus.add_argument("--prefix", default="nuscenes", help="info file prefix: {prefix}_infos_{train,val}.pkl")
    nus.add_argument("--max-sweeps", type=int, default=10, help="lidar sweeps per sample in the infos")
    nus.add_argument("--check-images", action="store_true", help="decode every camera image first (slow)")
    nus.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out the samples with a missing camera, LIDAR_TOP or sweep file (partial downloads)",
    )
    return parser.parse_args(argv)


def folder_size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.command == "synthetic":
        root = generate_synthetic_nuscenes(args.out, args.preset, args.seed, overwrite=args.overwrite)
        print(f"generated {root} ({args.preset}, seed {args.seed}) in {time.perf_counter() - start:.1f} s")
        if not args.no_infos:
            outputs = create_nuscenes_infos(root, VERSION, decode_images=True)
            print(f"info files: {', '.join(str(p) for p in outputs.values())}")
        print(f"dataset size: {folder_size_mb(root):.1f} MiB; total time {time.perf_counter() - start:.1f} s")
    else:
        outputs = create_nuscenes_infos(
            args.root,
            args.version,
            args.out_dir,
            args.prefix,
            args.max_sweeps,
            decode_images=args.check_images,
            skip_missing=args.skip_missing,
        )
        files = ", ".join(str(p) for p in outputs.values())
        print(f"info files: {files} in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
