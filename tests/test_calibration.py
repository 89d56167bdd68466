"""Calibration maths: operating points, trials, AS-norm, open-set thresholds, stored form."""

from __future__ import annotations

import numpy as np
import pytest

from speakerid.decision import calibration as cal
from speakerid.decision.calibrate import Labelled, fit_calibration
from speakerid.errors import DataError

DIM = 32


def synthetic_speakers(
    n_speakers: int, per_speaker: int, spread: float, seed: int, dim: int = DIM
) -> tuple[np.ndarray, np.ndarray]:
    """Unit recordings scattered around random unit speaker centres: ``(R, D)``, labels.

    ``spread`` sets how far a recording strays from its speaker: a known score gap, since
    same-speaker cosines run near ``1 / (1 + spread^2)`` and different-speaker ones near 0.
    """
    rng = np.random.default_rng(seed)
    centres = cal._unit(rng.standard_normal((n_speakers, dim)))
    noise = rng.standard_normal((n_speakers, per_speaker, dim)) * spread / np.sqrt(dim)
    rec = cal._unit((centres[:, None, :] + noise).reshape(-1, dim))
    labels = np.repeat([f"s{seed}_{i}" for i in range(n_speakers)], per_speaker)
    return rec, labels


def labelled(emb: np.ndarray, spk: np.ndarray) -> Labelled:
    return Labelled(emb, spk, spk, [f"{s}/{i}.wav" for i, s in enumerate(spk)])


def test_error_rates_match_sklearn_roc() -> None:
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(1)
    scores = np.round(rng.standard_normal(400), 2)  # ties on purpose
    labels = rng.random(400) < 0.3
    far, miss, thr = cal.error_rates(scores, labels)
    fpr, tpr, sk_thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(far, fpr)
    np.testing.assert_allclose(miss, 1 - tpr, atol=1e-15)
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])  # sklearn's first is +inf
    assert thr[0] > scores.max()


def test_eer_point_of_separable_scores_lies_between() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.0])
    labels = np.array([1, 1, 1, 0, 0, 0], bool)
    rate, threshold = cal.eer_point(scores, labels)
    assert rate == 0.0
    assert 0.2 < threshold <= 0.7


def test_far_threshold_accepts_at_most_the_rate() -> None:
    rng = np.random.default_rng(0)
    nontarget = rng.standard_normal(1000)
    t = cal.far_threshold(nontarget, 0.01)
    assert (nontarget >= t).sum() == 10
    assert cal.far_threshold(nontarget, 0.1) < t


def test_far_threshold_refuses_too_few_scores() -> None:
    with pytest.raises(DataError, match="at least 500"):
        cal.far_threshold(np.zeros(100), 0.01)


def test_enrollment_trials_never_test_a_recording_against_itself() -> None:
    emb, spk = synthetic_speakers(5, 4, 0.5, seed=0)
    trials = cal.enrollment_trials(emb, spk, enroll_size=2, seed=0)
    assert trials.n_target == 20  # one per recording
    assert trials.n_nontarget == 20 * 16  # every recording against other speakers' models
    # the target score of recording i is its cosine to a pool of 2 other recordings
    for m, i in enumerate(trials.held_out):
        same = np.flatnonzero(spk == spk[i])
        pools = [cal.pool(emb[[a, b]]) for a in same for b in same if a < b and i not in (a, b)]
        assert any(np.allclose(p, trials.models[m], atol=1e-6) for p in pools)


def test_pool_matches_embed_pool() -> None:
    from speakerid.vectors import pool

    emb, _ = synthetic_speakers(1, 5, 1.0, seed=3)
    np.testing.assert_allclose(cal.pool(emb), pool(emb), atol=1e-7)


def test_agreements_by_hand() -> None:
    emb, _ = synthetic_speakers(1, 4, 1.0, seed=4)
    got = cal.agreements(emb)
    for i in range(4):
        others = cal.pool(np.delete(emb, i, axis=0))
        assert got[i] == pytest.approx(float(emb[i] @ others), abs=1e-6)
    assert np.isnan(cal.agreements(emb[:1])).all()


