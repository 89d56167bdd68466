"""The ``calibrate --plot`` figure: score histograms with the thresholds, and a DET curve.

Imported only when a plot is asked for, so matplotlib stays off every other command's path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm as gaussian

from speakerid.decision.calibration import Trials, bucket_name, bucket_of, eer_point, error_rates
from speakerid.decision.model import QualityTrials
from speakerid.outputs import save_figure

DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999)
_CLIP = (DET_TICKS[0] / 2, 1 - DET_TICKS[0] / 2)  # rates drawn at the edges, not at infinity


def plot_calibration(
    trials: Trials,
    thresholds: dict[str, float],
    path: str | Path,
    score_name: str = "cosine score",
    decisions: tuple[QualityTrials, np.ndarray] | None = None,
) -> Path:
    """Write a PNG: same/different-speaker score histograms with thresholds, and a DET curve.

    Parameters
    ----------
    trials: the scored calibration trials.
    thresholds: label -> threshold, each drawn as a vertical line (e.g. the model's and
        the calibrated one) and marked on the DET curve.
    decisions: the quality-annotated trials and the decisions the store's decision
        calibration takes on them: a third panel draws one DET curve per test-speech bucket
        with each bucket's operating point.
    """
    scores, labels = trials.scores, trials.labels
    fig = Figure(figsize=(16.5 if decisions else 11, 4.5))
    panels = fig.subplots(1, 3 if decisions else 2)
    hist, det = panels[0], panels[1]
    if decisions is not None:
        _per_bucket(panels[2], *decisions)
    bins = np.linspace(scores.min(), scores.max(), 60)
    hist.hist(scores[~labels], bins=bins, density=True, alpha=0.6, label="different speakers")
    hist.hist(scores[labels], bins=bins, density=True, alpha=0.6, label="same speaker")
    for (label, value), style in zip(thresholds.items(), ("--", "-", ":", "-."), strict=False):
        hist.axvline(value, color="black", linestyle=style, label=f"{label} {value:.3f}")
    hist.set_xlabel(score_name)
    hist.set_ylabel("density")
    hist.legend(loc="upper left", fontsize=8)
    hist.set_title(f"{int(labels.sum())} same / {int((~labels).sum())} different-speaker trials")

    far, miss, thr = error_rates(scores, labels)
    clip = _CLIP
    rate, _ = eer_point(scores, labels)
    det.plot(gaussian.ppf(np.clip(far, *clip)), gaussian.ppf(np.clip(miss, *clip)))
    det.plot(
        *[gaussian.ppf(np.clip(rate, *clip))] * 2, "o", color="grey", label=f"EER {100 * rate:.1f}%"
    )
    for label, value in thresholds.items():
        i = min(int(np.searchsorted(-thr, -value, side="right")) - 1, len(thr) - 1)
        i = max(i, 0)
        det.plot(
            gaussian.ppf(np.clip(far[i], *clip)),
            gaussian.ppf(np.clip(miss[i], *clip)),
            "s",
            label=f"{label}: FA {100 * far[i]:.1f}%, miss {100 * miss[i]:.1f}%",
        )
    _det_axes(det)
    det.legend(loc="upper right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


def _probit(x: np.ndarray | float) -> np.ndarray:
    return gaussian.ppf(np.clip(x, *_CLIP))


def _det_axes(ax: object) -> None:
    ticks = gaussian.ppf(DET_TICKS)
    for setter in (ax.set_xticks, ax.set_yticks):  # type: ignore[attr-defined]
        setter(ticks, [f"{100 * t:g}" for t in DET_TICKS])
    lim = (gaussian.ppf(_CLIP[0]), gaussian.ppf(_CLIP[1]))
    ax.set_xlim(*lim)  # type: ignore[attr-defined]
    ax.set_ylim(*lim)  # type: ignore[attr-defined]
    ax.set_xlabel("false accept rate (%)")  # type: ignore[attr-defined]
    ax.set_ylabel("miss rate (%)")  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]


def _per_bucket(ax: object, trials: QualityTrials, accepted: np.ndarray) -> None:
    """One DET curve per test-speech bucket, each with the decisions' operating point."""
    buckets = bucket_of(trials.test_seconds)
    for b in np.unique(buckets):
        m = buckets == b
        labels = trials.labels[m]
        if labels.all() or not labels.any():
            continue
        far, miss, _ = error_rates(trials.scores[m], labels)
        (line,) = ax.plot(_probit(far), _probit(miss), label=bucket_name(int(b)))  # type: ignore[attr-defined]
        point_far = accepted[m][~labels].mean()
        point_miss = (~accepted[m][labels]).mean()
        ax.plot(_probit(point_far), _probit(point_miss), "o", color=line.get_color())  # type: ignore[attr-defined]
    _det_axes(ax)
    ax.set_title("per length of test speech; dots: the decisions")  # type: ignore[attr-defined]
    ax.legend(loc="upper right", fontsize=8)  # type: ignore[attr-defined]
