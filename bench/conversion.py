"""What every converter of third-party weights does around its own key mapping.

``bench/convert_campp.py`` and ``bench/convert_ecapa.py`` each map one published checkpoint
onto a speakerid encoder; this module holds the rest, once: the command line, the sha256
check of the source, the ``weights_only`` load, the speaker split recorded beside the weights,
the strict save and the report.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from speakerid.encoders.twin import Encoder, load_encoder, save_encoder
from speakerid.pins import file_sha256


def arguments(description: str, source_help: str, default_out: str) -> argparse.ArgumentParser:
    """The converters' shared options (a script adds its own before parsing)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("source", type=Path, help=source_help)
    ap.add_argument("--out", type=Path, default=Path(default_out))
    ap.add_argument("--half", action="store_true", help="store fp16 (loads back as fp32)")
    ap.add_argument(
        "--split-from",
        type=Path,
        default=Path("models/lstm_s3.safetensors"),
        help="checkpoint whose speaker split (train/val/test) to record, so that calibration, "
        "cohort and benchmarks use the same held-out speakers for every shipped model",
    )
    return ap


def convert_file(
    args: argparse.Namespace,
    expected_sha256: str,
    convert: Callable[[dict[str, torch.Tensor]], Encoder],
    source: dict[str, Any],
    converted_by: str,
) -> Path:
    """Check, load and convert ``args.source``; write ``args.out`` and say so."""
    digest = file_sha256(args.source)
    if digest != expected_sha256:
        raise SystemExit(f"{args.source}: sha256 {digest} is not the expected {expected_sha256}")
    state = torch.load(args.source, map_location="cpu", weights_only=True)
    encoder = convert(state)
    info = {
        "source": source,
        "converted_by": converted_by,
        "fp16": args.half,
        # not trained here: "train" are the speakers an AS-norm cohort may use, "val" calibrate
        # the threshold, "test" are held out of both
        "split": load_encoder(args.split_from).info["split"],
    }
    save_encoder(encoder, args.out, info=info, half=args.half)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, sha256 {file_sha256(args.out)})"
    )
    return args.out
