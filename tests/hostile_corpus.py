"""The round-two hostile corpus (issue 25): generators of hostile inputs, the CLI runs that
meet them, and the checks each run must pass.

Shared by ``tests/test_hostile_outputs.py`` (one test per case) and ``bench/hostile.py``
(the report, ``--corpus two``); nothing is committed but this code: every file is generated
into a folder. A case runs ``python -m speakerid.cli ...`` in a subprocess and passes when:

- a bad input (``code`` 2) gets exit 2, exactly one stderr line starting ``error:`` holding
  ``needle``, no traceback, nothing on stdout, and an unchanged store;
- a good input gets its ``code`` (0, or 1 for a rejected ``verify``) and no traceback;
- ``check`` (the case's own property: a link still a link, a device still a device, a
  well-formed RTTM...) finds no problem.

The cases of this module are the outputs / identity / escaping half of the issue (findings
1, 3, 4, 5, the ONNX part of 12, and the tracebacks and messages of those); ``FINDINGS``
lists all 21 so that the report can say which are covered here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
SR = 16_000
# An ONNX graph that speakerid did not export: the format onnxruntime 1.x reads everywhere.
FORGED_OPSET = 17
FORGED_IR_VERSION = 8
# The terminal-hijacking file name of finding 5: set the window title, clear the screen.
ESCAPE_NAME = "\x1b]0;T\x07\x1b[2Jx.flac"
# A file name that would forge an RTTM line naming someone else (finding 4).
RTTM_FORGING_NAME = "talk\nSPEAKER talk 1 0.000 99.000 <NA> <NA> mallory <NA> <NA>\tx.wav"

# The 21 findings: numbered 1-12, then the traceback and message lists.
FINDINGS = {
    "1": "--out / export --onnx replace links, FIFOs and device nodes",
    "2": "speaker names equal after Unicode normalisation collide",
    "3": "an .onnx model's identity is its own metadata's claim",
    "4": "RTTM file ids forge lines",
    "5": "escape sequences and newlines printed raw",
    "6": "index files trusted without an integrity check",
    "7": "the resampler's memory and time",
    "8": "stdin read whole",
    "9": "npz members loaded before any check",
    "10": "calibrate on duplicate recordings",
    "11": "npz vectors that are zero, complex, of another size",
    "12": "crafted models: weight dtypes, an ONNX output of another size",
    "tracebacks": "tracebacks instead of one line",
    "messages": "messages that mislead",
}


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass
class Case:
    """One CLI run and what it must do (see the module's docstring)."""

    finding: str  # a key of FINDINGS
    name: str
    argv: list[str]
    code: int = 2
    needle: str = ""
    store: Path | None = None  # must be unchanged after the run
    stdout: str | None = None  # a file stdout is sent to (e.g. /dev/full), else captured
    check: Callable[[Result], str | None] | None = None  # its own property: a problem or None
    root_only: bool = False  # needs root (mknod)


# ---------------------------------------------------------------- running and judging


def run_cli(argv: list[str], env: dict[str, str], stdout: str | None = None) -> Result:
    """``python -m speakerid.cli ARGV`` in a subprocess of this checkout."""
    env = {**env, "PYTHONPATH": str(REPO)}
    target = open(stdout, "w") if stdout else subprocess.PIPE  # noqa: SIM115
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "speakerid.cli", *argv],
            stdout=target,
            stderr=subprocess.PIPE,
            env=env,
            timeout=600,
            cwd=REPO,
        )
    finally:
        if stdout:
            target.close()
    decode = lambda b: (b or b"").decode("utf-8", "replace")  # noqa: E731
    return Result(proc.returncode, decode(proc.stdout), decode(proc.stderr))


def store_state(path: Path) -> object:
    """What a store holds (its tables), or its bytes if it is no readable store."""
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            return tuple(
                tuple(conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall())
                for t in ("meta", "speakers", "recordings")
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return path.read_bytes()


def judge(case: Case, env: dict[str, str]) -> tuple[Result, list[str]]:
    """Run ``case``; returns its result and what was wrong with it (empty: it passed)."""
    before = store_state(case.store) if case.store else None
    r = run_cli(case.argv, env, case.stdout)
    problems = []
    if "Traceback" in r.out + r.err:
        problems.append("traceback")
    if r.code != case.code:
        problems.append(f"exit {r.code}, not {case.code}: {r.err.strip()[-300:]!r}")
    if case.code == 2:
        lines = r.err.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"stderr is not one 'error:' line: {r.err.strip()[-300:]!r}")
        elif case.needle and case.needle.lower() not in lines[0].lower():
            problems.append(f"{case.needle!r} not in {lines[0]!r}")
        if r.out:
            problems.append(f"stdout not empty: {r.out[:200]!r}")
    if case.store and store_state(case.store) != before:
        problems.append("the store changed")
    if case.check is not None:
        problem = case.check(r)
        if problem:
            problems.append(problem)
    return r, problems


