"""Evaluation maths and plots: n-shot k-way accuracy, verification EER/minDCF, figures.

Everything here takes arrays: ``embeddings`` of shape ``(N, D)`` (one row per 3-second
fragment), and per-fragment ``speakers`` and ``recordings`` labels of shape ``(N,)``.
Recording labels only need to be unique within a speaker. Only ``evaluate_model`` at the
end touches models and corpora: it is what ``speakerid evaluate`` runs.

The k-way task follows the case study: pick k distinct speakers, one query fragment of the
first ("target") speaker and ``n_shot`` support fragments of each, and predict the speaker
whose support is closest to the query. With ``cross_recording`` the query comes from a
different recording than the target's supports wherever the speaker has one, so that a
model cannot win by recognising the room or the microphone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import det_curve as _sk_det_curve

from speakerid.audio import FRAGMENT_SAMPLES
from speakerid.calibration import eer_point, error_rates
from speakerid.errors import DataError
from speakerid.features import MFCCFrontend
from speakerid.vectors import l2_normalize

Method = Literal["prototype", "nearest"]
Metric = Literal["cosine", "euclidean", "l1"]
Seed = np.random.Generator | int | None

METHODS = ("prototype", "nearest")
METRICS = ("cosine", "euclidean", "l1")
Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval
# The case study's reported k-way accuracy (1-shot), as a range read off its figure.
CASE_STUDY_KWAY: dict[int, tuple[float, float]] = {
    4: (0.72, 0.79),
    10: (0.50, 0.60),
    40: (0.22, 0.26),
}
TASK_BATCH_ELEMENTS = 1 << 22  # random keys / embedding values held at once while batching
PAIR_LIST_LIMIT = 1 << 22  # up to this many pairs are listed outright, beyond it sampled
JSON_DIGITS = 4  # floats in reports are rounded to this many digits


# ----------------------------------------------------------------------------- k-way tasks


@dataclass(frozen=True)
class KWayTasks:
    """Sampled n-shot k-way tasks, as indices into the evaluated arrays.

    Attributes
    ----------
    query: (T,) fragment index of each task's query (always of speaker column 0).
    supports: (T, k, n_shot) fragment indices of each speaker's support set.
    speakers: (T, k) indices into ``speaker_names``; column 0 is the target.
    cross_recording: (T,) True where the query's recording differs from all target supports.
    speaker_names: (S,) the distinct speaker labels.
    """

    query: np.ndarray
    supports: np.ndarray
    speakers: np.ndarray
    cross_recording: np.ndarray
    speaker_names: np.ndarray


@dataclass(frozen=True)
class KWayResult:
    """Accuracy of one n-shot k-way evaluation.

    ``accuracy`` counts a tie between the target and others as 1/(number tied), the expected
    accuracy under random tie-breaking. ``ci_low``/``ci_high`` bound a 95% Wilson interval
    for the task success probability (treating trials as independent).
    """

    k: int  # speakers per task
    n_shot: int  # support fragments per speaker
    accuracy: float  # fraction of tasks answered correctly, in [0, 1]
    trials: int  # number of tasks
    cross_recording_fraction: float  # fraction of tasks whose query and supports differ
    ci_low: float  # lower end of the 95% interval
    ci_high: float  # upper end of the 95% interval
    method: str = "prototype"  # "prototype" or "nearest"
    metric: str = "cosine"  # "cosine", "euclidean" or "l1"

    @property
    def chance(self) -> float:
        """The accuracy of guessing, 1/k."""
        return random_baseline(self.k)


def random_baseline(k: int) -> float:
    """Accuracy of a random guess among ``k`` speakers: ``1 / k``."""
    if k < 1:
        raise ValueError("k must be at least 1")
    return 1.0 / k


def wilson_interval(successes: float, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0, 1)`` when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _rng(rng: Seed) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _labels(speakers: np.ndarray, recordings: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Integer codes: speaker (N,), recording unique across speakers (N,), speaker names (S,)."""
    speakers = np.asarray(speakers).astype(str)
    recordings = np.asarray(recordings).astype(str)
    if speakers.shape != (n,) or recordings.shape != (n,):
        raise ValueError(f"speakers and recordings must have shape ({n},)")
    names, spk = np.unique(speakers, return_inverse=True)
    # A recording label means something only within its speaker.
    _, rec = np.unique(np.stack([speakers, recordings], axis=1), axis=0, return_inverse=True)
    return spk.reshape(-1), rec.reshape(-1), names


