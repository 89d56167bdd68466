"""Decisions that hold a false-accept rate: fit the model's decision calibration, and measure it.

    python bench/bench_decisions.py --model accurate --fit models/campp_zh_en.decision.json
    python bench/bench_decisions.py --model accurate --out docs/results/decisions_accurate.json

Data (``bench/decision_data.py``): every recording of LibriSpeech (3 long speakers and 100 of
the one-utterance speakers, each utterance split into two recordings), VCTK + ARCTIC
("studio"), AISHELL S0913 and AMI, embedded whole and cut to 0.5 ... 30 s of speech; RAVDESS
(eval-only) likewise. Speakers are split in two by a hash of their name: the decision
calibration is **fitted** on the ``fit`` half of the training-allowed corpora and
**measured** on the ``held`` half of each, and on all 24 RAVDESS actors (never fitted on).

Trials (``decision_data.build_trials``): enrollments pooled from 1, 3 and 10 recordings of a
speaker (when the speaker has more), each tested against cuts of the speaker's other
recordings and cuts of the corpus's other speakers (strangers of the same domain).

The report is a table per corpus x test-speech length x enrollment size: trials, actual FAR
and FRR of three rules at a 1 % false-accept target, the oracle FRR (the best threshold on
that very cell at the same FAR), actDCF / minDCF (P_target 0.01), Cllr / minCllr, and EER:

- ``before``: the shipped fixed cosine threshold (``accurate``: 0.4965);
- ``qmf``: the quality-measure logistic llr of the fitted model, with one llr threshold set
  on the fit trials for 1 % false accepts (the NIST SRE practice, the baseline);
- ``after``: the fitted model's rule (``DecisionModel.decide``): strangers' mean and spread
  as functions of quality, and their standardised tail.

Embeddings are cached under ``--cache`` (``runs/decisions``): reruns only redo the maths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from decision_data import (
    CORPORA,
    CUT_SECONDS,
    TRAINING_ALLOWED,
    CellTrials,
    build_trials,
    cache_path,
    load_or_embed,
    merge,
    split_of,
)

from speakerid.audio import DEFAULT_VAD, VADS
from speakerid.decision.calibration import condition_report
from speakerid.decision.constants import DEFAULT_FAR
from speakerid.decision.model import DecisionModel, fit_decision_model
from speakerid.embedding.pipeline import open_embedder

TAIL_TEXT = {
    "corpus": "tail: the worst corpus's",
    "cell": "tail: the worst cell's (corpus x test length x enrollment size)",
}
MIN_CELL_NONTARGET = 200  # the target applies to cells with at least this many strangers


def corpus_trials(model: str, data: Path, cache: Path, split: str, seed: int, vad: str) -> dict:
    """Trials per corpus among the speakers of ``split`` (``fit`` or ``held``)."""
    embedder = None
    out = {}
    corpora = TRAINING_ALLOWED if split == "fit" else CORPORA
    for corpus in corpora:
        if embedder is None and not cache_path(cache, model, corpus, vad).is_file():
            embedder = open_embedder(model, vad=vad)
        e = load_or_embed(embedder, model, data, corpus, cache, vad)
        speakers = {
            s for s in set(e.speakers.tolist()) if corpus == "ravdess" or split_of(s) == split
        }
        if len(speakers) < 2:
            continue
        out[corpus] = build_trials(e, speakers, seed=seed)
    return out


def qmf_threshold(model: DecisionModel, fit: CellTrials, far: float) -> float:
    """The single llr threshold that accepts ``far`` of the fit's strangers (weighted cells)."""
    t = fit.trials
    llr = model.llr(t.scores, *t.quality)[~t.labels]
    w = t.weights[~t.labels]
    order = np.argsort(-llr)
    share = np.cumsum(w[order]) / w.sum()
    return float(llr[order][np.searchsorted(share, far)])


