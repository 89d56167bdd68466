"""Figures of an evaluation: k-way curves, DET curves, t-SNE maps, training curves.

The only evaluation module that imports matplotlib (its object API, no pyplot state), so
that the metrics and the training loop stay free of it. Each function writes one PNG and
returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from speakerid.errors import DataError
from speakerid.lab.kway import KWayResult
from speakerid.lab.metrics import det_curve, eer


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_kway_curve(
    curves: Mapping[str, Mapping[int, KWayResult | float]],
    path: str | Path,
    reference: Mapping[int, tuple[float, float]] | None = None,
    reference_label: str = "case study",
    title: str | None = None,
) -> Path:
    """Accuracy against k for each labelled curve, with 95% intervals and the 1/k line.

    Parameters
    ----------
    curves: label -> {k: KWayResult or plain accuracy}.
    path: PNG file to write.
    reference: {k: (low, high)} accuracy ranges drawn as shaded bars, e.g. ``CASE_STUDY_KWAY``.
    """
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    all_ks: set[int] = set(reference or {})
    for label, curve in curves.items():
        ks = sorted(curve)
        all_ks.update(ks)
        acc = np.array([_accuracy(curve[k]) for k in ks])
        line = ax.plot(ks, acc, marker="o", markersize=3, label=label)[0]
        lo = [curve[k].ci_low if isinstance(curve[k], KWayResult) else np.nan for k in ks]
        hi = [curve[k].ci_high if isinstance(curve[k], KWayResult) else np.nan for k in ks]
        if not np.isnan(lo).all():
            ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if reference:
        rk = sorted(reference)
        lo = np.array([reference[k][0] for k in rk])
        hi = np.array([reference[k][1] for k in rk])
        ax.errorbar(
            rk,
            (lo + hi) / 2,
            yerr=(hi - lo) / 2,
            fmt="none",
            ecolor="black",
            elinewidth=6,
            alpha=0.35,
            capsize=0,
            label=reference_label,
        )
    if all_ks:
        grid = np.arange(min(all_ks), max(all_ks) + 1)
        ax.plot(grid, 1.0 / grid, linestyle="--", color="grey", label="random (1/k)")
    ax.set_xlabel("k (speakers per task)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _accuracy(value: KWayResult | float) -> float:
    return value.accuracy if isinstance(value, KWayResult) else float(value)


DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9)


def plot_det(
    systems: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """DET curves (miss against false-alarm rate on normal-deviate axes), EER marked.

    Parameters
    ----------
    systems: label -> (scores (P,), labels (P,)).
    path: PNG file to write.
    """
    from scipy.stats import norm

    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    clip = (DET_TICKS[0] / 2, 1 - DET_TICKS[0] / 2)
    worst = 0.0
    for label, (scores, labels) in systems.items():
        fpr, fnr, _ = det_curve(scores, labels)
        e, _ = eer(scores, labels)
        worst = max(worst, e)
        line = ax.plot(
            norm.ppf(np.clip(fpr, *clip)),
            norm.ppf(np.clip(fnr, *clip)),
            label=f"{label} (EER {100 * e:.1f}%)",
        )[0]
        ax.plot(*[norm.ppf(np.clip(e, *clip))] * 2, "o", color=line.get_color())
    ticks = norm.ppf(DET_TICKS)
    names = [f"{100 * t:g}" for t in DET_TICKS]
    for setter in (ax.set_xticks, ax.set_yticks):
        setter(ticks, names)
    # The usual 0.05-50% square, widened for weak systems so that their EER stays in view.
    lim = (norm.ppf(clip[0]), norm.ppf(0.5 if worst < 0.25 else 0.95))
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.plot(lim, lim, linestyle=":", color="grey", linewidth=0.8)
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_tsne(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    path: str | Path,
    max_speakers: int = 10,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """2-D t-SNE of the embeddings of the ``max_speakers`` speakers with most fragments.

    Perplexity is ``min(30, (n - 1) / 3)`` (at least 1) for the n points shown, since t-SNE
    needs it below n.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(speakers).astype(str)
    names, counts = np.unique(labels, return_counts=True)
    shown = names[np.argsort(-counts, kind="stable")[:max_speakers]]
    mask = np.isin(labels, shown)
    x, labels = x[mask], labels[mask]
    if len(x) < 3:
        raise DataError("t-SNE needs at least 3 fragments")
    perplexity = float(max(1.0, min(30.0, (len(x) - 1) / 3)))
    points = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine"
    ).fit_transform(x)
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    for name in sorted(shown):
        sel = labels == name
        ax.scatter(points[sel, 0], points[sel, 1], s=10, label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize="small", markerscale=1.5, loc="best")
    ax.set_title(title or f"t-SNE of fragment embeddings ({len(shown)} speakers)")
    return _save(fig, path)


def plot_training_curves(
    history: Sequence[Mapping[str, float]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Training loss against step, and validation accuracy (right axis) where logged.

    Parameters
    ----------
    history: records with keys ``step`` and ``loss``, optionally ``val_acc``.
    path: PNG file to write.
    """
    if not history:
        raise ValueError("history is empty")
    steps = np.array([h["step"] for h in history], dtype=float)
    loss = np.array([h.get("loss", np.nan) for h in history], dtype=float)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(steps, loss, color="tab:blue", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    val = [(h["step"], h["val_acc"]) for h in history if h.get("val_acc") is not None]
    if val:
        right = ax.twinx()
        vs, va = zip(*val, strict=True)
        right.plot(vs, va, color="tab:orange", marker="o", markersize=3, label="val accuracy")
        right.set_ylabel("validation accuracy", color="tab:orange")
        right.set_ylim(0, 1.02)
    if title:
        ax.set_title(title)
    return _save(fig, path)