def sample_kway_tasks(
    speakers: np.ndarray,
    recordings: np.ndarray,
    k: int,
    n_shot: int = 1,
    trials: int = 2000,
    cross_recording: bool = True,
    rng: Seed = None,
) -> KWayTasks:
    """Draw ``trials`` n-shot k-way tasks, all at once.

    Only speakers with at least ``n_shot + 1`` fragments take part. In each task, k distinct
    speakers are drawn uniformly; the first is the target, whose query fragment is never one
    of its supports. With ``cross_recording``, a target with fragments in two or more
    recordings gets its query from one recording and all its supports from others (the
    query is drawn among fragments that leave ``n_shot`` fragments elsewhere); a target with
    one recording falls back to a different fragment of the same recording.

    Parameters
    ----------
    speakers, recordings: (N,) labels of each fragment.
    k: speakers per task (>= 2).
    n_shot: support fragments per speaker (>= 1).
    trials: number of tasks.
    cross_recording: keep the target's query and supports in different recordings.
    rng: generator or seed (None: fresh entropy).

    Raises
    ------
    DataError: fewer than ``k`` speakers have ``n_shot + 1`` fragments.
    """
    if k < 2 or n_shot < 1 or trials < 1:
        raise ValueError("need k >= 2, n_shot >= 1 and trials >= 1")
    rng = _rng(rng)
    spk, rec, names = _labels(speakers, recordings, len(np.asarray(speakers)))
    counts = np.bincount(spk, minlength=len(names))
    eligible = np.flatnonzero(counts >= n_shot + 1)
    if len(eligible) < k:
        raise DataError(
            f"{k}-way {n_shot}-shot tasks need {k} speakers with at least {n_shot + 1} "
            f"fragments; only {len(eligible)} have that many"
        )

    # Padded per-speaker tables (S_eligible, M): fragment index and recording code, -1 = pad.
    width = int(counts[eligible].max())
    frag = np.full((len(eligible), width), -1, dtype=np.int64)
    frag_rec = np.full((len(eligible), width), -1, dtype=np.int64)
    rec_counts = np.bincount(rec)
    by_speaker = np.split(np.argsort(spk, kind="stable"), np.cumsum(counts)[:-1])
    for row, s in enumerate(eligible):
        idx = by_speaker[s]
        frag[row, : len(idx)] = idx
        frag_rec[row, : len(idx)] = rec[idx]
    valid = frag >= 0
    outside = counts[eligible][:, None] - rec_counts[np.maximum(frag_rec, 0)]
    capable = valid & (outside >= n_shot)  # a query here leaves n_shot supports elsewhere
    cross_ok = capable.any(axis=1) & cross_recording

    query = np.empty(trials, dtype=np.int64)
    supports = np.empty((trials, k, n_shot), dtype=np.int64)
    chosen_all = np.empty((trials, k), dtype=np.int64)
    batch = max(1, TASK_BATCH_ELEMENTS // (k * width + len(eligible)))
    for start in range(0, trials, batch):
        b = min(batch, trials - start)
        chosen = np.argsort(rng.random((b, len(eligible))), axis=1)[:, :k]  # (b, k)
        target = chosen[:, 0]
        # Query: uniform among the allowed positions of the target's row.
        allowed = np.where(cross_ok[target, None], capable[target], valid[target])
        qkeys = np.where(allowed, rng.random((b, width)), np.inf)
        qpos = np.argmin(qkeys, axis=1)
        qrec = frag_rec[target, qpos]
        # Supports: the n_shot smallest of uniform keys over allowed positions.
        ok = valid[chosen]  # (b, k, M)
        same = np.where(
            cross_ok[target, None],
            frag_rec[target] == qrec[:, None],
            np.arange(width)[None, :] == qpos[:, None],
        )
        ok[:, 0] &= ~same
        skeys = np.where(ok, rng.random((b, k, width)), np.inf)
        spos = np.argpartition(skeys, n_shot - 1, axis=-1)[..., :n_shot]  # n_shot < width
        query[start : start + b] = frag[target, qpos]
        supports[start : start + b] = np.take_along_axis(frag[chosen], spos, axis=-1)
        chosen_all[start : start + b] = chosen
    speakers_idx = eligible[chosen_all]
    cross = cross_ok[chosen_all[:, 0]]
    return KWayTasks(query, supports, speakers_idx, cross, names)


def _similarity(q: np.ndarray, s: np.ndarray, metric: str) -> np.ndarray:
    """Similarity of queries ``(B, D)`` to candidates ``(B, ..., D)`` -> ``(B, ...)``."""
    qb = q.reshape(q.shape[0], *([1] * (s.ndim - 2)), q.shape[1])
    if metric == "cosine":  # inputs are unit rows here
        return np.sum(qb * s, axis=-1)
    if metric == "euclidean":
        return -np.sqrt(np.sum((s - qb) ** 2, axis=-1))
    return -np.sum(np.abs(s - qb), axis=-1)


def score_kway_tasks(
    embeddings: np.ndarray,
    tasks: KWayTasks,
    method: Method = "prototype",
    metric: Metric = "cosine",
) -> np.ndarray:
    """Per-task credit in [0, 1]: 1 if the target is closest, 1/m if tied with m-1 others.

    Parameters
    ----------
    embeddings: (N, D) fragment embeddings (or any features).
    tasks: indices from ``sample_kway_tasks``.
    method: ``"prototype"`` compares with the mean of each support set (renormalised for
        cosine), ``"nearest"`` with each speaker's closest single support.
    metric: ``"cosine"`` similarity, or ``"euclidean"`` / ``"l1"`` distance.

    Returns
    -------
    np.ndarray, shape (T,), float64.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError("embeddings must have shape (N, D)")
    if metric == "cosine":
        x = l2_normalize(x)
    trials, k, n_shot = tasks.supports.shape
    credit = np.empty(trials, dtype=np.float64)
    batch = max(1, TASK_BATCH_ELEMENTS // (k * n_shot * x.shape[1]))
    for start in range(0, trials, batch):
        sl = slice(start, start + batch)
        q = x[tasks.query[sl]]  # (b, D)
        s = x[tasks.supports[sl]]  # (b, k, n, D)
        if method == "prototype":
            proto = s.mean(axis=2)
            if metric == "cosine":
                proto = l2_normalize(proto)
            sim = _similarity(q, proto, metric)  # (b, k)
        else:
            sim = _similarity(q, s, metric).max(axis=2)
        tied = sim == sim.max(axis=1, keepdims=True)
        credit[sl] = tied[:, 0] / tied.sum(axis=1)
    return credit


def kway_accuracy(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    recordings: np.ndarray,
    k: int,
    n_shot: int = 1,
    trials: int = 2000,
    method: Method = "prototype",
    metric: Metric = "cosine",
    cross_recording: bool = True,
    rng: Seed = None,
) -> KWayResult:
    """n-shot k-way identification accuracy over ``trials`` random tasks.

    Parameters
    ----------
    embeddings: (N, D) fragment embeddings, unit rows for a trained encoder.
    speakers, recordings: (N,) labels of each fragment (recordings unique within a speaker).
    k, n_shot, trials, cross_recording, rng: see ``sample_kway_tasks``.
    method, metric: see ``score_kway_tasks``.

    Returns
    -------
    KWayResult with accuracy, its 95% interval and the fraction of cross-recording tasks.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError("embeddings must have shape (N, D)")
    _labels(speakers, recordings, len(x))  # shape check before sampling
    tasks = sample_kway_tasks(speakers, recordings, k, n_shot, trials, cross_recording, rng)
    credit = score_kway_tasks(x, tasks, method=method, metric=metric)
    lo, hi = wilson_interval(float(credit.sum()), trials)
    return KWayResult(
        k=k,
        n_shot=n_shot,
        accuracy=float(credit.mean()),
        trials=trials,
        cross_recording_fraction=float(tasks.cross_recording.mean()),
        ci_low=lo,
        ci_high=hi,
        method=method,
        metric=metric,
    )


def eligible_speakers(speakers: np.ndarray, n_shot: int = 1) -> int:
    """Number of speakers with at least ``n_shot + 1`` fragments (the largest possible k)."""
    _, counts = np.unique(np.asarray(speakers).astype(str), return_counts=True)
    return int((counts >= n_shot + 1).sum())


def kway_curve(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    recordings: np.ndarray,
    ks: Iterable[int] | None = None,
    n_shot: int = 1,
    trials: int = 2000,
    method: Method = "prototype",
    metric: Metric = "cosine",
    cross_recording: bool = True,
    rng: Seed = None,
) -> dict[int, KWayResult]:
    """``kway_accuracy`` for each k in ``ks`` (default 2 .. number of eligible speakers).

    One generator is shared across the ks, so a seed fixes the whole curve.
    """
    rng = _rng(rng)
    if ks is None:
        ks = range(2, eligible_speakers(speakers, n_shot) + 1)
    return {
        int(k): kway_accuracy(
            embeddings,
            speakers,
            recordings,
            int(k),
            n_shot=n_shot,
            trials=trials,
            method=method,
            metric=metric,
            cross_recording=cross_recording,
            rng=rng,
        )
        for k in ks
    }


# ----------------------------------------------------------------------- MFCC k-NN baseline


@torch.inference_mode()
def mfcc_stats(
    fragments: np.ndarray,
    batch_size: int = 64,
    standardize: bool = True,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Per-coefficient mean and standard deviation over time of 32 MFCCs per fragment.

    Parameters
    ----------
    fragments: (N, FRAGMENT_SAMPLES) float32 waveforms at 16 kHz.
    batch_size: fragments per front-end call.
    standardize: z-score each of the 64 features over the N fragments (the baseline's
        k-NN then weighs coefficients equally); constant features stay at 0.
    device: where the front-end runs.

    Returns
    -------
    np.ndarray, shape (N, 64), float32: 32 means then 32 standard deviations (dB units
    before standardisation).
    """
    wav = np.asarray(fragments, dtype=np.float32)
    if wav.ndim != 2 or wav.shape[1] != FRAGMENT_SAMPLES:
        raise ValueError(f"fragments must have shape (N, {FRAGMENT_SAMPLES})")
    frontend = MFCCFrontend().to(device).eval()
    out = []
    for start in range(0, len(wav), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(wav[start : start + batch_size]))
        mfcc = frontend(batch.to(device))  # (b, 32, frames)
        out.append(torch.cat([mfcc.mean(dim=-1), mfcc.std(dim=-1)], dim=1).cpu().numpy())
    feats = np.concatenate(out) if out else np.zeros((0, 2 * frontend.n_features), np.float32)
    if standardize and len(feats):
        std = feats.std(axis=0)
        feats = (feats - feats.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return feats.astype(np.float32)


def mfcc_knn_accuracy(
    fragments: np.ndarray,
    speakers: np.ndarray,
    recordings: np.ndarray,
    k: int,
    n_shot: int = 1,
    trials: int = 2000,
    method: Method = "nearest",
    cross_recording: bool = True,
    rng: Seed = None,
) -> KWayResult:
    """The k-NN baseline: ``kway_accuracy`` on ``mfcc_stats`` features, euclidean metric.

    ``fragments`` is ``(N, FRAGMENT_SAMPLES)``; for a curve, compute ``mfcc_stats`` once and
    call ``kway_curve(feats, ..., metric="euclidean")``.
    """
    feats = mfcc_stats(fragments)
    return kway_accuracy(
        feats, speakers, recordings, k, n_shot, trials, method, "euclidean", cross_recording, rng
    )


# ---------------------------------------------------------------------------- verification


def verification_trials(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    recordings: np.ndarray,
    cross_recording: bool = True,
    max_pairs: int | None = None,
    rng: Seed = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and same-speaker labels of fragment pairs ``i < j``.

    With ``cross_recording``, same-speaker pairs from one recording are left out for
    speakers who have other recordings (they would measure channel, not voice). With
    ``max_pairs``, a uniform random subset of the remaining pairs is kept, in random order.

    Parameters
    ----------
    embeddings: (N, D) fragment embeddings (normalised here).
    speakers, recordings: (N,) labels.
    cross_recording: drop same-recording target pairs where the speaker has other recordings.
    max_pairs: keep at most this many pairs.
    rng: generator or seed for the subsample.

    Returns
    -------
    scores: (P,) float32 raw cosine in [-1, 1].
    labels: (P,) bool, True for same-speaker (target) pairs.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError("embeddings must have shape (N, D)")
    n = len(x)
    spk, rec, _ = _labels(speakers, recordings, n)
    rec_speaker = np.zeros(rec.max() + 1 if n else 0, dtype=np.int64)
    rec_speaker[rec] = spk
    multi = np.bincount(rec_speaker, minlength=spk.max() + 1 if n else 0)[spk] > 1

    def keep(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if not cross_recording:
            return np.ones(len(i), dtype=bool)
        return ~((spk[i] == spk[j]) & (rec[i] == rec[j]) & multi[i])

    total = n * (n - 1) // 2
    rng = _rng(rng)
    found = np.zeros(0, dtype=np.int64)
    if max_pairs is not None and total > max(4 * max_pairs, PAIR_LIST_LIMIT):
        # Too many pairs to list: draw ordered pairs and keep the distinct valid ones, a
        # uniform sample of the valid unordered pairs; repeat until enough are found.
        draw = 2 * max_pairs
        while len(found) < max_pairs and draw <= 8 * total:
            a, b = rng.integers(0, n, size=(2, draw))
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            ok = (lo != hi) & keep(lo, hi)
            found = np.unique(np.concatenate([found, lo[ok] * n + hi[ok]]))
            draw *= 2
    if max_pairs is not None and len(found) >= max_pairs:
        found = rng.permutation(found)[:max_pairs]
        i, j = found // n, found % n
    else:
        i, j = np.triu_indices(n, k=1)
        mask = keep(i, j)
        i, j = i[mask], j[mask]
        if max_pairs is not None and len(i) > max_pairs:
            pick = rng.choice(len(i), size=max_pairs, replace=False)
            i, j = i[pick], j[pick]
    xn = l2_normalize(x)
    scores = np.einsum("pd,pd->p", xn[i], xn[j]).astype(np.float32)
    return scores, spk[i] == spk[j]


def _roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    # One home for operating points: calibration.error_rates (the same points as sklearn's
    # roc_curve without dropping any, "accept nothing" first at the next float above the top).
    return error_rates(scores, labels)


def eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate, interpolated where the miss and false-alarm curves cross.

    Parameters
    ----------
    scores: (P,) higher means more likely the same speaker.
    labels: (P,) True for target pairs.

    Returns
    -------
    (eer, threshold): the rate in [0, 1] and the score threshold (accept ``score >=
    threshold``) at which it occurs, interpolated linearly between ROC points
    (``calibration.eer_point``, the one computation of it).
    """
    return eer_point(scores, labels)


def min_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Minimum normalised detection cost over all thresholds (NIST SRE definition).

    ``DCF = c_miss p_target P_miss + c_fa (1 - p_target) P_fa``, divided by the cost of
    the better trivial system, ``min(c_miss p_target, c_fa (1 - p_target))``.

    Returns
    -------
    (min_dcf, threshold): the cost in [0, 1] and the threshold reaching it.
    """
    if not 0.0 < p_target < 1.0 or c_miss <= 0 or c_fa <= 0:
        raise ValueError("need 0 < p_target < 1 and positive costs")
    fpr, fnr, thr = _roc(scores, labels)
    cost = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    cost /= min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(np.argmin(cost))
    return float(cost[i]), float(thr[i])


def det_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET points: false-alarm rate, miss rate and threshold, each ``(M,)``, by threshold."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(bool).reshape(-1)
    if labels.all() or not labels.any():
        raise DataError("verification needs both same-speaker and different-speaker pairs")
    fpr, fnr, thr = _sk_det_curve(labels, scores)
    return fpr, fnr, thr


@dataclass(frozen=True)
class VerificationResult:
    """Summary of a verification evaluation on raw cosine scores."""

    eer: float  # equal error rate in [0, 1]
    eer_threshold: float  # cosine threshold at the EER
    min_dcf: float  # normalised minimum detection cost in [0, 1]
    min_dcf_threshold: float  # cosine threshold at the minimum cost
    p_target: float  # prior the cost was computed for
    n_target: int  # same-speaker pairs
    n_nontarget: int  # different-speaker pairs


def verification_summary(
    scores: np.ndarray, labels: np.ndarray, p_target: float = 0.01
) -> VerificationResult:
    """EER and minDCF (unit costs) of one set of trials."""
    labels = np.asarray(labels).astype(bool)
    e, et = eer(scores, labels)
    d, dt = min_dcf(scores, labels, p_target=p_target)
    return VerificationResult(e, et, d, dt, p_target, int(labels.sum()), int((~labels).sum()))


# ----------------------------------------------------------------------------------- plots


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
    from speakerid.data import AudioBank, fragment_set, scan_corpora
    from speakerid.embed import Embedder

    if speakers not in SPEAKER_SETS:
        raise DataError(f"unknown speaker set {speakers!r}; one of {list(SPEAKER_SETS)}")
    recordings = scan_corpora(list(data))
    available = sorted({r.speaker for r in recordings})
    if speakers == "all":
        chosen = available
    else:
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
    frags = fragment_set(AudioBank.load(recordings, chosen))
    emb = Embedder(model, device=device, precision=precision).embed_fragments(frags.waves)
    rng = np.random.default_rng(seed)
    n_spk = eligible_speakers(frags.speakers, 1)
    ks = range(2, min(max_way, n_spk) + 1)
    curves: dict[str, dict[int, KWayResult]] = {
        "model, 1-shot": kway_curve(emb, frags.speakers, frags.recordings, ks, 1, trials, rng=rng)
    }
    for n in shots:
        if n <= 1:
            continue
        n_ok = eligible_speakers(frags.speakers, n)
        if n_ok < 2:
            continue
        ks_n = range(2, min(max_way, n_ok) + 1)
        for method in METHODS:
            curves[f"model, {n}-shot {method}"] = kway_curve(
                emb, frags.speakers, frags.recordings, ks_n, n, trials, method=method, rng=rng
            )
    systems = {"model": emb}
    for other in compare:
        name = Path(other.path).stem
        label = Path(other.path).parent.name if name == "best" else name
        embedder = Embedder(other, device=device, precision=precision)
        systems[label] = embedder.embed_fragments(frags.waves)
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
    scores, labels = trials_by_system["model"]
    verification = verification_summary(scores, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_kway_curve(curves, out / "kway.png", reference=CASE_STUDY_KWAY)
    plot_det(trials_by_system, out / "det.png")
    if tsne:
        plot_tsne(emb, frags.speakers, out / "tsne.png")
    report = report_json(
        {
            "model": str(model.path),
            "fingerprint": model.fingerprint,
            "speakers": speakers,
            "n_speakers": len(set(frags.speakers.tolist())),
            "n_fragments": len(frags),
            "random_baseline": {k: random_baseline(k) for k in ks},
            "kway": curves,
            "verification_fragments": verification,
            "compared": {
                label: {
                    "model": str(m.path),
                    "verification_fragments": verification_summary(*trials_by_system[label]),
                }
                for label, m in zip(list(systems)[1:], compare, strict=True)
            },
        }
    )
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report
