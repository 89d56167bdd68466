"""Calibrated decisions: a cosine score and the quality of both sides -> llr and accept/reject.

A raw cosine means different things for a 1-s clip and a 30-s one, or for a voice enrolled
from one recording and from ten: strangers' scores spread wider for short clips and sit
higher against pooled enrollments. So a decision is taken on the score *and* the quality
measures known at decision time (``Quality``: seconds of speech in the test recording,
seconds of speech and number of recordings behind the enrolled voice).

``DecisionModel`` holds two fitted maps of those measures:

- **the impostor model**: the mean and spread of strangers' scores as functions of quality
  (``mean = F(q) . a``, ``log sd = F(q) . b``), and the upper tail of the standardised
  stranger score ``z = (score - mean) / sd`` as a table of (rate, z) points. Accepting
  ``z >= z(far)`` holds the false-accept rate at ``far`` whatever the clip and enrollment,
  as far as the fit's data reach; this is the decision rule.
- **the log-likelihood ratio** (quality-measure logistic calibration, as NIST SRE and VoxSRC
  systems do): ``llr = G(score, q) . w``, the weight of evidence for "same speaker", reported
  beside every decision and used for Cllr / actDCF.

The model's own ``DecisionModel`` ships beside its weights (``registry``, sha256-pinned); a
store's ``speakerid calibrate`` fits one on the user's recordings. Numpy only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from speakerid.decision.constants import DEFAULT_FAR
from speakerid.errors import DataError

FAR_RANGE = (0.0, 0.5)  # --far must lie in (low, high]
FORMAT = "speakerid-decision/1"  # ``DecisionModel.format``; readers refuse other formats
# Quality measures are clipped to the range the fits see, and expressed around a typical value.
TEST_SECONDS_RANGE = (0.5, 60.0)
ENROLL_SECONDS_RANGE = (0.5, 600.0)
ENROLL_COUNT_RANGE = (1, 50)
TEST_SECONDS_REF = 3.0  # a fragment
ENROLL_SECONDS_REF = 10.0
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Quality:
    """What is known about a comparison besides its score."""

    test_seconds: float  # speech in the test recording, after trimming
    enroll_seconds: float  # speech behind the enrolled voice, summed over its recordings
    enroll_count: int  # recordings pooled into the enrolled voice

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def check_far(far: float, what: str = "the false-accept rate") -> float:
    """``far`` as a float if it lies in ``(0, 0.5]``; ``DataError`` otherwise."""
    far = float(far)
    low, high = FAR_RANGE
    if not low < far <= high:  # also False for NaN
        raise DataError(f"{what} must lie in ({low:g}, {high:g}], not {far:g}")
    return far


def quality_features(test: Any, enroll: Any, count: Any) -> np.ndarray:
    """``F(q)``: ``(n, 5)`` features of quality measures (arrays or scalars).

    ``[1, t, t^2, e, c]`` with ``t = log(test / 3 s)``, ``e = log(enroll / 10 s)`` and
    ``c = log(count)``, each measure clipped to the range the fits see.
    """
    t = np.log(np.clip(np.asarray(test, np.float64), *TEST_SECONDS_RANGE) / TEST_SECONDS_REF)
    e = np.log(np.clip(np.asarray(enroll, np.float64), *ENROLL_SECONDS_RANGE) / ENROLL_SECONDS_REF)
    c = np.log(np.clip(np.asarray(count, np.float64), *ENROLL_COUNT_RANGE))
    t, e, c = np.broadcast_arrays(np.atleast_1d(t), np.atleast_1d(e), np.atleast_1d(c))
    return np.stack([np.ones_like(t), t, t * t, e, c], axis=1)


def llr_features(scores: Any, test: Any, enroll: Any, count: Any) -> np.ndarray:
    """``G(score, q)``: ``(n, 8)``: ``[F(q)[without t^2], score * [1, t, e, c]]``."""
    f = quality_features(test, enroll, count)[:, [0, 1, 3, 4]]
    s = np.atleast_1d(np.asarray(scores, np.float64))[:, None]
    f = np.broadcast_to(f, (max(len(f), len(s)), f.shape[1]))
    return np.concatenate([f, s * f], axis=1)


@dataclass(frozen=True)
class Decision:
    """One 1:1 decision at an operating point."""

    accepted: bool
    llr: float | None  # natural-log likelihood ratio, same vs different speaker
    far: float  # the false-accept rate the decision was taken at
    threshold: float  # the cosine threshold that rate means for this quality
    stranger_rate: float  # how often a stranger scores this high, for this quality (estimated)


@dataclass(frozen=True)
class DecisionModel:
    """A fitted quality-dependent calibration (see the module docstring). JSON on disk."""

    impostor_mean: list[float]  # a: F(q) . a is strangers' mean cosine
    impostor_log_sd: list[float]  # b: exp(F(q) . b) is their spread
    tail_rates: list[float]  # decreasing rates ...
    tail_z: list[float]  # ... and the standardised stranger score exceeded at each
    llr_weights: list[float]  # w: llr = G(score, q) . w
    method: str = "fit"  # "fit" (the model's), "refit" or "shift" (a store's calibrate)
    data: str = ""  # what it was fitted on, in words
    n_target: int = 0
    n_nontarget: int = 0
    format: str = FORMAT
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = quality_features(1.0, 1.0, 1).shape[1]
        rates, z = np.asarray(self.tail_rates), np.asarray(self.tail_z)
        ok = (
            self.format == FORMAT
            and len(self.impostor_mean) == n
            and len(self.impostor_log_sd) == n
            and len(self.llr_weights) == llr_features(0.0, 1.0, 1.0, 1).shape[1]
            and len(rates) == len(z) >= 2
            and np.isfinite(np.concatenate([rates, z, self.impostor_mean, self.llr_weights])).all()
            and np.isfinite(self.impostor_log_sd).all()
            and bool(np.all(np.diff(rates) < 0) and np.all(np.diff(z) > 0))
            and rates[-1] > 0
            and rates[0] < 1
        )
        if not ok:
            raise DataError("not a valid decision calibration (damaged or of another version)")

    # ------------------------------------------------------------ evaluation

    def impostor_stats(self, test: Any, enroll: Any, count: Any) -> tuple[np.ndarray, np.ndarray]:
        """Strangers' mean score and spread for these quality measures, ``(n,)`` each."""
        f = quality_features(test, enroll, count)
        return f @ np.asarray(self.impostor_mean), np.exp(f @ np.asarray(self.impostor_log_sd))

    def z_at(self, far: float) -> float:
        """The standardised score strangers exceed at rate ``far``.

        Interpolated in log-rate inside the fitted table; beyond it (rates rarer than the
        data could show), the table's last point is carried on with a normal tail.
        """
        rates, z = np.asarray(self.tail_rates), np.asarray(self.tail_z)
        if far >= rates[0]:
            return float(z[0])
        if far <= rates[-1]:
            extra = _NORMAL.inv_cdf(1 - far) - _NORMAL.inv_cdf(1 - rates[-1])
            return float(z[-1] + extra)
        return float(np.interp(-math.log(far), -np.log(rates), z))

    def rate_at(self, z: float) -> float:
        """The inverse of ``z_at``: how often a stranger's standardised score reaches ``z``."""
        rates, zs = np.asarray(self.tail_rates), np.asarray(self.tail_z)
        if z <= zs[0]:
            return float(rates[0])
        if z >= zs[-1]:
            tail = 1 - _NORMAL.cdf(_NORMAL.inv_cdf(1 - rates[-1]) + (z - zs[-1]))
            return float(max(tail, 1e-300))
        return float(math.exp(-np.interp(z, zs, -np.log(rates))))

    def thresholds(self, far: float, test: Any, enroll: Any, count: Any) -> np.ndarray:
        """Cosine thresholds holding false accepts at ``far`` for these qualities, ``(n,)``."""
        mean, sd = self.impostor_stats(test, enroll, count)
        return mean + sd * self.z_at(far)

    def llr(self, scores: Any, test: Any, enroll: Any, count: Any) -> np.ndarray:
        """Log-likelihood ratios of scores at these qualities, ``(n,)``."""
        return llr_features(scores, test, enroll, count) @ np.asarray(self.llr_weights)

    def decide(self, score: float, quality: Quality, far: float = DEFAULT_FAR) -> Decision:
        """Accept when strangers reach ``score`` at most ``far`` of the time at this quality."""
        q = (quality.test_seconds, quality.enroll_seconds, quality.enroll_count)
        mean, sd = self.impostor_stats(*q)
        threshold = float(mean[0] + sd[0] * self.z_at(far))
        llr = float(self.llr(score, *q)[0])
        rate = self.rate_at(float((score - mean[0]) / sd[0]))
        return Decision(bool(score >= threshold), llr, far, threshold, rate)

    # ------------------------------------------------------------ storage

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_dict(cls, data: Any) -> DecisionModel:
        """From parsed JSON; ``DataError`` if it is not one (unknown keys are ignored)."""
        if not isinstance(data, dict):
            raise DataError("not a valid decision calibration (not an object)")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise DataError(f"not a valid decision calibration ({exc})") from None

    @classmethod
    def from_json(cls, text: str) -> DecisionModel:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise DataError("not a valid decision calibration (not JSON)") from None
        return cls.from_dict(data)


