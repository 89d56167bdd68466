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
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from common import (
    RAVDESS,
    TRIAL_MIN_SAMPLES,
    Resemblyzer,
    at_threshold,
    held_out_speakers,
    libri_bank,
    load_run,
    ravdess_files,
    trimmed,
    write_json,
)

from speakerid.audio import SAMPLE_RATE
from speakerid.decision.calibration import P_TARGET, pair_trials
from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.encoders.twin import LoadedModel
from speakerid.lab.data import AudioBank, FragmentSet, fragment_set
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

CASE_RUNS = ("case_raw_bce", "case_mfcc_bce")  # always in the k-way table
TABLE_KS = (2, 4, 10, 20, 40)  # k columns of the markdown tables

Curves = dict[str, dict[int, KWayResult]]
Trials = dict[str, tuple[np.ndarray, np.ndarray]]  # system -> (scores, labels)


def our_label(model_arg: Path | None) -> str:
    """How our model is named in tables: the shipped one, or the checkpoint given."""
    return "speakerid (shipped)" if model_arg is None else f"speakerid ({model_arg})"


def timed(label: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
    """Run ``fn``, logging its wall time to stderr (progress on a slow machine)."""
    start = time.perf_counter()
    out = fn()
    print(f"  {label}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return out


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
    print(f"loading {len(speakers)} test speakers", file=sys.stderr)
    frags: FragmentSet = fragment_set(libri_bank(args.data, speakers), hop_seconds=3.0)
    print(f"{len(frags)} fragments", file=sys.stderr)
    systems, mfcc = _kway_systems(args, shipped, ours, speakers, frags)
    max_way = min(args.max_way, eligible_speakers(frags.speakers, 1))
    ks = range(2, max_way + 1)

    def curve(x: np.ndarray, n_shot: int, kk: range, **kw: str) -> dict[int, KWayResult]:
        # A fresh generator per system: every system answers the same tasks.
        labels = (frags.speakers, frags.recordings)
        return kway_curve(x, *labels, kk, n_shot, args.trials, rng=args.seed, **kw)

    one_shot = {label: curve(x, 1, ks) for label, x in systems.items()}
    one_shot["MFCC-stats k-NN"] = curve(mfcc, 1, ks, method="nearest", metric="euclidean")
    # n-shot tasks need n + 1 fragments per speaker; report how many speakers qualify.
    shot_speakers = {n: eligible_speakers(frags.speakers, n) for n in args.shots}
    multi_shot: dict[int, Curves] = {}
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
    _plot_kway(args.img, ours, len(speakers), one_shot, multi_shot, shot_speakers)
    cross = one_shot[ours][ks[0]].cross_recording_fraction
    multi = sum(len(set(frags.recordings[frags.speakers == s])) > 1 for s in speakers)
    n_frag = np.bincount(np.unique(frags.speakers, return_inverse=True)[1])
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
    _print_kway(args, len(speakers), len(frags), max_way, one_shot, (cross, multi))
    _print_n_shot(len(speakers), shot_speakers, multi_shot)
    return report


def _kway_systems(
    args: argparse.Namespace,
    shipped: LoadedModel,
    ours: str,
    speakers: Sequence[str],
    frags: FragmentSet,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every system's fragment embeddings (ours, the runs, Resemblyzer) and the MFCC stats."""
    runs = list(dict.fromkeys([*CASE_RUNS, *args.runs]))
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
    return systems, mfcc


def _plot_kway(
    img: Path,
    ours: str,
    n_speakers: int,
    one_shot: Curves,
    multi_shot: dict[int, Curves],
    shot_speakers: dict[int, int],
) -> None:
    """``kway_1shot.png`` (ours, the case-study runs, Resemblyzer, MFCC) and one per n-shot."""
    img.mkdir(parents=True, exist_ok=True)
    plotted = [ours, *(f"run {r}" for r in CASE_RUNS), "Resemblyzer"]
    plot_kway_curve(
        {label: one_shot[label] for label in [*plotted, "MFCC-stats k-NN"]},
        img / "kway_1shot.png",
        reference=CASE_STUDY_KWAY,
        reference_label="case study (reported)",
        title=f"1-shot k-way, {n_speakers} held-out LibriSpeech speakers, 3-s fragments",
    )
    for n, curves in multi_shot.items():
        plot_kway_curve(
            curves,
            img / f"kway_{n}shot.png",
            title=f"{n}-shot k-way, the {shot_speakers[n]} test speakers with >= {n + 1} fragments",
        )


def _print_kway(
    args: argparse.Namespace,
    n_speakers: int,
    n_fragments: int,
    max_way: int,
    one_shot: Curves,
    recordings: tuple[float, int],
) -> None:
    """The 1-shot markdown table with the case study's band, and its Wilson intervals."""
    band = {k: CASE_STUDY_KWAY.get(k) for k in TABLE_KS}
    reported = (
        "| case study (reported, read off its figure) | "
        + " | ".join(f"{b[0]:.2f}-{b[1]:.2f}" if b else "" for b in band.values())
        + " |"
    )
    cols = [k for k in TABLE_KS if k <= max_way]
    print(
        f"### 1-shot k-way accuracy ({n_speakers} speakers, {n_fragments} fragments, "
        f"{args.trials} tasks per k, seed {args.seed})\n"
    )
    print(kway_table(one_shot, cols, reported))
    print("\n95% Wilson intervals:\n")
    print("| system | " + " | ".join(f"{k}-way" for k in cols) + " |")
    print("| --- | " + " | ".join("---:" for _ in cols) + " |")
    for label, c in one_shot.items():
        cells = [f"{c[k].ci_low:.3f}-{c[k].ci_high:.3f}" for k in cols]
        print(f"| {label} | " + " | ".join(cells) + " |")
    cross, multi = recordings
    print(
        f"\nCross-recording fraction of tasks: {cross:.3f} ({multi} of {n_speakers} "
        "speakers have more than one recording).\n"
    )


def _print_n_shot(
    n_speakers: int, shot_speakers: dict[int, int], multi_shot: dict[int, Curves]
) -> None:
    """How many speakers each n-shot setting kept, and its table."""
    for n, count in shot_speakers.items():
        print(f"\n{n}-shot tasks: {count} of {n_speakers} speakers have >= {n + 1} fragments.")
        if n not in multi_shot:
            continue
        cols_n = sorted({k for k in (2, 4, 10, count) if k <= count})
        print(f"\n### {n}-shot k-way accuracy ({count} speakers with >= {n + 1} fragments)\n")
        head = "| system | " + " | ".join(f"{k}-way" for k in cols_n) + " |"
        rule = "| --- | " + " | ".join("---:" for _ in cols_n) + " |"
        rows = [kway_row(label, c, cols_n) for label, c in multi_shot[n].items()]
        print("\n".join([head, rule, *rows]))
    print("\n95% Wilson intervals for every k: docs/results/kway.json.")


# -------------------------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace) -> dict:
    shipped = load_model(args.model)
    ours = our_label(args.model)
    embedder = Embedder(shipped, "cpu")
    resemblyzer = Resemblyzer()
    speakers = held_out_speakers(shipped)
    bank = libri_bank(args.data, speakers)

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

    trials: dict[str, Trials] = {}
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
    trials["utterances"], notes["utterances"] = _half_trials(bank, embed_recordings)
    rav_trials, rav_notes = _ravdess_trials(args, embed_recordings)
    trials |= rav_trials
    notes |= rav_notes
    summary = {
        cond: {label: verification_summary(s, lab, P_TARGET) for label, (s, lab) in sys_.items()}
        for cond, sys_ in trials.items()
    }
    # What the shipped model's calibrated threshold does on each condition.
    at_model = {}
    if shipped.threshold is not None:
        at_model = {c: at_threshold(*sys_[ours], shipped.threshold) for c, sys_ in trials.items()}
    _plot_det(args.img, trials)
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
            "at_model_threshold": at_model,
        }
    )
    write_json(args.results / "verify.json", report)
    _print_verify(summary, notes, shipped.threshold, at_model)
    return report


Embed = Callable[[str, list[np.ndarray]], dict[str, np.ndarray]]


def _half_trials(bank: AudioBank, embed_recordings: Embed) -> tuple[Trials, str]:
    """Utterance level: each trimmed recording cut into a first and a second half, every
    pair of halves one trial."""
    halves, owner = [], []
    for spk, waves in zip(bank.speakers, bank.waves, strict=True):
        for wav in waves:
            mid = len(wav) // 2
            halves += [wav[:mid], wav[mid:]]
            owner += [spk, spk]
    seconds = np.array([len(h) / SAMPLE_RATE for h in halves])
    utt_emb = embed_recordings("halves", halves)
    trials = {label: pair_trials(x, np.asarray(owner)) for label, x in utt_emb.items()}
    note = (
        f"{len(halves)} halves of {len(halves) // 2} recordings, {seconds.min():.1f}-"
        f"{seconds.max():.1f} s (median {np.median(seconds):.1f} s) of trimmed speech each"
    )
    return trials, note


def _ravdess_trials(
    args: argparse.Namespace, embed_recordings: Embed
) -> tuple[dict[str, Trials], dict[str, str]]:
    """RAVDESS, evaluation only: each file one recording, trimmed as the CLI does, all pairs;
    and the same trials with the two speakers of a pair saying different sentences only."""
    listed = ravdess_files(args.data / RAVDESS, args.ravdess_per_actor, args.seed)
    # Files with less than MIN_SPEECH_SECONDS of speech are refused by the CLI; skip them.
    files, wavs = trimmed(listed)
    actor = [f.parent.name for f in files]
    statement = np.array([f.stem.split("-")[4] for f in files])
    rav_emb = embed_recordings("RAVDESS", wavs)
    trials = {"ravdess": {label: pair_trials(x, np.asarray(actor)) for label, x in rav_emb.items()}}
    i, j = np.triu_indices(len(files), k=1)  # pair_trials's order
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
    notes = {
        "ravdess": (
            f"{len(files)} files of {len(set(actor))} actors ({subset}; "
            f"{len(listed) - len(files)} with < {TRIAL_MIN_SAMPLES / SAMPLE_RATE:.0f} s of "
            f"speech skipped), {rav_sec.min():.1f}-{rav_sec.max():.1f} s (median "
            f"{np.median(rav_sec):.1f} s) after trimming; all pairs"
        ),
        "ravdess_other_sentence": "RAVDESS pairs whose two files hold different sentences",
    }
    return trials, notes


def _plot_det(img: Path, trials: dict[str, Trials]) -> None:
    img.mkdir(parents=True, exist_ok=True)
    titles = {
        "fragments": "held-out LibriSpeech, 3-s fragments",
        "utterances": "held-out LibriSpeech, half-recordings",
        "ravdess": "RAVDESS (cross-domain, evaluation only)",
    }
    for cond, title in titles.items():
        plot_det(trials[cond], img / f"det_{cond}.png", title=title)


def _print_verify(
    summary: dict[str, dict], notes: dict[str, object], threshold: float | None, at_model: dict
) -> None:
    """The verification table, the conditions' notes, and the model threshold's rates."""
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
    if at_model:
        print(f"\nThe model's calibrated threshold ({threshold:.4f}) on these trials:\n")
        print("| trials | miss | false alarm |\n| --- | ---: | ---: |")
        for cond, r in at_model.items():
            print(f"| {cond} | {100 * r['miss']:.1f}% | {100 * r['false_alarm']:.2f}% |")


# ---------------------------------------------------------------------------------- main


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
