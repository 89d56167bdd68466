"""One-thread throughput of the default model against Resemblyzer, paired file by file.

    OMP_NUM_THREADS=1 python bench/bench_throughput.py --data ../shared/data --minutes 30

The audio: the first LibriSpeech train-clean-100 files (sorted by path) that add up to
``--minutes`` of recording. Every system embeds each file end to end from its 16 kHz
samples (its own silence removal, fragments or windows, the network, pooling):

- in-process: for each file in turn, every system embeds it once, the order rotating, so a
  change in the machine's load hits all systems alike; the table sums each system's time;
- whole process: each system embeds every file in a fresh interpreter (imports, model load
  and file decoding included), the systems alternating, ``--repeats`` times; the median.

Systems (the default): ``accurate`` on the onnx backend (the shipped graph, a one-thread
session), on the torch backend in fp32 and at ``--precision auto`` (bf16 where the CPU has
it), and Resemblyzer (``preprocess_wav`` + ``embed_utterance``). torch runs with one thread.
Any shipped model runs the same way (``--systems "best onnx fp32" "ecapa onnx fp32"``; a
fusion's members each get a one-thread session). Writes docs/results/throughput.json, and
with ``--write-measured`` the onnx systems' speeds into models/measured.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

LIBRI = "LibriSpeech/train-clean-100"
SYSTEMS = ("accurate onnx fp32", "accurate torch fp32", "accurate torch auto", "Resemblyzer")
MODELS = ("accurate", "fast", "ecapa", "best")  # the shipped names a system may start with
RUNS = ("onnx fp32", "onnx int8", "torch fp32", "torch auto")  # backend, precision after the name
# The whole-process run: embed every file listed in argv[2:] with system argv[1].
CHILD = """
import sys, time
start = time.perf_counter()
sys.path.insert(0, {bench!r})
from bench_throughput import embedders
from speakerid.audio import load_audio
embed = embedders([sys.argv[1]])[sys.argv[1]]
for path in sys.argv[2:]:
    embed(load_audio(path))
print(time.perf_counter() - start)
"""


def pick_files(data: Path, minutes: float) -> tuple[list[Path], float]:
    """The first files (sorted) adding up to ``minutes`` of audio, and their seconds."""
    import soundfile as sf

    files, total = [], 0.0
    for path in sorted((data / LIBRI).rglob("*.flac")):
        files.append(path)
        total += sf.info(str(path)).duration
        if total >= 60 * minutes:
            break
    return files, total


def one_thread(embedder: Any) -> Any:
    """``embedder`` with each onnx session on one thread (a fusion's members' too)."""
    from bench_onnx import single_thread_session

    from speakerid.embedding.backends.onnx import OnnxEmbedder
    from speakerid.embedding.fused import FusedEmbedder

    if isinstance(embedder, FusedEmbedder):
        for member in embedder.members:
            one_thread(member)
    elif isinstance(embedder, OnnxEmbedder):
        session = single_thread_session(embedder.model.onnx_path)
        embedder.model = replace(embedder.model, session=session)
    return embedder


def embedders(names: list[str]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """``name -> (16 kHz samples -> unit vector)`` for each system named, one thread each.

    ``MODEL onnx fp32|int8`` or ``MODEL torch fp32|auto`` (``MODEL`` one of ``MODELS``), or
    ``Resemblyzer``."""
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for name in names:
        model, _, run = name.partition(" ")
        if model in MODELS and run in RUNS:
            from speakerid.embedding.pipeline import open_embedder

            backend, precision = run.split()
            if backend == "torch":
                import torch

                torch.set_num_threads(1)
            elif precision == "fp32":
                precision = "auto"  # the onnx backend's name for its first (fp32) graph
            out[name] = one_thread(open_embedder(model, backend, precision)).embed_waveform
        elif name == "Resemblyzer":
            import torch
            from resemblyzer import VoiceEncoder, preprocess_wav

            torch.set_num_threads(1)
            encoder = VoiceEncoder("cpu", verbose=False)
            out[name] = lambda wav, e=encoder: e.embed_utterance(preprocess_wav(wav))
        else:
            raise SystemExit(f"unknown system {name!r}; MODEL {' | '.join(RUNS)}, or Resemblyzer")
    return out


def in_process(files: list[Path], names: list[str]) -> dict[str, float]:
    """Seconds each system spent embedding all files, interleaved file by file."""
    from speakerid.audio import load_audio

    systems = embedders(names)
    waves = [load_audio(f) for f in files]
    for fn in systems.values():
        fn(waves[0])  # warm-up: first-call allocations are not throughput
    spent = dict.fromkeys(systems, 0.0)
    for i, wav in enumerate(waves):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            start = time.perf_counter()
            systems[name](wav)
            spent[name] += time.perf_counter() - start
    return spent


def whole_process(files: list[Path], names: list[str], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of a fresh interpreter embedding every file, per system and repeat."""
    child = CHILD.format(bench=str(Path(__file__).resolve().parent))
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", child, name, *map(str, files)],
                check=True,
                capture_output=True,
            )
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    ap.add_argument("--whole", nargs="*", default=["accurate onnx fp32", "Resemblyzer"])
    ap.add_argument("--repeats", type=int, default=2, help="whole-process runs per system")
    ap.add_argument("--out", type=Path, default=Path("docs/results/throughput.json"))
    ap.add_argument("--write-measured", type=Path, default=None, help="models/measured.json")
    args = ap.parse_args()

    from bench_speed import machine
    from common import command_line

    files, seconds = pick_files(args.data, args.minutes)
    report = {
        "command": command_line(),
        "machine": machine(),
        "audio": f"{len(files)} files, {seconds / 60:.1f} min of {LIBRI} (first by path)",
        "in_process": {},
        "whole_process": {},
    }
    spent = in_process(files, args.systems)
    base = spent.get("Resemblyzer")
    for name, s in spent.items():
        report["in_process"][name] = {
            "seconds": round(s, 2),
            "audio_s_per_s": round(seconds / s, 1),
            "vs_resemblyzer": round(base / s, 2) if base else None,
        }
    if args.whole:
        times = whole_process(files, args.whole, args.repeats)
        med = {n: float(np.median(t)) for n, t in times.items()}
        for name, t in times.items():
            report["whole_process"][name] = {
                "seconds": [round(x, 2) for x in t],
                "audio_s_per_s": round(seconds / med[name], 1),
                "vs_resemblyzer": round(med["Resemblyzer"] / med[name], 2)
                if "Resemblyzer" in med
                else None,
            }
    report["machine"]["load_average_at_end"] = " ".join(
        Path("/proc/loadavg").read_text().split()[:3]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_measured:
        write_measured(args.write_measured, report)
    print(json.dumps(report, indent=1))


def write_measured(path: Path, report: dict) -> None:
    """Each shipped model's one-thread onnx speed (in-process), merged into ``path``: what
    ``speakerid models`` shows beside its EERs."""
    measured = json.loads(path.read_text()) if path.is_file() else {}
    for name, row in report["in_process"].items():
        model, _, run = name.partition(" ")
        if model in MODELS and run == "onnx fp32":
            measured.setdefault(model, {})["speed"] = {
                "audio_s_per_s": row["audio_s_per_s"],
                "threads": 1,
                "backend": "onnx",
            }
    measured["_speed_source"] = f"speed: {report['command']} (docs/benchmarks.md)"
    path.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