def sidak_far(far: float, n: int) -> float:
    """Per-comparison rate so that ``n`` independent chances give ``far`` in all.

    ``1 - (1 - far)^(1/n)``: identify judges each of N enrolled speakers at this rate, so a
    stranger is named by mistake at most about ``far`` of the time, whatever N is.
    """
    return -math.expm1(math.log1p(-far) / max(int(n), 1))


# ---------------------------------------------------------------- fitting

TAIL_RATES = (0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001)
TAIL_MIN_EVENTS = 5  # a tail point rests on this many (weighted) strangers above it, as
# calibration.MIN_EVENTS asks of any estimated rate
MIN_FIT_TARGET = 50  # below these, calibrate only shifts the model's map (see ``refit``)
MIN_FIT_NONTARGET = 1000


@dataclass(frozen=True)
class QualityTrials:
    """Scored trials with the quality measures of both sides, ``(P,)`` each."""

    scores: np.ndarray
    labels: np.ndarray  # True: same speaker
    test_seconds: np.ndarray
    enroll_seconds: np.ndarray
    enroll_count: np.ndarray
    weights: np.ndarray  # per trial; each class's weights are used as given

    def subset(self, mask: np.ndarray) -> QualityTrials:
        return QualityTrials(*(np.asarray(v)[mask] for v in asdict(self).values()))

    @property
    def quality(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.test_seconds, self.enroll_seconds, self.enroll_count


def _fit_impostors(
    f: np.ndarray, s: np.ndarray, w: np.ndarray, iters: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Heteroscedastic normal fit ``s ~ N(f.a, exp(f.b)^2)`` by alternating scoring steps."""
    w = w / w.sum()
    ridge = 1e-6 * np.eye(f.shape[1])
    a = np.linalg.solve(f.T @ (w[:, None] * f) + ridge, f.T @ (w * s))
    b = np.zeros(f.shape[1])
    b[0] = math.log(max(float(np.sqrt(np.sum(w * (s - f @ a) ** 2))), 1e-4))
    for _ in range(iters):
        var = np.exp(2 * f @ b)
        wa = w / var
        a = np.linalg.solve(f.T @ (wa[:, None] * f) + ridge, f.T @ (wa * s))
        u = (s - f @ a) ** 2 / var - 1.0
        step = np.linalg.solve(2 * f.T @ (w[:, None] * f) + ridge, f.T @ (w * u))
        b = b + step
        if np.abs(step).max() < 1e-8:
            break
    return a, b


def _quantiles(z: np.ndarray, w: np.ndarray) -> dict[float, float]:
    """``{rate: z}``: the weighted upper quantiles of ``z`` that rest on enough strangers."""
    order = np.argsort(-z)
    z, w = z[order], w[order] / w.sum()
    exceed = np.cumsum(w)  # weighted share of strangers at or above each z
    n_eff = 1.0 / float(np.sum(w**2))
    return {
        rate: float(z[min(int(np.searchsorted(exceed, rate)), len(z) - 1)])
        for rate in TAIL_RATES
        if rate * n_eff >= TAIL_MIN_EVENTS
    }


def _tail(
    z: np.ndarray, w: np.ndarray, groups: np.ndarray | None = None
) -> tuple[list[float], list[float]]:
    """Upper-tail points ``(rate, z)`` of weighted standardised stranger scores.

    With ``groups`` (e.g. the corpus of each trial), each rate takes the highest of the
    groups' quantiles that can be estimated: the rule then holds its rate in the worst domain
    it was fitted on, not only on average over them.
    """
    labels = np.zeros(len(z), int) if groups is None else np.unique(groups, return_inverse=True)[1]
    per_group = [_quantiles(z[labels == g], w[labels == g]) for g in np.unique(labels)]
    rates, values = [], []
    for rate in TAIL_RATES:
        known = [q[rate] for q in per_group if rate in q]
        if not known:
            break
        value = max(known)
        if values and value <= values[-1]:
            continue
        rates.append(rate)
        values.append(value)
    if len(rates) < 2:
        raise DataError(f"too few different-speaker trials to calibrate decisions ({len(z)} given)")
    return rates, values


def _fit_logistic(g: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """Weighted logistic regression by Newton's method (classes weighted to equal totals)."""
    w = np.where(y, w / w[y].sum(), w / w[~y].sum()) / 2
    beta = np.zeros(g.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(g @ beta, -50, 50)))
        grad = g.T @ (w * (y - p)) - ridge * beta
        hess = g.T @ ((w * p * (1 - p))[:, None] * g) + ridge * np.eye(g.shape[1])
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.abs(step).max() < 1e-9:
            break
    return beta


def fit_decision_model(
    trials: QualityTrials, data: str = "", groups: np.ndarray | None = None
) -> DecisionModel:
    """Fit the impostor model, its tail and the llr on quality-annotated trials.

    ``groups``: ``(P,)`` the domain of each trial (its corpus); the tail is then the worst
    domain's (see ``_tail``).
    """
    labels = np.asarray(trials.labels, bool)
    if labels.sum() < 2 or (~labels).sum() < 2:
        raise DataError("calibration needs both same-speaker and different-speaker trials")
    imp = trials.subset(~labels)
    f = quality_features(*imp.quality)
    a, b = _fit_impostors(f, imp.scores, imp.weights)
    z = (imp.scores - f @ a) / np.exp(f @ b)
    rates, tail_z = _tail(z, imp.weights, None if groups is None else np.asarray(groups)[~labels])
    g = llr_features(trials.scores, *trials.quality)
    w = _fit_logistic(g, labels, np.asarray(trials.weights, np.float64))
    return DecisionModel(
        a.tolist(),
        b.tolist(),
        rates,
        tail_z,
        w.tolist(),
        "fit",
        data,
        int(labels.sum()),
        int((~labels).sum()),
    )


def refit(base: DecisionModel, trials: QualityTrials, data: str = "") -> DecisionModel:
    """A model's calibration adapted to a user's trials (``speakerid calibrate``).

    The quality slopes stay the model's: a user's recordings rarely span enough durations and
    enrollment sizes to refit them. With at least ``MIN_FIT_NONTARGET`` different-speaker and
    ``MIN_FIT_TARGET`` same-speaker trials (``method="refit"``) the strangers' level and spread,
    the tail table and the llr's offset and scale are refitted; with fewer (``"shift"``) only
    the strangers' level and the llr's offset move, by the trials' median residual.
    """
    labels = np.asarray(trials.labels, bool)
    if (~labels).sum() < 2:
        raise DataError("calibration needs different-speaker trials")
    imp = trials.subset(~labels)
    f = quality_features(*imp.quality)
    a, b = np.array(base.impostor_mean), np.array(base.impostor_log_sd)
    w = np.asarray(imp.weights, np.float64) / np.sum(imp.weights)
    enough = labels.sum() >= MIN_FIT_TARGET and (~labels).sum() >= MIN_FIT_NONTARGET
    residual = (imp.scores - f @ a) / np.exp(f @ b)
    if not enough:
        # the strangers' level moves by delta, and the llr's offset with it
        delta = float(np.median(residual)) * float(np.exp(b[0]))
        a[0] += delta
        weights = np.array(base.llr_weights)
        weights[0] -= _llr_slope(base, trials) * delta
        return replace(
            base,
            impostor_mean=a.tolist(),
            llr_weights=weights.tolist(),
            method="shift",
            data=data,
            n_target=int(labels.sum()),
            n_nontarget=int((~labels).sum()),
        )
    shift = float(np.sum(w * residual))
    spread = float(np.sqrt(np.sum(w * (residual - shift) ** 2)))
    a[0] += shift * float(np.exp(b[0]))
    b[0] += math.log(max(spread, 1e-3))
    z = (imp.scores - f @ a) / np.exp(f @ b)
    rates, tail_z = _tail(z, imp.weights)
    base_llr = base.llr(trials.scores, *trials.quality)
    scale = _fit_logistic(
        np.stack([np.ones_like(base_llr), base_llr], axis=1), labels, trials.weights
    )
    weights = np.array(base.llr_weights) * scale[1]
    weights[0] += scale[0]
    return DecisionModel(
        a.tolist(),
        b.tolist(),
        rates,
        tail_z,
        weights.tolist(),
        "refit",
        data,
        int(labels.sum()),
        int((~labels).sum()),
    )


def _llr_slope(model: DecisionModel, trials: QualityTrials) -> float:
    """The llr's typical slope in the score over these trials' qualities (median)."""
    score_terms = llr_features(1.0, *trials.quality)[:, 4:] @ np.asarray(model.llr_weights)[4:]
    return float(np.median(score_terms))


# ---------------------------------------------------------------- how good the llr is


def cllr(llr: np.ndarray, labels: np.ndarray) -> float:
    """Log-likelihood-ratio cost in bits (0 perfect, 1 an llr that says nothing)."""
    llr, labels = np.asarray(llr, np.float64), np.asarray(labels, bool)
    target = np.mean(np.logaddexp(0, -llr[labels])) if labels.any() else 0.0
    other = np.mean(np.logaddexp(0, llr[~labels])) if (~labels).any() else 0.0
    return float((target + other) / (2 * math.log(2)))


def _pav(y: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing fit of ``y`` (in its given order)."""
    values, weights, sizes = [], [], []
    for v in y.astype(np.float64):
        values.append(v)
        weights.append(1.0)
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            weights[-2], sizes[-2] = w, sizes[-2] + sizes[-1]
            values.pop(), weights.pop(), sizes.pop()
    return np.repeat(values, sizes)


def min_cllr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Cllr after the best monotone recalibration of ``scores`` (PAV): the part calibration
    cannot fix, so ``cllr - min_cllr`` is what is lost to miscalibration."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan")
    order = np.lexsort((~labels, scores))  # ties: non-targets first, the conservative order
    posterior = np.clip(_pav(labels[order].astype(np.float64)), 1e-9, 1 - 1e-9)
    prior_odds = labels.sum() / (~labels).sum()
    llr = np.empty_like(posterior)
    llr[order] = np.log(posterior / (1 - posterior)) - math.log(prior_odds)
    return cllr(llr, labels)


def act_dcf(llr: np.ndarray, labels: np.ndarray, p_target: float = 0.01) -> float:
    """Normalised detection cost of the Bayes decisions ``llr >= log((1 - p) / p)``."""
    llr, labels = np.asarray(llr, np.float64), np.asarray(labels, bool)
    accept = llr >= math.log((1 - p_target) / p_target)
    miss = float((~accept[labels]).mean()) if labels.any() else 0.0
    fa = float(accept[~labels].mean()) if (~labels).any() else 0.0
    return (p_target * miss + (1 - p_target) * fa) / min(p_target, 1 - p_target)
