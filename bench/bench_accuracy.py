"""Accuracy benchmarks behind docs/benchmarks.md: the case-study k-way table and verification.

Both subcommands evaluate the 40 LibriSpeech speakers the shipped model holds out
(``info["split"]["test"]`` of its checkpoint; every run in ``--runs-dir`` holds out the
same ones) and compare with Resemblyzer's ``VoiceEncoder`` on identical inputs. JSON goes to
``docs/results/``, plots to ``docs/img/``, markdown tables to stdout.

    python bench/bench_accuracy.py kway --data ../shared/data --runs-dir runs
    python bench/bench_accuracy.py verify --data ../shared/data

``kway``: 1-shot k-way accuracy (k = 2..40) on 3-s fragments (hop 3 s) for the shipped
model, the case-study reproductions and other runs (``--runs``), Resemblyzer, the
MFCC-statistics k-NN baseline and chance; n-shot (``--shots``, default 5 and 3) prototype /
nearest-neighbour for the shipped model and Resemblyzer on the speakers with at least n + 1
fragments (how many qualify is reported). Every system sees
the same tasks (one seed, tasks depend only on the labels).

``verify``: EER / minDCF (p_target 0.01) with the score at the EER point, at fragment level
(all fragment pairs), at utterance level (each test recording cut into halves, each half
embedded as a recording) and on RAVDESS (evaluation only; each file one recording).

Resemblyzer gets the arrays our model gets, raised to -30 dBFS when quieter (its
``preprocess_wav`` volume step; its VAD is not applied since the audio is already trimmed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from speakerid.audio import SAMPLE_RATE, load_audio, trim_silence
from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.encoders.twin import LoadedModel, load_encoder
from speakerid.lab.data import AudioBank, FragmentSet, fragment_set, scan_corpus
from speakerid.lab.evaluate import report_json
from speakerid.lab.kway import (
    CASE_STUDY_KWAY,
    KWayResult,
    eligible_speakers,
    kway_curve,
    mfcc_stats,
    random_baseline,
)
from speakerid.lab.metrics import verification_summary, verification_trials
from speakerid.lab.plots import plot_det, plot_kway_curve

LIBRI = "LibriSpeech/train-clean-100"
RAVDESS = "eval-only/ravdess"
CASE_RUNS = ("case_raw_bce", "case_mfcc_bce")  # always in the k-way table
TABLE_KS = (2, 4, 10, 20, 40)  # k columns of the markdown tables
RESEMBLYZER_DBFS = -30.0  # Resemblyzer's audio_norm_target_dBFS (raised to, never lowered)
P_TARGET = 0.01
# RAVDESS files need at least 1 s of speech after trimming: the CLI's minimum when the
# published tables were made, fixed here so the trials do not move with the CLI (now 0.5 s).
TRIAL_MIN_SAMPLES = SAMPLE_RATE

# ------------------------------------------------------------------------------ systems


class Resemblyzer:
    """Resemblyzer's ``VoiceEncoder`` on CPU: one ``embed_utterance`` per array."""

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


def our_label(model_arg: Path | None) -> str:
    """How our model is named in tables: the shipped one, or the checkpoint given."""
    return "speakerid (shipped)" if model_arg is None else f"speakerid ({model_arg})"


def held_out_speakers(model: LoadedModel) -> list[str]:
    """The model's held-out test speakers as LibriSpeech folder names (``corpus:`` dropped)."""
    listed = model.info.get("split", {}).get("test", [])
    if not listed:
        sys.exit(f"{model.path}: the checkpoint records no test speakers")
    return sorted(s.rsplit(":", 1)[-1] for s in listed)


def load_run(runs_dir: Path, name: str, speakers: Sequence[str]) -> LoadedModel:
    """A run's ``best.safetensors``, refused unless it holds out the same test speakers."""
    path = runs_dir / name / "best.safetensors"
    if not path.is_file():
        sys.exit(f"{path}: no such run (train it with bench/train_runs.py, or pass --runs-dir)")
    model = load_encoder(path)
    if held_out_speakers(model) != list(speakers):
        sys.exit(f"{name}: holds out other test speakers than the shipped model")
    return model


