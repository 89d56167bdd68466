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
FRESH_CACHE = "<fresh>"  # a command's cache folder made anew at each run
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


# One cold verify in one process, each step timed (wall and CPU): run by ``steps``.
STEPS_CHILD = r"""
import os, sys, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI sets it before numpy
marks = []
t, c = time.perf_counter(), time.process_time()
def mark(step):
    global t, c
    t2, c2 = time.perf_counter(), time.process_time()
    marks.append((step, t2 - t, c2 - c))
    t, c = t2, c2
import numpy; mark("import numpy")
import onnxruntime; mark("import onnxruntime")
import typer, rich.console; mark("import typer + rich")
import soundfile, soxr; mark("import soundfile + soxr")
import speakerid.cli
try:  # what main() registers for verify (an install before cli/commands.py: every command)
    from speakerid.cli.commands import for_argv
    for_argv(["verify"])
except ImportError:
    pass
mark("import speakerid.cli (the rest)")
from speakerid.api import SpeakerID
from speakerid.audio import load_audio, prepare, trim_silence
from speakerid.embedding.pipeline import open_embedder
from speakerid.recognition import scorer_for
from speakerid.vectors import pool
mark("import the core (api, audio, embedding, decision)")
sid = SpeakerID(sys.argv[1]); reference = sid.store.vector("a"); mark("store: open, read")
embedder = open_embedder(); mark("CAM++ session")
from speakerid.audio.vad import SileroVAD
SileroVAD(); mark("Silero VAD session")
wav = load_audio(sys.argv[2]); mark("audio read")
speech = trim_silence(wav, "clip", vad=embedder.vad); mark("VAD run")
fragments = prepare(speech, "clip", trim=False, min_speech=embedder.min_speech, vad=embedder.vad)
features = embedder.frontend(fragments); mark("fragments + fbank")
out = embedder.model.session.run(["embedding"], {"features": features})[0]; mark("inference")
query = pool(out / numpy.linalg.norm(out, axis=1, keepdims=True))
scorer_for(sid.store, embedder).verify("a", float(reference @ query), query, len(speech) / 16e3)
mark("decision")
for step, wall, cpu in marks:
    print(f"{step}\t{wall}\t{cpu}")
"""


