"""What the benchmarks share: their speakers and files, the Resemblyzer peer, the machine.

- the shipped split's held-out LibriSpeech speakers (``held_out_speakers``, ``libri_bank``),
  training runs that hold out the same ones (``load_run``), trimmed trial files
  (``trimmed``, ``ravdess_files``);
- ``Resemblyzer``: its ``VoiceEncoder`` run the same way wherever it is compared;
- ``machine`` / ``machine_line``: the CPU, cores, load and versions a result was measured on;
- ``at_threshold`` and ``write_json`` for reports.

Trials and error rates are deliberately not here: benchmarks score with the package's own
(``speakerid.decision.calibration.pair_trials`` over all pairs of recordings,
``speakerid.lab.metrics.verification_trials`` over fragments, ``eer_point``, ``rates_at``,
``verification_summary``), so that a benchmark measures exactly what the product computes.
Scripts import this as ``common`` (``python bench/x.py`` puts ``bench/`` on the path).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerid.audio import SAMPLE_RATE, load_audio, trim_silence
from speakerid.decision.calibration import rates_at
from speakerid.errors import AudioError

if TYPE_CHECKING:  # torch: imported by the functions that need it, so that the machine
    # description stays light for bench_memory, whose children inherit its peak RSS
    from speakerid.encoders.twin import LoadedModel
    from speakerid.lab.data import AudioBank

LIBRI = "LibriSpeech/train-clean-100"
RAVDESS = "eval-only/ravdess"
RESEMBLYZER_DBFS = -30.0  # Resemblyzer's audio_norm_target_dBFS (raised to, never lowered)
# Trial files keep at least 1 s of speech after trimming: the CLI's minimum when the
# published tables were made, fixed here so that the trials (and the numbers) do not move
# when the CLI's minimum does (it is 0.5 s now).
TRIAL_MIN_SAMPLES = SAMPLE_RATE

# ----------------------------------------------------------------------- speakers and files


def held_out_speakers(model: LoadedModel) -> list[str]:
    """The model's held-out test speakers as LibriSpeech folder names (``corpus:`` dropped)."""
    listed = model.info.get("split", {}).get("test", [])
    if not listed:
        sys.exit(f"{model.path}: the checkpoint records no test speakers")
    return sorted(s.rsplit(":", 1)[-1] for s in listed)


def libri_bank(data: Path, speakers: Sequence[str]) -> AudioBank:
    """Trimmed recordings of ``speakers`` from LibriSpeech train-clean-100 under ``data``."""
    from speakerid.lab.data import AudioBank, scan_corpus

    recordings = scan_corpus(data / LIBRI)
    bank = AudioBank.load(recordings, list(speakers))
    missing = sorted(set(speakers) - set(bank.speakers))
    if missing:
        sys.exit(f"test speakers missing from {data / LIBRI}: {missing}")
    return bank


def load_run(runs_dir: Path, name: str, speakers: Sequence[str]) -> LoadedModel:
    """A run's ``best.safetensors``, refused unless it holds out the same test speakers."""
    from speakerid.encoders.twin import load_encoder

    path = runs_dir / name / "best.safetensors"
    if not path.is_file():
        sys.exit(f"{path}: no such run (train it with bench/train_runs.py, or pass --runs-dir)")
    model = load_encoder(path)
    if held_out_speakers(model) != list(speakers):
        sys.exit(f"{name}: holds out other test speakers than the shipped model")
    return model


def trimmed(files: Sequence[Path], vad: str = "energy") -> tuple[list[Path], list[np.ndarray]]:
    """Load and trim by ``vad`` (``audio.VADS``), keeping the files with at least
    ``TRIAL_MIN_SAMPLES`` of speech (one the VAD finds no speech in is left out too)."""
    kept = []
    for f in files:
        try:
            wav = trim_silence(load_audio(f), name=str(f), vad=vad)
        except AudioError:
            continue
        if len(wav) >= TRIAL_MIN_SAMPLES:
            kept.append((f, wav))
    return [f for f, _ in kept], [w for _, w in kept]