def timed(label: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
    """Run ``fn``, logging its wall time to stderr (progress on a slow machine)."""
    start = time.perf_counter()
    out = fn()
    print(f"  {label}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return out


def libri_bank(data: Path, speakers: Sequence[str]) -> AudioBank:
    """Trimmed recordings of ``speakers`` from LibriSpeech train-clean-100 under ``data``."""
    recordings = scan_corpus(data / LIBRI)
    bank = AudioBank.load(recordings, list(speakers))
    missing = sorted(set(speakers) - set(bank.speakers))
    if missing:
        sys.exit(f"test speakers missing from {data / LIBRI}: {missing}")
    return bank


# -------------------------------------------------------------------------------- tables


def fmt(x: float) -> str:
    return f"{x:.3f}"


def kway_row(label: str, curve: dict[int, KWayResult], ks: Sequence[int]) -> str:
    cells = [fmt(curve[k].accuracy) if k in curve else "" for k in ks]
    return f"| {label} | " + " | ".join(cells) + " |"


def kway_table(curves: dict[str, dict[int, KWayResult]], ks: Sequence[int], extra: str) -> str:
    head = "| system | " + " | ".join(f"{k}-way" for k in ks) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in ks) + " |"
    rows = [kway_row(label, curve, ks) for label, curve in curves.items()]
    chance = "| random (1/k) | " + " | ".join(fmt(random_baseline(k)) for k in ks) + " |"
    return "\n".join([head, rule, *rows, chance, extra])


# ---------------------------------------------------------------------------------- kway


def cmd_kway(args: argparse.Namespace) -> dict:
    shipped = load_model(args.model)
    ours = our_label(args.model)
    speakers = held_out_speakers(shipped)
    runs = list(dict.fromkeys([*CASE_RUNS, *args.runs]))
    print(f"loading {len(speakers)} test speakers", file=sys.stderr)
    frags: FragmentSet = fragment_set(libri_bank(args.data, speakers), hop_seconds=3.0)
    n_frag = np.bincount(np.unique(frags.speakers, return_inverse=True)[1])
    print(f"{len(frags)} fragments", file=sys.stderr)

    systems: dict[str, np.ndarray] = {}
    systems[ours] = timed("shipped", lambda: Embedder(shipped, "cpu").embed_fragments(frags.waves))
    for name in runs:
        model = load_run(args.runs_dir, name, speakers)
        systems[f"run {name}"] = timed(
            name, lambda m=model: Embedder(m, "cpu").embed_fragments(frags.waves)
        )
    resemblyzer = Resemblyzer()
    systems["Resemblyzer"] = timed("Resemblyzer", lambda: resemblyzer.fragments(frags.waves))
    mfcc = timed("MFCC stats", lambda: mfcc_stats(frags.waves))

    max_way = min(args.max_way, eligible_speakers(frags.speakers, 1))
    ks = range(2, max_way + 1)
    labels = (frags.speakers, frags.recordings)

    def curve(x: np.ndarray, n_shot: int, kk: range, **kw: str) -> dict[int, KWayResult]:
        # A fresh generator per system: every system answers the same tasks.
        return kway_curve(x, *labels, kk, n_shot, args.trials, rng=args.seed, **kw)

    one_shot = {label: curve(x, 1, ks) for label, x in systems.items()}
    one_shot["MFCC-stats k-NN"] = curve(mfcc, 1, ks, method="nearest", metric="euclidean")
    # n-shot tasks need n + 1 fragments per speaker; report how many speakers qualify.
    shot_speakers = {n: eligible_speakers(frags.speakers, n) for n in args.shots}
    multi_shot: dict[int, dict[str, dict[int, KWayResult]]] = {}
    for n, count in shot_speakers.items():
        if count < 2:
            continue
        multi_shot[n] = {
            f"{label}, {n}-shot {method}": curve(
                systems[label], n, range(2, count + 1), method=method
            )
            for label in (ours, "Resemblyzer")
            for method in ("prototype", "nearest")
        }

    cross = one_shot[ours][ks[0]].cross_recording_fraction
    multi = sum(len(set(frags.recordings[frags.speakers == s])) > 1 for s in speakers)
    args.img.mkdir(parents=True, exist_ok=True)
    plotted = [ours, *(f"run {r}" for r in CASE_RUNS), "Resemblyzer"]
    plot_kway_curve(
        {label: one_shot[label] for label in [*plotted, "MFCC-stats k-NN"]},
        args.img / "kway_1shot.png",
        reference=CASE_STUDY_KWAY,
        reference_label="case study (reported)",
        title=f"1-shot k-way, {len(speakers)} held-out LibriSpeech speakers, 3-s fragments",
    )
    for n, curves in multi_shot.items():
        plot_kway_curve(
            curves,
            args.img / f"kway_{n}shot.png",
            title=f"{n}-shot k-way, the {shot_speakers[n]} test speakers with >= {n + 1} fragments",
        )
    report = report_json(
        {
            "command": " ".join(sys.argv),
            "model": str(shipped.path),
            "fingerprint": shipped.fingerprint,
            "runs_dir": str(args.runs_dir),
            "speakers": speakers,
            "n_fragments": len(frags),
            "fragments_per_speaker": {
                "min": n_frag.min(),
                "median": np.median(n_frag),
                "max": n_frag.max(),
            },
            "speakers_with_several_recordings": multi,
            "cross_recording_fraction": cross,
            "trials_per_k": args.trials,
            "seed": args.seed,
            "n_shot_speakers": shot_speakers,
            "case_study_reported": CASE_STUDY_KWAY,
            "random_baseline": {k: random_baseline(k) for k in ks},
            "one_shot": one_shot,
            "n_shot": multi_shot,
        }
    )
    write_json(args.results / "kway.json", report)

    band = {k: CASE_STUDY_KWAY.get(k) for k in TABLE_KS}
    reported = (
        "| case study (reported, read off its figure) | "
        + " | ".join(f"{b[0]:.2f}-{b[1]:.2f}" if b else "" for b in band.values())
        + " |"
    )
    cols = [k for k in TABLE_KS if k <= max_way]
    print(
        f"### 1-shot k-way accuracy ({len(speakers)} speakers, {len(frags)} fragments, "
        f"{args.trials} tasks per k, seed {args.seed})\n"
    )
    print(kway_table(one_shot, cols, reported))
    print("\n95% Wilson intervals:\n")
    print("| system | " + " | ".join(f"{k}-way" for k in cols) + " |")
    print("| --- | " + " | ".join("---:" for _ in cols) + " |")
    for label, c in one_shot.items():
        cells = [f"{c[k].ci_low:.3f}-{c[k].ci_high:.3f}" for k in cols]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(
        f"\nCross-recording fraction of tasks: {cross:.3f} ({multi} of {len(speakers)} "
        "speakers have more than one recording).\n"
    )
    for n, count in shot_speakers.items():
        print(f"\n{n}-shot tasks: {count} of {len(speakers)} speakers have >= {n + 1} fragments.")
        if n not in multi_shot:
            continue
        cols_n = sorted({k for k in (2, 4, 10, count) if k <= count})
        print(f"\n### {n}-shot k-way accuracy ({count} speakers with >= {n + 1} fragments)\n")
        head = "| system | " + " | ".join(f"{k}-way" for k in cols_n) + " |"
        rule = "| --- | " + " | ".join("---:" for _ in cols_n) + " |"
        rows = [kway_row(label, c, cols_n) for label, c in multi_shot[n].items()]
        print("\n".join([head, rule, *rows]))
    print("\n95% Wilson intervals for every k: docs/results/kway.json.")
    return report


# -------------------------------------------------------------------------------- verify


def utterance_trials(emb: np.ndarray, owner: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and same-speaker labels of every pair ``i < j`` of unit rows."""
    i, j = np.triu_indices(len(emb), k=1)
    owner_arr = np.asarray(owner)
    return np.einsum("pd,pd->p", emb[i], emb[j]), owner_arr[i] == owner_arr[j]


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


def cmd_verify(args: argparse.Namespace) -> dict:
    shipped = load_model(args.model)
    ours = our_label(args.model)
    embedder = Embedder(shipped, "cpu")
    resemblyzer = Resemblyzer()
    speakers = held_out_speakers(shipped)
    bank = libri_bank(args.data, speakers)
    trials: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    notes: dict[str, object] = {}

    # Fragment level: all pairs of 3-s fragments.
    frags = fragment_set(bank, hop_seconds=3.0)
    frag_emb = {
        ours: timed("shipped fragments", lambda: embedder.embed_fragments(frags.waves)),
        "Resemblyzer": timed("Resemblyzer fragments", lambda: resemblyzer.fragments(frags.waves)),
    }
    trials["fragments"] = {
        label: verification_trials(x, frags.speakers, frags.recordings)
        for label, x in frag_emb.items()
    }
    notes["fragments"] = f"{len(frags)} fragments of {len(speakers)} speakers, all pairs"

    # Utterance level: each trimmed recording cut into a first and a second half.
    def embed_recordings(what: str, waves: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Each already-trimmed wave as one recording, by both systems."""
        return {
            ours: timed(
                f"shipped {what}",
                lambda: np.stack([embedder.embed_waveform(w, trim=False) for w in waves]),
            ),
            "Resemblyzer": timed(
                f"Resemblyzer {what}", lambda: np.stack([resemblyzer.utterance(w) for w in waves])
            ),
        }

    halves, owner = [], []
    for spk, waves in zip(bank.speakers, bank.waves, strict=True):
        for wav in waves:
            mid = len(wav) // 2
            halves += [wav[:mid], wav[mid:]]
            owner += [spk, spk]
    seconds = np.array([len(h) / SAMPLE_RATE for h in halves])
    utt_emb = embed_recordings("halves", halves)
    trials["utterances"] = {label: utterance_trials(x, owner) for label, x in utt_emb.items()}
    notes["utterances"] = (
        f"{len(halves)} halves of {len(halves) // 2} recordings, {seconds.min():.1f}-"
        f"{seconds.max():.1f} s (median {np.median(seconds):.1f} s) of trimmed speech each"
    )

    # RAVDESS, evaluation only: each file one recording, trimmed as the CLI does.
    listed = ravdess_files(args.data / RAVDESS, args.ravdess_per_actor, args.seed)
    # Files with less than MIN_SPEECH_SECONDS of speech are refused by the CLI; skip them.
    kept = [(f, trim_silence(load_audio(f), name=str(f))) for f in listed]
    kept = [(f, w) for f, w in kept if len(w) >= TRIAL_MIN_SAMPLES]
    files, wavs = [f for f, _ in kept], [w for _, w in kept]
    actor = [f.parent.name for f in files]
    statement = np.array([f.stem.split("-")[4] for f in files])
    rav_emb = embed_recordings("RAVDESS", wavs)
    trials["ravdess"] = {label: utterance_trials(x, actor) for label, x in rav_emb.items()}
    # The same trials with the two speakers of a pair saying different sentences only.
    i, j = np.triu_indices(len(files), k=1)
    other_text = statement[i] != statement[j]
    trials["ravdess_other_sentence"] = {
        label: (s[other_text], lab[other_text]) for label, (s, lab) in trials["ravdess"].items()
    }
    rav_sec = np.array([len(w) / SAMPLE_RATE for w in wavs])
    subset = (
        f"{args.ravdess_per_actor} per actor, seed {args.seed}"
        if args.ravdess_per_actor
        else "all files"
    )
    notes["ravdess"] = (
        f"{len(files)} files of {len(set(actor))} actors ({subset}; {len(listed) - len(files)} "
        f"with < {TRIAL_MIN_SAMPLES / SAMPLE_RATE:.0f} s of speech skipped), {rav_sec.min():.1f}-"
        f"{rav_sec.max():.1f} s (median {np.median(rav_sec):.1f} s) after trimming; all pairs"
    )
    notes["ravdess_other_sentence"] = "RAVDESS pairs whose two files hold different sentences"

    summary = {
        cond: {label: verification_summary(s, lab, P_TARGET) for label, (s, lab) in sys_.items()}
        for cond, sys_ in trials.items()
    }
    # What the shipped model's calibrated threshold does on each condition.
    at_threshold = {}
    if shipped.threshold is not None:
        for cond, sys_ in trials.items():
            s, lab = sys_[ours]
            accept = s >= shipped.threshold
            at_threshold[cond] = {
                "miss": float(np.mean(~accept[lab])),
                "false_alarm": float(np.mean(accept[~lab])),
            }

    args.img.mkdir(parents=True, exist_ok=True)
    titles = {
        "fragments": "held-out LibriSpeech, 3-s fragments",
        "utterances": "held-out LibriSpeech, half-recordings",
        "ravdess": "RAVDESS (cross-domain, evaluation only)",
    }
    for cond, title in titles.items():
        plot_det(trials[cond], args.img / f"det_{cond}.png", title=title)
    report = report_json(
        {
            "command": " ".join(sys.argv),
            "model": str(shipped.path),
            "fingerprint": shipped.fingerprint,
            "threshold": shipped.threshold,
            "speakers": speakers,
            "p_target": P_TARGET,
            "conditions": notes,
            "results": summary,
            "at_model_threshold": at_threshold,
        }
    )
    write_json(args.results / "verify.json", report)

    print("### Verification (raw cosine; EER threshold = score at the EER point)\n")
    print("| trials | system | target / non-target | EER | minDCF (0.01) | threshold at EER |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for cond, by_system in summary.items():
        for label, r in by_system.items():
            print(
                f"| {cond} | {label} | {r.n_target:,} / {r.n_nontarget:,} | "
                f"{100 * r.eer:.2f}% | {r.min_dcf:.3f} | {r.eer_threshold:.3f} |"
            )
    print()
    for cond, note in notes.items():
        print(f"- {cond}: {note}")
    if at_threshold:
        print(f"\nThe model's calibrated threshold ({shipped.threshold:.4f}) on these trials:\n")
        print("| trials | miss | false alarm |\n| --- | ---: | ---: |")
        for cond, r in at_threshold.items():
            print(f"| {cond} | {100 * r['miss']:.1f}% | {100 * r['false_alarm']:.2f}% |")
    return report


# ---------------------------------------------------------------------------------- main


def write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data"),
        help="folder holding LibriSpeech/ and eval-only/",
    )
    common.add_argument(
        "--model", type=Path, default=None, help="checkpoint (default: the shipped model)"
    )
    common.add_argument("--results", type=Path, default=Path("docs/results"))
    common.add_argument("--img", type=Path, default=Path("docs/img"))
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    kway = sub.add_parser("kway", parents=[common], help="case-study k-way table")
    kway.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="folder of training runs (<name>/best.safetensors)",
    )
    kway.add_argument(
        "--runs", nargs="*", default=[], help=f"runs to add to {', '.join(CASE_RUNS)}"
    )
    kway.add_argument("--trials", type=int, default=2000, help="tasks per k")
    kway.add_argument("--max-way", type=int, default=40)
    kway.add_argument(
        "--shots",
        type=int,
        nargs="+",
        default=[5, 3],
        help="n-shot settings beside 1-shot (shipped model and Resemblyzer)",
    )
    kway.set_defaults(func=cmd_kway)
    verify = sub.add_parser("verify", parents=[common], help="EER / minDCF, DET plots")
    verify.add_argument(
        "--ravdess-per-actor",
        type=int,
        default=0,
        help="seeded subset of RAVDESS files per actor (0: all 60)",
    )
    verify.set_defaults(func=cmd_verify)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.func(args)


if __name__ == "__main__":
    main()
