"""Calibration maths: trials, error rates, operating points, AS-norm and open-set thresholds.

Numpy only, so the runtime (``verify``, ``identify``, ``info``) can read a calibration without
importing training or plotting code. Scores are raw cosine (or AS-normalised scores, always
named as such); a trial is accepted when ``score >= threshold``.

- ``enrollment_trials``: the trials ``calibrate`` scores. Each recording is tested against a
  model pooled from up to ``enroll_size`` *other* recordings of its speaker (as ``verify``
  compares one recording with a speaker's pooled enrollment), and against every other
  speaker's models.
- ``pair_trials``: every pair of recording embeddings, as ``bench/calibrate.py`` scores a
  checkpoint's validation speakers at the recording level.
- ``error_rates`` / ``eer_point`` / ``far_point`` / ``min_dcf``: operating points;
  ``gap_threshold``: the EER point, or the middle of the gap when the trials separate.
- ``cohort_stats`` / ``as_norm``: adaptive symmetric score normalisation (AS-norm).
- ``best_other_scores`` / ``fpir_threshold`` / ``power_threshold``: the 1:N (open-set)
  threshold, set for a false-positive identification rate at the store's size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from speakerid.decision.model import QualityTrials, act_dcf, cllr, min_cllr
from speakerid.errors import DataError
from speakerid.vectors import l2_normalize, pool, score, score_pairs

ENROLL_SIZE = 3  # recordings pooled per trial model: a typical enrollment
MIN_SPEAKERS = 4  # with fewer, different-speaker trials are too few and too alike
MIN_TARGET_TRIALS = 20  # same-speaker trials below which an operating point is noise
MIN_EVENTS = 5  # errors an estimated rate must rest on: FAR x trials >= this
ASNORM_TOP_K = 100  # cohort scores averaged per side (fewer when the cohort is smaller)
MIN_COHORT = 10  # cohort speakers AS-norm needs at the least
REGROW_RATIO = 1.5  # re-run calibrate once the store holds this many times its size then
P_TARGET = 0.01  # prior of the reported minDCF (NIST SRE convention)


# ---------------------------------------------------------------- trials


def _unit(x: np.ndarray) -> np.ndarray:
    return l2_normalize(np.asarray(x, dtype=np.float32))


def agreements(embeddings: np.ndarray) -> np.ndarray:
    """Each recording's cosine to the pool of the speaker's *other* recordings.

    ``(n, D)`` embeddings of one speaker -> ``(n,)`` scores, comparable with a verify score
    (one recording against a pooled enrollment); NaN when ``n < 2`` (nothing to agree with).
    """
    emb = _unit(embeddings)
    if len(emb) < 2:
        return np.full(len(emb), np.nan)
    total = emb.astype(np.float64).sum(axis=0)
    others = _unit((total[None, :] - emb) / (len(emb) - 1))
    return score_pairs(emb.astype(np.float64), others.astype(np.float64))


@dataclass(frozen=True)
class Trials:
    """Scored verification trials and where they came from."""

    scores: np.ndarray  # (P,) float64
    labels: np.ndarray  # (P,) bool, True for same-speaker trials
    models: np.ndarray  # (M, D) pooled trial models
    model_speakers: np.ndarray  # (M,) speaker label of each model
    held_out: np.ndarray  # (M,) index of the recording each model was built without

    @property
    def n_target(self) -> int:
        return int(self.labels.sum())

    @property
    def n_nontarget(self) -> int:
        return int((~self.labels).sum())


def enrollment_trials(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    enroll_size: int = ENROLL_SIZE,
    seed: int = 0,
    score_fn: Any = None,
) -> Trials:
    """Enrollment-style trials over labelled recording embeddings.

    For every recording whose speaker has other recordings, one model is pooled from up to
    ``enroll_size`` of those others (drawn with ``seed``). Same-speaker trial: the recording
    against its own model. Different-speaker trials: every recording against every model of
    another speaker. A recording is never in a model it is tested against.

    Parameters
    ----------
    embeddings: ``(R, D)`` unit recording embeddings.
    speakers: ``(R,)`` speaker labels.
    enroll_size: recordings pooled per model.
    score_fn: ``score_fn(queries (R, D), models (M, D), model_speakers) -> (R, M)`` scores;
        cosine when None (AS-norm passes its own).
    """
    emb = _unit(embeddings)
    spk = np.asarray(speakers)
    if len(emb) != len(spk):
        raise ValueError(f"{len(emb)} embeddings but {len(spk)} speaker labels")
    if enroll_size < 1:
        raise DataError(f"--enroll-size must be at least 1, not {enroll_size}")
    rng = np.random.default_rng(seed)
    models, owners, held = [], [], []
    for label in np.unique(spk):
        idx = np.flatnonzero(spk == label)
        for i in idx:
            others = idx[idx != i]
            if len(others) == 0:
                continue
            take = rng.choice(others, size=min(enroll_size, len(others)), replace=False)
            models.append(pool(emb[np.sort(take)]))
            owners.append(label)
            held.append(i)
    n_speakers = len(np.unique(spk))
    n_with_models = len(np.unique(owners)) if owners else 0
    if n_speakers < MIN_SPEAKERS or n_with_models < 2:
        raise DataError(
            f"calibration needs at least {MIN_SPEAKERS} speakers, 2 of them with 2 or more "
            f"recordings; the data has {n_speakers} speaker(s), {n_with_models} with 2 or more"
        )
    mat = np.stack(models)
    owner = np.asarray(owners)
    held_out = np.asarray(held)
    scores = score(emb, mat) if score_fn is None else score_fn(emb, mat, owner)
    scores = np.asarray(scores, dtype=np.float64)
    target = scores[held_out, np.arange(len(mat))]
    different = spk[:, None] != owner[None, :]
    nontarget = scores[different]
    all_scores = np.concatenate([target, nontarget])
    labels = np.concatenate([np.ones(len(target), bool), np.zeros(len(nontarget), bool)])
    return Trials(all_scores, labels, mat, owner, held_out)


def quality_trials(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    seconds: np.ndarray,
    enroll_sizes: tuple[int, ...] = (1, ENROLL_SIZE),
    seed: int = 0,
) -> QualityTrials:
    """``enrollment_trials`` for each enrollment size, with the quality of both sides.

    For every recording and size ``k`` (when its speaker has ``k`` other recordings), one
    model is pooled from ``k`` of the others; the recording is tested against it, and every
    recording of other speakers too. Each trial carries the test recording's seconds of
    speech and the model's seconds and recording count; weights make every (class, size)
    cell count equally in a fit.
    """
    emb = _unit(embeddings)
    spk = np.asarray(speakers)
    sec = np.asarray(seconds, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cols: list[list[np.ndarray]] = [[], [], [], [], []]
    for size in sorted(set(enroll_sizes)):
        for label in np.unique(spk):
            idx = np.flatnonzero(spk == label)
            others_all = np.flatnonzero(spk != label)
            for i in idx:
                own = idx[idx != i]
                if len(own) < size:
                    continue
                take = np.sort(rng.choice(own, size=size, replace=False))
                model = pool(emb[take])
                tests = np.r_[i, others_all]
                cols[0].append(score(emb[tests], model[None, :])[:, 0].astype(np.float64))
                cols[1].append(np.r_[True, np.zeros(len(others_all), bool)])
                cols[2].append(sec[tests])
                cols[3].append(np.full(len(tests), sec[take].sum()))
                cols[4].append(np.full(len(tests), size))
    if not cols[0]:
        raise DataError("no speaker has 2 or more recordings: there are no same-speaker trials")
    s, y, t, e, c = (np.concatenate(col) for col in cols)
    cell = c * 2 + y
    _, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
    return QualityTrials(s, y, t, e, c, 1.0 / counts[inverse])


def pair_trials(embeddings: np.ndarray, speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of unit recording embeddings: cosine scores and labels.

    ``(R, D)`` embeddings and ``(R,)`` speaker labels -> ``(P,)`` float64 scores and
    ``(P,)`` bool labels (True: same speaker), pairs in ``itertools.combinations`` order.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    spk = np.asarray(speakers)
    i, j = np.triu_indices(len(emb), k=1)
    return score(emb, emb)[i, j].astype(np.float64), spk[i] == spk[j]


# ---------------------------------------------------------------- operating points


def _split(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(bool).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError("scores and labels must have the same length")
    if labels.all() or not labels.any():
        raise DataError("verification needs both same-speaker and different-speaker pairs")
    return scores, labels


def error_rates(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """False-accept rate, miss rate and threshold at every distinct score, ``(M,)`` each.

    Thresholds fall from "accept nothing" (just above the top score) to the lowest score;
    at threshold ``t`` a trial is accepted when ``score >= t``. The same points as
    scikit-learn's ``roc_curve(drop_intermediate=False)``, without its import.
    """
    scores, labels = _split(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(lab)[last]
    fp = (last + 1) - tp
    far = np.r_[0.0, fp / (~labels).sum()]
    miss = np.r_[1.0, 1.0 - tp / labels.sum()]
    thr = np.r_[np.nextafter(s[0], np.inf), s[last]]
    return far, miss, thr


def eer_point(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold, interpolated where miss and false-accept cross."""
    far, miss, thr = error_rates(scores, labels)
    diff = miss - far  # starts at 1, falls to -1
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        return float(far[i]), float(thr[i])
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    rate = far[i - 1] + t * (far[i] - far[i - 1])
    return float(rate), float(thr[i - 1] + t * (thr[i] - thr[i - 1]))


