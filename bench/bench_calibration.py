"""What ``speakerid calibrate`` changes, measured on speakers it never saw.

1. Verification (1:1) on RAVDESS: calibrate on actors 01-12 exactly as ``speakerid calibrate``
   does (``calibrate.fit_calibration``: each recording against a model pooled from 3 other
   recordings of its speaker, and against every other speaker's models), then score the same
   kind of trials on actors 13-24: false accepts and misses at the model's threshold, at the
   calibrated EER point and at the calibrated 1% false-accept point (raw cosine, and AS-norm
   against a cohort of LibriSpeech speakers).
2. Open-set identification (1:N): a store of the 251 LibriSpeech speakers of the data (one
   recording each; speakers 19, 26 and 27 from 3 recordings of their first chapter). The 1:N
   threshold is calibrated for 5% strangers named on VCTK p225-p226, ARCTIC clb, 8 AMI
   speakers and RAVDESS actors 01-12; then strangers never used in calibration (VCTK
   p227-p228, ARCTIC slt, the other 8 AMI speakers, AISHELL S0913, RAVDESS actors 13-24) and
   10 second-chapter recordings each of speakers 19, 26 and 27 are identified, at the model's
   threshold and at the calibrated one.

    python bench/bench_calibration.py --data ../shared/data [--model PATH] [--out FILE.json]

Embeddings are cached per model fingerprint (``--cache``), so reruns only redo the maths.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from speakerid.decision.calibrate import Labelled, fit_calibration
from speakerid.decision.calibration import (
    ENROLL_SIZE,
    as_norm_scores,
    eer_point,
    enrollment_trials,
    pool,
    power_threshold,
    rates_at,
)
from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.encoders.twin import LoadedModel
from speakerid.errors import AudioError
from speakerid.vectors import score

AUDIO = (".flac", ".wav")


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in AUDIO)


def embed_all(embedder: Embedder, paths: list[Path], cache: Path) -> dict[str, np.ndarray]:
    """Embeddings by path, from the cache where present (keyed by model fingerprint).

    Recordings the embedder refuses (too little speech, ...) are left out, as ``calibrate``
    skips them; the cache remembers them as empty arrays.
    """
    key = embedder.model.fingerprint[:16]
    store: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as npz:
            store = {k: npz[k] for k in npz.files}
    todo = [p for p in paths if f"{key}|{p}" not in store]
    cache.parent.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(todo):
        try:
            store[f"{key}|{path}"] = embedder.embed_file(path)
        except AudioError:
            store[f"{key}|{path}"] = np.zeros(0, np.float32)
        if (i + 1) % 200 == 0 or i + 1 == len(todo):
            print(f"  embedded {i + 1}/{len(todo)}", flush=True)
            np.savez(cache, **store)
    return {str(p): store[f"{key}|{p}"] for p in paths if store[f"{key}|{p}"].size}


def usable(groups: dict[str, list[Path]], emb: dict[str, np.ndarray]) -> dict[str, list[Path]]:
    """The groups with only the recordings that could be embedded."""
    kept = {s: [p for p in files if str(p) in emb] for s, files in groups.items()}
    return {s: files for s, files in kept.items() if files}


def labelled(groups: dict[str, list[Path]], emb: dict[str, np.ndarray]) -> Labelled:
    paths = [str(p) for files in groups.values() for p in files]
    spk = np.asarray([s for s, files in groups.items() for _ in files])
    return Labelled(np.stack([emb[p] for p in paths]), spk, spk, paths)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


Groups = dict[str, list[Path]]  # speaker -> recordings
MULTI = {"19", "26", "27"}  # LibriSpeech speakers enrolled from 3 recordings, tested on 10


def file_groups(data: Path) -> dict[str, Groups]:
    """Every group of recordings the benchmark uses, by role (see the module's description)."""
    rav = data / "eval-only" / "ravdess"
    libri = data / "LibriSpeech" / "train-clean-100"
    extra = data / "extra"

    def actors(lo: int, hi: int) -> Groups:
        return {f"actor{a:02d}": files_of(rav / f"Actor_{a:02d}") for a in range(lo, hi + 1)}

    gallery_files: Groups = {}
    genuine: Groups = {}
    for folder in sorted(p for p in libri.iterdir() if p.is_dir()):
        chapters = sorted(p for p in folder.iterdir() if p.is_dir())
        if folder.name in MULTI:
            gallery_files[folder.name] = files_of(chapters[0])[:3]
            genuine[folder.name] = files_of(chapters[1])[:10]
        else:
            gallery_files[folder.name] = files_of(folder)[:1]
    ami = sorted(p.name for p in (extra / "ami").iterdir())
    rav_cal, rav_test = actors(1, 12), actors(13, 24)
    strangers_cal = {
        **{f"vctk:{s}": files_of(extra / "vctk" / s) for s in ("p225", "p226")},
        "arctic:clb": files_of(extra / "cmu_arctic" / "clb"),
        **{f"ami:{s}": files_of(extra / "ami" / s) for s in ami[::2]},
        **rav_cal,
    }
    strangers_test = {
        **{f"vctk:{s}": files_of(extra / "vctk" / s) for s in ("p227", "p228")},
        "arctic:slt": files_of(extra / "cmu_arctic" / "slt"),
        **{f"ami:{s}": files_of(extra / "ami" / s) for s in ami[1::2]},
        "aishell:S0913": files_of(extra / "aishell1" / "S0913"),
        **rav_test,
    }
    return {
        "rav_cal": rav_cal,
        "rav_test": rav_test,
        "gallery": gallery_files,
        "genuine": genuine,
        "strangers_cal": strangers_cal,
        "strangers_test": strangers_test,
    }


def verification(
    groups: dict[str, Groups], emb: dict[str, np.ndarray], model: LoadedModel
) -> list[dict]:
    """1:1 on RAVDESS actors 13-24 at the model's threshold and at thresholds calibrated on
    actors 01-12 (raw cosine, and AS-norm against the LibriSpeech gallery as cohort)."""
    cal_data, test_data = labelled(groups["rav_cal"], emb), labelled(groups["rav_test"], emb)
    gallery_files = groups["gallery"]
    cohort_names = sorted(n for n in gallery_files if n not in MULTI)
    cohort = np.stack([emb[str(gallery_files[n][0])] for n in cohort_names])
    test = enrollment_trials(test_data.embeddings, test_data.speakers, ENROLL_SIZE)
    rows = [("model threshold", model.threshold, test)]
    for far in (None, 0.01):
        c = fit_calibration(cal_data, model.fingerprint, far=far).calibration
        rows.append((f"calibrated, {c.target}", c.threshold, test))
    normed = fit_calibration(
        cal_data, model.fingerprint, norm="asnorm", cohort=cohort, cohort_kind="model"
    ).calibration

    def normalised(q: np.ndarray, m: np.ndarray, owners: np.ndarray) -> np.ndarray:
        return as_norm_scores(q, m, owners, cohort, None, normed.top_k or 1)

    test_norm = enrollment_trials(
        test_data.embeddings, test_data.speakers, ENROLL_SIZE, score_fn=normalised
    )
    rows.append((f"AS-norm ({len(cohort)} LibriSpeech speakers), eer", normed.threshold, test_norm))
    print(
        f"\n1:1 on RAVDESS actors 13-24 ({test.n_target} same-speaker / {test.n_nontarget} "
        "different-speaker trials), thresholds from actors 01-12:\n"
    )
    print("| threshold | value | false accepts | misses | EER of the scores |")
    print("| --- | ---: | ---: | ---: | ---: |")
    one_to_one = []
    for label, value, trials in rows:
        fa, miss = rates_at(trials.scores, trials.labels, value)
        rate = eer_point(trials.scores, trials.labels)[0]
        print(f"| {label} | {value:.4f} | {pct(fa)} | {pct(miss)} | {pct(rate)} |")
        one_to_one.append(
            {"threshold": label, "value": value, "false_accepts": fa, "misses": miss, "eer": rate}
        )
    return one_to_one


def identification(
    groups: dict[str, Groups], emb: dict[str, np.ndarray], model: LoadedModel
) -> dict[str, object]:
    """1:N against the LibriSpeech store: the 1:N threshold calibrated on some strangers,
    then other strangers and the enrolled speakers' second chapters identified."""
    gallery_files = groups["gallery"]
    names = np.asarray(sorted(gallery_files))
    gallery = np.stack([pool(np.stack([emb[str(p)] for p in gallery_files[n]])) for n in names])
    strangers = labelled(groups["strangers_cal"], emb)
    report = fit_calibration(
        strangers, model.fingerprint, gallery=gallery, gallery_names=names, fpir=0.05
    )
    calib = report.calibration
    # The alternative estimate calibrate falls back to: 1:1 impostor scores "to the N-th power".
    power = power_threshold(report.trials.scores[~report.trials.labels], 0.05, len(names))
    print(
        f"\n1:N against {len(names)} enrolled LibriSpeech speakers; 1:N threshold for 5% "
        f"strangers named ({calib.identify_method}, {calib.n_recordings} calibration "
        f"recordings of {calib.n_speakers} speakers): {calib.identify_threshold:.4f}\n"
    )
    thresholds = {
        "model": model.threshold,
        "calibrated 1:N": calib.identify_threshold,
        "power": power,
    }
    table = identification_table(groups, emb, names, gallery, thresholds)
    print(f"(power-law estimate from 1:1 impostor scores instead: {power:.4f})\n")
    print("| recordings | n | model threshold | calibrated 1:N | power-law 1:N |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, (n, counts) in table.items():
        print(
            f"| {label} | {n} | {counts['model']} | {counts['calibrated 1:N']} "
            f"| {counts['power']} |"
        )
    return {
        "store_speakers": len(names),
        "identify_threshold": calib.identify_threshold,
        "power_threshold": power,
        "model_threshold": model.threshold,
        "rows": {k: {"n": n, **c} for k, (n, c) in table.items()},
    }


def identification_table(
    groups: dict[str, Groups],
    emb: dict[str, np.ndarray],
    names: np.ndarray,
    gallery: np.ndarray,
    thresholds: dict[str, float],
) -> dict[str, tuple[int, dict[str, int]]]:
    """Per row, recordings identified and, at each threshold, strangers named, or enrolled
    speakers missed or named wrongly."""
    table = {}
    for corpus in ("vctk", "arctic", "ami", "aishell", "actor"):
        paths = [
            str(p)
            for s, files in groups["strangers_test"].items()
            if s.startswith(corpus)
            for p in files
        ]
        best = score(np.stack([emb[p] for p in paths]), gallery).max(axis=1)
        table[f"strangers, {corpus.replace('actor', 'ravdess')}"] = (
            len(paths),
            {k: int((best >= t).sum()) for k, t in thresholds.items()},
        )
    gen_paths = [(s, str(p)) for s, files in groups["genuine"].items() for p in files]
    scores = score(np.stack([emb[p] for _, p in gen_paths]), gallery)
    top = names[np.argmax(scores, axis=1)]
    right = top == np.asarray([s for s, _ in gen_paths])
    for label in ("missed", "named wrongly"):
        counts = {}
        for k, t in thresholds.items():
            named = scores.max(axis=1) >= t
            counts[k] = int((~named).sum()) if label == "missed" else int((named & ~right).sum())
        table[f"enrolled (19, 26, 27), {label}"] = (len(gen_paths), counts)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench_calibration_cache.npz"))
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    # One thread: on a shared CPU two threads spin against each other; results are the same.
    torch.set_num_threads(1)
    model = load_model(args.model)
    embedder = Embedder(model, device="cpu", precision="fp32")
    groups = file_groups(args.data)
    everything = [
        p
        for role in ("gallery", "genuine", "strangers_cal", "strangers_test")
        for files in groups[role].values()
        for p in files
    ]
    print(f"embedding {len(everything)} recordings (cached in {args.cache})", flush=True)
    emb = embed_all(embedder, everything, args.cache)
    groups = {role: usable(group, emb) for role, group in groups.items()}
    left_out = len(everything) - sum(
        len(f)
        for role in ("gallery", "genuine", "strangers_cal", "strangers_test")
        for f in groups[role].values()
    )
    print(f"{left_out} recording(s) left out: too little speech", flush=True)
    results: dict[str, object] = {"model": str(model.path), "fingerprint": model.fingerprint}
    results["verification_ravdess"] = verification(groups, emb, model)
    results["identification"] = identification(groups, emb, model)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
