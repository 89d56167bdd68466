"""Evaluating a model on a corpus: ``speakerid evaluate`` and its JSON report.

``evaluate_model`` embeds the fragments of a checkpoint's held-out speakers and reports
n-shot k-way accuracy (``kway``), fragment-level EER / minDCF (``metrics``) and the
baselines, with figures (``plots``). ``report_json`` makes any results JSON-ready;
``match_speakers`` finds a checkpoint's speakers in a corpus.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from speakerid.errors import DataError
from speakerid.lab.kway import (
    CASE_STUDY_KWAY,
    METHODS,
    KWayResult,
    eligible_speakers,
    kway_curve,
    mfcc_stats,
    random_baseline,
)
from speakerid.lab.metrics import verification_summary, verification_trials

if TYPE_CHECKING:
    from speakerid.lab.data import FragmentSet

JSON_DIGITS = 4  # floats in reports are rounded to this many digits


# --------------------------------------------------------------------------------- reports


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(key): _jsonable(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return round(value, JSON_DIGITS) if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def report_json(results: Mapping[str, Any]) -> dict[str, Any]:
    """Turn results into a JSON-serialisable dict.

    Dataclasses (``KWayResult``, ``VerificationResult``) become dicts, numpy values plain
    Python, mapping keys strings (k-way curves are keyed by k), paths strings; floats are
    rounded to 4 digits and non-finite floats become ``None``.
    """
    return _jsonable(dict(results))


# ----------------------------------------------------------------------------- a model on a corpus

SPEAKER_SETS = ("test", "val", "all")


def match_speakers(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """Map a checkpoint's speaker ids onto a corpus's, ignoring ``corpus:`` qualifiers."""
    tail = {a.rsplit(":", 1)[-1]: a for a in available}
    have = set(available)
    out = []
    for w in wanted:
        if w in have:
            out.append(w)
        elif w.rsplit(":", 1)[-1] in tail:
            out.append(tail[w.rsplit(":", 1)[-1]])
    return out


def evaluate_model(
    model: Any,
    data: Sequence[str | Path],
    out_dir: str | Path,
    speakers: str = "test",
    max_way: int = 40,
    shots: Sequence[int] = (1, 5),
    trials: int = 2000,
    seed: int = 0,
    device: str | None = None,
    tsne: bool = True,
    compare: Sequence[Any] = (),
    precision: str = "auto",
) -> dict[str, Any]:
    """Evaluate a loaded model (``model.LoadedModel``) on speakers of ``data``.

    ``compare`` holds more loaded models (other front-ends, say) scored on exactly the same
    fragments and 1-shot tasks, each with its own curve and verification result; the
    speakers are chosen by ``model``'s split.

    ``speakers`` picks the checkpoint's held-out ``test`` (or ``val``) speakers, found in
    the corpora by id, or ``all`` speakers of the corpora (for corpora never trained on).
    Writes ``report.json``, ``kway.png``, ``det.png`` and ``tsne.png`` into ``out_dir``.

    Reports n-shot k-way accuracy (k = 2 .. ``max_way``; prototype and nearest-neighbour for
    n > 1), the random and MFCC-statistics k-NN baselines, and fragment-level EER / minDCF.
    """
    from speakerid.embedding.backends.torch import Embedder
    from speakerid.lab.data import AudioBank, fragment_set, scan_corpora

    if speakers not in SPEAKER_SETS:
        raise DataError(f"unknown speaker set {speakers!r}; one of {list(SPEAKER_SETS)}")
    recordings = scan_corpora(list(data))
    chosen = _chosen_speakers(model, sorted({r.speaker for r in recordings}), speakers)
    frags = fragment_set(AudioBank.load(recordings, chosen))
    emb = Embedder(model, device=device, precision=precision).embed_fragments(frags.waves)
    ks = range(2, min(max_way, eligible_speakers(frags.speakers, 1)) + 1)
    curves = _model_curves(emb, frags, max_way, shots, trials, np.random.default_rng(seed))
    systems = {"model": emb}
    for other in compare:  # the same fragments, and the same 1-shot tasks (rng=seed)
        label = _label(other)
        systems[label] = Embedder(other, device=device, precision=precision).embed_fragments(
            frags.waves
        )
        curves[f"{label}, 1-shot"] = kway_curve(
            systems[label], frags.speakers, frags.recordings, ks, 1, trials, rng=seed
        )
    mfcc = mfcc_stats(frags.waves)
    curves["MFCC-stats k-NN, 1-shot"] = kway_curve(
        mfcc, frags.speakers, frags.recordings, ks, 1, trials, "nearest", "euclidean", rng=seed
    )
    trials_by_system = {
        label: verification_trials(e, frags.speakers, frags.recordings, rng=seed)
        for label, e in systems.items()
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _plot(out, curves, trials_by_system, (emb, frags.speakers) if tsne else None)
    report = _report(model, compare, speakers, frags, ks, curves, trials_by_system)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _report(
    model: Any,
    compare: Sequence[Any],
    speakers: str,
    frags: FragmentSet,
    ks: range,
    curves: dict[str, dict[int, KWayResult]],
    trials_by_system: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """``report.json``: the curves, baselines and each system's fragment verification."""
    return report_json(
        {
            "model": str(model.path),
            "fingerprint": model.fingerprint,
            "speakers": speakers,
            "n_speakers": len(set(frags.speakers.tolist())),
            "n_fragments": len(frags),
            "random_baseline": {k: random_baseline(k) for k in ks},
            "kway": curves,
            "verification_fragments": verification_summary(*trials_by_system["model"]),
            "compared": {
                label: {
                    "model": str(m.path),
                    "verification_fragments": verification_summary(*trials_by_system[label]),
                }
                for label, m in zip(list(trials_by_system)[1:], compare, strict=True)
            },
        }
    )


