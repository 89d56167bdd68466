"""Properties of the evaluation maths on synthetic embeddings, scores and voices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from speakerid.audio import FRAGMENT_SAMPLES, SAMPLE_RATE
from speakerid.errors import DataError
from speakerid.evaluate import (
    CASE_STUDY_KWAY,
    KWayResult,
    det_curve,
    eer,
    kway_accuracy,
    kway_curve,
    mfcc_knn_accuracy,
    mfcc_stats,
    min_dcf,
    plot_det,
    plot_kway_curve,
    plot_training_curves,
    plot_tsne,
    random_baseline,
    report_json,
    sample_kway_tasks,
    score_kway_tasks,
    verification_summary,
    verification_trials,
    wilson_interval,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def corpus(
    n_speakers: int = 12,
    n_recordings: int = 3,
    per_recording: int = 5,
    dim: int = 32,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian clusters around random unit centres, projected back onto the sphere.

    ``noise`` is the per-dimension standard deviation. Recording labels ("r0", "r1", ...)
    repeat across speakers on purpose: they only mean something within a speaker.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_speakers, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    n = n_speakers * n_recordings * per_recording
    spk = np.repeat(np.arange(n_speakers), n_recordings * per_recording)
    rec = np.tile(np.repeat(np.arange(n_recordings), per_recording), n_speakers)
    x = centres[spk] + noise * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (
        x.astype(np.float32),
        np.array([f"spk{s}" for s in spk]),
        np.array([f"r{r}" for r in rec]),
    )


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


# --------------------------------------------------------------------------------- k-way


def test_clustered_embeddings_are_identified() -> None:
    x, spk, rec = corpus()
    res = kway_accuracy(x, spk, rec, k=4, trials=500, rng=0)
    assert isinstance(res, KWayResult)
    assert res.accuracy >= 0.99
    assert res.trials == 500
    assert res.cross_recording_fraction == 1.0
    assert 0.0 <= res.ci_low <= res.accuracy <= res.ci_high <= 1.0
    assert res.chance == 0.25


@pytest.mark.parametrize("method", ["prototype", "nearest"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean", "l1"])
def test_every_method_and_metric_works(method: str, metric: str) -> None:
    x, spk, rec = corpus(noise=0.02)
    res = kway_accuracy(x, spk, rec, k=6, n_shot=3, trials=300, method=method, metric=metric, rng=1)
    assert res.accuracy >= 0.99
    assert (res.method, res.metric) == (method, metric)


@pytest.mark.parametrize("k", [2, 4, 10])
def test_noise_embeddings_score_chance(k: int) -> None:
    rng = np.random.default_rng(3)
    _, spk, rec = corpus(n_speakers=20, n_recordings=3, per_recording=6)
    x = rng.standard_normal((len(spk), 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    trials = 2000
    res = kway_accuracy(x, spk, rec, k=k, trials=trials, rng=4)
    assert abs(res.accuracy - random_baseline(k)) < 4 * binomial_se(1 / k, trials)


def test_identical_embeddings_score_exactly_chance() -> None:
    """Ties are shared out, so a constant encoder cannot look better than guessing."""
    _, spk, rec = corpus()
    x = np.ones((len(spk), 8), dtype=np.float32) / math.sqrt(8)
    for method in ("prototype", "nearest"):
        res = kway_accuracy(x, spk, rec, k=5, trials=200, method=method, rng=0)
        assert res.accuracy == pytest.approx(0.2)


def test_more_shots_help_prototypes_on_noisy_clusters() -> None:
    x, spk, rec = corpus(n_speakers=20, n_recordings=2, per_recording=8, noise=0.3, seed=5)
    one = kway_accuracy(x, spk, rec, k=10, n_shot=1, trials=1500, rng=6)
    five = kway_accuracy(x, spk, rec, k=10, n_shot=5, trials=1500, rng=6)
    assert 0.2 < one.accuracy < 0.9  # the task is hard enough to leave room
    assert five.accuracy > one.accuracy + 4 * binomial_se(one.accuracy, 1500)


def test_seed_fixes_the_result() -> None:
    x, spk, rec = corpus(noise=0.3)
    a = kway_accuracy(x, spk, rec, k=4, trials=300, rng=7)
    b = kway_accuracy(x, spk, rec, k=4, trials=300, rng=np.random.default_rng(7))
    assert a == b


def test_tasks_are_well_formed_and_cross_recording() -> None:
    # Speakers 0-7 have three recordings, 8-11 one recording (of 15 fragments).
    x, spk, rec = corpus()
    rec = rec.copy()
    single = np.isin(spk, [f"spk{s}" for s in range(8, 12)])
    rec[single] = "only"
    n_shot, k, trials = 3, 5, 1000
    tasks = sample_kway_tasks(spk, rec, k=k, n_shot=n_shot, trials=trials, rng=8)
    assert tasks.query.shape == (trials,)
    assert tasks.supports.shape == (trials, k, n_shot)
    assert tasks.speakers.shape == (trials, k)
    names = tasks.speaker_names
    for t in range(trials):
        assert len(set(tasks.speakers[t])) == k
        for col in range(k):
            assert (spk[tasks.supports[t, col]] == names[tasks.speakers[t, col]]).all()
            assert len(set(tasks.supports[t, col])) == n_shot
        target = names[tasks.speakers[t, 0]]
        assert spk[tasks.query[t]] == target
        assert tasks.query[t] not in tasks.supports[t, 0]
        multi = len(np.unique(rec[spk == target])) > 1
        assert tasks.cross_recording[t] == multi
        if multi:
            assert rec[tasks.query[t]] not in rec[tasks.supports[t, 0]]
    # Every speaker is drawn as target now and then.
    assert len(np.unique(tasks.speakers[:, 0])) == 12
    frac = kway_accuracy(x, spk, rec, k=k, n_shot=n_shot, trials=trials, rng=8)
    assert frac.cross_recording_fraction == pytest.approx(tasks.cross_recording.mean())


def test_cross_recording_off_allows_same_recording() -> None:
    _, spk, rec = corpus(n_recordings=2, per_recording=6)
    tasks = sample_kway_tasks(spk, rec, k=3, n_shot=2, trials=500, cross_recording=False, rng=9)
    assert not tasks.cross_recording.any()
    same = [rec[tasks.query[t]] in rec[tasks.supports[t, 0]] for t in range(500)]
    assert any(same)
    assert all(tasks.query[t] not in tasks.supports[t, 0] for t in range(500))


def test_query_falls_back_when_other_recordings_are_too_small() -> None:
    # One speaker has recordings of 4 and 1 fragments: with 2 shots only the single
    # fragment can be a cross-recording query.
    spk = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 5)
    rec = np.array(["x"] * 4 + ["y"] + ["x"] * 5 + ["x"] * 5)
    tasks = sample_kway_tasks(spk, rec, k=2, n_shot=2, trials=300, rng=10)
    is_a = tasks.speaker_names[tasks.speakers[:, 0]] == "a"
    assert is_a.any()
    assert (tasks.query[is_a] == 4).all()
    assert tasks.cross_recording[is_a].all() and not tasks.cross_recording[~is_a].any()


def test_too_few_speakers_is_a_data_error() -> None:
    x, spk, rec = corpus(n_speakers=3)
    with pytest.raises(DataError):
        kway_accuracy(x, spk, rec, k=4, rng=0)
    with pytest.raises(ValueError):
        tasks = sample_kway_tasks(spk, rec, k=2, trials=5, rng=0)
        score_kway_tasks(x, tasks, method="median")  # type: ignore[arg-type]


def test_kway_curve_covers_all_k_and_falls() -> None:
    x, spk, rec = corpus(n_speakers=8, noise=0.25)
    curve = kway_curve(x, spk, rec, trials=300, rng=11)
    assert list(curve) == list(range(2, 9))
    acc = [curve[k].accuracy for k in curve]
    assert all(0.0 <= a <= 1.0 for a in acc)
    assert acc[0] > acc[-1]
    assert all(curve[k].accuracy > random_baseline(k) for k in curve)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.05, rel=0.05)
    assert wilson_interval(0, 20)[0] == 0.0
    assert wilson_interval(20, 20)[1] == pytest.approx(1.0)


# -------------------------------------------------------------------------- MFCC baseline


def voice(f0: float, tilt: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonics of a slowly wandering pitch with a spectral tilt, plus noise: a toy voice."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    harmonics = sum(
        h**-tilt * np.sin(h * phase + rng.uniform(0, 6))
        for h in range(1, 30)
        if h * f0 < 0.45 * SAMPLE_RATE
    )
    wav = harmonics + 0.05 * rng.standard_normal(len(t))
    return (0.3 * wav / np.abs(wav).max()).astype(np.float32)


def test_mfcc_stats_shape_and_standardisation() -> None:
    rng = np.random.default_rng(12)
    frags = 0.1 * rng.standard_normal((5, FRAGMENT_SAMPLES)).astype(np.float32)
    feats = mfcc_stats(frags, batch_size=2)
    assert feats.shape == (5, 64) and feats.dtype == np.float32
    np.testing.assert_allclose(feats.mean(axis=0), 0.0, atol=1e-4)
    raw = mfcc_stats(frags, standardize=False)
    assert (raw[:, 32:] >= 0).all()  # the second half holds standard deviations


def test_mfcc_knn_separates_two_voices() -> None:
    rng = np.random.default_rng(13)
    frags, spk, rec = [], [], []
    for name, f0, tilt in (("low", 110.0, 1.0), ("high", 230.0, 2.0)):
        for r in range(2):
            wav = voice(f0, tilt, 4 * 3.0, rng) * rng.uniform(0.5, 1.5)
            frags.append(wav.reshape(4, FRAGMENT_SAMPLES))
            spk += [name] * 4
            rec += [f"r{r}"] * 4
    fragments = np.concatenate(frags)
    spk_arr, rec_arr = np.array(spk), np.array(rec)
    for method in ("nearest", "prototype"):
        res = mfcc_knn_accuracy(fragments, spk_arr, rec_arr, k=2, trials=300, method=method, rng=0)
        assert res.accuracy > 0.9
        assert res.metric == "euclidean"
        assert res.cross_recording_fraction == 1.0


# --------------------------------------------------------------------------- verification


def test_verification_trials_pairs() -> None:
    x, spk, rec = corpus(n_speakers=4, n_recordings=2, per_recording=3)
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
    x, spk, rec = corpus(n_speakers=10, n_recordings=2, per_recording=5)
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


# ---------------------------------------------------------------------------------- plots


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_plots_write_png(tmp_path: Path) -> None:
    x, spk, rec = corpus(n_speakers=5, noise=0.2)
    curve = kway_curve(x, spk, rec, trials=100, rng=21)
    out = plot_kway_curve(
        {"twin": curve, "plain": {2: 0.9, 4: 0.7, 40: 0.3}},
        tmp_path / "kway.png",
        reference=CASE_STUDY_KWAY,
    )
    assert_png(out)

    scores, labels = verification_trials(x, spk, rec)
    assert_png(plot_det({"twin": (scores, labels)}, tmp_path / "det.png"))
    assert_png(plot_tsne(x, spk, tmp_path / "sub" / "tsne.png", max_speakers=3))

    history = [{"step": s, "loss": 1 / (s + 1)} for s in range(0, 100, 10)]
    history[4]["val_acc"] = 0.5
    history[9]["val_acc"] = 0.8
    assert_png(plot_training_curves(history, tmp_path / "train.png"))


# -------------------------------------------------------------------------------- reports


def test_report_json_round_trips() -> None:
    x, spk, rec = corpus(n_speakers=4)
    curve = kway_curve(x, spk, rec, trials=50, rng=22)
    scores, labels = verification_trials(x, spk, rec)
    report = report_json(
        {
            "kway": curve,
            "verification": verification_summary(scores, labels),
            "extra": {"nan": float("nan"), "x": np.float32(1 / 3), "n": np.int64(3)},
        }
    )
    text = json.dumps(report, allow_nan=False)
    back = json.loads(text)
    assert set(back["kway"]) == {"2", "3", "4"}
    assert back["kway"]["2"]["k"] == 2
    assert back["extra"] == {"nan": None, "x": 0.3333, "n": 3}
