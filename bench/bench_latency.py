"""Cold-start wall time of the CLI, as a user meets it: one new process per command.

Each command runs ``--repeats`` times as ``python -m speakerid.cli ...`` in a fresh
interpreter (the console script does the same imports), commands interleaved; the table
gives the median and fastest wall time and the median CPU time. Measured: ``--help``,
``list`` (no model), ``verify`` of one 3-s clip and ``identify`` of ten 3-s
clips against a store of two enrolled speakers: with the default backend (onnx, the shipped
graph) for every install given, and with the torch backend where the install has torch.

``--install NAME=PYTHON`` (repeatable) names an interpreter whose environment has speakerid
installed, e.g. a runtime install made with ``pip install .`` in a fresh venv; without one,
this checkout runs on the current interpreter (``full``).

Clips are cut from LibriSpeech train-clean-100 under ``--data`` when it is there, else
synthetic. Usage::

    python -m venv /tmp/rt && /tmp/rt/bin/pip install .        # the runtime install
    python bench/bench_latency.py --install runtime=/tmp/rt/bin/python --install full=python
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
from common import machine_line as machine

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


def run(
    args: list[str], env: dict[str, str], python: str = sys.executable, cwd: Path = REPO
) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one ``speakerid ARGS`` in a new process.

    CPU time is reported beside wall time because this machine's 2 cores are shared: under
    load, wall time measures the queue as much as the program. Exit 0/1 expected.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [python, "-m", "speakerid.cli", *args], env=env, cwd=cwd, capture_output=True
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


def has_torch(python: str) -> bool:
    probe = "import importlib.util as u; print(u.find_spec('torch') is not None)"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def install_env(python: str, tmp_path: Path, checkout: bool) -> dict[str, str]:
    """The environment of one install's commands: its own store and cache, this checkout
    on the path only for the checkout's interpreter (they run in ``tmp_path``, so that
    ``python -m`` does not find the checkout from the working directory)."""
    env = {
        **os.environ,
        "SPEAKERID_STORE": str(tmp_path / "store.sqlite"),
        "SPEAKERID_CACHE": str(tmp_path / "cache"),
    }
    env.pop("SPEAKERID_BACKEND", None)
    env.pop("PYTHONPATH", None)
    if checkout:
        env["PYTHONPATH"] = str(REPO)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "latency.json"))
    parser.add_argument("--parity", type=int, default=0, help="Only the parity check, N files.")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", default=None, help="Shipped name or path (default model).")
    parser.add_argument("--install", action="append", default=[], metavar="NAME=PYTHON")
    opts = parser.parse_args()
    data = opts.data / LIBRISPEECH
    if opts.parity:
        parity(opts.parity, data, opts.model)
        return
    installs = dict(spec.split("=", 1) for spec in opts.install) or {"full": sys.executable}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = ["--model", opts.model] if opts.model else []
        paths = clips(root, 10, data)
        enroll, queries = paths[:2], paths[2:]
        commands: dict[str, tuple[str, list[str], dict[str, str], Path]] = {}
        for name, python in installs.items():
            home = root / name
            home.mkdir()
            env = install_env(python, home, checkout=python == sys.executable)
            run(["enroll", "a", str(enroll[0]), *model], env, python, home)
            run(["enroll", "b", str(enroll[1]), *model], env, python, home)
            backends = ["onnx", "torch"] if has_torch(python) else ["onnx"]
            commands[f"{name}: --help"] = (python, ["--help"], env, home)
            commands[f"{name}: list"] = (python, ["list"], env, home)
            for backend in backends:
                flags = ["--backend", backend, *model]
                commands[f"{name}: verify 3-s clip ({backend})"] = (
                    python,
                    ["verify", "a", str(queries[0]), *flags],
                    env,
                    home,
                )
                commands[f"{name}: identify 10 clips ({backend})"] = (
                    python,
                    ["identify", *map(str, queries), *flags],
                    env,
                    home,
                )
        results = {}
        loads = [os.getloadavg()[0]]
        for _ in range(opts.repeats):  # interleaved: a burst of load hits every command alike
            for label, (python, args, env, home) in commands.items():
                wall, cpu = run(args, env, python, home)
                entry = results.setdefault(label, {"wall": [], "cpu": []})
                entry["wall"].append(round(wall, 3))
                entry["cpu"].append(round(cpu, 3))
            loads.append(os.getloadavg()[0])
        for entry in results.values():
            entry["median_s"] = round(statistics.median(entry["wall"]), 3)
            entry["min_s"] = min(entry["wall"])
            entry["median_cpu_s"] = round(statistics.median(entry["cpu"]), 3)

    report = {
        "command": " ".join(sys.argv),
        "machine": machine(),
        "installs": installs,
        "model": opts.model or "(default)",
        "load_average_1min": [round(x, 2) for x in loads],
        "repeats": opts.repeats,
        "clips": str(data) if data.is_dir() else "synthetic",
        "results": results,
    }
    lines = [
        "| install: command | wall, median (s) | wall, fastest (s) | CPU, median (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| `{k}` | {v['median_s']:.2f} | {v['min_s']:.2f} | {v['median_cpu_s']:.2f} |"
        for k, v in results.items()
    ]
    print("\n".join(lines))
    print(f"\nmachine: {report['machine']}")
    print(f"1-min load average during the runs: {report['load_average_1min']}")
    if opts.out != "-":
        Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