def test_calibrated_threshold_separates_known_gap_and_holds_far_on_held_out() -> None:
    # Tight speakers (same-speaker cosines near 0.8) against unrelated ones (near 0).
    emb, spk = synthetic_speakers(30, 6, 0.5, seed=0)
    report = fit_calibration(labelled(emb, spk), "f" * 64, far=0.01)
    c = report.calibration
    target = report.trials.scores[report.trials.labels]
    nontarget = report.trials.scores[~report.trials.labels]
    assert nontarget.max() < c.threshold <= target.min() or (
        np.quantile(nontarget, 0.99) < c.threshold < np.median(target)
    )
    # Held-out speakers from the same population: the false-accept rate stays near 1 %.
    held_emb, held_spk = synthetic_speakers(30, 6, 0.5, seed=1)
    held = cal.enrollment_trials(held_emb, held_spk)
    fa, miss = cal.rates_at(held.scores, held.labels, c.threshold)
    assert fa == pytest.approx(0.01, abs=0.006)
    assert miss < 0.01


def test_eer_target_on_overlapping_speakers() -> None:
    emb, spk = synthetic_speakers(20, 5, 2.5, seed=2)  # same-speaker cosines near 0.14
    c = fit_calibration(labelled(emb, spk), "f" * 64).calibration
    assert c.target == "eer"
    assert 0.0 < c.eer < 0.5
    assert c.threshold == pytest.approx(c.eer_threshold)
    assert abs(c.false_accept_rate - c.miss_rate) < 0.05


@pytest.mark.parametrize(
    ("n_speakers", "per_speaker", "match"),
    [(3, 5, "at least 4 speakers"), (30, 1, "2 or more recordings"), (4, 2, "same-speaker")],
)
def test_refuses_too_little_data(n_speakers: int, per_speaker: int, match: str) -> None:
    emb, spk = synthetic_speakers(n_speakers, per_speaker, 0.5, seed=0)
    with pytest.raises(DataError, match=match):
        fit_calibration(labelled(emb, spk), "f" * 64)


def test_far_refused_when_trials_cannot_support_it() -> None:
    emb, spk = synthetic_speakers(5, 5, 0.5, seed=0)  # 25 x 20 = 500 impostor trials
    with pytest.raises(DataError, match="different-speaker scores"):
        fit_calibration(labelled(emb, spk), "f" * 64, far=0.001)


def test_as_norm_by_hand() -> None:
    rng = np.random.default_rng(5)
    cohort = cal._unit(rng.standard_normal((12, 8)))
    e, t = cal._unit(rng.standard_normal((2, 8)))
    k = 3
    se, st = np.sort(cohort @ e)[::-1][:k], np.sort(cohort @ t)[::-1][:k]
    raw = float(e @ t)
    expected = 0.5 * ((raw - se.mean()) / se.std() + (raw - st.mean()) / st.std())
    got = cal.as_norm_scores(t[None], e[None], np.array(["x"]), cohort, top_k=k)
    assert got[0, 0] == pytest.approx(expected, rel=1e-6)


def test_as_norm_leaves_the_claimed_speaker_out_of_a_store_cohort() -> None:
    rng = np.random.default_rng(6)
    cohort = cal._unit(rng.standard_normal((12, 8)))
    names = np.array([f"n{i}" for i in range(12)])
    t = cal._unit(rng.standard_normal(8))
    e = cohort[4]  # the claimed speaker is enrolled, so in the cohort
    rest = np.delete(cohort, 4, axis=0)
    k = 3
    se, st = np.sort(rest @ e)[::-1][:k], np.sort(rest @ t)[::-1][:k]
    raw = float(e @ t)
    expected = 0.5 * ((raw - se.mean()) / se.std() + (raw - st.mean()) / st.std())
    got = cal.as_norm_scores(t[None], e[None], np.array(["n4"]), cohort, names, top_k=k)
    assert got[0, 0] == pytest.approx(expected, rel=1e-6)


def test_as_norm_needs_a_cohort() -> None:
    emb, spk = synthetic_speakers(6, 4, 0.5, seed=0)
    with pytest.raises(DataError, match="cohort"):
        fit_calibration(labelled(emb, spk), "f" * 64, norm="asnorm", cohort=emb[:5])


