"""Hostile inputs, round two (issue #25): input bounds and validity.

Every case is generated here (no audio or model committed) and run the way a user would
meet it: the CLI in a subprocess where memory is the point (an address-space limit, and
the peak resident size read back), in-process through ``CliRunner`` otherwise. Each
asserts exit 2, one line on stderr without a traceback, the store unchanged, and where
memory is the point a bound on the peak.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from speakerid.encoders.registry import SHIPPED

# Slow integration tests: CI runs them (README, "Install, test, run").
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20

# Runs ``speakerid ARGS`` (or, with ``-c CODE``, CODE) under an address-space limit and
# writes the peak resident size (KiB) to $HOSTILE_RSS whatever happens. VmHWM, not
# ru_maxrss: Linux carries ru_maxrss over exec, so it would count the forking pytest.
# Written at exit by an atexit handler: the CLI ends the process once its atexit handlers
# have run (``cli.leave``), so a ``finally`` here would never run.
_HARNESS = """
import atexit, os, resource, runpy, sys
limit = int(os.environ["HOSTILE_AS"])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

def record_peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["HOSTILE_RSS"], "w") as fh:
        fh.write(peak)

atexit.register(record_peak)
if sys.argv[1] == "-c":
    exec(sys.argv[2])
else:
    sys.argv = ["speakerid", *sys.argv[1:]]
    runpy.run_module("speakerid.cli", run_name="__main__")
"""


def run_limited(
    tmp_path: Path, *args: str | Path, stdin: Path | None = None, limit: int = 2048 * MB
) -> tuple[subprocess.CompletedProcess, int]:
    """``speakerid ARGS`` in a subprocess: its result and its peak resident size in bytes."""
    rss = tmp_path / f"rss-{len(list(tmp_path.glob('rss-*')))}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOSTILE_AS": str(limit),
        "HOSTILE_RSS": str(rss),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "SPEAKERID_STORE": str(tmp_path / "store.sqlite"),
    }
    with open(stdin or os.devnull, "rb") as fh:
        done = subprocess.run(
            [sys.executable, "-c", _HARNESS, *map(str, args)],
            stdin=fh,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    return done, int(rss.read_text()) * 1024


def refused(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 and one ``error:`` line on stderr, no traceback; returns that line."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def one_line(result, *needles: str) -> str:
    """The same for a ``CliRunner`` result."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- generators


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def npz(path: Path, members: dict[str, bytes], comment: object) -> Path:
    """An embeddings file with any members and any zip comment (JSON unless bytes)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.comment = comment if isinstance(comment, bytes) else json.dumps(comment).encode()
        for key, data in members.items():
            zf.writestr(f"{key}.npy", data)
    return path


def head(**changes: object) -> dict:
    base = {
        "format": "speakerid-embeddings",
        "model_fingerprint": "c" * 64,
        "embedding_dim": 4,
        "model_source": "",
        "root": "r",
    }
    return {**base, **changes}


GOOD = npy(np.array([0.5, 0.5, -0.5, 0.5], np.float32))


def deflated_zeros_member(path: Path, values: int) -> Path:
    """A small file holding one member of ``values`` float32 zeros, deflated (the issue's
    0.8-MB file that asked for 834 MB)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.comment = json.dumps(head()).encode()
        with zf.open("r/alice/1.wav.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": (values,)}
            )
            block, left = bytes(4 * MB), 4 * values
            while left:
                fh.write(block[:left])
                left -= min(left, len(block))
    return path