def gap_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, bool]:
    """The EER and a threshold: the EER point's, or the middle of the gap if the trials separate.

    When every same-speaker score lies above every different-speaker score, any threshold in
    the gap has EER 0 and the EER point would sit on the lowest same-speaker score, the edge
    nearest to misses; the middle of the gap leaves room on both sides.

    Returns
    -------
    (eer, threshold, separable).
    """
    rate, threshold = eer_point(scores, labels)
    scores, labels = _split(scores, labels)
    lowest_target, highest_other = scores[labels].min(), scores[~labels].max()
    separable = bool(lowest_target > highest_other)
    if separable:
        threshold = float(lowest_target + highest_other) / 2
    return rate, threshold, separable


def min_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    p_target: float = P_TARGET,
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
    far, miss, thr = error_rates(scores, labels)
    cost = c_miss * p_target * miss + c_fa * (1.0 - p_target) * far
    cost /= min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(np.argmin(cost))
    return float(cost[i]), float(thr[i])


def far_threshold(nontarget: np.ndarray, rate: float, what: str = "false-accept rate") -> float:
    """The lowest threshold at which at most ``rate`` of ``nontarget`` scores are accepted.

    Refuses (``DataError``) when fewer than ``MIN_EVENTS / rate`` scores are given: an
    estimate of a rate needs some errors at that rate to rest on.
    """
    s = np.sort(np.asarray(nontarget, dtype=np.float64).reshape(-1))[::-1]
    if not 0.0 < rate < 1.0:
        raise DataError(f"the {what} must lie strictly between 0 and 1, not {rate}")
    needed = int(np.ceil(MIN_EVENTS / rate))
    if len(s) < needed:
        count = str(needed) if needed < 10**9 else f"{needed:.3g}"  # not 300 digits for 1e-300
        raise DataError(
            f"a {what} of {rate:g} needs at least {count} different-speaker scores to be "
            f"estimated; the data gives {len(s)} (add speakers or recordings, or ask for a "
            "higher rate)"
        )
    allowed = int(np.floor(rate * len(s) + 1e-9))
    # Just above the first score that must be rejected: the `allowed` highest are accepted.
    return float(np.nextafter(s[allowed], np.inf))


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-accept rate, miss rate) of trials at one threshold."""
    scores, labels = _split(scores, labels)
    accept = scores >= threshold
    return float(accept[~labels].mean()), float((~accept[labels]).mean())


def distribution(scores: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and 1/5/50/95/99th percentiles of scores (for reports)."""
    s = np.asarray(scores, dtype=np.float64)
    pct = np.percentile(s, [1, 5, 50, 95, 99])
    return {
        "n": len(s),
        "mean": float(s.mean()),
        "std": float(s.std()),
        **{f"p{q}": float(v) for q, v in zip((1, 5, 50, 95, 99), pct, strict=True)},
    }


