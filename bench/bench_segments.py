"""Who speaks when, measured: ``identify --segments`` on conversations with known turns.

Each conversation is built from real recordings in ``../shared/data``: 4 enrolled speakers
and 1 unknown one take 20-40 turns (seeded) of 1-10 s, no speaker twice in a row, with
0.2-1.0 s of silence between turns. A turn is cut from the speaker's test recordings (never
the ones used to enroll them), each trimmed of leading and trailing silence and joined end
to end. Five sets:

- ``ravdess``: RAVDESS actors (eval-only, unseen by every model here): enrolled from four
  neutral/calm files as in the README; turns from their other files of normal intensity
  (all eight emotions, so acted anger and fear as well);
- ``read``: VCTK p225-p228, ARCTIC clb/slt and LibriSpeech 19, 26, 27 (read speech with many
  recordings each; enrolled from about 20 s of their first files). The ``fast`` model saw
  these speakers in training, so this set flatters it;
- ``ami``: AMI far-field meeting segments of the speakers with at least two (enrolled from
  their first segment, about 10 s at least where they have it); also seen by ``fast``;
- ``short``: the ``ravdess`` speakers with turns of 1-3 s;
- ``noisy``: the ``ravdess`` conversations with background noise at 10 dB SNR (speech power
  over the turns against noise power): the non-speech parts of the AMI segments and of the
  three long LibriSpeech chapters (stretches of at least 0.5 s where Silero VAD gives every
  32-ms chunk a speech probability under 0.1, less 0.1 s at each edge), joined and looped
  from a seeded offset.

Each set is drawn with every ``--seeds`` seed (``--conversations`` per seed). Scores, on a
10-ms grid over the reference speech (the turns): ``named right``, the fraction of speech
time whose label is the right enrolled name or "unknown" for the unknown speaker; and a
diarization error rate with names, (missed + false alarm + wrong name) / speech time, with
no collar and with a 0.25-s collar around reference boundaries. Each seed's conversations
are pooled (speech-time weighted); the report gives the mean over seeds, their standard
deviation and range, and the standard deviation over single conversations.

The store's speakers are enrolled with ``--vad`` (the runtime's default, Silero); the
timeline finds speech with its own ``--timeline-vad`` (``SegmentConfig``'s default unless
given), as ``identify --segments`` does.

    python bench/bench_segments.py --data ../shared/data --seeds 0 1 2 3 4 --conversations 2
    python bench/bench_segments.py --data ../shared/data --timeline-vad silero --tag silero
    python bench/bench_segments.py --data ../shared/data --sweep --seeds 100 101  # alternatives
    python bench/bench_segments.py --memory 10 60                           # peak RSS, minutes

JSON goes to ``docs/results/segments[_<tag>].json``; a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from common import print_peak

from speakerid.audio import (
    DEFAULT_VAD,
    SAMPLE_RATE,
    VADS,
    frame_dbfs,
    load_audio,
    prepare,
    speech_frames,
)
from speakerid.audio.vad import CHUNK_SECONDS, SileroVAD
from speakerid.decision.scorer import window_threshold
from speakerid.decision.timeline import (
    SegmentConfig,
    WindowScores,
    identify_segments,
    score_windows,
    segment_scores,
)
from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.embedding.pipeline import open_embedder
from speakerid.errors import AudioError
from speakerid.recognition import enroll
from speakerid.store.speakers import SpeakerStore

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
GRID = 0.01  # s, scoring resolution
COLLAR = 0.25  # s each side of a reference boundary, excluded in the collared DER
ENROLLED, UNKNOWN_SPEAKERS = 4, 1
TURNS = (20, 40)
TURN_SECONDS = (1.0, 10.0)
SHORT_TURN_SECONDS = (1.0, 3.0)  # the ``short`` set's turns
GAP_SECONDS = (0.2, 1.0)
NOISE_SNR_DB = 10.0  # the ``noisy`` set: speech power over noise power
NOISE_MAX_PROBABILITY = 0.1  # a noise stretch: Silero's probability stays below this ...
NOISE_MIN_SECONDS = 0.5  # ... for at least this long
NOISE_EDGE_SECONDS = 0.1  # taken off both ends of each stretch (onsets, breaths)
NOISE_CHAPTERS = ("19", "26", "27")  # the long LibriSpeech chapters' speakers
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


@dataclass(frozen=True)
class SetSpec:
    speakers: Callable[[Path], list[Speaker]]
    turn_seconds: tuple[float, float] = TURN_SECONDS
    noisy: bool = False


SETS = {
    "ravdess": SetSpec(ravdess),
    "read": SetSpec(read),
    "ami": SetSpec(ami),
    "short": SetSpec(ravdess, SHORT_TURN_SECONDS),
    "noisy": SetSpec(ravdess, noisy=True),
}


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


def build(
    speakers: list[Speaker],
    rng: np.random.Generator,
    turn_seconds: tuple[float, float] = TURN_SECONDS,
    n_turns: tuple[int, int] = TURNS,
) -> Conversation:
    chosen = [speakers[i] for i in rng.permutation(len(speakers))[: ENROLLED + UNKNOWN_SPEAKERS]]
    enrolled = chosen[:ENROLLED]  # the rest are unknown to the store
    pools = {s.name: [_trimmed(f) for f in rng.permutation(s.test)] for s in chosen}
    cursor = dict.fromkeys(pools, 0)
    parts, turns, t, last = [], [], 0.0, None
    for _ in range(int(rng.integers(n_turns[0], n_turns[1] + 1))):
        who = rng.choice([s.name for s in chosen if s.name != last])
        need = int(rng.uniform(*turn_seconds) * SAMPLE_RATE)
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
    # nan for a conversation where the unknown speaker took no turn (pooled by its time)
    out["unknown_named_unknown"] = (
        float((got[unknown] == len(names) - 1).mean()) if unknown.any() else float("nan")
    )
    out["unknown_seconds"] = float(unknown.sum() * GRID)
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


@functools.cache
def _usable(path: Path) -> bool:
    """Whether both VADs find enough speech in ``path`` to embed it."""
    wav = load_audio(path)
    try:
        for vad in ("energy", "silero"):
            prepare(wav, str(path), vad=vad)
    except AudioError:
        return False
    return True


def enrolled_store(path: Path, embedder: Embedder, speakers: list[Speaker]) -> SpeakerStore:
    """Each speaker enrolled from their enrollment files, less those a VAD finds too little
    speech in (as ``enroll-dir`` skips them; the same files whichever VAD runs)."""
    store = SpeakerStore(path)
    for s in speakers:
        enroll(store, embedder, s.name, [str(f) for f in s.enroll if _usable(f)])
    return store


def conversations(
    data: Path, set_name: str, n: int, seed: int, turns: tuple[int, int] = TURNS
) -> list[Conversation]:
    spec = SETS[set_name]
    # Only speakers both VADs can enroll, so that --vad energy and --vad silero runs draw the
    # same conversations (Silero finds no speech in one AMI speaker's only segment).
    speakers = [s for s in spec.speakers(data) if any(map(_usable, s.enroll))]
    rng = np.random.default_rng(seed)
    convs = [build(speakers, rng, spec.turn_seconds, turns) for _ in range(n)]
    if spec.noisy:
        noise = noise_bank(data)
        convs = [with_noise(c, noise, rng) for c in convs]
    return convs


@functools.cache
def noise_bank(data: Path) -> np.ndarray:
    """The non-speech parts of the AMI segments and the long LibriSpeech chapters, joined."""
    files = sorted((data / "extra/ami").rglob("*.flac"))
    for speaker in NOISE_CHAPTERS:
        files += sorted((data / "LibriSpeech/train-clean-100" / speaker).rglob("*.flac"))
    vad, chunk = SileroVAD(), round(CHUNK_SECONDS * SAMPLE_RATE)
    edge = round(NOISE_EDGE_SECONDS * SAMPLE_RATE)
    parts = []
    for path in files:
        wav = load_audio(path)
        quiet = vad.probabilities([wav]) < NOISE_MAX_PROBABILITY
        padded = np.concatenate([[False], quiet, [False]]).astype(np.int8)
        for a, b in np.flatnonzero(np.diff(padded)).reshape(-1, 2):
            if (b - a) * CHUNK_SECONDS >= NOISE_MIN_SECONDS:
                parts.append(wav[a * chunk + edge : b * chunk - edge])
    bank = np.concatenate(parts)
    print(f"noise bank: {len(bank) / SAMPLE_RATE:.0f} s from {len(files)} files", file=sys.stderr)
    return bank


def with_noise(conv: Conversation, noise: np.ndarray, rng: np.random.Generator) -> Conversation:
    """``conv`` with ``noise`` (looped from a random offset) at ``NOISE_SNR_DB`` below the
    power of its turns."""
    start = int(rng.integers(len(noise)))
    bed = np.resize(np.roll(noise, -start), len(conv.wav)).astype(np.float64)
    speech = np.concatenate(
        [conv.wav[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)] for a, b, _ in conv.turns]
    ).astype(np.float64)
    gain = np.sqrt(np.mean(speech**2) / np.mean(bed**2) / 10 ** (NOISE_SNR_DB / 10))
    mixed = np.clip(conv.wav + gain * bed, -1.0, 1.0).astype(np.float32)
    return replace(conv, wav=mixed)


def window_scores(
    conv: Conversation, embedder: Embedder, cfg: SegmentConfig, workdir: Path
) -> tuple[WindowScores, list[str]]:
    """Steps 1-3 of ``identify_segments`` (the costly part), kept to try several smoothings."""
    path = workdir / f"store_{id(conv)}.sqlite"
    store = SpeakerStore(path) if path.exists() else enrolled_store(path, embedder, conv.enrolled)
    with store:
        names, refs = store.matrix()
    chunks = lambda: iter([conv.wav])  # noqa: E731
    windows = score_windows(chunks, embedder.embed_fragments, refs, cfg, vad=cfg.timeline_vad)
    return windows, names


def evaluate(
    convs: list[Conversation],
    embedder: Embedder,
    cfg: SegmentConfig,
    threshold: float,
    workdir: Path,
    cache: dict,
) -> list[dict[str, float]]:
    """One row of scores per conversation."""
    rows = []
    for conv in convs:
        key = (id(conv), cfg.window, cfg.hop, cfg.fit, cfg.timeline_vad)
        if key not in cache:
            cache[key] = window_scores(conv, embedder, cfg, workdir)
        windows, names = cache[key]
        segs = segment_scores(windows, names, threshold, cfg)
        hyp = [(s.start, s.end, s.speaker or "unknown") for s in segs]
        rows.append({**score(conv, hyp), "turns": len(conv.turns)})
    return rows


def pooled(rows: list[dict[str, float]]) -> dict[str, float]:
    """Conversations pooled: every rate weighted by the speech time it is a share of."""
    total = sum(r["speech_seconds"] for r in rows)
    out = {k: sum(r[k] * r["speech_seconds"] for r in rows) / total for k in rows[0]}
    unknown = sum(r["unknown_seconds"] for r in rows)
    out["unknown_named_unknown"] = (
        sum(r["unknown_named_unknown"] * r["unknown_seconds"] for r in rows if r["unknown_seconds"])
        / unknown
        if unknown
        else float("nan")
    )
    for key in ("speech_seconds", "unknown_seconds", "turns"):
        out[key] = sum(r[key] for r in rows)
    return out


def spread(by_seed: dict[int, dict[str, float]], rows: list[dict[str, float]]) -> dict:
    """Mean over seeds of their pooled scores, with the spread over seeds and conversations."""
    counts = ("speech_seconds", "unknown_seconds", "turns")
    keys = [k for k in next(iter(by_seed.values())) if k not in counts]
    seeds = {k: np.array([r[k] for r in by_seed.values()]) for k in keys}
    return {
        "mean": {k: float(v.mean()) for k, v in seeds.items()},
        "std_seeds": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in seeds.items()},
        "min_seed": {k: float(v.min()) for k, v in seeds.items()},
        "max_seed": {k: float(v.max()) for k, v in seeds.items()},
        "std_conversations": {k: float(np.nanstd([r[k] for r in rows], ddof=1)) for k in keys},
        "conversations": len(rows),
        "turns": sum(r["turns"] for r in rows),
        "speech_seconds": sum(r["speech_seconds"] for r in rows),
    }


def main_eval(args: argparse.Namespace) -> None:
    import torch  # here, not at the top: the memory child may run on onnxruntime alone

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    embedder = Embedder(model, device="cpu", precision=args.precision, vad=args.vad)
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
        "conversations_per_seed": args.conversations,
        "turns_per_conversation": args.turns,
        "seeds": args.seeds,
        "machine": "2-core CPU",
        "sets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for set_name in args.sets:
            start = time.perf_counter()
            by_seed = {
                seed: conversations(
                    args.data, set_name, args.conversations, seed, tuple(args.turns)
                )
                for seed in args.seeds
            }
            cache: dict = {}
            if args.sweep:
                convs = [c for cs in by_seed.values() for c in cs]
                report["sets"][set_name] = sweep(
                    convs, embedder, cfg, base_threshold, Path(tmp), cache, args.feeds
                )
                continue
            rows_by_seed = {
                seed: evaluate(convs, embedder, cfg, threshold, Path(tmp), cache)
                for seed, convs in by_seed.items()
            }
            rows = [r for rs in rows_by_seed.values() for r in rs]
            result = spread({seed: pooled(rs) for seed, rs in rows_by_seed.items()}, rows)
            result["by_seed"] = {seed: pooled(rs) for seed, rs in rows_by_seed.items()}
            result["rows"] = rows_by_seed  # per conversation, for paired comparisons
            result["seconds"] = time.perf_counter() - start
            report["sets"][set_name] = result
            print(f"{set_name}: {json.dumps(result['mean'])}", file=sys.stderr)
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
    """Alternatives on the same conversations: how windows are fed and speech is found
    (``--feeds``), then the smoothing: switch penalty, second pass, snapping and offset."""
    rows = []
    feeds = [spec.split(":") for spec in feed_specs]
    for (window, hop, fit, vad), penalty, reseg, snap, offset in itertools.product(
        feeds, (0.0, 0.1, 0.3), (0.0, 0.85), (0.0, 0.75), (-0.2, -0.15, -0.1)
    ):
        cfg = replace(
            base,
            window=float(window),
            hop=float(hop),
            fit=fit,
            timeline_vad=vad,
            switch_penalty=penalty,
            resegment=reseg,
            snap=snap,
        )
        result = pooled(evaluate(convs, embedder, cfg, threshold + offset, workdir, cache))
        row = {
            **asdict(cfg),
            "threshold_offset": offset,
            **{k: round(v, 4) for k, v in result.items()},
        }
        rows.append(row)
        print(
            f"{window} {hop} {fit:6} {vad:6} pen {penalty} reseg {reseg} snap {snap} "
            f"thr{offset:+} -> named {result['named_right']:.3f} der {result['der']:.3f}",
            file=sys.stderr,
        )
    return rows


def markdown(report: dict) -> str:
    """Means over seeds; ``sd`` is the spread over seeds (over single conversations)."""
    lines = [
        "| set | conversations | turns | speech (s) | named right (sd seeds; conv.) | "
        "range over seeds | DER | DER, 0.25-s collar | miss | false alarm | wrong name | "
        "unknown speech named unknown |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report["sets"].items():
        m, sd, sc = r["mean"], r["std_seeds"], r["std_conversations"]
        lines.append(
            f"| {name} | {r['conversations']} | {r['turns']} | {r['speech_seconds']:.0f} | "
            f"{m['named_right']:.3f} ({sd['named_right']:.3f}; {sc['named_right']:.3f}) | "
            f"{r['min_seed']['named_right']:.3f}-{r['max_seed']['named_right']:.3f} | "
            f"{m['der']:.3f} | {m['der_collar']:.3f} | {m['miss']:.3f} | "
            f"{m['false_alarm']:.3f} | {m['wrong_name']:.3f} | {m['unknown_named_unknown']:.3f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- memory


def main_memory(args: argparse.Namespace) -> None:
    """Peak RSS of ``identify_segments`` on files of several lengths, each in a fresh process."""
    speakers = ravdess(args.data)
    rng = np.random.default_rng(args.seeds[0])
    conv = build(speakers, rng)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "store.sqlite"
        embedder = open_embedder(args.model, args.backend, args.precision, vad=args.vad)
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
            cmd += ["--vad", args.vad, "--backend", args.backend]
            cmd += ["--model", args.model] if args.model else []
            child = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            )
            rows.append({"minutes": minutes, **child})
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": "2-core CPU",
        "backend": args.backend,
        "vad": args.vad,
        "runs": rows,
    }
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
    audio, store_path = args.rss_child
    if args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    embedder = open_embedder(args.model, args.backend, args.precision, vad=args.vad)
    start = time.perf_counter()
    with SpeakerStore(store_path) as store:
        timeline = identify_segments(store, embedder, audio)
    seconds = time.perf_counter() - start
    print_peak(seconds, segments=len(timeline.segments))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument(
        "--model", default=None, help="checkpoint path (or a registry name); default: shipped"
    )
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--conversations", type=int, default=2, help="per set and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument(
        "--turns",
        type=int,
        nargs=2,
        default=list(TURNS),
        metavar=("MIN", "MAX"),
        help="per conversation",
    )
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="", help="suffix of the JSON file name")
    p.add_argument(
        "--vad", choices=VADS, default=DEFAULT_VAD, help="the store's VAD (enrollment trimming)"
    )
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="--memory runs")
    for field in SegmentConfig.__dataclass_fields__:
        p.add_argument(
            f"--{field.replace('_', '-')}",
            dest=field,
            default=None,
            type=str if field in ("fit", "timeline_vad") else float,
        )
    p.add_argument("--sweep", action="store_true", help="measure alternatives (use a dev --seed)")
    p.add_argument(
        "--feeds",
        nargs="+",
        default=["1.5:0.75:tile:energy", "1.5:0.75:tile:silero"],
        help="--sweep: WINDOW:HOP:FIT:TIMELINE_VAD alternatives",
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
