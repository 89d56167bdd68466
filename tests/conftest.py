"""Shared fixtures: synthetic speech-like voices, tiny checkpoints, a CLI runner.

The voices are source-filter models of speech: a glottal pulse train at a speaker-specific
pitch (with jitter and shimmer) through a few formant resonators, amplitude-modulated at a
syllable rate with short pauses. Different pitch/formant sets give different "speakers";
the same set with another seed gives another recording of the same speaker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speakerid.encoders.twin import Encoder, ModelConfig, save_encoder

SR = 16_000  # Hz
RECORDING_SECONDS = 2.5  # short: one (repeated) fragment per file keeps the tests fast


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker: pitch in Hz and formants as (centre Hz, bandwidth Hz)."""

    pitch: float
    formants: tuple[tuple[float, float], ...]


VOICES = {
    "alice": Voice(215.0, ((800, 90), (1750, 110), (2900, 160))),
    "bob": Voice(110.0, ((550, 70), (1150, 100), (2450, 140))),
    "carol": Voice(175.0, ((650, 80), (2100, 120), (3100, 170))),
}


def synth_voice(voice: Voice, seconds: float = RECORDING_SECONDS, seed: int = 0) -> np.ndarray:
    """Speech-like float32 audio at 16 kHz, shape ``(seconds * SR,)``, peak 0.5."""
    from scipy.signal import lfilter  # here, not at collection: scipy.signal takes a second

    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    source = np.zeros(n)
    t = 0.0
    while t < n:  # pulses with 2 % jitter and 10 % shimmer
        source[int(t)] = 1.0 + 0.1 * rng.standard_normal()
        t += SR / voice.pitch * (1.0 + 0.02 * rng.standard_normal())
    source = lfilter([1.0], [1.0, -0.95], source)  # glottal roll-off
    source += 0.02 * rng.standard_normal(n)  # breath noise
    out = source
    for centre, bandwidth in voice.formants:
        r = np.exp(-np.pi * bandwidth / SR)
        theta = 2 * np.pi * centre * (1.0 + 0.03 * rng.standard_normal()) / SR
        out = lfilter([1.0 - r], [1.0, -2 * r * np.cos(theta), r * r], out)
    time = np.arange(n) / SR
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * time + rng.uniform(0, 2 * np.pi)))
    pauses = (np.sin(2 * np.pi * 0.7 * time + rng.uniform(0, 2 * np.pi)) > -0.8).astype(float)
    out = out * syllables * pauses
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def write_wav(path: Path, wav: np.ndarray, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, SR, subtype=subtype)
    return path


def make_checkpoint(path: Path, seed: int, threshold: float | None = 0.5) -> Path:
    """A tiny, deterministic, untrained encoder (channels 32, embeddings of 16)."""
    torch.manual_seed(seed)
    encoder = Encoder(ModelConfig(channels=32, embedding_dim=16))
    save_encoder(encoder, path, threshold=threshold)
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model A: the checkpoint the tests enroll with."""
    return make_checkpoint(tmp_path_factory.mktemp("models") / "m.safetensors", seed=0)


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model B: same shape as A, other weights (so another fingerprint)."""
    return make_checkpoint(tmp_path_factory.mktemp("models_b") / "b.safetensors", seed=1)


@pytest.fixture(scope="session")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only audio: ``<name>_<k>.wav`` for alice, bob, carol, k = 1, 2, 3."""
    root = tmp_path_factory.mktemp("voices")
    for i, (name, voice) in enumerate(VOICES.items()):
        for k in (1, 2, 3):
            write_wav(root / f"{name}_{k}.wav", synth_voice(voice, seed=100 * i + k))
    return root


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


@pytest.fixture(scope="session")
def _enrolled_template(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, voices_dir: Path
) -> Path:
    """A store with alice (recordings 1, 2) and bob (1, 2), built once."""
    from speakerid.embedding.backends.torch import Embedder, load_model
    from speakerid.recognition import enroll
    from speakerid.store.speakers import SpeakerStore

    path = tmp_path_factory.mktemp("template") / "store.sqlite"
    embedder = Embedder(load_model(model_path), device="cpu")
    with SpeakerStore(path) as store:
        for name in ("alice", "bob"):
            files = [str(voices_dir / f"{name}_{k}.wav") for k in (1, 2)]
            enroll(store, embedder, name, files)
    return path


@pytest.fixture
def enrolled_store(_enrolled_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the alice + bob store for one test to change."""
    path = tmp_path / "enrolled.sqlite"
    shutil.copyfile(_enrolled_template, path)
    return path