# ---------------------------------------------------------------- AS-norm


def cohort_stats(
    vectors: np.ndarray,
    cohort: np.ndarray,
    top_k: int = ASNORM_TOP_K,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each vector's ``top_k`` highest cohort scores.

    Parameters
    ----------
    vectors: ``(Q, D)`` unit vectors (enrollment models or test recordings).
    cohort: ``(C, D)`` unit vectors of speakers in no trial.
    exclude: ``(Q,)`` cohort row to leave out for each vector (-1: none), so that a store's
        own speaker is never in their own cohort.

    Returns
    -------
    ``(Q,)`` means and ``(Q,)`` standard deviations (floored at 1e-6).
    """
    scores = score(np.asarray(vectors, dtype=np.float64), np.asarray(cohort, dtype=np.float64))
    if exclude is not None:
        rows = np.flatnonzero(np.asarray(exclude) >= 0)
        scores[rows, np.asarray(exclude)[rows]] = -np.inf
    # With exclusions every row keeps the same k, whether or not its own row was excluded.
    k = max(1, min(top_k, scores.shape[1] - (exclude is not None)))
    top = -np.sort(-scores, axis=1)[:, :k]
    return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-6)


def as_norm(
    raw: np.ndarray,
    enroll: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Adaptive symmetric normalisation: the mean of the score's two cohort z-scores.

    ``0.5 * ((raw - mu_e) / sd_e + (raw - mu_t) / sd_t)``, with ``(mu, sd)`` from
    ``cohort_stats`` of the enrollment model (``enroll``) and of the test recording
    (``test``); arrays broadcast (e.g. ``(Q, 1)`` test stats against ``(1, M)`` models).
    """
    (mu_e, sd_e), (mu_t, sd_t) = enroll, test
    return 0.5 * ((raw - mu_e) / sd_e + (raw - mu_t) / sd_t)


def as_norm_scores(
    queries: np.ndarray,
    models: np.ndarray,
    model_names: np.ndarray,
    cohort: np.ndarray,
    cohort_names: np.ndarray | None = None,
    top_k: int = ASNORM_TOP_K,
) -> np.ndarray:
    """AS-normalised scores of ``(R, D)`` queries against ``(M, D)`` speaker models.

    When the cohort is a store's own speakers (``cohort_names`` given), the cohort row named
    like a model's speaker is left out of both sides' statistics for that model, so a
    claimed speaker never normalises their own score. Returns ``(R, M)``.
    """
    q = np.asarray(queries, dtype=np.float64)
    m = np.asarray(models, dtype=np.float64)
    if len(cohort) < MIN_COHORT:
        raise DataError(
            f"AS-norm needs a cohort of at least {MIN_COHORT} speakers; this one has {len(cohort)}"
        )
    raw = score(q, m)
    if cohort_names is None:
        excl = np.full(len(m), -1)
    else:
        where = {str(n): i for i, n in enumerate(cohort_names)}
        excl = np.asarray([where.get(str(n), -1) for n in model_names])
    use = None if cohort_names is None else excl
    mu_e, sd_e = cohort_stats(m, cohort, top_k, use)
    out = np.empty_like(raw)
    for row in np.unique(excl):
        cols = excl == row
        test = cohort_stats(q, cohort, top_k, None if use is None else np.full(len(q), row))
        out[:, cols] = as_norm(
            raw[:, cols], (mu_e[cols], sd_e[cols]), (test[0][:, None], test[1][:, None])
        )
    return out


# ---------------------------------------------------------------- open set (1:N)


def best_other_scores(
    queries: np.ndarray,
    query_speakers: np.ndarray,
    gallery: np.ndarray,
    gallery_names: np.ndarray,
) -> np.ndarray:
    """Each query's best score over a gallery, leaving out the gallery entry of its own name.

    The leave-one-speaker-out estimate of what a stranger scores against an ``N``-speaker
    store: ``(Q,)`` best-of-N (or N-1) impostor scores.
    """
    scores = score(np.asarray(queries, dtype=np.float64), np.asarray(gallery, dtype=np.float64))
    same = np.asarray(query_speakers)[:, None] == np.asarray(gallery_names)[None, :]
    scores[same] = -np.inf
    return scores.max(axis=1)


def fpir_threshold(best_scores: np.ndarray, fpir: float) -> float:
    """Threshold at which at most ``fpir`` of strangers' best-of-N scores name someone."""
    return far_threshold(best_scores, fpir, what="false-positive identification rate")


def power_threshold(nontarget: np.ndarray, fpir: float, n: int) -> float:
    """Open-set threshold from 1:1 impostor scores, assuming ``n`` independent comparisons.

    A stranger is named when their best of ``n`` scores passes: ``FPIR = 1 - (1 - FAR)^n``,
    so the 1:1 false-accept rate to aim for is ``1 - (1 - fpir)^(1/n)``.
    """
    rate = 1.0 - (1.0 - fpir) ** (1.0 / max(n, 1))
    return far_threshold(nontarget, rate, what=f"1:1 false-accept rate (FPIR {fpir:g} at N={n})")


def expected_fpir(fpir: float, n_calibrated: int, n_now: int) -> float:
    """FPIR a threshold set for ``fpir`` at ``n_calibrated`` speakers gives at ``n_now``."""
    if n_calibrated <= 0:
        return fpir
    return 1.0 - (1.0 - fpir) ** (n_now / n_calibrated)


# ---------------------------------------------------------------- the stored calibration


@dataclass(frozen=True)
class Calibration:
    """A store's calibration, kept as JSON in its meta table, with its provenance."""

    threshold: float  # 1:1 threshold (verify), on `norm` scores
    raw_threshold: float  # the same operating point on raw cosine (enrollment agreement)
    target: str  # operating point: "eer" or "far=<rate>"
    norm: str  # "none" (raw cosine) or "asnorm"
    eer: float  # on the calibration trials
    eer_threshold: float
    min_dcf: float  # at p_target
    min_dcf_threshold: float
    p_target: float
    false_accept_rate: float  # at `threshold`, on the calibration trials
    miss_rate: float  # at `threshold`, on the calibration trials
    n_speakers: int
    n_recordings: int
    n_target: int
    n_nontarget: int
    enroll_size: int
    data: list[str]  # the folders calibrated on, as given
    date: str  # UTC, ISO 8601
    model_fingerprint: str
    identify_threshold: float | None = None  # 1:N threshold; None when the store was empty
    identify_fpir: float | None = None  # target false-positive identification rate
    identify_method: str | None = None  # "leave-one-speaker-out" or "power"
    identify_fpir_measured: float | None = None  # on the calibration strangers
    store_speakers: int = 0  # N when calibrated: the open-set threshold is for this size
    cohort: str | None = None  # "model" or "store" when norm is "asnorm"
    cohort_size: int | None = None
    top_k: int | None = None
    # The quality-dependent decision calibration (``decision.DecisionModel`` as a dict), fitted
    # by this version's calibrate; None in stores calibrated before it (fixed threshold).
    decision: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        """Parse stored JSON; unknown keys (from a newer speakerid) are ignored."""
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def regrow_due(self, n_now: int) -> bool:
        """Whether the store has grown enough since calibration to re-run it (1:N only)."""
        return self.identify_threshold is not None and n_now >= REGROW_RATIO * max(
            self.store_speakers, 1
        )


# ---------------------------------------------------------------- decisions by condition

TEST_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)  # lower edges of test-speech buckets, s


