"""The shipped models against Resemblyzer on identical trials: docs/benchmarks.md, "Models".

    python bench/bench_models.py --data ../shared/data            # the table
    python bench/bench_models.py --data ../shared/data --readings # + CAM++/ECAPA readings, AS-norm
    python bench/bench_models.py --systems ecapa ECAPA --readings  # only those rows
    python bench/bench_models.py --systems ecapa --sets ami        # only those rows and sets
    python bench/bench_models.py --systems best accurate ecapa     # the fused model beside its two

Trial sets (every system embeds the same trimmed arrays; no set is used to tune anything):

- ``libri_fragments``: the 40 held-out LibriSpeech test speakers (the split recorded in every
  shipped checkpoint), every 3-s fragment (hop 3 s), all cross-recording pairs; plus 1-shot
  4- and 40-way accuracy on the same fragments (2000 tasks each, one seed).
- ``libri_halves``: each of their recordings cut into halves, each half one recording.
- ``ravdess``: RAVDESS (evaluation only), each file one recording, all pairs.
- ``ami``: the 16 AMI far-field speakers' segments, all pairs (the ``fast`` model saw them in
  training; CAM++ and Resemblyzer did not).
- ``vctk_arctic``: VCTK p225-p228 and ARCTIC clb/slt (``fast`` saw them in training).
- ``pooled``: every trial of the sets above in one pool (scored when all five are).

Files with less than 1 s of speech after trimming are left out, as the CLI refuses them.
``best`` (the shipped fusion, ``embedding.fused``) is scored from its members' embeddings of
the same items: a fragment's fused row is ``fuse(a_f, e_f, w)`` and a recording's
``fuse(pool(a_f), pool(e_f), w)``, exactly what ``FusedEmbedder`` computes (its members
each pool their own fragments), with ``w`` the registry's weight; so it costs no embedding
beyond its members'.

With ``--readings``: CAM++ recordings read as pooled 3-s fragments (the pipeline), in one
pass, or as pooled 6-s windows, ECAPA's in one pass (SpeechBrain's own recipe, on the same
trimmed arrays), and AS-norm with the checkpoint's cohort. Embeddings are
cached under ``--cache`` so reruns only score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import LIBRI, RAVDESS, Resemblyzer, at_threshold, ravdess_files, trimmed

from speakerid.audio import SAMPLE_RATE, VADS
from speakerid.decision.calibration import P_TARGET, as_norm, cohort_stats, pair_trials
from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.embedding.fused import fuse
from speakerid.encoders.registry import FUSIONS
from speakerid.encoders.twin import LoadedModel
from speakerid.lab.data import AudioBank, fragment_set, scan_corpus
from speakerid.lab.kway import kway_curve
from speakerid.lab.metrics import verification_summary, verification_trials
from speakerid.vectors import l2_normalize, pool

KWAY = (4, 40)


# ------------------------------------------------------------------------------------ sets


def build_sets(
    data: Path, test_speakers: list[str], ravdess_per_actor: int, vad: str = "energy"
) -> dict:
    """Every trial set as ``{name: {"waves", "speakers", "recordings"}}`` (recording sets),
    each recording trimmed to speech by ``vad``."""
    libri = scan_corpus(data / LIBRI)
    bank = AudioBank.load(libri, test_speakers, vad=vad)
    frags = fragment_set(bank, hop_seconds=3.0)
    sets: dict[str, dict] = {
        "libri_fragments": {
            "fragments": frags.waves,
            "speakers": frags.speakers,
            "recordings": frags.recordings,
        }
    }
    halves, owner, rec = [], [], []
    for spk, waves, names in zip(bank.speakers, bank.waves, bank.names, strict=True):
        for wav, name in zip(waves, names, strict=True):
            mid = len(wav) // 2
            halves += [wav[:mid], wav[mid:]]
            owner += [spk, spk]
            rec += [f"{name}#a", f"{name}#b"]
    sets["libri_halves"] = {"waves": halves, "speakers": owner, "recordings": rec}

    files, waves = trimmed(ravdess_files(data / RAVDESS, ravdess_per_actor, seed=0), vad)
    sets["ravdess"] = {
        "waves": waves,
        "speakers": [f.parent.name for f in files],
        "recordings": [str(f) for f in files],
    }
    for name, roots in (
        ("ami", ["extra/ami"]),
        ("vctk_arctic", ["extra/vctk", "extra/cmu_arctic"]),
    ):
        recs = [r for root in roots for r in scan_corpus(data / root, qualify=True)]
        files, waves = trimmed([r.path for r in recs], vad)
        by_path = {r.path: r.speaker for r in recs}
        sets[name] = {
            "waves": waves,
            "speakers": [by_path[f] for f in files],
            "recordings": [str(f) for f in files],
        }
    return sets


def common_items(sets: dict, other: dict) -> dict:
    """``sets`` cut to the items whose recording ``other`` holds too (two VADs compared on
    the recordings both keep; a half-recording or fragment goes with its file)."""
    out = {}
    for name, s in sets.items():
        kept = {str(r).split("#")[0] for r in other[name]["recordings"]}
        keep = [i for i, r in enumerate(s["recordings"]) if str(r).split("#")[0] in kept]
        out[name] = {
            k: (v[keep] if isinstance(v, np.ndarray) else [v[i] for i in keep])
            for k, v in s.items()
        }
    return out


# --------------------------------------------------------------------------------- systems


def whole_pass(model: LoadedModel) -> Callable[[np.ndarray], np.ndarray]:
    """A recording in one forward pass (CAM++ takes any length), fbank mean over all of it."""

    @torch.inference_mode()
    def embed(wav: np.ndarray) -> np.ndarray:
        return l2_normalize(model.encoder(torch.from_numpy(wav)[None]).numpy())[0]

    return embed


def windows(embedder: Embedder, seconds: float) -> Callable[[np.ndarray], np.ndarray]:
    """Pooled ``seconds``-long windows (hop = length; a tail under half a window is dropped)."""
    size = int(seconds * SAMPLE_RATE)

    @torch.inference_mode()
    def embed(wav: np.ndarray) -> np.ndarray:
        if len(wav) <= size:
            return embedder.embed_waveform(wav, trim=False)  # the pipeline's rule below 3 s
        starts = list(range(0, len(wav) - size + 1, size))
        if len(wav) - (starts[-1] + size) >= size // 2:
            starts.append(len(wav) - size)
        batch = torch.from_numpy(np.stack([wav[s : s + size] for s in starts]))
        return pool(l2_normalize(embedder.encoder(batch).numpy()))

    return embed


def cached(cache: Path, key: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
    """``fn()``, saved under ``cache``; ``key`` must name everything the result depends on."""
    path = cache / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    start = time.perf_counter()
    out = np.asarray(fn(), dtype=np.float32)
    print(f"  {key}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


# --------------------------------------------------------------------------------- scoring


def asnorm(
    scores: np.ndarray, a: np.ndarray, b: np.ndarray, cohort: np.ndarray, top: int
) -> np.ndarray:
    """AS-norm (``calibration.as_norm``) of ``scores[p] = a[p] . b[p]`` against ``cohort``."""
    return as_norm(scores, cohort_stats(a, cohort, top), cohort_stats(b, cohort, top))


def recording_trials(emb: np.ndarray, speakers: np.ndarray, recordings: np.ndarray) -> tuple:
    """Indices, scores and labels of every pair of a set of whole recordings.

    Each item of these sets is its own recording, so ``verification_trials``'s rule (no
    same-recording pairs) leaves every pair in: the trials are ``pair_trials``'s, in its order.
    """
    if len(set(recordings.tolist())) != len(recordings):
        sys.exit(
            "a recording set holds one recording twice: its pairs would need the fragment rule"
        )
    i, j = np.triu_indices(len(emb), k=1)
    return (i, j, *pair_trials(emb, speakers))


def summarise(scores: np.ndarray, labels: np.ndarray) -> dict:
    r = verification_summary(scores, labels, P_TARGET)
    return {
        "eer": r.eer,
        "min_dcf": r.min_dcf,
        "eer_threshold": r.eer_threshold,
        "n_target": r.n_target,
        "n_nontarget": r.n_nontarget,
    }


# ------------------------------------------------------------------------------------ main

SHIPPED_ROWS = {
    "accurate": "accurate (CAM++)",
    "fast": "fast (lstm_s3)",
    "ecapa": "ecapa (ECAPA-TDNN)",
    "best": "best (CAM++ + ECAPA fused)",
}


def write_measured(path: Path, results: dict, command: str) -> None:
    """The EERs ``speakerid models`` shows, merged into the shipped ``measured.json``."""
    measured = json.loads(path.read_text()) if path.is_file() else {}
    written = []
    for name, row in SHIPPED_ROWS.items():
        if row not in results:  # not scored in this run (--systems): keep what was measured
            continue
        entry = measured.setdefault(name, {})
        entry["eer"] = {s: round(r["eer"], 4) for s, r in results[row].items()}
        written.append(name)
    if len(written) == len(SHIPPED_ROWS) or "_source" not in measured:
        measured["_source"] = f"EER: {command} (docs/benchmarks.md)"
    else:  # the others' EERs stand, and so does what measured them
        measured["_source"] += f"; {', '.join(written)}: {command}"
    path.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/speakerid-bench-cache"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/models.json"))
    ap.add_argument("--ravdess-per-actor", type=int, default=20, help="seeded subset; 0: all")
    ap.add_argument("--readings", action="store_true", help="CAM++ readings and AS-norm too")
    ap.add_argument("--asnorm-top", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--vad", choices=VADS, default="energy", help="how every recording is trimmed to speech"
    )
    ap.add_argument(
        "--common-with",
        choices=VADS,
        default=None,
        help="score only the recordings this other VAD keeps too (compare two VADs)",
    )
    ap.add_argument(
        "--systems",
        nargs="+",
        default=None,
        metavar="WORD",
        help="score only the rows whose label starts with one of these words "
        "(accurate fast Resemblyzer ecapa CAM++ ECAPA, or a candidate's name)",
    )
    ap.add_argument(
        "--sets",
        nargs="+",
        default=None,
        metavar="SET",
        help="score only these trial sets (libri_fragments libri_halves ravdess ami vctk_arctic)",
    )
    ap.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="also score this checkpoint on the same trials (repeatable); shipped or not",
    )
    ap.add_argument(
        "--write-measured",
        type=Path,
        default=None,
        help="merge the shipped models' EERs into this file (models/measured.json)",
    )
    args = ap.parse_args()
    for spec in args.candidate:
        name, _, path = spec.partition("=")
        if not name or not path or "(" in name or " " in name:
            ap.error(f"--candidate {spec!r}: NAME=CHECKPOINT, NAME one word")
    return args


Systems = dict[str, dict[str, Callable]]  # row label -> {"frag": fn, "rec": fn}


def build_systems(
    args: argparse.Namespace, shipped: dict[str, LoadedModel]
) -> tuple[Systems, dict[str, LoadedModel]]:
    """The rows to score (the shipped models, Resemblyzer, candidates, readings) and the
    candidates' models by name."""
    accurate, fast, ecapa = shipped["accurate"], shipped["fast"], shipped["ecapa"]
    emb_acc, emb_fast = Embedder(accurate, "cpu"), Embedder(fast, "cpu")
    emb_ecapa = Embedder(ecapa, "cpu")
    resemblyzer = Resemblyzer()
    systems: Systems = {
        "accurate (CAM++)": {
            "frag": emb_acc.embed_fragments,
            "rec": lambda w: emb_acc.embed_waveform(w, trim=False),
        },
        "fast (lstm_s3)": {
            "frag": emb_fast.embed_fragments,
            "rec": lambda w: emb_fast.embed_waveform(w, trim=False),
        },
        "ecapa (ECAPA-TDNN)": {
            "frag": emb_ecapa.embed_fragments,
            "rec": lambda w: emb_ecapa.embed_waveform(w, trim=False),
        },
        "Resemblyzer": {
            "frag": resemblyzer.fragments,
            "rec": resemblyzer.utterance,
        },
    }
    candidates = {}
    for spec in args.candidate:
        name, _, path = spec.partition("=")
        candidates[name] = load_model(path)
        emb = Embedder(candidates[name], "cpu")
        systems[f"{name} (candidate)"] = {
            "frag": emb.embed_fragments,
            "rec": lambda w, e=emb: e.embed_waveform(w, trim=False),
        }
    if args.readings:
        systems["CAM++ one pass"] = {"rec": whole_pass(accurate)}
        systems["CAM++ 6-s windows"] = {"rec": windows(emb_acc, 6.0)}
        systems["ECAPA one pass"] = {"rec": whole_pass(ecapa)}
    if args.systems:
        # a fusion's members are embedded for it (and scored only when asked for)
        wanted = {
            *args.systems,
            *(m for f in FUSIONS if f in args.systems for m in FUSIONS[f].members),
        }
        systems = {k: v for k, v in systems.items() if k.split()[0] in wanted}
    return systems, candidates