def ravdess_files(root: Path, per_actor: int, seed: int) -> list[Path]:
    """RAVDESS files, at most ``per_actor`` per actor (a seeded subset; 0 = all)."""
    rng = np.random.default_rng(seed)
    out: list[Path] = []
    for actor in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(actor.glob("*.flac"))
        if per_actor and len(files) > per_actor:
            files = [files[i] for i in sorted(rng.choice(len(files), per_actor, replace=False))]
        out += files
    if not out:
        sys.exit(f"{root}: no Actor_NN/*.flac files")
    return out


# ------------------------------------------------------------------------------ Resemblyzer


class Resemblyzer:
    """Resemblyzer's ``VoiceEncoder`` on CPU (as many threads as torch is set to).

    It gets the arrays our models get, raised to -30 dBFS when quieter (its
    ``preprocess_wav`` volume step; its VAD is not applied to audio already trimmed).
    """

    def __init__(self) -> None:
        from resemblyzer import VoiceEncoder
        from resemblyzer.audio import normalize_volume

        self.encoder = VoiceEncoder("cpu", verbose=False)
        self._normalize = normalize_volume

    def utterance(self, wav: np.ndarray) -> np.ndarray:
        """``(samples,)`` 16 kHz speech -> ``(256,)`` unit vector."""
        wav = self._normalize(wav, RESEMBLYZER_DBFS, increase_only=True).astype(np.float32)
        return self.encoder.embed_utterance(wav)

    def fragments(self, waves: np.ndarray) -> np.ndarray:
        """``(n, FRAGMENT_SAMPLES)`` -> ``(n, 256)``, each fragment as one utterance."""
        return np.stack([self.utterance(w) for w in waves]).astype(np.float32)

    def file_audio(self, wav: np.ndarray) -> np.ndarray:
        """Untrimmed 16 kHz audio through Resemblyzer's own ``preprocess_wav`` (VAD too)."""
        from resemblyzer import preprocess_wav

        return self.encoder.embed_utterance(preprocess_wav(wav))


# ---------------------------------------------------------------------------------- machine


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _loadavg() -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ()


def machine() -> dict[str, str | int]:
    """CPU model and core count (lscpu), load average now, Python, numpy and (when torch is
    already imported) torch versions and the GPU's name."""
    fields = _lscpu()
    info: dict[str, str | int] = {
        "cpu": fields.get("Model name", platform.processor() or "unknown"),
        "cpus": int(fields.get("CPU(s)", 0) or 0) or (os.cpu_count() or 0),
        "load_average": " ".join(f"{x:.2f}" for x in _loadavg()),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    torch = sys.modules.get("torch")  # described, never imported here for the description
    if torch is not None:
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_peak(seconds: float, **fields: object) -> None:
    """What a measuring child process prints last: one JSON line with its peak RSS (MiB),
    the seconds its work took and ``fields``; the parent reads it from stdout."""
    import resource

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_mib": peak_kib / 1024, "seconds": seconds, **fields}))


def machine_line() -> str:
    """One line: CPU model and CPU count as lscpu reports them, OS, Python."""
    fields = _lscpu()
    if fields:
        cpu = f"{fields.get('Model name', 'unknown CPU')}, {fields.get('CPU(s)', '?')} CPU(s)"
    else:
        cpu = f"{platform.processor() or 'unknown CPU'}"
    return f"{cpu}; {platform.system()} {platform.release()}; Python {platform.python_version()}"


# ---------------------------------------------------------------------------------- reports


def at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Miss and false-alarm rates of trials at a model's own threshold (``rates_at``)."""
    false_alarm, miss = rates_at(scores, labels, threshold)
    return {"miss": miss, "false_alarm": false_alarm}


def command_line(argv: Sequence[str] | None = None) -> str:
    """The running benchmark as a command to rerun from the repository's root: ``python
    bench/NAME.py ARGS``, quoted for a shell, each argument that names an existing file or
    folder written relative to the root (the data beside it: ``../shared/data``), wherever
    the benchmark was started from."""
    argv = list(sys.argv if argv is None else argv)
    root = Path(__file__).resolve().parent.parent

    def relative(arg: str) -> str:
        path = Path(arg)
        if arg.startswith("-") or not (path.exists() or (path.parent.is_dir() and path.suffix)):
            return arg
        return os.path.relpath(path.resolve(), root)

    return shlex.join(["python", relative(argv[0]), *map(relative, argv[1:])])


def write_json(path: Path, report: dict) -> None:
    """``report`` as indented JSON at ``path`` (folders made), logged to stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