@pytest.fixture
def cli(runner: CliRunner, model_path: Path) -> Callable[..., object]:
    """``cli("verify", "alice", f, store=p)``: invoke the app with ``--model`` added."""
    from speakerid.cli import app

    def invoke(
        *args: str | Path,
        store: Path | None = None,
        model: Path | bool | None = True,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
    ):
        argv: Sequence[str] = [str(a) for a in args]
        if model is True:
            argv = [*argv, "--model", str(model_path)]
        elif model:
            argv = [*argv, "--model", str(model)]
        if store is not None:
            argv = [*argv, "--store", str(store)]
        return runner.invoke(app, argv, env=env, input=input)

    return invoke


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of exported ONNX graphs for the session (exporting takes seconds)."""
    return tmp_path_factory.mktemp("speakerid-cache")


@pytest.fixture(scope="session", autouse=True)
def _energy_vad() -> Iterator[None]:
    """The synthetic voices are not speech to Silero VAD (the default), so the tests find
    their speech by the energy rule (before any session fixture embeds); tests of Silero pass
    ``vad="silero"`` or ``--vad silero``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPEAKERID_VAD", "energy")
        yield


@pytest.fixture(autouse=True)
def _isolated_store_location(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_cache: Path
) -> None:
    """No test may touch the real user data or cache dirs or inherit ``$SPEAKERID_*``."""
    monkeypatch.delenv("SPEAKERID_STORE", raising=False)
    monkeypatch.delenv("SPEAKERID_BACKEND", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("SPEAKERID_CACHE", str(onnx_cache))
    # Progress lines and notes depend on how long a step takes: tests that count stderr
    # lines see none (tests/test_progress.py turns them back on).
    monkeypatch.setenv("SPEAKERID_QUIET", "1")


UNPRIVILEGED_SECONDS = 300  # a loaded 2-core machine runs a permission case in seconds
# Not imported by the spawned child before it drops to nobody (see ``run_unprivileged``).
UNPRIVILEGED_SKIP = ("__main__", "__mp_main__", "conftest", "test_", "_pytest", "pytest")


def _unprivileged_child(fn: Callable[..., object], args: tuple, modules: list[str], conn) -> None:
    import importlib

    for name in modules:
        with contextlib.suppress(Exception):  # one that imports only in the parent's state
            importlib.import_module(name)
    os.setgid(65534)
    os.setgroups([])
    os.setuid(65534)
    try:
        result = fn(*args)
    except Exception as exc:
        result = repr(exc)
    conn.send(result)
    os._exit(0)


def run_unprivileged(fn: Callable[..., object], *args: object) -> object:
    """``fn(*args)`` where file permissions apply: as is for a user, as ``nobody`` for root.

    Root reads and writes mode-000 files, so permission cases run in a child that drops to
    uid/gid 65534. The child is spawned, not forked: a fork of this process copies the locks
    its native threads (onnxruntime's pools) hold, and the child then hangs on one. Nobody
    may not read a venv under /root, so the child first imports, as root, every module the
    parent has loaded (what the case imports lazily must be among them), then drops.
    ``fn`` must be a module-level function. Returns what ``fn`` returns, or the ``repr`` of
    what it raised; the paths it uses must be reachable by that user (see ``open_tmp``).
    """
    if os.geteuid() != 0:
        try:
            return fn(*args)
        except Exception as exc:
            return repr(exc)
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    modules = sorted(m for m in sys.modules if not m.startswith(UNPRIVILEGED_SKIP))
    proc = ctx.Process(target=_unprivileged_child, args=(fn, args, modules, writer))
    proc.start()
    writer.close()
    try:
        if not reader.poll(UNPRIVILEGED_SECONDS):
            raise AssertionError(
                f"no result from the unprivileged child in {UNPRIVILEGED_SECONDS} s"
            )
        return reader.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder every user may enter (pytest's own is root-only under root)."""
    path = Path(tempfile.mkdtemp(prefix="speakerid-test-"))
    path.chmod(0o777)
    yield path
    for p in sorted(path.rglob("*"), reverse=True):
        if not p.is_symlink():
            p.chmod(0o777)
    shutil.rmtree(path, ignore_errors=True)


def embedding_corpus(
    n_speakers: int = 12,
    n_recordings: int = 3,
    per_recording: int = 5,
    dim: int = 32,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian clusters around random unit centres, projected back onto the sphere.

    ``noise`` is the per-dimension standard deviation. Recording labels ("r0", "r1", ...)
    repeat across speakers on purpose: they only mean something within a speaker.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_speakers, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    n = n_speakers * n_recordings * per_recording
    spk = np.repeat(np.arange(n_speakers), n_recordings * per_recording)
    rec = np.tile(np.repeat(np.arange(n_recordings), per_recording), n_speakers)
    x = centres[spk] + noise * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (
        x.astype(np.float32),
        np.array([f"spk{s}" for s in spk]),
        np.array([f"r{r}" for r in rec]),
    )