def wav_at(path: Path, rate: int, seconds: float) -> Path:
    """A tone with pauses at any rate (PCM_16), ``seconds`` long."""
    n = max(3, round(rate * seconds))
    t = np.arange(n) / rate
    tone = 0.3 * np.sin(2 * np.pi * min(220.0, rate / 5) * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    sf.write(str(path), tone.astype(np.float32), rate, subtype="PCM_16")
    return path


# ---------------------------------------------------------------- 7: any rate, bounded memory

_STREAM_ALL = """
from speakerid.audio import is_long, load_audio, stream_fragments
path = sys.argv[3]
if is_long(path):
    n = sum(len(b) for b in stream_fragments(path))
else:
    n = len(load_audio(path))
print(n)
"""


@pytest.mark.parametrize("rate", [15_999, 44_101, 22_254, 1, 384_000])
def test_odd_sample_rates_resample_in_bounded_memory(tmp_path: Path, rate: int) -> None:
    """Finding 7: 20 s at 15999 Hz took 10.8 GB; now every rate runs under 1 GiB of
    address space, with a peak under 300 MB."""
    seconds = 400.0 if rate == 1 else 20.0  # 400 samples at 1 Hz: 6.4 M at 16 kHz
    path = wav_at(tmp_path / f"r{rate}.wav", rate, seconds)
    done, peak = run_limited(tmp_path, "-c", _STREAM_ALL, path, limit=1024 * MB)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0
    assert peak < 300 * MB


def test_odd_rate_through_the_cli(cli, tmp_path: Path) -> None:
    path = wav_at(tmp_path / "mac.wav", 22_254, 3.0)
    result = cli("embed", path, "--out", tmp_path / "e.npz")
    assert result.exit_code == 0, result.output
    one_line(
        cli("embed", wav_at(tmp_path / "fast.wav", 768_000, 0.5), "--out", tmp_path / "x.npz"),
        "invalid sample rate 768000 Hz",
    )


# ---------------------------------------------------------------- 8: stdin streamed


def test_stdin_memory_is_flat_with_length(tmp_path: Path, model_path: Path) -> None:
    """Finding 8: 400 MB of PCM peaked at 3.7 GB. Here 12 MB and 96 MB of raw PCM (silence,
    so no model runs) peak within 64 MB of each other."""
    peaks = []
    for megabytes in (12, 96):
        pcm = tmp_path / f"{megabytes}.raw"
        with open(pcm, "wb") as fh:
            fh.truncate(megabytes * MB)  # zeros: 16-bit silence
        args = ("embed", "-", "--sample-rate", "16000", "--out", tmp_path / "o.npz")
        done, peak = run_limited(tmp_path, *args, "--model", model_path, stdin=pcm, limit=8 << 30)
        refused(done, "silent")
        peaks.append(peak)
    assert peaks[1] - peaks[0] < 64 * MB, peaks
    assert not (tmp_path / "o.npz").exists()


def test_stdin_beyond_the_stated_maximum_is_refused(cli, runner, model_path, monkeypatch):
    import speakerid.audio.io as audio
    from speakerid.cli import app

    monkeypatch.setattr(audio, "STDIN_MAX_BYTES", MB)
    args = ["embed", "-", "--sample-rate", "8000", "--out", "x.npz", "--model", str(model_path)]
    result = runner.invoke(app, args, input=bytes(2 * MB))
    one_line(result, "more than 1048576 bytes", "cut it into parts")
    monkeypatch.setattr(audio, "STDIN_MAX_BYTES", 2**31)
    one_line(
        runner.invoke(app, [*args[:3], "1000000", *args[4:]], input=b"\0\1" * 100),
        "invalid sample rate 1000000 Hz",
    )


# ---------------------------------------------------------------- 9: npz checked before reading


def test_a_member_of_hundreds_of_megabytes_is_refused_from_its_header(tmp_path: Path) -> None:
    """Finding 9: a 0.4-MB file declaring a 100-million-value member (400 MB) is refused
    with a peak under 200 MB (main read it whole first)."""
    path = deflated_zeros_member(tmp_path / "big.npz", 100_000_000)
    assert path.stat().st_size < 2 * MB
    done, peak = run_limited(tmp_path, "enroll", "--from-npz", path)
    assert peak < 200 * MB
    refused(done, "(100000000,)", "size 4")
    assert not (tmp_path / "store.sqlite").exists()


def test_too_many_members_are_refused_from_the_zip_directory(tmp_path: Path) -> None:
    """A file whose directory claims more than 500k members is refused before zipfile
    parses that directory (10^6 tiny members took 105 s and 1.6 GB)."""
    path = npz(tmp_path / "many.npz", {"r/a/1.wav": GOOD}, head())
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x05\x06")
    data[at + 8 : at + 12] = (0xFFFF).to_bytes(2, "little") * 2  # 65535 entries...
    data[at + 12 : at + 16] = (0xFFFFFFF0).to_bytes(4, "little")  # ...in a 4-GB directory
    path.write_bytes(bytes(data))
    done, _ = run_limited(tmp_path, "enroll", "--from-npz", path)
    refused(done, "at most 500000 keys")


# ---------------------------------------------------------------- 11: only valid vectors

HOSTILE_NPZ = {
    "embedding_dim-abc": ({"r/a/1.wav": GOOD}, head(embedding_dim="abc"), "embedding_dim 'abc'"),
    "embedding_dim-list": ({"r/a/1.wav": GOOD}, head(embedding_dim=[4]), "embedding_dim [4]"),
    "root-5": ({"r/a/1.wav": GOOD}, head(root=5), "root 5 is not a string"),
    "fingerprint-list": ({"r/a/1.wav": GOOD}, head(model_fingerprint=[1]), "not a sha256"),
    "fingerprint-int": ({"r/a/1.wav": GOOD}, head(model_fingerprint=12345), "12345"),
    "nested-comment": ({"r/a/1.wav": GOOD}, b"[" * 30_000 + b"]" * 30_000, "no speakers"),
    "nan": ({"r/a/1.wav": npy(np.array([np.nan, 1, 1, 1], np.float32))}, head(), "NaN"),
    "zero": ({"r/a/1.wav": npy(np.zeros(4, np.float32))}, head(), "zero vector"),
    "underflow": ({"r/a/1.wav": npy(np.full(4, 1e-300))}, head(), "zero vector"),
    "complex": ({"r/a/1.wav": npy(np.array([1j, 1, 1, 1]))}, head(), "complex128"),
    "structured": ({"r/a/1.wav": npy(np.zeros(4, [("x", "<f4")]))}, head(), "real floats"),
    "string": ({"r/a/1.wav": npy(np.array(list("abcd")))}, head(), "<U1"),
    "int": ({"r/a/1.wav": npy(np.arange(1, 5, dtype=np.int32))}, head(), "int32"),
    "wrong-size": ({"r/a/1.wav": npy(np.ones(100, np.float32))}, head(), "shape (100,)"),
    "shipped-fingerprint-wrong-size": (
        {"r/a/1.wav": GOOD},
        head(model_fingerprint=SHIPPED["accurate"].sha256),
        "makes vectors of size 192",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NPZ))
def test_hostile_npz_is_refused_by_from_npz_and_merge(tmp_path: Path, case: str) -> None:
    """Findings 9 and 11, and the tracebacks and messages of the npz header: one line,
    exit 2, nothing enrolled and nothing written, naming what is wrong (never "the model
    produced NaN" or "damaged store": no model ran and the store is fine)."""
    members, comment, needle = HOSTILE_NPZ[case]
    path = npz(tmp_path / f"{case}.npz", members, comment)
    store = tmp_path / "store.sqlite"
    done, _ = run_limited(tmp_path, "enroll", "--from-npz", path)
    line = refused(done, needle)
    assert "model produced" not in line and "damaged store" not in line
    assert not store.exists()
    out = tmp_path / "merged.npz"
    done, _ = run_limited(tmp_path, "embed", "--merge", path, "--out", out)
    if case == "nested-comment":
        refused(done, "no model header")
    else:
        refused(done, needle)
    assert not out.exists()


def test_from_npz_leaves_a_store_of_another_size_unchanged(cli, tmp_path: Path) -> None:
    """A 4-d file under the fingerprint a store holds 8-d vectors of: refused, store kept."""
    from speakerid.store.speakers import SpeakerStore

    store = tmp_path / "s.sqlite"
    with SpeakerStore(store) as db:
        db.add_recordings("carol", ["c.wav"], np.ones((1, 8), np.float32), fingerprint="c" * 64)
    before = store.read_bytes()
    path = npz(tmp_path / "e.npz", {"r/alice/1.wav": GOOD}, head())
    one_line(cli("enroll", "--from-npz", path, store=store, model=False), "header is wrong")
    assert store.read_bytes() == before


# ---------------------------------------------------------------- 12: crafted torch models


def _crafted(model_path: Path, out: Path, config: dict | None = None, dtype=None) -> Path:
    state = load_file(str(model_path))
    with safe_open(str(model_path), framework="pt") as fh:
        meta = dict(fh.metadata())
    if config:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    if dtype is not None:
        key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
        state[key] = state[key].to(dtype)
    save_file(state, str(out), metadata=meta)
    return out


@pytest.mark.parametrize(
    ("config", "dtype", "needle"),
    [
        ({"windows": 1_000_000}, None, "windows=1000000 must be from 1 to 16"),
        ({"channels": 10**8}, None, "channels=100000000 must be from 1 to 4096"),
        (None, torch.int32, "int32; weights are floating point"),
        (None, torch.bool, "bool; weights are floating point"),
    ],
)
def test_crafted_model_is_refused_at_load(
    cli, model_path: Path, voices_dir: Path, tmp_path: Path, config, dtype, needle
) -> None:
    """Finding 12 (torch): limits and dtypes checked when the checkpoint is read."""
    bad = _crafted(model_path, tmp_path / "bad.safetensors", config, dtype)
    result = cli("embed", voices_dir / "alice_1.wav", "--out", tmp_path / "e.npz", model=bad)
    one_line(result, needle)
    assert not (tmp_path / "e.npz").exists()


def test_info_on_deeply_nested_header_json_is_one_line(tmp_path: Path) -> None:
    """The config in a safetensors header nested 50,000 deep was a RecursionError."""
    meta = {"format": "speakerid-encoder/1", "config": "[" * 50_000 + "]" * 50_000}
    body = json.dumps({"__metadata__": meta}).encode()
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(body).to_bytes(8, "little") + body)
    done, _ = run_limited(tmp_path, "info", "--model", path)
    # info reports a bad model in its table; its exit status is the outputs half of #25
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr + done.stdout
    assert "damaged checkpoint metadata" in done.stdout + done.stderr


