"""Who speaks when, measured: ``identify --segments`` on conversations with known turns.

Each conversation is built from real recordings in ``../shared/data``: 4 enrolled speakers
and 1 unknown one take 20-40 turns (seeded) of 1-10 s, no speaker twice in a row, with
0.2-1.0 s of silence between turns. A turn is cut from the speaker's test recordings (never
the ones used to enroll them), each trimmed of leading and trailing silence and joined end
to end. Three sets:

- ``ravdess``: RAVDESS actors (eval-only, unseen by every model here): enrolled from four
  neutral/calm files as in the README; turns from their other files of normal intensity
  (all eight emotions, so acted anger and fear as well);
- ``read``: VCTK p225-p228, ARCTIC clb/slt and LibriSpeech 19, 26, 27 (read speech with many
  recordings each; enrolled from about 20 s of their first files). The shipped model saw
  these speakers in training, so this set flatters it;
- ``ami``: AMI far-field meeting segments of the speakers with at least two (enrolled from
  their first segment, about 10 s at least where they have it); also seen in training.

Scores, on a 10-ms grid over the reference speech (the turns): ``named right``, the
fraction of speech time whose label is the right enrolled name or "unknown" for the unknown
speaker; and a diarization error rate with names, (missed + false alarm + wrong name) /
speech time, with no collar and with a 0.25-s collar around reference boundaries.

    python bench/bench_segments.py --data ../shared/data --model PATH_OR_NAME
    python bench/bench_segments.py --data ../shared/data --sweep      # alternatives, dev seeds
    python bench/bench_segments.py --memory 10 60                     # peak RSS, minutes

JSON goes to ``docs/results/segments[_<tag>].json``; a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speakerid.audio import SAMPLE_RATE, frame_dbfs, load_audio, speech_frames
from speakerid.decision.scorer import window_threshold
from speakerid.decision.timeline import (
    SegmentConfig,
    WindowScores,
    identify_segments,
    score_windows,
    segment_scores,
)
from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.recognition import enroll
from speakerid.store.speakers import SpeakerStore

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
GRID = 0.01  # s, scoring resolution
COLLAR = 0.25  # s each side of a reference boundary, excluded in the collared DER
ENROLLED, UNKNOWN_SPEAKERS = 4, 1
TURNS = (20, 40)
TURN_SECONDS = (1.0, 10.0)
GAP_SECONDS = (0.2, 1.0)
READ_SPEAKERS = {
    "extra/vctk": ("p225", "p226", "p227", "p228"),
    "extra/cmu_arctic": ("clb", "slt"),
    "LibriSpeech/train-clean-100": ("19", "26", "27"),
}


@dataclass(frozen=True)
class Speaker:
    name: str
    enroll: list[Path]  # files to enroll from
    test: list[Path]  # files turns are cut from


# ---------------------------------------------------------------- the sets


def _speech_seconds(path: Path) -> float:
    return float(speech_frames(frame_dbfs(load_audio(path))).sum() * 0.03)


def _split(name: str, files: list[Path], enroll_seconds: float) -> Speaker | None:
    """The first files up to ``enroll_seconds`` of speech enroll; the rest are for turns."""
    got, k = 0.0, 0
    while k < len(files) - 1 and got < enroll_seconds:
        got += _speech_seconds(files[k])
        k += 1
    return Speaker(name, files[:k], files[k:]) if 0 < k < len(files) else None


def ravdess(data: Path) -> list[Speaker]:
    speakers = []
    for actor in sorted((data / "eval-only/ravdess").glob("Actor_*")):
        files = sorted(actor.glob("*.flac"))
        # name fields: modality-channel-emotion-intensity-statement-repetition-actor
        fields = {f: f.stem.split("-") for f in files}
        enroll_ = [
            f for f in files if fields[f][2] in ("01", "02") and fields[f][3:6:2] == ["01", "01"]
        ]
        test = [f for f in files if fields[f][3] == "01" and f not in enroll_]
        speakers.append(Speaker(actor.name.replace("_", ""), enroll_, test))
    return speakers


def read(data: Path) -> list[Speaker]:
    speakers = []
    for folder, names in READ_SPEAKERS.items():
        for name in names:
            files = sorted((data / folder / name).rglob("*.flac"))
            speaker = _split(name, files, 20.0)
            if speaker:
                speakers.append(speaker)
    return speakers


def ami(data: Path) -> list[Speaker]:
    speakers = []
    for folder in sorted((data / "extra/ami").iterdir()):
        files = sorted(folder.glob("*.flac"))
        speaker = _split(folder.name, files, 10.0) if len(files) >= 2 else None
        if speaker:
            speakers.append(speaker)
    return speakers


SETS = {"ravdess": ravdess, "read": read, "ami": ami}


# ---------------------------------------------------------------- conversations


@dataclass(frozen=True)
class Conversation:
    wav: np.ndarray
    turns: list[tuple[float, float, str]]  # start s, end s, enrolled name or "unknown"
    enrolled: list[Speaker]


def _trimmed(path: Path) -> np.ndarray:
    """A recording without its leading and trailing silence (the pauses inside stay)."""
    wav = load_audio(path)
    keep = np.flatnonzero(speech_frames(frame_dbfs(wav)))
    return wav[keep[0] * 480 : (keep[-1] + 1) * 480] if len(keep) else wav[:0]


def build(speakers: list[Speaker], rng: np.random.Generator) -> Conversation:
    chosen = [speakers[i] for i in rng.permutation(len(speakers))[: ENROLLED + UNKNOWN_SPEAKERS]]
    enrolled = chosen[:ENROLLED]  # the rest are unknown to the store
    pools = {s.name: [_trimmed(f) for f in rng.permutation(s.test)] for s in chosen}
    cursor = dict.fromkeys(pools, 0)
    parts, turns, t, last = [], [], 0.0, None
    for _ in range(int(rng.integers(TURNS[0], TURNS[1] + 1))):
        who = rng.choice([s.name for s in chosen if s.name != last])
        need = int(rng.uniform(*TURN_SECONDS) * SAMPLE_RATE)
        audio = []
        while sum(map(len, audio)) < need:  # the speaker's recordings in turn, cycling
            pool = pools[who]
            audio.append(pool[cursor[who] % len(pool)])
            cursor[who] += 1
        turn = np.concatenate(audio)[:need]
        gap = np.zeros(int(rng.uniform(*GAP_SECONDS) * SAMPLE_RATE), np.float32)
        parts += [turn, gap]
        label = who if who in {s.name for s in enrolled} else "unknown"
        turns.append((t, t + need / SAMPLE_RATE, label))
        t += (need + len(gap)) / SAMPLE_RATE
        last = who
    return Conversation(np.concatenate(parts), turns, enrolled)


# ---------------------------------------------------------------- scoring


def _grid(spans: list[tuple[float, float, str]], names: list[str], n: int) -> np.ndarray:
    out = np.full(n, -1, dtype=np.int64)
    for start, end, who in spans:
        out[round(start / GRID) : round(end / GRID)] = names.index(who)
    return out


def score(conv: Conversation, hyp: list[tuple[float, float, str]]) -> dict[str, float]:
    names = [s.name for s in conv.enrolled] + ["unknown"]
    n = round(len(conv.wav) / SAMPLE_RATE / GRID) + 1
    ref, got = _grid(conv.turns, names, n), _grid(hyp, names, n)
    out = {}
    for tag, keep in (("", np.ones(n, bool)), ("_collar", _outside_collar(conv.turns, n))):
        r, h = ref[keep], got[keep]
        speech = (r >= 0).sum()
        out["named_right" + tag] = float(((r >= 0) & (h == r)).sum() / speech)
        out["miss" + tag] = float(((r >= 0) & (h < 0)).sum() / speech)
        out["false_alarm" + tag] = float(((r < 0) & (h >= 0)).sum() / speech)
        out["wrong_name" + tag] = float(((r >= 0) & (h >= 0) & (h != r)).sum() / speech)
        out["der" + tag] = out["miss" + tag] + out["false_alarm" + tag] + out["wrong_name" + tag]
    unknown = ref == len(names) - 1
    out["unknown_named_unknown"] = float((got[unknown] == len(names) - 1).mean())
    out["speech_seconds"] = float((ref >= 0).sum() * GRID)
    return out


def _outside_collar(turns: list[tuple[float, float, str]], n: int) -> np.ndarray:
    keep = np.ones(n, bool)
    c = round(COLLAR / GRID)
    for start, end, _ in turns:
        for edge in (round(start / GRID), round(end / GRID)):
            keep[max(0, edge - c) : edge + c] = False
    return keep


# ---------------------------------------------------------------- runs


def enrolled_store(path: Path, embedder: Embedder, speakers: list[Speaker]) -> SpeakerStore:
    store = SpeakerStore(path)
    for s in speakers:
        enroll(store, embedder, s.name, [str(f) for f in s.enroll])
    return store


def conversations(data: Path, set_name: str, n: int, seed: int) -> list[Conversation]:
    speakers = SETS[set_name](data)
    rng = np.random.default_rng(seed)
    return [build(speakers, rng) for _ in range(n)]


def window_scores(
    conv: Conversation, embedder: Embedder, cfg: SegmentConfig, workdir: Path
) -> tuple[WindowScores, list[str]]:
    """Steps 1-3 of ``identify_segments`` (the costly part), kept to try several smoothings."""
    path = workdir / f"store_{id(conv)}.sqlite"
    store = SpeakerStore(path) if path.exists() else enrolled_store(path, embedder, conv.enrolled)
    with store:
        names, refs = store.matrix()
    chunks = lambda: iter([conv.wav])  # noqa: E731
    return score_windows(chunks, embedder.embed_fragments, refs, cfg), names


def evaluate(
    convs: list[Conversation],
    embedder: Embedder,
    cfg: SegmentConfig,
    threshold: float,
    workdir: Path,
    cache: dict,
) -> dict[str, float]:
    rows = []
    for conv in convs:
        key = (id(conv), cfg.window, cfg.hop, cfg.fit)
        if key not in cache:
            cache[key] = window_scores(conv, embedder, cfg, workdir)
        windows, names = cache[key]
        segs = segment_scores(windows, names, threshold, cfg)
        hyp = [(s.start, s.end, s.speaker or "unknown") for s in segs]
        rows.append(score(conv, hyp))
    total = sum(r["speech_seconds"] for r in rows)
    return {
        k: (
            total
            if k == "speech_seconds"
            else sum(r[k] * r["speech_seconds"] for r in rows) / total
        )
        for k in rows[0]
    }


def main_eval(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    embedder = Embedder(model, device="cpu", precision=args.precision)
    cfg = SegmentConfig(
        **{
            k: v
            for k, v in vars(args).items()
            if k in SegmentConfig.__dataclass_fields__ and v is not None
        }
    )
    threshold = window_threshold(model.threshold, args.threshold, cfg.threshold_offset)
    # The sweep tries offsets from the model's own threshold (or from --threshold).
    base_threshold = window_threshold(model.threshold, args.threshold, 0.0)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "model": str(model.path),
        "fingerprint": model.fingerprint,
        "threshold": threshold,
        "model_threshold": model.threshold,
        "config": asdict(cfg),
        "conversations": args.conversations,
        "seed": args.seed,
        "sets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for set_name in args.sets:
            start = time.perf_counter()
            convs = conversations(args.data, set_name, args.conversations, args.seed)
            cache: dict = {}
            if args.sweep:
                report["sets"][set_name] = sweep(
                    convs, embedder, cfg, base_threshold, Path(tmp), cache, args.feeds
                )
                continue
            result = evaluate(convs, embedder, cfg, threshold, Path(tmp), cache)
            result["turns"] = sum(len(c.turns) for c in convs)
            result["seconds"] = time.perf_counter() - start
            report["sets"][set_name] = result
            print(
                f"{set_name}: {json.dumps({k: round(v, 4) for k, v in result.items()})}",
                file=sys.stderr,
            )
    tag = f"_{args.tag}" if args.tag else ""
    out = RESULTS / f"segments{'_sweep' if args.sweep else ''}{tag}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.sweep:
        print(markdown(report))
    print(f"wrote {out}", file=sys.stderr)


def sweep(
    convs: list[Conversation],
    embedder: Embedder,
    base: SegmentConfig,
    threshold: float,
    workdir: Path,
    cache: dict,
    feed_specs: list[str],
) -> list[dict]:
    """Alternatives on the same conversations: how windows are fed, then the smoothing."""
    rows = []
    feeds = [(float(w), float(h), fit) for w, h, fit in (f.split(":") for f in feed_specs)]
    for (window, hop, fit), penalty, min_seg, offset in itertools.product(
        feeds, (0.0, 0.3, 0.6, 1.0), (0.0, 1.0), (-0.3, -0.2, -0.15, -0.1, 0.0)
    ):
        cfg = replace(
            base, window=window, hop=hop, fit=fit, switch_penalty=penalty, min_segment=min_seg
        )
        result = evaluate(convs, embedder, cfg, threshold + offset, workdir, cache)
        row = {
            **asdict(cfg),
            "threshold_offset": offset,
            **{k: round(v, 4) for k, v in result.items()},
        }
        rows.append(row)
        print(
            f"{window} {hop} {fit:6} pen {penalty} min {min_seg} thr{offset:+} -> named "
            f"{result['named_right']:.3f} der {result['der']:.3f}",
            file=sys.stderr,
        )
    return rows


def markdown(report: dict) -> str:
    lines = [
        "| set | conversations | turns | speech (s) | named right | DER | miss | false alarm | "
        "wrong name | DER, 0.25-s collar | unknown speech named unknown |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report["sets"].items():
        lines.append(
            f"| {name} | {report['conversations']} | {r['turns']} | {r['speech_seconds']:.0f} | "
            f"{r['named_right']:.3f} | {r['der']:.3f} | {r['miss']:.3f} | {r['false_alarm']:.3f} | "
            f"{r['wrong_name']:.3f} | {r['der_collar']:.3f} | {r['unknown_named_unknown']:.3f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- memory


def main_memory(args: argparse.Namespace) -> None:
    """Peak RSS of ``identify_segments`` on files of several lengths, each in a fresh process."""
    speakers = ravdess(args.data)
    rng = np.random.default_rng(args.seed)
    conv = build(speakers, rng)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "store.sqlite"
        embedder = Embedder(load_model(args.model), device="cpu", precision=args.precision)
        enrolled_store(store_path, embedder, conv.enrolled).close()
        for minutes in args.memory:
            path = Path(tmp) / f"long_{minutes}.flac"
            with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16") as fh:
                written = 0
                while written < minutes * 60 * SAMPLE_RATE:  # the conversation, repeated
                    part = conv.wav[: minutes * 60 * SAMPLE_RATE - written]
                    fh.write(part)
                    written += len(part)
            cmd = [sys.executable, __file__, "--rss-child", str(path), str(store_path)]
            cmd += ["--precision", args.precision, "--threads", str(args.threads)]
            cmd += ["--model", args.model] if args.model else []
            child = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            )
            rows.append({"minutes": minutes, **child})
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {"command": " ".join(["python", *sys.argv]), "machine": "2-core CPU", "runs": rows}
    tag = f"_{args.tag}" if args.tag else ""
    (RESULTS / f"segments_memory{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| audio (min) | peak RSS (MiB) | wall (s) | audio s / s | segments |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['minutes']} | {r['peak_rss_mib']:.0f} | {r['seconds']:.1f} | "
            f"{r['minutes'] * 60 / r['seconds']:.0f} | {r['segments']} |"
        )


def rss_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    audio, store_path = args.rss_child
    embedder = Embedder(load_model(args.model), device="cpu", precision=args.precision)
    start = time.perf_counter()
    with SpeakerStore(store_path) as store:
        timeline = identify_segments(store, embedder, audio)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "peak_rss_mib": peak_kib / 1024,
                "seconds": seconds,
                "segments": len(timeline.segments),
            }
        )
    )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument(
        "--model", default=None, help="checkpoint path (or a registry name); default: shipped"
    )
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--conversations", type=int, default=5, help="per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="", help="suffix of the JSON file name")
    for field in SegmentConfig.__dataclass_fields__:
        p.add_argument(
            f"--{field.replace('_', '-')}",
            dest=field,
            default=None,
            type=str if field == "fit" else float,
        )
    p.add_argument("--sweep", action="store_true", help="measure alternatives (use a dev --seed)")
    p.add_argument(
        "--feeds",
        nargs="+",
        default=["1.5:0.75:tile", "1.5:0.75:direct", "3.0:0.75:tile", "1.0:0.5:tile"],
        help="--sweep: WINDOW:HOP:FIT alternatives",
    )
    p.add_argument("--memory", type=int, nargs="+", default=None, metavar="MINUTES")
    p.add_argument("--rss-child", nargs=2, default=None, help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    arguments = parse()
    if arguments.rss_child:
        rss_child(arguments)
    elif arguments.memory:
        main_memory(arguments)
    else:
        main_eval(arguments)