def steps(python: str, env: dict[str, str], home: Path, clip: Path, repeats: int) -> dict:
    """Where a cold verify's time goes: ``STEPS_CHILD`` in a new process ``repeats`` times,
    median wall and CPU per step; the bare interpreter's start measured apart."""
    rows: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        wall, cpu = run_python(python, ["-c", "pass"], env, home)
        rows.setdefault("interpreter start", {"wall": [], "cpu": []})
        rows["interpreter start"]["wall"].append(wall)
        rows["interpreter start"]["cpu"].append(cpu)
        out = subprocess.run(
            [python, "-c", STEPS_CHILD, env["SPEAKERID_STORE"], str(clip)],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            step, w, c = line.split("\t")
            rows.setdefault(step, {"wall": [], "cpu": []})
            rows[step]["wall"].append(float(w))
            rows[step]["cpu"].append(float(c))
    return {
        step: {
            "wall_ms": round(1e3 * statistics.median(r["wall"]), 1),
            "cpu_ms": round(1e3 * statistics.median(r["cpu"]), 1),
        }
        for step, r in rows.items()
    }


def run_python(python: str, args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``python ARGS`` in a new process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([python, *args], env=env, cwd=cwd, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# What single pieces of a cold start cost, each in a fresh interpreter (see ``costs``).
ONE_BLAS = {"OPENBLAS_NUM_THREADS": "1"}  # as the CLI sets it
COMMANDS_CODE = """
import numpy, onnxruntime, typer, rich
try:
    from speakerid.cli.commands import all_commands, for_argv
except ImportError:
    pass
else:
    import typer.main
    typer.main.get_command({})
"""
COSTS = {
    "bare interpreter": ("pass", {}),
    "import numpy (OpenBLAS default threads)": ("import numpy", {"OPENBLAS_NUM_THREADS": None}),
    "import numpy (OpenBLAS 1 thread)": ("import numpy", {"OPENBLAS_NUM_THREADS": "1"}),
    "import typer": ("import typer", {}),
    "import typer + pydantic (typer's coercion)": ("import typer, typer._adapters", {}),
    "import numpy, onnxruntime, typer, rich": ("import numpy, onnxruntime, typer, rich", {}),
    # What a command line registers and Typer builds (``cli.commands``; nothing on an install
    # older than it): verify's module, and every command as ``--help`` needs.
    "CLI app for verify (import, build)": (COMMANDS_CODE.format("for_argv(['verify'])"), ONE_BLAS),
    "CLI app, every command (import, build)": (COMMANDS_CODE.format("all_commands()"), ONE_BLAS),
}
# Printed last by a child: the time after which only the interpreter's exit remains.
TEARDOWN = "\nimport sys, time\nprint(repr(time.time()), file=sys.stderr)"


def costs(python: str, env: dict[str, str], home: Path, repeats: int) -> dict:
    """CPU of each ``COSTS`` statement in a new interpreter (median of ``repeats``), and the
    wall time the interpreter's exit takes after it (teardown: module finalisation)."""
    rows = {}
    for label, (code, extra) in COSTS.items():
        child = {k: v for k, v in {**env, **extra}.items() if v is not None}
        cpu, teardown = [], []
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run(
                [python, "-c", code + TEARDOWN],
                env=child,
                cwd=home,
                capture_output=True,
                text=True,
                check=True,
            )
            ended = time.time()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
            teardown.append(ended - float(out.stderr.strip().splitlines()[-1]))
        rows[label] = {
            "cpu_ms": round(1e3 * statistics.median(cpu), 1),
            "exit_ms": round(1e3 * statistics.median(teardown), 1),
        }
    return rows


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
        # An installed package has its bytecode compiled by pip; the checkout's is compiled
        # here once, so that no run pays for compiling (PYTHONDONTWRITEBYTECODE would make
        # every run compile the whole CLI: about 0.1 s).
        subprocess.run(
            [python, "-m", "compileall", "-q", str(REPO / "speakerid")], check=True, env=env
        )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "latency.json"))
    parser.add_argument("--parity", type=int, default=0, help="Only the parity check, N files.")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", default=None, help="Shipped name or path (default model).")
    parser.add_argument("--install", action="append", default=[], metavar="NAME=PYTHON")
    parser.add_argument(
        "--steps", action="store_true", help="Also time a cold verify's steps (one process)."
    )
    parser.add_argument(
        "--costs", action="store_true", help="Only the cost of single imports and of exiting."
    )
    opts = parser.parse_args()
    data = opts.data / LIBRISPEECH
    if opts.parity:
        parity(opts.parity, data, opts.model)
        return
    installs = dict(spec.split("=", 1) for spec in opts.install) or {"full": sys.executable}
    if opts.costs:
        with tempfile.TemporaryDirectory() as tmp:
            for name, python in installs.items():
                env = install_env(python, Path(tmp), checkout=python == sys.executable)
                print(f"\n{name}: | piece | CPU (ms) | exit after it (ms) |")
                for label, row in costs(python, env, Path(tmp), opts.repeats).items():
                    print(f"| {label} | {row['cpu_ms']:.0f} | {row['exit_ms']:.0f} |")
        print(f"\nmachine: {machine()}; 1-min load average {os.getloadavg()[0]:.2f}")
        return

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
            # The first verify on a machine: no optimised graph cached yet (a fresh cache
            # folder at each run); the other commands find the one the enrolls made.
            first = {**env, "SPEAKERID_CACHE": FRESH_CACHE}
            commands[f"{name}: verify 3-s clip, first start (empty cache)"] = (
                python,
                ["verify", "a", str(queries[0]), *model],
                first,
                home,
            )
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
        breakdown = {}
        if opts.steps:  # default model only: the child opens the default embedder
            for name, python in installs.items():
                home = root / name
                env = install_env(python, home, checkout=python == sys.executable)
                breakdown[name] = steps(python, env, home, queries[0], opts.repeats)
        for i in range(opts.repeats):  # interleaved: a burst of load hits every command alike
            for label, (python, args, env, home) in commands.items():
                if env.get("SPEAKERID_CACHE") == FRESH_CACHE:
                    env = {**env, "SPEAKERID_CACHE": str(home / f"fresh-cache-{i}")}
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
        "steps": breakdown,
    }
    lines = [
        "| install: command | wall, median (s) | wall, fastest (s) | CPU, median (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| `{k}` | {v['median_s']:.2f} | {v['min_s']:.2f} | {v['median_cpu_s']:.2f} |"
        for k, v in results.items()
    ]
    for name, table in breakdown.items():
        lines += ["", f"{name}: one cold verify, median per step"]
        lines += ["| step | wall (ms) | CPU (ms) |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {v['wall_ms']:.0f} | {v['cpu_ms']:.0f} |" for k, v in table.items()]
        total = [sum(v[x] for v in table.values()) for x in ("wall_ms", "cpu_ms")]
        lines += [f"| total | {total[0]:.0f} | {total[1]:.0f} |"]
    print("\n".join(lines))
    print(f"\nmachine: {report['machine']}")
    print(f"1-min load average during the runs: {report['load_average_1min']}")
    if opts.out != "-":
        Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
