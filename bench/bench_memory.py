"""Peak memory of `speakerid embed` on long recordings at several rates and formats.

Each case writes a synthetic recording (tone-and-noise bursts with pauses, the shape of
speech for the trimmer) block by block into a temporary folder, then runs
``python -m speakerid.cli embed FILE --out x.npz`` in a subprocess and reads that process's
peak resident memory (``ru_maxrss`` from ``os.wait4``). ``--whole`` also runs the whole-file
path (``load_audio`` + ``embed_waveform``, what every file took before streaming) on the
same file, for comparison. A baseline case embeds a 5-second file, i.e. what loading
Python, torch and the model costs before any audio.

Usage::

    python bench/bench_memory.py                 # the cases in CASES, streamed path only
    python bench/bench_memory.py --whole         # also the whole-file path (slow, GBs)
    python bench/bench_memory.py --minutes 5     # shorter recordings, for a quick look
    python bench/bench_memory.py --only "48 kHz stereo 16" --minutes 10   # one case
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import machine_line

# (label, rate Hz, channels, libsndfile subtype, minutes)
CASES = [
    ("16 kHz mono 16-bit wav", 16_000, 1, "PCM_16", 60.0),
    ("48 kHz stereo 16-bit wav", 48_000, 2, "PCM_16", 60.0),
    ("96 kHz stereo 24-bit wav", 96_000, 2, "PCM_24", 10.0),
    ("44.1 kHz stereo flac", 44_100, 2, "PCM_16", 60.0),
]
WHOLE = (
    "import sys; from speakerid.audio import load_audio; "
    "from speakerid.embedding.backends.torch import Embedder, load_model; "
    "e = Embedder(load_model(), device='cpu'); e.embed_waveform(load_audio(sys.argv[1]))"
)


def write_recording(path: Path, rate: int, channels: int, subtype: str, minutes: float) -> None:
    """A long recording written 10 s at a time, so this script stays small itself."""
    rng = np.random.default_rng(0)
    block = 10 * rate
    total = int(minutes * 60 * rate)
    fmt = "FLAC" if path.suffix == ".flac" else "WAV"
    with sf.SoundFile(str(path), "w", rate, channels, subtype=subtype, format=fmt) as fh:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / rate
            wav = 0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(0.3 * t)) * t)
            wav += 0.03 * rng.standard_normal(n)
            wav *= np.sin(2 * np.pi * 0.35 * t) > -0.4  # pauses
            fh.write(np.stack([wav * (1 - 0.2 * c) for c in range(channels)], axis=1))


def peak_rss(argv: list[str]) -> tuple[float, float, int]:
    """Run ``argv``; return (peak RSS in MB, wall seconds, exit status)."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stderr.read().decode(errors="replace"))
    return usage.ru_maxrss / 1024, wall, proc.returncode


def segments_case(tmp: Path, short: Path, minutes: float) -> None:
    """Peak RSS of ``identify FILE --segments`` on a long file, against a one-speaker store."""
    cli = [sys.executable, "-m", "speakerid.cli"]
    store = ["--store", str(tmp / "segments.sqlite")]
    path = tmp / "segments.wav"
    write_recording(path, 16_000, 1, "PCM_16", minutes)
    subprocess.run([*cli, "enroll", "someone", str(short), *store], check=True, capture_output=True)
    rss, wall, code = peak_rss([*cli, "identify", str(path), "--segments", "--json", *store])
    name = f"{minutes:g} min, 16 kHz mono 16-bit wav"
    size = path.stat().st_size / 1e6
    print(
        f"| {name} | {size:.0f} | identify --segments | {rss:.0f} | {wall:.1f} |"
        + ("" if code == 0 else f" exit {code}")
    )
    path.unlink()


def main() -> None:
    # The recordings here are synthetic voiced tones, which Silero (the default --vad) does
    # not take for speech; memory is measured with the energy rule, which keeps them.
    os.environ.setdefault("SPEAKERID_VAD", "energy")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, help="override every case's length")
    ap.add_argument("--whole", action="store_true", help="also run the whole-file path")
    ap.add_argument("--only", nargs="+", default=None, help="cases whose label has one of these")
    ap.add_argument(
        "--segments",
        type=float,
        default=None,
        metavar="MINUTES",
        help="also identify --segments on a 16 kHz mono file this long (one speaker enrolled)",
    )
    args = ap.parse_args()
    print(f"machine: {machine_line()}; model: the shipped default")
    print("| recording | file MB | path | peak RSS MB | wall s |")
    print("| --- | ---: | --- | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="speakerid-mem-") as tmp:
        short = Path(tmp) / "short.wav"
        write_recording(short, 16_000, 1, "PCM_16", 5 / 60)
        rss, wall, _ = peak_rss(
            [sys.executable, "-m", "speakerid.cli", "embed", str(short), "-o", f"{tmp}/x.npz"]
        )
        base = "5 s, 16 kHz mono (baseline: Python, the backend, model)"
        print(f"| {base} | 0.2 | embed | {rss:.0f} | {wall:.1f} |")
        if args.segments:
            segments_case(Path(tmp), short, args.segments)
        for label, rate, channels, subtype, minutes in CASES:
            if args.only and not any(word in label for word in args.only):
                continue
            minutes = args.minutes or minutes
            suffix = ".flac" if "flac" in label else ".wav"
            path = Path(tmp) / f"long{suffix}"
            write_recording(path, rate, channels, subtype, minutes)
            size = path.stat().st_size / 1e6
            name = f"{minutes:g} min, {label}"
            argv = [sys.executable, "-m", "speakerid.cli", "embed", str(path), "-o", f"{tmp}/x.npz"]
            rss, wall, code = peak_rss(argv)
            print(
                f"| {name} | {size:.0f} | embed (streamed) | {rss:.0f} | {wall:.1f} |"
                + ("" if code == 0 else f" exit {code}")
            )
            if args.whole:
                rss, wall, code = peak_rss([sys.executable, "-c", WHOLE, str(path)])
                print(
                    f"| {name} | {size:.0f} | whole file | {rss:.0f} | {wall:.1f} |"
                    + ("" if code == 0 else f" exit {code}")
                )
            path.unlink()


if __name__ == "__main__":
    main()
