"""Convert an official DAT v1 ImageNet checkpoint (LeapLabTHU/DAT: dat_{tiny,small,base}_in1k_224.pth)
into an mmengine checkpoint for the ``DAT`` backbone.

    python projects/DAT/tools/convert_dat_checkpoint.py dat_tiny_in1k_224.pth \
        checkpoints/dat-t_in1k_224_bev_deform.pth

The official file is ``{'model': state_dict, ...}``; its keys are already this package's, so the
conversion checks that the state dict is exactly an official DAT-T/S/B one at 224 (every key and
shape, i.e. it loads into ``DATClassifier(arch)`` with ``strict=True``), drops the classifier
(``cls_norm``, ``cls_head``), and writes ``{'state_dict': ..., 'meta': {'arch': ...}}``, which
``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` on ``DAT(arch=..., img_size=224)`` loads
(only the detection outputs' ``norms.i`` start fresh).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from projects.DAT.dat import ARCHS, DATClassifier

CLASSIFIER_PREFIXES = ("cls_norm.", "cls_head.")


def official_state_dict(checkpoint: dict) -> dict:
    """The state dict inside an official checkpoint (``checkpoint['model']``), an mmengine one
    (``checkpoint['state_dict']``), or ``checkpoint`` itself when it is a bare state dict."""
    for key in ("model", "state_dict"):
        if key in checkpoint:
            return checkpoint[key]
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise ValueError(
        f"checkpoint has no 'model' or 'state_dict' entry and is not a state dict: {sorted(checkpoint)}"
    )


def infer_arch(state_dict: dict) -> str:
    """The official arch ('tiny', 'small', 'base') whose 224 classifier has exactly these keys
    and shapes; ValueError naming the differences from the closest one otherwise."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    diffs = {}
    for arch in ARCHS:
        with torch.device("meta"):
            ref = {k: tuple(v.shape) for k, v in DATClassifier(arch).state_dict().items()}
        missing, unexpected = sorted(ref.keys() - shapes.keys()), sorted(shapes.keys() - ref.keys())
        mismatched = sorted(k for k in ref.keys() & shapes.keys() if ref[k] != shapes[k])
        if not (missing or unexpected or mismatched):
            return arch
        diffs[arch] = (missing, unexpected, mismatched)
    arch, (missing, unexpected, mismatched) = min(diffs.items(), key=lambda kv: sum(map(len, kv[1])))
    raise ValueError(
        f"state dict is not an official DAT v1 (224) checkpoint; closest is {arch!r} with missing keys "
        f"{missing[:5]}, unexpected keys {unexpected[:5]}, mismatched shapes {mismatched[:5]} "
        f"({len(missing)}, {len(unexpected)}, {len(mismatched)} in all)"
    )


def convert(state_dict: dict) -> tuple[str, dict]:
    """(arch, backbone state dict without the classifier) of an official v1 state dict."""
    arch = infer_arch(state_dict)
    return arch, {k: v for k, v in state_dict.items() if not k.startswith(CLASSIFIER_PREFIXES)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="official checkpoint, e.g. dat_tiny_in1k_224.pth")
    parser.add_argument("dst", help="output mmengine checkpoint")
    parser.add_argument(
        "--full-unpickle",
        action="store_true",
        help="load src with weights_only=False (only for a file you trust, if the safe load refuses it)",
    )
    args = parser.parse_args(argv)
    checkpoint = torch.load(args.src, map_location="cpu", weights_only=not args.full_unpickle)
    arch, state_dict = convert(official_state_dict(checkpoint))
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state_dict, "meta": {"arch": arch, "source": Path(args.src).name}}, args.dst)
    print(f"DAT-{arch[0].upper()} ({arch}): {len(state_dict)} tensors -> {args.dst}")
    print(
        f"use: img_backbone=dict(type='DAT', arch='{arch}', "
        f"init_cfg=dict(type='Pretrained', checkpoint='{args.dst}'))"
    )


if __name__ == "__main__":
    main()