def report(
    model: DecisionModel, trials: dict[str, CellTrials], fixed: float, qmf: float, far: float
) -> list[dict[str, Any]]:
    rows = []
    for corpus, ct in trials.items():
        t = ct.trials
        llr = model.llr(t.scores, *t.quality)
        rules = {
            "before": t.scores >= fixed,
            "qmf": llr >= qmf,
            "after": t.scores >= model.thresholds(far, *t.quality),
        }
        for b in np.unique(ct.bucket):
            for k in np.unique(ct.enroll_size):
                m = (ct.bucket == b) & (ct.enroll_size == k)
                if t.labels[m].sum() == 0 or (~t.labels[m]).sum() == 0:
                    continue
                row: dict[str, Any] = {
                    "corpus": corpus,
                    "test_seconds": CUT_SECONDS[int(b)],
                    "enroll_recordings": int(k),
                }
                for rule, accepted in rules.items():
                    rep = condition_report(
                        t.scores[m], t.labels[m], accepted[m], llr[m] if rule == "after" else None
                    )
                    row.update({"n_target": rep["n_target"], "n_nontarget": rep["n_nontarget"]})
                    row[rule] = {k: v for k, v in rep.items() if not k.startswith("n_")}
                rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]], far: float) -> dict[str, Any]:
    """Worst cells and how many meet the issue's targets (FAR <= 2 %, FRR within 10 points)."""
    big = [r for r in rows if r["n_nontarget"] >= MIN_CELL_NONTARGET]
    out: dict[str, Any] = {
        "cells": len(rows),
        f"cells_with_{MIN_CELL_NONTARGET}_strangers": len(big),
    }
    for rule in ("before", "qmf", "after"):
        fars = [r[rule]["far"] for r in big]
        gaps = [r[rule]["frr"] - r[rule]["oracle_frr"] for r in big]
        out[rule] = {
            "max_far": max(fars),
            "cells_far_over_2pct": int(sum(f > 0.02 for f in fars)),
            "max_frr_gap_to_oracle": max(gaps),
            "cells_frr_gap_over_10pts": int(sum(g > 0.10 for g in gaps)),
            "max_frr": max(r[rule]["frr"] for r in big),
        }
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| corpus | test s | enroll | trials (same/diff) | FAR before | FRR before | FAR qmf | "
        "FRR qmf | FAR after | FRR after | oracle FRR | actDCF / minDCF | Cllr / minCllr | EER |"
    )
    lines = [head, "|" + " --- |" * 14]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    for r in rows:
        a = r["after"]
        lines.append(
            f"| {r['corpus']} | {r['test_seconds']:g} | {r['enroll_recordings']} | "
            f"{r['n_target']}/{r['n_nontarget']} | {pct(r['before']['far'])} | "
            f"{pct(r['before']['frr'])} | {pct(r['qmf']['far'])} | {pct(r['qmf']['frr'])} | "
            f"{pct(a['far'])} | {pct(a['frr'])} | {pct(a['oracle_frr'])} | "
            f"{a['act_dcf']:.3f} / {a['min_dcf']:.3f} | {a['cllr']:.3f} / {a['min_cllr']:.3f} | "
            f"{pct(a['eer'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="accurate")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("runs/decisions"))
    parser.add_argument("--far", type=float, default=DEFAULT_FAR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vad", default=DEFAULT_VAD, choices=VADS, help="how speech is found (as --vad)"
    )
    parser.add_argument("--fit", type=Path, help="write the fitted DecisionModel JSON here")
    parser.add_argument("--decision", type=Path, help="measure this DecisionModel JSON")
    parser.add_argument("--out", type=Path, help="write the report JSON here")
    parser.add_argument(
        "--tail-groups",
        choices=("corpus", "cell"),
        default="corpus",
        help="the tail is the worst of these groups' (cell: corpus x length x enrollment size)",
    )
    parser.add_argument(
        "--threshold", type=float, help="the 'before' rule's fixed cosine (default: the model's)"
    )
    parser.add_argument("--markdown", type=Path, help="write the table here")
    args = parser.parse_args()

    fit_parts = corpus_trials(args.model, args.data, args.cache, "fit", args.seed, args.vad)
    fit = merge(list(fit_parts.values()))
    if args.decision is not None:
        model = DecisionModel.from_json(args.decision.read_text())
    else:
        described = ", ".join(
            f"{c} ({int(p.trials.labels.sum())}/{int((~p.trials.labels).sum())})"
            for c, p in fit_parts.items()
        )
        groups = np.concatenate([np.full(len(p.trials.scores), c) for c, p in fit_parts.items()])
        if args.tail_groups == "cell":  # the worst corpus x test length x enrollment size
            cells = np.concatenate([p.bucket * 100 + p.enroll_size for p in fit_parts.values()])
            groups = np.char.add(groups, cells.astype(str))
        model = fit_decision_model(
            fit.trials,
            f"bench/bench_decisions.py --model {args.model} --vad {args.vad}: "
            f"fit-half speakers of {described} (same/different-speaker trials); "
            + TAIL_TEXT[args.tail_groups],
            groups,
        )
    if args.fit is not None:
        args.fit.write_text(model.to_json() + "\n")
        print(f"wrote {args.fit}")
    fixed = args.threshold
    if fixed is None:
        from speakerid.embedding.backends.torch import load_model

        fixed = load_model(args.model).threshold
        assert fixed is not None
    qmf = qmf_threshold(model, fit, args.far)
    held = corpus_trials(args.model, args.data, args.cache, "held", args.seed, args.vad)
    rows = report(model, held, fixed, qmf, args.far)
    fitted_rows = report(model, fit_parts, fixed, qmf, args.far)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "model": args.model,
        "vad": args.vad,
        "far": args.far,
        "fixed_threshold": fixed,
        "qmf_llr_threshold": qmf,
        "summary_held_out": summary(rows, args.far),
        "summary_fit": summary(fitted_rows, args.far),
        "held_out": rows,
        "decision_model": json.loads(model.to_json()),
    }
    print(json.dumps({k: result[k] for k in ("summary_held_out", "summary_fit")}, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(table(rows) + "\n")


if __name__ == "__main__":
    main()