def condition_report(
    scores: np.ndarray,
    labels: np.ndarray,
    accepted: np.ndarray,
    llr: np.ndarray | None = None,
    p_target: float = P_TARGET,
) -> dict[str, Any]:
    """How decisions fared on one condition's trials: counts, FAR / FRR, DCF and Cllr.

    ``oracle_frr``: the miss rate of the best single threshold on these very trials that
    accepts no more strangers than the decisions did (at least one stranger's worth).
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    accepted = np.asarray(accepted, bool)
    out: dict[str, Any] = {"n_target": int(labels.sum()), "n_nontarget": int((~labels).sum())}
    if not labels.any() or labels.all():
        return out
    far = float(accepted[~labels].mean())
    frr = float((~accepted[labels]).mean())
    allowed = max(far, 1.0 / (~labels).sum())
    rates, misses, _ = error_rates(scores, labels)
    oracle = float(misses[rates <= allowed + 1e-12].min())
    out.update(far=far, frr=frr, oracle_frr=oracle, eer=eer_point(scores, labels)[0])
    out["min_dcf"] = min_dcf(scores, labels, p_target)[0]
    if llr is not None:
        out.update(
            act_dcf=act_dcf(llr, labels, p_target),
            cllr=cllr(llr, labels),
            min_cllr=min_cllr(scores, labels),
        )
    return out


def bucket_of(test_seconds: np.ndarray) -> np.ndarray:
    """Index into ``TEST_BUCKETS`` of each test's seconds of speech."""
    return np.searchsorted(np.asarray(TEST_BUCKETS), np.asarray(test_seconds), side="right") - 1


def bucket_name(index: int) -> str:
    low = TEST_BUCKETS[index]
    high = TEST_BUCKETS[index + 1] if index + 1 < len(TEST_BUCKETS) else None
    return f"{low:g}-{high:g} s" if high is not None else f">= {low:g} s"


def decision_cells(
    trials: QualityTrials, accepted: np.ndarray, llr: np.ndarray | None
) -> list[dict[str, Any]]:
    """``condition_report`` per test-speech bucket and enrollment size (rows with trials)."""
    buckets = bucket_of(trials.test_seconds)
    rows = []
    for b in np.unique(buckets):
        for k in np.unique(trials.enroll_count):
            m = (buckets == b) & (trials.enroll_count == k)
            if not m.any():
                continue
            row = {"test_speech": bucket_name(int(b)), "enroll_recordings": int(k)}
            row.update(
                condition_report(
                    trials.scores[m], trials.labels[m], accepted[m], None if llr is None else llr[m]
                )
            )
            rows.append(row)
    return rows