# ---------------------------------------------------------------- 2: names that collide

NFC, NFD = "Jos\u00e9", "Jose\u0301"


@pytest.mark.parametrize(("first", "second"), [(NFC, NFD), ("Alice", "\uff21lice")])
def test_one_enroll_dir_naming_a_speaker_twice_is_refused(
    cli, voices_dir: Path, tmp_path: Path, first: str, second: str
) -> None:
    """Finding 2: "José" (NFC) and "José" (NFD) folders were "2 speakers" and one list row."""
    import shutil

    root = tmp_path / "people"
    for i, name in enumerate((first, second, "bob")):
        (root / name).mkdir(parents=True)
        shutil.copy(voices_dir / f"alice_{i + 1}.wav", root / name / "1.wav")
    store = tmp_path / "s.sqlite"
    line = one_line(cli("enroll-dir", root, store=store), "name the same speaker")
    assert str(root / first) in line and str(root / second) in line
    assert not store.exists()
    out = tmp_path / "e.npz"
    one_line(cli("enroll-dir", root, "--out", out), "name the same speaker")
    assert not out.exists()


def test_one_npz_naming_a_speaker_twice_is_refused(cli, tmp_path: Path) -> None:
    members = {f"r/{NFC}/1.wav": GOOD, f"r/{NFD}/2.wav": GOOD, "r/bob/1.wav": GOOD}
    path = npz(tmp_path / "e.npz", members, head())
    store = tmp_path / "s.sqlite"
    one_line(cli("enroll", "--from-npz", path, store=store, model=False), "the same speaker")
    assert not store.exists()
