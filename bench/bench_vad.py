"""What Silero VAD costs beside embedding: its time as a share of the embedding time, one thread.

For each file: the energy rule's trimming, Silero VAD's trimming, and the embedding of the
trimmed speech's fragments (the default model, torch fp32, one thread), timed in turn
(interleaved, so that load on the machine falls on all three alike). The VAD reads the
whole recording, silence included; the encoder reads the fragments of the speech kept.

    python bench/bench_vad.py --data ../shared/data --files 40
    python bench/bench_vad.py --data ../shared/data --refusals   # files each VAD refuses
    python bench/bench_vad.py --data ../shared/data --graphs --files 5  # sequence vs stream
    python bench/bench_vad.py --data ../shared/data --memory 60   # peak RSS, an hour-long file

Files: ``--files`` recordings spread evenly over each of LibriSpeech (the 40 held-out test
speakers), RAVDESS, AMI and VCTK. JSON to ``docs/results/vad_cost.json``
(``vad_refusals.json`` with ``--refusals``, over every file of each corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import print_peak

from speakerid.audio import MIN_SPEECH_SECONDS, load_audio, prepare, trim_silence
from speakerid.audio.vad import SileroVAD
from speakerid.errors import AudioError

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
CORPORA = {
    "librispeech": "LibriSpeech/train-clean-100",
    "ravdess": "eval-only/ravdess",
    "ami": "extra/ami",
    "vctk": "extra/vctk",
}


def files_of(data: Path, corpus: str, n: int, test_speakers: set[str]) -> list[Path]:
    files = sorted((data / CORPORA[corpus]).rglob("*.flac"))
    if corpus == "librispeech":
        files = [f for f in files if f.parts[-3] in test_speakers]
    step = max(1, len(files) // n)
    return files[::step][:n]


def refusals(data: Path) -> dict:
    """Every file of each corpus: how many keep less than the CLI's minimum of speech (so are
    refused) by each VAD, and the median seconds of speech each keeps."""
    out = {}
    for corpus, folder in CORPORA.items():
        kept: dict[str, list[float]] = {"energy": [], "silero": []}
        for path in sorted((data / folder).rglob("*.flac")):
            wav = load_audio(path)
            for vad, seconds in kept.items():
                try:
                    seconds.append(len(trim_silence(wav, str(path), vad=vad)) / 16_000)
                except AudioError:
                    seconds.append(0.0)
        out[corpus] = {
            "files": len(kept["energy"]),
            **{
                f"{vad}_refused": int(np.sum(np.array(s) < MIN_SPEECH_SECONDS))
                for vad, s in kept.items()
            },
            **{f"{vad}_median_seconds": float(np.median(s)) for vad, s in kept.items()},
        }
        print(corpus, json.dumps(out[corpus]), file=sys.stderr)
    return out


def graphs(data: Path, n: int, test: set[str], repeats: int = 3) -> dict:
    """Silero's sequence graph against its streaming graph on the same 16-kHz audio (files of
    every corpus joined), timed in turn ``repeats`` times: seconds per second of audio."""
    wav = np.concatenate(
        [load_audio(p) for corpus in CORPORA for p in files_of(data, corpus, n, test)]
    )
    sequence, stream = SileroVAD(sequence=True), SileroVAD(sequence=False)
    times: dict[str, list[float]] = {"sequence": [], "stream": []}
    probs = {}
    for _ in range(repeats):
        for name, vad in (("sequence", sequence), ("stream", stream)):
            seconds, probs[name] = timed(vad.probabilities, [wav])
            times[name].append(seconds / (len(wav) / 16_000))
    return {
        "audio_seconds": len(wav) / 16_000,
        "rtf": {k: float(np.median(v)) for k, v in times.items()},
        "max_probability_difference": float(np.abs(probs["sequence"] - probs["stream"]).max()),
    }


def rss_child(path: str) -> None:
    """In a fresh process: Silero's voice activity over a long file, streamed the way
    ``identify --segments`` reads it; prints its peak RSS and time as JSON."""
    from speakerid.audio import stream_audio
    from speakerid.decision.timeline import voice_activity

    start = time.perf_counter()
    voiced, samples, _ = voice_activity(stream_audio(path), vad="silero")
    seconds = time.perf_counter() - start
    print_peak(seconds, audio_seconds=samples / 16_000, voiced_share=float(voiced.mean()))


def long_file_memory(data: Path, minutes: int, out: Path) -> dict:
    """An ``minutes``-long file of VCTK speech with pauses (its files joined, repeated), and
    the peak RSS of Silero's voice activity over it in a fresh process."""
    files = sorted((data / CORPORA["vctk"]).rglob("*.flac"))
    pause = np.zeros(16_000, np.float32)
    loop = np.concatenate([x for f in files for x in (load_audio(f), pause)])
    with sf.SoundFile(str(out), "w", 16_000, 1, subtype="PCM_16") as fh:
        left = minutes * 60 * 16_000
        while left > 0:
            fh.write(loop[:left])
            left -= min(left, len(loop))
    cmd = [sys.executable, __file__, "--rss-child", str(out)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--files", type=int, default=40, help="per corpus")
    ap.add_argument("--model", default="accurate")
    ap.add_argument("--out", type=Path, default=RESULTS / "vad_cost.json")
    ap.add_argument(
        "--memory",
        type=int,
        default=0,
        metavar="MINUTES",
        help="instead: peak RSS of Silero's voice activity over a file this long",
    )
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--graphs",
        action="store_true",
        help="instead: Silero's sequence graph against its streaming graph (time, agreement)",
    )
    ap.add_argument(
        "--refusals",
        action="store_true",
        help="instead: on every file, how many each VAD refuses (under --min-speech's 0.5 s)",
    )
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            run = long_file_memory(args.data, args.memory, Path(tmp) / "long.flac")
        report = {
            "command": " ".join(["python", *sys.argv]),
            "machine": "2-core CPU (shared), 1 thread",
            "minutes": args.memory,
            **run,
        }
        (RESULTS / "vad_memory.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report, indent=1))
        return
    if args.graphs:
        from speakerid.embedding.backends.torch import load_model

        test = {s.rsplit(":", 1)[-1] for s in load_model(args.model).info["split"]["test"]}
        report = {
            "command": " ".join(["python", *sys.argv]),
            "machine": "2-core CPU (shared), 1 thread",
            "load_average": os.getloadavg(),
            **graphs(args.data, args.files, test),
        }
        (RESULTS / "vad_graphs.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report, indent=1))
        return
    if args.refusals:
        report = {"command": " ".join(["python", *sys.argv]), "corpora": refusals(args.data)}
        (RESULTS / "vad_refusals.json").write_text(json.dumps(report, indent=1) + "\n")
        print(
            "| corpus | files | refused: energy | refused: silero | median s kept: energy "
            "| median s kept: silero |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, r in report["corpora"].items():
            print(
                f"| {name} | {r['files']} | {r['energy_refused']} | {r['silero_refused']} | "
                f"{r['energy_median_seconds']:.2f} | {r['silero_median_seconds']:.2f} |"
            )
        return
    import torch  # here: the --rss-child process must not hold it

    from speakerid.embedding.backends.torch import Embedder, load_model

    torch.set_num_threads(1)
    model = load_model(args.model)
    embedder = Embedder(model, device="cpu", precision="fp32")
    test = {s.rsplit(":", 1)[-1] for s in model.info["split"]["test"]}
    SileroVAD().probabilities([np.zeros(16_000, np.float32)])  # warm both
    embedder.embed_fragments(np.zeros((1, 48_000), np.float32))
    rows = {}
    for corpus in CORPORA:
        totals = {
            "audio": 0.0,
            "energy": 0.0,
            "silero": 0.0,
            "embed": 0.0,
            "fragments": 0,
            "no_speech": 0,
        }
        for path in files_of(args.data, corpus, args.files, test):
            wav = load_audio(path)
            t_energy, _ = timed(trim_silence, wav, str(path), vad="energy")
            start = time.perf_counter()
            try:
                speech = trim_silence(wav, str(path), vad="silero")
                t_silero = time.perf_counter() - start
                fragments = prepare(speech, str(path), trim=False)
            except AudioError:  # too little speech to Silero: its time counts, nothing embeds
                totals["silero"] += time.perf_counter() - start
                totals["audio"] += len(wav) / 16_000
                totals["no_speech"] += 1
                continue
            t_embed, _ = timed(embedder.embed_fragments, fragments)
            totals["audio"] += len(wav) / 16_000
            totals["energy"] += t_energy
            totals["silero"] += t_silero
            totals["embed"] += t_embed
            totals["fragments"] += len(fragments)
        totals["silero_share"] = totals["silero"] / totals["embed"]
        totals["energy_share"] = totals["energy"] / totals["embed"]
        rows[corpus] = totals
        print(corpus, json.dumps({k: round(v, 4) for k, v in totals.items()}), file=sys.stderr)
    all_ = {k: sum(r[k] for r in rows.values()) for k in ("audio", "energy", "silero", "embed")}
    all_["silero_share"] = all_["silero"] / all_["embed"]
    all_["energy_share"] = all_["energy"] / all_["embed"]
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": "2-core CPU (shared), 1 thread",
        "load_average": os.getloadavg(),
        "model": args.model,
        "corpora": rows,
        "all": all_,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print("| corpus | audio (s) | embed (s) | Silero VAD (s) | Silero / embed | energy / embed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in {**rows, "all": all_}.items():
        print(
            f"| {name} | {r['audio']:.0f} | {r['embed']:.1f} | {r['silero']:.2f} | "
            f"{100 * r['silero_share']:.1f}% | {100 * r['energy_share']:.2f}% |"
        )


if __name__ == "__main__":
    main()