def test_asnorm_calibration_on_a_cohort() -> None:
    emb, spk = synthetic_speakers(20, 5, 1.0, seed=0)
    cohort, _ = synthetic_speakers(40, 1, 0.0, seed=9)
    report = fit_calibration(
        labelled(emb, spk), "f" * 64, norm="asnorm", cohort=cohort, cohort_kind="model"
    )
    c = report.calibration
    assert (c.norm, c.cohort, c.cohort_size, c.top_k) == ("asnorm", "model", 40, 39)
    assert c.raw_threshold != c.threshold  # normalised scores need their own threshold
    assert c.eer < 0.1


def test_open_set_threshold_leave_one_speaker_out() -> None:
    gallery, names = synthetic_speakers(50, 1, 0.0, seed=11)
    strangers, spk = synthetic_speakers(40, 5, 0.7, seed=12)
    report = fit_calibration(
        labelled(strangers, spk), "f" * 64, fpir=0.05, gallery=gallery, gallery_names=names
    )
    c = report.calibration
    assert c.identify_method == "leave-one-speaker-out"
    assert c.store_speakers == 50
    assert c.identify_fpir_measured <= 0.05
    # fresh strangers against the same gallery: named at about the target rate
    fresh, _ = synthetic_speakers(400, 1, 0.0, seed=13)
    named = (fresh @ gallery.T).max(axis=1) >= c.identify_threshold
    assert named.mean() == pytest.approx(0.05, abs=0.03)
    # far above what strangers score against one enrolled speaker: N chances to pass
    assert np.quantile(fresh @ gallery.T, 0.99) < c.identify_threshold


def test_open_set_leaves_out_the_recordings_own_enrolled_name() -> None:
    gallery, names = synthetic_speakers(10, 1, 0.0, seed=11)
    queries = gallery[:3]
    best = cal.best_other_scores(queries, names[:3], gallery, names)
    assert (best < 0.99).all()


def test_power_threshold_matches_independent_maxima() -> None:
    rng = np.random.default_rng(7)
    nontarget = rng.standard_normal(200_000)
    t = cal.power_threshold(nontarget, 0.05, 20)
    maxima = rng.standard_normal((20_000, 20)).max(axis=1)
    assert (maxima >= t).mean() == pytest.approx(0.05, abs=0.01)


def test_calibration_round_trips_and_regrows() -> None:
    emb, spk = synthetic_speakers(20, 6, 0.5, seed=0)
    gallery, names = synthetic_speakers(20, 1, 0.0, seed=1)
    c = fit_calibration(
        labelled(emb, spk), "f" * 64, gallery=gallery, gallery_names=names
    ).calibration
    assert c.identify_method == "leave-one-speaker-out"
    assert cal.Calibration.from_json(c.to_json()) == c
    assert not c.regrow_due(25)
    assert c.regrow_due(30)
    assert cal.expected_fpir(0.05, 20, 40) == pytest.approx(1 - 0.95**2)


def test_pair_trials_score_every_pair_once() -> None:
    emb, spk = synthetic_speakers(4, 3, spread=0.5, seed=5)
    scores, labels = cal.pair_trials(emb, spk)
    n = len(emb)
    assert scores.shape == labels.shape == (n * (n - 1) // 2,)
    assert labels.sum() == 4 * 3  # 3 same-speaker pairs per speaker
    i, j = 1, 4  # the (1, 4) pair, in combinations order
    k = sum(n - 1 - r for r in range(i)) + (j - i - 1)
    assert scores[k] == pytest.approx(float(emb[i] @ emb[j]), abs=1e-6)


def test_gap_threshold_takes_the_middle_of_a_gap_else_the_eer_point() -> None:
    labels = np.array([True, True, False, False])
    rate, threshold, separable = cal.gap_threshold(np.array([0.9, 0.7, 0.3, 0.1]), labels)
    assert separable and rate == 0.0 and threshold == pytest.approx(0.5)
    overlap = np.array([0.9, 0.2, 0.3, 0.1])
    rate, threshold, separable = cal.gap_threshold(overlap, labels)
    assert not separable and (rate, threshold) == cal.eer_point(overlap, labels)
