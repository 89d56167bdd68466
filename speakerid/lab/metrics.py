"""Verification metrics: fragment-pair trials, EER, minDCF, DET points, interval estimates.

Arrays in, numbers out: ``embeddings`` of shape ``(N, D)`` (one row per fragment) with
per-fragment ``speakers`` and ``recordings`` labels of shape ``(N,)``; recording labels only
need to be unique within a speaker. Operating points come from ``calibration`` (the one
computation of the ROC points and the EER), scores from ``vectors``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import det_curve as _sk_det_curve

from speakerid.decision import calibration
from speakerid.errors import DataError
from speakerid.vectors import l2_normalize, score_pairs

Seed = np.random.Generator | int | None

Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval
PAIR_LIST_LIMIT = 1 << 22  # up to this many pairs are listed outright, beyond it sampled


def as_rng(rng: Seed) -> np.random.Generator:
    """A generator from a generator, a seed or None (fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def label_codes(speakers: np.ndarray, recordings: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Integer codes: speaker (N,), recording unique across speakers (N,), speaker names (S,)."""
    speakers = np.asarray(speakers).astype(str)
    recordings = np.asarray(recordings).astype(str)
    if speakers.shape != (n,) or recordings.shape != (n,):
        raise ValueError(f"speakers and recordings must have shape ({n},)")
    names, spk = np.unique(speakers, return_inverse=True)
    # A recording label means something only within its speaker.
    _, rec = np.unique(np.stack([speakers, recordings], axis=1), axis=0, return_inverse=True)
    return spk.reshape(-1), rec.reshape(-1), names


def wilson_interval(successes: float, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0, 1)`` when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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
    spk, rec, _ = label_codes(speakers, recordings, n)
    rec_speaker = np.zeros(rec.max() + 1 if n else 0, dtype=np.int64)
    rec_speaker[rec] = spk
    multi = np.bincount(rec_speaker, minlength=spk.max() + 1 if n else 0)[spk] > 1

    def keep(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if not cross_recording:
            return np.ones(len(i), dtype=bool)
        return ~((spk[i] == spk[j]) & (rec[i] == rec[j]) & multi[i])

    total = n * (n - 1) // 2
    rng = as_rng(rng)
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
    scores = score_pairs(xn[i], xn[j]).astype(np.float32)
    return scores, spk[i] == spk[j]


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
    return calibration.eer_point(scores, labels)


# The one computation of minDCF lives with the other operating points; evaluation reads it here.
min_dcf = calibration.min_dcf


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