def _label(model: Any) -> str:
    """A compared model's name: its file's stem, or its run folder's for a ``best`` file."""
    name = Path(model.path).stem
    return Path(model.path).parent.name if name == "best" else name


def _plot(
    out: Path,
    curves: dict[str, dict[int, KWayResult]],
    trials_by_system: dict[str, tuple[np.ndarray, np.ndarray]],
    tsne: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """``kway.png``, ``det.png`` and, given embeddings and speakers, ``tsne.png``."""
    from speakerid.lab.plots import plot_det, plot_kway_curve, plot_tsne

    plot_kway_curve(curves, out / "kway.png", reference=CASE_STUDY_KWAY)
    plot_det(trials_by_system, out / "det.png")
    if tsne is not None:
        plot_tsne(*tsne, out / "tsne.png")


def _chosen_speakers(model: Any, available: list[str], speakers: str) -> list[str]:
    """The speakers of the corpora to evaluate on: all of them, or the model's held-out
    ``test`` / ``val`` speakers (at least two of them must be in the corpora)."""
    if speakers == "all":
        return available
    listed = model.info.get("split", {}).get(speakers, [])
    if not listed:
        raise DataError(
            f"the model records no {speakers!r} speakers; use --speakers all on a corpus "
            "it was not trained on"
        )
    chosen = match_speakers(listed, available)
    if len(chosen) < 2:
        raise DataError(
            f"only {len(chosen)} of the model's {len(listed)} {speakers} speakers are in "
            "the given corpora"
        )
    return chosen


def _model_curves(
    emb: np.ndarray,
    frags: FragmentSet,
    max_way: int,
    shots: Sequence[int],
    trials: int,
    rng: np.random.Generator,
) -> dict[str, dict[int, KWayResult]]:
    """The model's k-way curves: 1-shot, then each n-shot (n > 1) by every method, on the
    speakers with enough recordings for n; the tasks drawn from ``rng`` in that order."""
    ks = range(2, min(max_way, eligible_speakers(frags.speakers, 1)) + 1)
    curves = {
        "model, 1-shot": kway_curve(emb, frags.speakers, frags.recordings, ks, 1, trials, rng=rng)
    }
    for n in shots:
        n_ok = eligible_speakers(frags.speakers, n) if n > 1 else 0
        if n_ok < 2:
            continue
        ks_n = range(2, min(max_way, n_ok) + 1)
        for method in METHODS:
            curves[f"model, {n}-shot {method}"] = kway_curve(
                emb, frags.speakers, frags.recordings, ks_n, n, trials, method=method, rng=rng
            )
    return curves