# ---------------------------------------------------------------- generators


def voice(seconds: float, pitch: float = 180.0, seed: int = 0) -> np.ndarray:
    """Speech-like float32 audio at 16 kHz: harmonics under syllable-rate bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wav = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 12))
    wav = wav * 0.5 * (1 - np.cos(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(len(t))
    return (0.4 * wav / np.abs(wav).max()).astype(np.float32)


def write_voice(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), voice(seconds, seed=seed), SR, format="WAV")
    return path


def graph_config(checkpoint: Path) -> dict:
    """The model config a checkpoint's header holds (what a forged graph copies)."""
    from speakerid.encoders.checkpoint import read_header

    return read_header(checkpoint).config


def forged_graph(
    path: Path,
    config: dict,
    output: np.ndarray,
    claimed_sha256: str = "",
    metadata: dict[str, str] | None = None,
) -> Path:
    """An ONNX graph speakerid did not export: every input gives the vector ``output``.

    Its metadata says it is speakerid's (format, ``config``) and, with ``claimed_sha256``,
    that it was exported from that checkpoint; ``metadata`` overrides any entry.
    """
    from onnx import TensorProto, helper, save

    from speakerid.audio import FRAGMENT_SAMPLES
    from speakerid.features.numpy import numpy_frontend

    n_features = numpy_frontend(config)(np.zeros((1, FRAGMENT_SAMPLES), np.float32)).shape[1]
    dim = len(output)
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features, "t"])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])
    zeros = helper.make_tensor("w", TensorProto.FLOAT, [n_features, dim], [0.0] * n_features * dim)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [dim], [float(v) for v in output])
    nodes = [
        helper.make_node("ReduceMean", ["features"], ["m"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["embedding"]),
    ]
    graph = helper.make_graph(nodes, "forged", [x], [y], initializer=[zeros, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", FORGED_OPSET)])
    model.ir_version = FORGED_IR_VERSION
    meta = {
        "format": "speakerid-onnx/1",
        "config": json.dumps(config),
        "source_sha256": claimed_sha256,
        "source": "/opt/speakerid/models/shipped.safetensors",
        "threshold": "0.5",
        **(metadata or {}),
    }
    for key, value in meta.items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    save(model, str(path))
    return path


def without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def device_node(path: Path) -> Path:
    """A character device like the null device (1, 3), made here, never the system's."""
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


# ---------------------------------------------------------------- checks


def is_char_device(path: Path) -> Callable[[Result], str | None]:
    return lambda r: None if stat.S_ISCHR(os.lstat(path).st_mode) else f"{path} was replaced"


def is_fifo(path: Path) -> Callable[[Result], str | None]:
    return lambda r: None if stat.S_ISFIFO(os.lstat(path).st_mode) else f"{path} was replaced"


def written_through(link: Path, target: Path) -> Callable[[Result], str | None]:
    def check(r: Result) -> str | None:
        if not link.is_symlink():
            return f"{link} is no longer a symbolic link"
        if not zipfile.is_zipfile(target):
            return f"{target} (the link's target) was not written"
        return None

    return check


def no_raw_controls(r: Result) -> str | None:
    """Finding 5: the error line holds no raw control character, and the escapes show."""
    line = r.err.rstrip("\n")
    raw = [c for c in line if (ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F]
    if raw:
        return f"raw control characters printed: {raw!r}"
    return None if "\\x1b" in line or "\\n" in line else f"no visible escape in {line!r}"


def well_formed_rttm(r: Result) -> str | None:
    """Finding 4: every line is one SPEAKER line of exactly ten fields, naming no forger."""
    lines = r.out.splitlines()
    if not lines:
        return "no RTTM lines"
    for line in lines:
        fields = line.split()
        if len(fields) != 10 or fields[0] != "SPEAKER":
            return f"not an RTTM line of 10 fields: {line!r}"
        if fields[7] == "mallory":
            return f"a forged line: {line!r}"
    return None


def speech_seconds_at_most(seconds: float) -> Callable[[Result], str | None]:
    def check(r: Result) -> str | None:
        words = r.err.split()
        for i, word in enumerate(words[:-1]):
            if words[i + 1] == "s" and word.replace(".", "").isdigit():
                return None if float(word) <= seconds else f"reports {word} s of speech"
        return "no seconds of speech reported"

    return check


# ---------------------------------------------------------------- the corpus


@dataclass
class Inputs:
    """What the corpus is built on: a checkpoint, a graph speakerid exported from it (noted
    in the cache of ``env``), a store that checkpoint enrolled speakers into, and a voice."""

    checkpoint: Path
    graph: Path
    store: Path
    voice: Path
    env: dict[str, str] = field(default_factory=dict)


def build(folder: Path, given: Inputs) -> list[Case]:
    """Generate every hostile input of this half of the issue under ``folder``."""
    from speakerid.pins import file_sha256
    from speakerid.store.search import pointer_path

    folder.mkdir(parents=True, exist_ok=True)
    onnx = ["--backend", "onnx", "--model", str(given.graph)]  # no torch: a fast start
    torch = ["--model", str(given.checkpoint)]
    st = ["--store", str(given.store)]
    v = str(given.voice)
    config = graph_config(given.checkpoint)
    dim = int(config["embedding_dim"])
    unit = np.ones(dim, np.float32) / np.sqrt(dim)
    claim = file_sha256(given.checkpoint)
    cases: list[Case] = []

    # 1: outputs
    target = folder / "target.txt"
    target.write_text("not yet an npz\n")
    link = folder / "link.npz"
    link.symlink_to(target)
    cases.append(
        Case(
            "1",
            "embed --out a symbolic link: written through",
            ["embed", v, *onnx, "--out", str(link)],
            code=0,
            check=written_through(link, target),
        )
    )
    pipe = fifo(folder / "fifo.npz")
    cases.append(
        Case(
            "1",
            "embed --out a FIFO: refused",
            ["embed", v, *onnx, "--out", str(pipe)],
            needle="FIFO",
            check=is_fifo(pipe),
        )
    )
    cases.append(
        Case(
            "1",
            "embed --out a directory: refused",
            ["embed", v, *onnx, "--out", str(folder)],
            needle="directory",
        )
    )
    onnx_fifo = fifo(folder / "fifo.onnx")
    cases.append(
        Case(
            "1",
            "export --onnx a FIFO --force: refused",
            ["export", "--onnx", str(onnx_fifo), "--force", str(given.checkpoint)],
            needle="FIFO",
            check=is_fifo(onnx_fifo),
        )
    )
    for label, argv in [
        ("enroll-dir --out", ["enroll-dir", str(folder), *onnx, "--out"]),
        ("calibrate --plot", ["calibrate", str(folder), *torch, *st, "--plot"]),
        ("whiten --out", ["whiten", str(given.checkpoint), str(folder), "--force", "--out"]),
    ]:
        pipe = fifo(folder / f"fifo-{len(cases)}.out")
        cases.append(
            Case(
                "1",
                f"{label} a FIFO: refused before any work",
                [*argv, str(pipe)],
                needle="FIFO",
                store=given.store,
                check=is_fifo(pipe),
            )
        )
    if os.geteuid() == 0:
        node = device_node(folder / "null-device.npz")
        cases.append(
            Case(
                "1",
                "embed --out a device node: refused, the node kept",
                ["embed", v, *onnx, "--out", str(node)],
                needle="device",
                check=is_char_device(node),
                root_only=True,
            )
        )
    cases.append(
        Case(
            "1",
            "identify --segments --plot /dev/full: refused",
            ["identify", v, "--segments", "--plot", "/dev/full", *torch, *st],
            needle="device",
            store=given.store,
        )
    )

    # 3: identity
    forged = forged_graph(folder / "forged.onnx", config, unit, claimed_sha256=claim)
    forged_args = ["--backend", "onnx", "--model", str(forged), *st]
    cases.append(
        Case(
            "3",
            "verify with a graph claiming the store's model: refused",
            ["verify", "alice", v, *forged_args],
            needle="embeddings made by",
            store=given.store,
        )
    )
    cases.append(
        Case(
            "3",
            "enroll with a graph claiming the store's model: refused",
            ["enroll", "mallory", v, *forged_args],
            needle="embeddings made by",
            store=given.store,
        )
    )

    # 4: RTTM
    forging = write_voice(folder / "rttm" / RTTM_FORGING_NAME, 4.0, seed=3)
    cases.append(
        Case(
            "4",
            "identify --segments --rttm on a line-forging file name: well formed",
            ["identify", str(forging), "--segments", "--rttm", *torch, *st],
            code=0,
            check=well_formed_rttm,
        )
    )

    # 5: escapes
    cases.append(
        Case(
            "5",
            "a file name with escape sequences: shown escaped",
            ["embed", str(folder / ESCAPE_NAME), *onnx, "--out", str(folder / "x.npz")],
            needle="no such file",
            check=no_raw_controls,
        )
    )
    cases.append(
        Case(
            "5",
            "a folder name with a newline: one line",
            ["verify", "alice", str(folder / "two\nlines" / "x.wav"), *onnx, *st],
            needle="no such file",
            store=given.store,
            check=no_raw_controls,
        )
    )

    # 12 (ONNX): output shape checked by a probe at load
    short = forged_graph(folder / "ten-d.onnx", config, np.ones(10, np.float32))
    cases.append(
        Case(
            "12",
            "an ONNX graph whose output is 10-d, config 16-d: refused",
            [
                "embed",
                v,
                "--backend",
                "onnx",
                "--model",
                str(short),
                "--out",
                str(folder / "y.npz"),
            ],
            needle="shape",
        )
    )

    # tracebacks: damaged ONNX metadata, a pointer file of another JSON type, stdout full
    for label, meta, needle in [
        ("config='[1]'", {"config": "[1]"}, "metadata"),
        (
            "without embedding_dim",
            {"config": json.dumps(without(config, "embedding_dim"))},
            "embedding_dim",
        ),
        (
            '"fragment_samples": "abc"',
            {"config": json.dumps({**config, "fragment_samples": "abc"})},
            "fragment_samples",
        ),
    ]:
        graph = forged_graph(folder / f"meta-{len(cases)}.onnx", config, unit, metadata=meta)
        cases.append(
            Case(
                "tracebacks",
                f"ONNX metadata {label}: one line",
                ["verify", "alice", v, "--backend", "onnx", "--model", str(graph), *st],
                needle=needle,
                store=given.store,
            )
        )
    indexed = folder / "indexed.sqlite"
    indexed.write_bytes(given.store.read_bytes())
    pointer_path(indexed).write_text("[1, 2]")
    cases.append(
        Case(
            "tracebacks",
            "an index pointer file holding [1, 2]: rebuilt, works",
            ["identify", v, *onnx, "--store", str(indexed)],
            code=0,
        )
    )
    for argv in (["list", "--json", *st], ["list", *st]):
        cases.append(
            Case(
                "tracebacks",
                f"{' '.join(argv[:2])} with stdout on /dev/full: one line",
                argv,
                needle="stdout",
                stdout="/dev/full",
            )
        )

    cases.append(
        Case(
            "tracebacks",
            "an error under --json with stdout on /dev/full: the stderr line alone",
            ["list", "--json", "--store", str(folder)],
            needle="is a directory",
            stdout="/dev/full",
        )
    )

    # messages
    cases.append(
        Case(
            "messages",
            ".onnx with --backend torch: says what to pass",
            ["verify", "alice", v, "--model", str(given.graph), "--backend", "torch", *st],
            needle="--backend onnx",
            store=given.store,
        )
    )
    nan = forged_graph(
        folder / "nan.onnx", config, np.full(dim, np.nan, np.float32), claimed_sha256=claim
    )
    cases.append(
        Case(
            "messages",
            "a NaN-producing graph: blames the graph, not the checkpoint",
            ["verify", "alice", v, "--backend", "onnx", "--model", str(nan), *st],
            needle="nan.onnx",
            store=given.store,
        )
    )
    cases.append(
        Case(
            "messages",
            "info --model BAD: exit 2",
            ["info", "--model", str(folder / "BAD"), *st],
            needle="no such model",
        )
    )
    clip = write_voice(folder / "clip-0.2s.wav", 0.2)
    cases.append(
        Case(
            "messages",
            "identify --segments on a 0.2-s file: at most 0.2 s of speech",
            ["identify", str(clip), "--segments", *torch, *st],
            needle="of speech",
            store=given.store,
            check=speech_seconds_at_most(0.2),
        )
    )
    return cases
