"""The ``calibrate --plot`` figure: score histograms with the thresholds, and a DET curve.

Imported only when a plot is asked for, so matplotlib stays off every other command's path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm as gaussian

from speakerid.calibration import Trials, eer_point, error_rates
from speakerid.outputs import save_figure

DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999)


def plot_calibration(
    trials: Trials,
    thresholds: dict[str, float],
    path: str | Path,
    score_name: str = "cosine score",
) -> Path:
    """Write a PNG: same/different-speaker score histograms with thresholds, and a DET curve.

    Parameters
    ----------
    trials: the scored calibration trials.
    thresholds: label -> threshold, each drawn as a vertical line (e.g. the model's and
        the calibrated one) and marked on the DET curve.
    """
    scores, labels = trials.scores, trials.labels
    fig = Figure(figsize=(11, 4.5))
    hist, det = fig.subplots(1, 2)
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
    clip = (DET_TICKS[0] / 2, 1 - DET_TICKS[0] / 2)
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
    ticks = gaussian.ppf(DET_TICKS)
    for setter in (det.set_xticks, det.set_yticks):
        setter(ticks, [f"{100 * t:g}" for t in DET_TICKS])
    lim = (gaussian.ppf(clip[0]), gaussian.ppf(clip[1]))
    det.set_xlim(*lim)
    det.set_ylim(*lim)
    det.set_xlabel("false accept rate (%)")
    det.set_ylabel("miss rate (%)")
    det.grid(alpha=0.3)
    det.legend(loc="upper right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=110, bbox_inches="tight")
