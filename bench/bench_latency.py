"""Cold-start wall time of the CLI, as a user meets it: one new process per command.

Each command runs ``--repeats`` times as ``python -m speakerid.cli ...`` in a fresh
interpreter (the console script does the same imports); the table gives the median and the
fastest run. Measured: ``--help``, ``list`` and ``info`` (no model), ``verify`` of one 3-s
clip and ``identify`` of ten 3-s clips against a store of two enrolled speakers, each with
the torch and the onnx backend. The onnx backend's graph is built into a temporary cache
before timing (its one-off first-use export is timed separately).

Clips are cut from LibriSpeech train-clean-100 under ``--data`` when it is there, else
synthetic. Usage::

    python bench/bench_latency.py --data ../shared/data   # writes docs/results/latency.json
    python bench/bench_latency.py --repeats 3 --out -
    python bench/bench_latency.py --parity 40     # torch vs onnx cosine on 40 real files
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import machine

REPO = Path(__file__).resolve().parent.parent
LIBRISPEECH = Path("LibriSpeech") / "train-clean-100"
CLIP_SECONDS = 3.0
RATE = 16_000


def clips(folder: Path, n: int, data: Path) -> list[Path]:
    """``n`` 3-s clips (plus two enrollment clips) written as WAV; real speech if present."""
    sources = sorted(data.rglob("*.flac"))[: n + 2] if data.is_dir() else []
    paths = []
    for i in range(n + 2):
        if i < len(sources):
            wav, rate = sf.read(str(sources[i]), dtype="float32")
            wav = wav[int(0.5 * rate) : int((0.5 + CLIP_SECONDS) * rate)]
        else:  # a noisy harmonic stand-in: enough to time the pipeline
            rng = np.random.default_rng(i)
            t = np.arange(int(CLIP_SECONDS * RATE)) / RATE
            wav = 0.3 * np.sin(2 * np.pi * (120 + 10 * i) * t) + 0.05 * rng.standard_normal(len(t))
            rate = RATE
        path = folder / f"clip{i:02d}.wav"
        sf.write(str(path), wav.astype(np.float32), rate)
        paths.append(path)
    return paths


def run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one ``speakerid ARGS`` in a new process.

    CPU time is reported beside wall time because this machine's 2 cores are shared: under
    load, wall time measures the queue as much as the program. Exit 0/1 expected.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "speakerid.cli", *args], env=env, cwd=REPO, capture_output=True
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"speakerid {' '.join(args)} failed: {proc.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def parity(n: int, data: Path, model: str | None) -> None:
    """Cosine between the torch (fp32) and onnx embeddings of ``n`` LibriSpeech files."""
    from speakerid.embedding.pipeline import open_embedder

    files = sorted(data.rglob("*.flac"))[:n]
    if not files:
        raise SystemExit(f"{data}: no LibriSpeech files for the parity check")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SPEAKERID_CACHE"] = tmp
        torch_side = open_embedder(model, "torch", precision="fp32")
        onnx_side = open_embedder(model, "onnx")
        cos = np.array([float(torch_side.embed_file(f) @ onnx_side.embed_file(f)) for f in files])
    print(
        f"{len(files)} files: cosine torch fp32 vs onnx min {cos.min():.7f}, "
        f"median {np.median(cos):.7f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "latency.json"))
    parser.add_argument("--parity", type=int, default=0, help="Only the parity check, N files.")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", default=None, help="Shipped name or path (default model).")
    opts = parser.parse_args()
    data = opts.data / LIBRISPEECH
    if opts.parity:
        parity(opts.parity, data, opts.model)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SPEAKERID_STORE": str(tmp_path / "store.sqlite"),
            "SPEAKERID_CACHE": str(tmp_path / "cache"),
        }
        env.pop("SPEAKERID_BACKEND", None)
        model = ["--model", opts.model] if opts.model else []
        paths = clips(tmp_path, 10, data)
        enroll, queries = paths[:2], paths[2:]
        run(["enroll", "a", str(enroll[0]), *model], env)
        run(["enroll", "b", str(enroll[1]), *model], env)
        first_use = run(["verify", "a", str(queries[0]), "--backend", "onnx", *model], env)[0]

        commands: dict[str, list[str]] = {
            "--help": ["--help"],
            "list": ["list"],
            "info": ["info"],
        }
        for backend in ("torch", "onnx"):
            flags = ["--backend", backend, *model]
            commands[f"verify 3-s clip ({backend})"] = ["verify", "a", str(queries[0]), *flags]
            commands[f"identify 10 clips ({backend})"] = [
                "identify",
                *map(str, queries),
                *flags,
            ]
        results = {}
        loads = [os.getloadavg()[0]]
        for _ in range(opts.repeats):  # interleaved: a burst of load hits every command alike
            for label, args in commands.items():
                wall, cpu = run(args, env)
                entry = results.setdefault(label, {"wall": [], "cpu": []})
                entry["wall"].append(round(wall, 3))
                entry["cpu"].append(round(cpu, 3))
            loads.append(os.getloadavg()[0])
        for entry in results.values():
            entry["median_s"] = round(statistics.median(entry["wall"]), 3)
            entry["min_s"] = min(entry["wall"])
            entry["median_cpu_s"] = round(statistics.median(entry["cpu"]), 3)

    report = {
        "machine": machine(),
        "model": opts.model or "(default)",
        "load_average_1min": [round(x, 2) for x in loads],
        "repeats": opts.repeats,
        "clips": str(data) if data.is_dir() else "synthetic",
        "onnx_first_use_export_s": round(first_use, 2),
        "results": results,
    }
    lines = [
        "| command | wall, median (s) | wall, fastest (s) | CPU, median (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| `{k}` | {v['median_s']:.2f} | {v['min_s']:.2f} | {v['median_cpu_s']:.2f} |"
        for k, v in results.items()
    ]
    print("\n".join(lines))
    print(f"\nmachine: {report['machine']}; first onnx use (export): {first_use:.1f} s")
    print(f"1-min load average during the runs: {report['load_average_1min']}")
    if opts.out != "-":
        Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
