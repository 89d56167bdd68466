"""The decision calibration: fitted on synthetic scores whose truth is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from speakerid.decision.constants import DEFAULT_FAR
from speakerid.decision.model import (
    DecisionModel,
    Quality,
    QualityTrials,
    act_dcf,
    check_far,
    cllr,
    fit_decision_model,
    min_cllr,
    refit,
    sidak_far,
)
from speakerid.errors import DataError

# The truth the synthetic trials are drawn from: strangers' scores spread wider for short
# clips and sit higher for pooled enrollments; same-speaker scores rise with length.
TEST = np.array([0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0])
COUNTS = np.array([1, 3, 10])


def true_impostor(t: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return 0.10 + 0.03 * np.log(c), 0.06 + 0.10 / np.sqrt(t)


def true_target(t: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, _ = true_impostor(t, c)
    return mean + 0.35 + 0.08 * np.log(t), 0.08 + 0.0 * t


def synthetic(n_per_cell: int = 800, seed: int = 0) -> QualityTrials:
    rng = np.random.default_rng(seed)
    t, c = (g.ravel() for g in np.meshgrid(TEST, COUNTS))
    t, c = np.repeat(t, n_per_cell), np.repeat(c, n_per_cell)
    y = rng.random(len(t)) < 0.2
    (mi, si), (mt, st) = true_impostor(t, c), true_target(t, c)
    s = np.where(y, mt + st * rng.standard_normal(len(t)), mi + si * rng.standard_normal(len(t)))
    return QualityTrials(s, y, t, 8.0 * c, c.astype(float), np.ones(len(t)))


@pytest.fixture(scope="module")
def fitted() -> DecisionModel:
    return fit_decision_model(synthetic(), "synthetic")


def test_impostor_mean_and_spread_are_recovered(fitted: DecisionModel) -> None:
    t, c = np.meshgrid(TEST, COUNTS)
    mean, sd = fitted.impostor_stats(t.ravel(), 8.0 * c.ravel(), c.ravel())
    true_mean, true_sd = true_impostor(t.ravel(), c.ravel())
    np.testing.assert_allclose(mean, true_mean, atol=0.01)
    np.testing.assert_allclose(sd, true_sd, rtol=0.12)


def test_false_accepts_hold_in_every_condition_on_fresh_trials(fitted: DecisionModel) -> None:
    fresh = synthetic(n_per_cell=4000, seed=1)
    accepted = fresh.scores >= fitted.thresholds(DEFAULT_FAR, *fresh.quality)
    for t in TEST:
        for c in COUNTS:
            cell = (fresh.test_seconds == t) & (fresh.enroll_count == c) & ~fresh.labels
            assert accepted[cell].mean() == pytest.approx(DEFAULT_FAR, abs=0.008), (t, c)
    # one fixed threshold for the same overall rate misses the target in the extremes
    fixed = np.quantile(fresh.scores[~fresh.labels], 1 - DEFAULT_FAR)
    short = (fresh.test_seconds == 0.5) & (fresh.enroll_count == 10) & ~fresh.labels
    assert (fresh.scores[short] >= fixed).mean() > 3 * DEFAULT_FAR


def test_llr_matches_the_true_likelihood_ratio(fitted: DecisionModel) -> None:
    fresh = synthetic(n_per_cell=300, seed=2)
    (mi, si), (mt, st) = (
        true_impostor(fresh.test_seconds, fresh.enroll_count),
        true_target(fresh.test_seconds, fresh.enroll_count),
    )
    s = fresh.scores

    def log_normal(x: np.ndarray, m: np.ndarray, sd: np.ndarray) -> np.ndarray:
        return -0.5 * ((x - m) / sd) ** 2 - np.log(sd)

    truth = log_normal(s, mt, st) - log_normal(s, mi, si)
    estimate = fitted.llr(s, *fresh.quality)
    # logistic QMF is linear in the score and the truth here quadratic (unequal spreads):
    # close, not equal, where decisions happen
    near = np.abs(truth) < 8
    assert np.corrcoef(truth[near], estimate[near])[0, 1] > 0.9
    assert cllr(estimate, fresh.labels) < 0.3
    # the quality measures carry what the score alone lacks: the calibrated llr beats even
    # the best monotone recalibration of the raw score
    assert cllr(estimate, fresh.labels) < min_cllr(s, fresh.labels)


def test_llr_is_exact_where_the_truth_is_linear() -> None:
    rng = np.random.default_rng(5)
    n = 40_000
    y = rng.random(n) < 0.3
    s = np.where(y, 0.5, 0.1) + 0.1 * rng.standard_normal(n)
    t = rng.choice(TEST, n)
    c = rng.choice(COUNTS, n).astype(float)
    model = fit_decision_model(QualityTrials(s, y, t, 8 * c, c, np.ones(n)))
    truth = (s - 0.3) * (0.4 / 0.01)  # log N(s; 0.5, 0.1) - log N(s; 0.1, 0.1)
    assert np.abs(model.llr(s, t, 8 * c, c) - truth).mean() < 0.3


def test_decisions_are_monotone_in_the_score(fitted: DecisionModel) -> None:
    for t in TEST:
        for c in COUNTS:
            q = Quality(float(t), 8.0 * c, int(c))
            decided = [fitted.decide(s, q).accepted for s in np.linspace(-1, 1, 201)]
            first = decided.index(True)
            assert all(decided[first:]) and not any(decided[:first])
            llr = fitted.llr(np.linspace(-1, 1, 201), t, 8.0 * c, c)
            assert np.all(np.diff(llr) > 0)


def test_a_lower_far_asks_more_and_stranger_rates_agree(fitted: DecisionModel) -> None:
    q = Quality(1.5, 30.0, 3)
    strict, loose = fitted.decide(0.4, q, 0.001), fitted.decide(0.4, q, 0.1)
    assert strict.threshold > loose.threshold
    at = fitted.decide(strict.threshold, q, 0.001)
    assert at.accepted and at.stranger_rate == pytest.approx(0.001, rel=0.05)
    # rarer than the table reaches: a normal tail carries on, still ordered
    assert fitted.z_at(1e-7) > fitted.z_at(1e-5) > fitted.z_at(fitted.tail_rates[-1])


def test_json_round_trip_and_damage(fitted: DecisionModel) -> None:
    again = DecisionModel.from_json(fitted.to_json())
    assert again == fitted
    data = json.loads(fitted.to_json())
    for bad in (
        {**data, "tail_z": data["tail_z"][::-1]},
        {**data, "impostor_mean": [1.0]},
        {**data, "format": "speakerid-decision/99"},
        {**data, "llr_weights": [math.nan] * len(data["llr_weights"])},
        {**data, "impostor_mean": "abc"},
    ):
        with pytest.raises(DataError):
            DecisionModel.from_dict(bad)
    for text in ("[1]", "{", "[" * 30_000):
        with pytest.raises(DataError):
            DecisionModel.from_json(text)


def test_refit_shifts_with_few_trials_and_refits_with_many(fitted: DecisionModel) -> None:
    rng = np.random.default_rng(3)
    # a user domain where strangers score 0.1 higher than the fit's
    many = synthetic(n_per_cell=200, seed=4)
    shifted_scores = np.where(many.labels, many.scores, many.scores + 0.1)
    domain = QualityTrials(shifted_scores, *list(many.__dict__.values())[1:])
    refitted = refit(fitted, domain)
    assert refitted.method == "refit"
    accepted = domain.scores >= refitted.thresholds(DEFAULT_FAR, *domain.quality)
    assert accepted[~domain.labels].mean() == pytest.approx(DEFAULT_FAR, abs=0.01)
    few = domain.subset(rng.permutation(len(domain.scores))[:300])
    shifted = refit(fitted, few)
    assert shifted.method == "shift"
    q = (np.array([3.0]), np.array([24.0]), np.array([3.0]))
    moved = shifted.impostor_stats(*q)[0][0] - fitted.impostor_stats(*q)[0][0]
    assert moved == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.6, math.nan, math.inf])
def test_bad_far_values_are_refused(bad: float) -> None:
    with pytest.raises(DataError, match="--far"):
        check_far(bad, "--far")


def test_far_range_edges_and_sidak() -> None:
    assert check_far(0.5) == 0.5 and check_far(1e-6) == 1e-6
    assert sidak_far(0.01, 1) == pytest.approx(0.01)
    n = 1000
    per = sidak_far(0.01, n)
    assert 1 - (1 - per) ** n == pytest.approx(0.01)


def test_cllr_and_dcf_reference_points() -> None:
    y = np.array([True] * 100 + [False] * 100)
    assert cllr(np.zeros(200), y) == pytest.approx(1.0)  # an llr of 0 says nothing
    assert cllr(np.where(y, 20.0, -20.0), y) < 1e-6
    assert min_cllr(np.where(y, 1.0, 0.0), y) < 1e-6  # separable: perfect after recalibration
    assert act_dcf(np.full(200, -100.0), y) == pytest.approx(1.0)  # reject all: cost of misses