def fused_rows(embeddings: dict[str, dict[str, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    """The shipped fusion ``name``'s embeddings of every set, from its members' rows (see
    the module's docstring): fragments' rows and recordings' vectors fuse alike."""
    fusion = FUSIONS[name]
    first, second = (embeddings[SHIPPED_ROWS[m]] for m in fusion.members)
    return {s: fuse(first[s], second[s], fusion.weight) for s in first if s in second}


def embed_sets(
    systems: Systems, sets: dict, weights: dict[str, str], cache: Path, vad: str = "energy"
) -> dict[str, dict[str, np.ndarray]]:
    """Each row's embeddings of each set it can read, through the cache.

    ``weights``: the fingerprint of the weights behind each row's first word.
    """
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    for label, fns in systems.items():
        key = label.split()[0] + ("" if "(" in label else "_" + "_".join(label.split()[1:]))
        out = {}
        for name, s in sets.items():
            # the cache key names the set's items and the weights, so a changed set or model
            # is embedded again instead of being scored against stale rows
            items = "\n".join(map(str, s["recordings"])) + weights.get(label.split()[0], label)
            items += "" if vad == "energy" else f"\nvad={vad}"  # energy: the keys of before
            digest = hashlib.sha256(items.encode()).hexdigest()[:12]
            if "fragments" in s:
                if "frag" not in fns:
                    continue
                out[name] = cached(
                    cache,
                    f"{key}_{name}_{digest}",
                    lambda f=fns, s=s: f["frag"](s["fragments"]),
                )
            else:
                out[name] = cached(
                    cache,
                    f"{key}_{name}_{digest}",
                    lambda f=fns, s=s: np.stack([f["rec"](w) for w in s["waves"]]),
                )
        embeddings[label] = out
    return embeddings


def score_sets(
    embeddings: dict[str, dict[str, np.ndarray]], sets: dict, thresholds: dict[str, float]
) -> dict[str, dict]:
    """EER and minDCF of every row on every set (k-way accuracy too on the fragments), and
    what a shipped model's own threshold does there."""
    results: dict[str, dict] = {}
    for label, by_set in embeddings.items():
        results[label] = {}
        every: list[tuple[np.ndarray, np.ndarray]] = []
        for name, emb in by_set.items():
            spk = np.asarray(sets[name]["speakers"])
            rec = np.asarray(sets[name]["recordings"])
            if name == "libri_fragments":
                s, lab = verification_trials(emb, spk, rec)
                r = summarise(s, lab)
                curve = kway_curve(emb, spk, rec, ks=KWAY, trials=2000, rng=0)
                r.update({f"acc{k}": curve[k].accuracy for k in KWAY})
            else:
                s, lab = recording_trials(emb, spk, rec)[2:]
                r = summarise(s, lab)
            shipped = thresholds.get(label)
            if shipped is not None:  # what the model's own calibrated threshold does here
                r["at_model_threshold"] = {"threshold": shipped, **at_threshold(s, lab, shipped)}
            results[label][name] = r
            every.append((s, lab))
        if len(every) == len(sets):  # every set's trials in one pool (RAVDESS's are most)
            results[label]["pooled"] = summarise(*map(np.concatenate, zip(*every, strict=True)))
    return results


def asnorm_rows(
    embeddings: dict[str, np.ndarray], sets: dict, cohort: np.ndarray, tops: list[int]
) -> dict[str, dict]:
    """The accurate model's rows again, its scores AS-normalised against its cohort."""
    results: dict[str, dict] = {}
    for top in tops:
        label = f"accurate + AS-norm (top {top})"
        results[label] = {}
        for name, emb in embeddings.items():
            spk = np.asarray(sets[name]["speakers"])
            rec = np.asarray(sets[name]["recordings"])
            i, j, s, lab = recording_trials(emb, spk, rec)
            results[label][name] = summarise(asnorm(s, emb[i], emb[j], cohort, top), lab)
    return results


def print_tables(
    results: dict[str, dict], names: list[str], thresholds: dict[str, float], notes: dict
) -> None:
    print("| system | " + " | ".join(names) + " | 4-way | 40-way |")
    print("| --- |" + " ---: |" * (len(names) + 2))
    for label, by_set in results.items():
        cells = [
            f"{100 * by_set[n]['eer']:.2f}% / {by_set[n]['min_dcf']:.3f}" if n in by_set else ""
            for n in names
        ]
        lf = by_set.get("libri_fragments", {})
        ks = [f"{lf[f'acc{k}']:.3f}" if f"acc{k}" in lf else "" for k in KWAY]
        print(f"| {label} | " + " | ".join(cells + ks) + " |")
    print("\nAt each model's own calibrated threshold (miss / false alarm):\n")
    print("| model | threshold | " + " | ".join(names) + " |")
    print("| --- | ---: |" + " ---: |" * len(names))
    for label, threshold in thresholds.items():
        cells = []
        for n in names:
            at = results[label].get(n, {}).get("at_model_threshold")
            cells.append(f"{100 * at['miss']:.1f}% / {100 * at['false_alarm']:.2f}%" if at else "")
        print(f"| {label} | {threshold:.4f} | " + " | ".join(cells) + " |")
    print()
    for name, note in notes.items():
        print(f"- {name}: {note}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shipped = {name: load_model(name) for name in ("accurate", "fast", "ecapa")}
    accurate = shipped["accurate"]
    speakers = sorted(s.rsplit(":", 1)[-1] for s in accurate.info["split"]["test"])
    sets = build_sets(args.data, speakers, args.ravdess_per_actor, args.vad)
    kept = {name: len(s["speakers"]) for name, s in sets.items()}
    if args.common_with:
        other = build_sets(args.data, speakers, args.ravdess_per_actor, args.common_with)
        sets = common_items(sets, other)
    if args.sets:
        sets = {name: s for name, s in sets.items() if name in args.sets}
    systems, candidates = build_systems(args, shipped)
    models = {name: m.fingerprint for name, m in {**shipped, **candidates}.items()}
    models |= {name: f.sha256 for name, f in FUSIONS.items()}
    fusion_weights = {name: f.weight for name, f in FUSIONS.items()}
    # What each system's embeddings depend on besides the audio: the weights it ran.
    weights = {**models, "CAM++": accurate.fingerprint, "ECAPA": shipped["ecapa"].fingerprint}
    embeddings = embed_sets(systems, sets, weights, args.cache, args.vad)
    for name in FUSIONS:
        if args.systems is None or name in args.systems:
            embeddings[SHIPPED_ROWS[name]] = fused_rows(embeddings, name)
    if args.systems:  # members embedded only for a fusion are not scored
        embeddings = {k: v for k, v in embeddings.items() if k.split()[0] in args.systems}
    thresholds = {
        label: shipped[name].threshold for name, label in SHIPPED_ROWS.items() if name in shipped
    }
    thresholds.update({f"{name} (candidate)": m.threshold for name, m in candidates.items()})
    thresholds = {k: v for k, v in thresholds.items() if k in embeddings and v is not None}
    results = score_sets(embeddings, sets, thresholds)
    if args.readings and accurate.cohort is not None and "accurate (CAM++)" in embeddings:
        cohort = l2_normalize(accurate.cohort)
        results |= asnorm_rows(embeddings["accurate (CAM++)"], sets, cohort, args.asnorm_top)
    notes = {
        name: f"{len(s['speakers'])} items, {len(set(s['speakers']))} speakers"
        + (f" (of {kept[name]} kept by --vad {args.vad})" if args.common_with else "")
        for name, s in sets.items()
    }
    report = {
        "command": " ".join(sys.argv),
        "models": models,
        "fusion_weights": fusion_weights,
        "threads": torch.get_num_threads(),
        "vad": args.vad,
        "common_with": args.common_with,
        "sets": notes,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_measured:
        write_measured(args.write_measured, results, " ".join(sys.argv))
    print_tables(results, [*sets, "pooled"], thresholds, notes)


if __name__ == "__main__":
    main()
