"""Verification metrics: trials, EER, minDCF, DET points and intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import embedding_corpus

from speakerid.errors import DataError
from speakerid.lab.metrics import (
    det_curve,
    eer,
    min_dcf,
    verification_summary,
    verification_trials,
    wilson_interval,
)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.05, rel=0.05)
    assert wilson_interval(0, 20)[0] == 0.0
    assert wilson_interval(20, 20)[1] == pytest.approx(1.0)


# --------------------------------------------------------------------------- verification


def test_verification_trials_pairs() -> None:
    x, spk, rec = embedding_corpus(n_speakers=4, n_recordings=2, per_recording=3)
    rec = rec.copy()
    rec[spk == "spk3"] = "only"  # a single-recording speaker keeps its same-recording pairs
    n = len(x)
    scores, labels = verification_trials(x, spk, rec, cross_recording=False)
    assert len(scores) == n * (n - 1) // 2
    assert labels.sum() == 4 * (6 * 5 // 2)
    assert scores.dtype == np.float32 and (np.abs(scores) <= 1 + 1e-5).all()

    scores, labels = verification_trials(x, spk, rec, cross_recording=True)
    # spk0-2 lose 2 * C(3, 2) = 6 same-recording pairs each; spk3 keeps all 15.
    assert labels.sum() == 3 * (15 - 6) + 15
    assert (~labels).sum() == n * (n - 1) // 2 - 4 * 15
    assert scores[labels].min() > scores[~labels].max()  # well-separated clusters


def test_verification_subsample_is_exact_and_distinct() -> None:
    x, spk, rec = embedding_corpus(n_speakers=10, n_recordings=2, per_recording=5)
    scores, labels = verification_trials(x, spk, rec, max_pairs=200, rng=14)
    assert len(scores) == len(labels) == 200
    a, _ = verification_trials(x, spk, rec, max_pairs=200, rng=14)
    np.testing.assert_array_equal(a, scores)


def test_verification_sampling_path_for_large_sets() -> None:
    # 3000 fragments make 4.5M pairs, more than are listed outright.
    rng = np.random.default_rng(15)
    n = 3000
    spk = np.array([f"s{i % 50}" for i in range(n)])
    rec = np.array([f"r{(i // 50) % 2}" for i in range(n)])
    x = rng.standard_normal((n, 8)).astype(np.float32)
    scores, labels = verification_trials(x, spk, rec, max_pairs=1000, rng=16)
    assert len(scores) == 1000
    assert len(np.unique(scores)) == 1000  # distinct pairs (continuous scores)
    # About 1/50 of pairs are same-speaker, half of those dropped as same-recording.
    assert 0 < labels.sum() < 40


def test_eer_of_separable_and_identical_scores() -> None:
    rng = np.random.default_rng(17)
    tgt, non = rng.uniform(0.6, 0.9, 500), rng.uniform(-0.2, 0.5, 5000)
    scores = np.concatenate([tgt, non])
    labels = np.r_[np.ones(500, bool), np.zeros(5000, bool)]
    rate, thr = eer(scores, labels)
    assert rate == 0.0
    assert non.max() < thr <= tgt.min()

    same = rng.standard_normal(40000)
    labels = np.arange(40000) % 2 == 0
    rate, thr = eer(same, labels)
    assert abs(rate - 0.5) < 0.02
    assert abs(thr) < 0.1  # the median of both classes


def test_eer_of_gaussian_scores_matches_theory() -> None:
    """Unit-variance classes 2 apart cross at 1: EER = Phi(-1)."""
    rng = np.random.default_rng(18)
    scores = np.r_[rng.normal(2, 1, 20000), rng.normal(0, 1, 20000)]
    labels = np.r_[np.ones(20000, bool), np.zeros(20000, bool)]
    rate, thr = eer(scores, labels)
    assert rate == pytest.approx(0.5 * math.erfc(1 / math.sqrt(2)), abs=0.006)
    assert thr == pytest.approx(1.0, abs=0.05)


def test_min_dcf_range() -> None:
    rng = np.random.default_rng(19)
    labels = np.r_[np.ones(1000, bool), np.zeros(9000, bool)]
    for shift in (0.0, 1.0, 3.0):
        scores = np.r_[rng.normal(shift, 1, 1000), rng.normal(0, 1, 9000)]
        cost, thr = min_dcf(scores, labels)
        assert 0.0 <= cost <= 1.0 and math.isfinite(thr)
    separable = np.r_[np.full(1000, 0.9), np.full(9000, 0.1)]
    assert min_dcf(separable, labels)[0] == 0.0
    noisy = rng.standard_normal(10000)
    assert min_dcf(noisy, labels)[0] > 0.9
    with pytest.raises(DataError):
        min_dcf(noisy, np.ones(10000, bool))


def test_det_curve_is_monotone_and_summary() -> None:
    rng = np.random.default_rng(20)
    scores = np.r_[rng.normal(1, 1, 500), rng.normal(0, 1, 500)]
    labels = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    fpr, fnr, thr = det_curve(scores, labels)
    assert fpr.shape == fnr.shape == thr.shape
    assert (np.diff(fpr) <= 0).all() and (np.diff(fnr) >= 0).all()
    summary = verification_summary(scores, labels)
    assert summary.n_target == 500 and summary.n_nontarget == 500
    assert 0.0 < summary.eer < 0.5 and 0.0 <= summary.min_dcf <= 1.0
