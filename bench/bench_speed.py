"""Embedding throughput: seconds of audio embedded per second of compute.

CPU mode (default) times the shipped model and Resemblyzer side by side on the same real
LibriSpeech audio (``--seconds`` of it, cut from consecutive files of one speaker), with
``torch.set_num_threads`` 1 and 2, the median of ``--repeats`` runs after a warm-up:

- embedding (trimmed speech -> one vector): ours = ``audio.fragment`` + ``Embedder``
  (front-end included) + pooling, in fp32 and, on CPUs with native bf16 (where the CLI's
  ``--precision auto`` picks it), in bf16; Resemblyzer = its volume normalisation +
  ``embed_utterance`` (mel spectrogram included);
- end to end (file audio -> one vector): the same with silence removal first, ours
  ``trim_silence`` and Resemblyzer's ``preprocess_wav`` (webrtcvad).

GPU throughput is ``bench/bench_gpu.py``.

    python bench/bench_speed.py --data ../shared/data          # writes docs/results/speed_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import machine

from speakerid.audio import SAMPLE_RATE, fragment, load_audio, trim_silence
from speakerid.embedding.backends.torch import Embedder, load_model, native_bf16
from speakerid.lab.data import scan_corpus
from speakerid.vectors import pool

LIBRI = "LibriSpeech/train-clean-100"
SPEAKER = "19"  # has two whole chapters: long, consecutive real speech
RESEMBLYZER_DBFS = -30.0  # Resemblyzer's audio_norm_target_dBFS


def run_times(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> list[float]:
    """Wall times of ``repeats`` runs of ``fn``, after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def real_audio(data: Path, seconds: float) -> np.ndarray:
    """``seconds`` of untrimmed audio from consecutive files of one LibriSpeech speaker."""
    files = sorted(r.path for r in scan_corpus(data / LIBRI) if r.speaker == SPEAKER)
    parts, total = [], 0
    for path in files:
        parts.append(load_audio(path))
        total += len(parts[-1])
        if total >= 2 * seconds * SAMPLE_RATE:  # enough to leave `seconds` after trimming
            break
    return np.concatenate(parts)


def cpu_benchmark(args: argparse.Namespace) -> dict:
    from resemblyzer import VoiceEncoder, preprocess_wav
    from resemblyzer.audio import normalize_volume

    n = int(args.seconds * SAMPLE_RATE)
    raw = real_audio(args.data, args.seconds)
    speech = trim_silence(raw)[:n]  # exactly `seconds` of trimmed speech
    raw = raw[:n]  # and the same length of untrimmed file audio
    model = load_model(args.model)
    precisions = ["fp32", "bf16"] if native_bf16(torch.device("cpu")) else ["fp32"]
    embedders = {
        f"speakerid {p}": Embedder(model, "cpu", batch_size=args.batch_size, precision=p)
        for p in precisions
    }
    encoder = VoiceEncoder("cpu", verbose=False)

    def ours(embedder: Embedder, wav: np.ndarray) -> np.ndarray:
        return pool(embedder.embed_fragments(fragment(wav)))

    def resemblyzer(wav: np.ndarray) -> np.ndarray:
        return encoder.embed_utterance(normalize_volume(wav, RESEMBLYZER_DBFS, increase_only=True))

    pipelines: dict[str, dict[str, Callable[[], object]]] = {
        "embedding": {
            **{name: functools.partial(ours, e, speech) for name, e in embedders.items()},
            "Resemblyzer": lambda: resemblyzer(speech),
        },
        "end to end": {
            **{name: (lambda e=e: ours(e, trim_silence(raw))) for name, e in embedders.items()},
            "Resemblyzer": lambda: encoder.embed_utterance(preprocess_wav(raw)),
        },
    }
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for pipeline, systems in pipelines.items():
            times = {
                name: run_times(fn, args.repeats, lambda: None) for name, fn in systems.items()
            }
            secs = {name: statistics.median(t) for name, t in times.items()}
            for name, s in secs.items():
                row = {
                    "threads": threads,
                    "pipeline": pipeline,
                    "system": name,
                    "seconds": round(s, 4),
                    "min_max_seconds": [round(min(times[name]), 4), round(max(times[name]), 4)],
                    "audio_seconds_per_second": round(args.seconds / s, 1),
                }
                if name != "Resemblyzer":
                    row["speedup_vs_resemblyzer"] = round(secs["Resemblyzer"] / s, 2)
                rows.append(row)
            print(
                f"threads {threads}, {pipeline}: "
                + ", ".join(f"{name} {s:.3f} s" for name, s in secs.items()),
                file=sys.stderr,
            )
    return {
        "command": " ".join(sys.argv),
        "machine": machine(),
        "audio": f"{args.seconds:g} s of LibriSpeech speaker {SPEAKER} (train-clean-100), "
        f"{len(fragment(speech))} fragments after trimming",
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "native_bf16": native_bf16(torch.device("cpu")),
        "results": rows,
    }


def markdown(report: dict) -> str:
    lines = [
        "| threads | pipeline | system | median time (s) | min-max (s) | audio s / s | speed-up |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        ratio = r.get("speedup_vs_resemblyzer")
        lo, hi = r["min_max_seconds"]
        lines.append(
            f"| {r['threads']} | {r['pipeline']} | {r['system']} | {r['seconds']:.3f} | "
            f"{lo:.3f}-{hi:.3f} | "
            f"{r['audio_seconds_per_second']:.1f} | {f'{ratio:.2f}x' if ratio else ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--seconds", type=float, default=90.0, help="CPU: audio length")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU: torch threads")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64, help="fragments per forward pass")
    ap.add_argument(
        "--out",
        default=None,
        help="JSON file ('-': stdout only; default docs/results/speed_cpu.json)",
    )
    args = ap.parse_args()

    report = cpu_benchmark(args)
    out = args.out or "docs/results/speed_cpu.json"
    text = json.dumps(report, indent=1)
    if out == "-":
        print(text)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
        print(f"wrote {out}", file=sys.stderr)
    print(
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpus']} CPU(s); torch "
        f"{report['machine']['torch']}; load average at start "
        f"{report['machine']['load_average_at_start']}.\n"
    )
    print(markdown(report))


if __name__ == "__main__":
    main()
