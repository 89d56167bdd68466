"""The `best` tier's fusion weight, chosen on training-allowed speakers only.

`best` scores a trial as ``w * cos_campp + (1 - w) * cos_ecapa``: its recording vector is
``concat(sqrt(w) * a, sqrt(1 - w) * e)`` of the two models' own unit vectors (``a`` pooled
from CAM++'s fragment embeddings, ``e`` from ECAPA's, over the same trimmed fragments), so
that the cosine of two fused vectors is exactly that sum and the store, search and decision
code need no change (``speakerid/embedding/fused.py``).

This reads the two models' cached decision data (``bench/decision_data.py``; make them with
``bench/bench_decisions.py --model accurate`` and ``--model ecapa``, same ``--vad``), fuses
them for every weight of a grid, builds the enrollment trials of ``bench_decisions`` on the
**fit** half of the training-allowed corpora (LibriSpeech, VCTK+ARCTIC, AISHELL, AMI), and
picks the weight with the lowest mean EER over those corpora (each EER the mean over several
seeded draws of the trials, so that one draw's luck does not pick the weight). The held half
and RAVDESS (eval-only) are reported beside it for every weight, never used for the choice.

``--write-caches`` stores the fused data as the decision cache of model ``best``, so that
``bench/bench_decisions.py --model best`` fits and measures its decision calibration
without embedding anything again. It also prints the fixed cosine threshold of ``best``:
the EER point (or middle of the gap) of all whole-recording pairs of the fit speakers,
within each corpus, as ``bench/calibrate.py`` sets the other models' thresholds.

    python bench/bench_fusion.py --cache runs/decisions --write-caches \\
        --out docs/results/fusion.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from decision_data import (
    CORPORA,
    TRAINING_ALLOWED,
    Embedded,
    build_trials,
    cache_path,
    load_or_embed,
    split_of,
)

from speakerid.audio import DEFAULT_VAD, VADS
from speakerid.decision.calibration import eer_point, gap_threshold, pair_trials
from speakerid.decision.model import min_cllr
from speakerid.embedding.fused import fuse
from speakerid.encoders.registry import FUSIONS

MEMBERS = FUSIONS["best"].members  # the weight w belongs to the first


def fuse_embedded(a: Embedded, e: Embedded, w: float) -> Embedded:
    """The `best` vectors of two models' embeddings of the same recordings and cuts."""
    same = (
        np.array_equal(a.speakers, e.speakers)
        and np.array_equal(a.cut_rec, e.cut_rec)
        and np.allclose(a.rec_seconds, e.rec_seconds)
        and np.allclose(a.cut_seconds, e.cut_seconds)
    )
    if not same:
        raise SystemExit("the two caches do not hold the same recordings and cuts (same --vad?)")
    return Embedded(
        a.speakers,
        fuse(a.rec_vectors, e.rec_vectors, w),
        a.rec_seconds,
        a.cut_rec,
        a.cut_seconds,
        fuse(a.cut_vectors, e.cut_vectors, w),
    )


def speakers_of(e: Embedded, corpus: str, split: str) -> set[str]:
    return {s for s in set(e.speakers.tolist()) if corpus == "ravdess" or split_of(s) == split}


def measure(fused: Embedded, corpus: str, split: str, seeds: list[int]) -> dict[str, float] | None:
    """EER and minCllr of the enrollment trials, each the mean over draws of ``seeds``."""
    speakers = speakers_of(fused, corpus, split)
    if len(speakers) < 2:
        return None  # no strangers (AISHELL has one speaker here)
    eers, cllrs = [], []
    for seed in seeds:
        trials = build_trials(fused, speakers, seed=seed).trials
        eers.append(eer_point(trials.scores, trials.labels)[0])
        cllrs.append(min_cllr(trials.scores, trials.labels))
    return {"eer": float(np.mean(eers)), "min_cllr": float(np.mean(cllrs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("runs/decisions"))
    parser.add_argument("--vad", default=DEFAULT_VAD, choices=VADS)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="trial draws averaged"
    )
    parser.add_argument("--step", type=float, default=0.05, help="grid step of the weight")
    parser.add_argument("--write-caches", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    member = {
        m: {c: load_or_embed(None, m, args.data, c, args.cache, args.vad) for c in CORPORA}
        for m in MEMBERS
    }
    grid = np.round(np.arange(0.0, 1.0 + 1e-9, args.step), 4)
    rows = []
    for w in grid:
        row: dict = {"w": float(w)}
        for corpus in CORPORA:
            fused = fuse_embedded(member[MEMBERS[0]][corpus], member[MEMBERS[1]][corpus], float(w))
            splits = ("held",) if corpus == "ravdess" else ("fit", "held")
            for split in splits:
                measured = measure(fused, corpus, split, args.seeds)
                if measured is not None:
                    row[f"{corpus}/{split}"] = measured
        for split in ("fit", "held"):
            eers = [v["eer"] for k, v in row.items() if k.endswith(f"/{split}")]
            row[f"{split}_mean_eer"] = float(np.mean(eers))
        rows.append(row)
        cells = "  ".join(
            f"{k} {100 * v['eer']:.2f}" for k, v in row.items() if isinstance(v, dict)
        )
        print(f"w={w:.2f}  fit mean {100 * row['fit_mean_eer']:.2f}  |  {cells}", flush=True)
    chosen = min(rows, key=lambda r: (r["fit_mean_eer"], abs(r["w"] - 0.5)))
    w = chosen["w"]
    print(f"chosen w = {w} (lowest mean EER over the fit half of {', '.join(TRAINING_ALLOWED)})")

    scores, labels = [], []
    for corpus in TRAINING_ALLOWED:
        fused = fuse_embedded(member[MEMBERS[0]][corpus], member[MEMBERS[1]][corpus], w)
        keep = np.isin(fused.speakers, sorted(speakers_of(fused, corpus, "fit")))
        if len(set(fused.speakers[keep].tolist())) < 2:
            continue
        s, lab = pair_trials(fused.rec_vectors[keep], fused.speakers[keep])
        scores.append(s)
        labels.append(lab)
    eer, threshold, separable = gap_threshold(np.concatenate(scores), np.concatenate(labels))
    print(f"best's fixed cosine threshold {threshold:.4f} (whole-recording pair EER {eer:.4f})")

    if args.write_caches:
        for corpus in CORPORA:
            fused = fuse_embedded(member[MEMBERS[0]][corpus], member[MEMBERS[1]][corpus], w)
            np.savez(cache_path(args.cache, "best", corpus, args.vad), **fused.__dict__)
        print(f"wrote the decision caches of best under {args.cache}")
    if args.out is not None:
        result = {
            "command": " ".join(["python", *sys.argv]),
            "vad": args.vad,
            "members": list(MEMBERS),
            "chosen_w": w,
            "rule": "lowest mean EER over the fit-half speakers of the training-allowed corpora",
            "threshold": threshold,
            "threshold_pair_eer": eer,
            "threshold_separable": separable,
            "grid": rows,
        }
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
