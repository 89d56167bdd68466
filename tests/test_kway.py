"""k-way tasks and baselines on synthetic embeddings and voices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import embedding_corpus

from speakerid.audio import FRAGMENT_SAMPLES, SAMPLE_RATE
from speakerid.errors import DataError
from speakerid.lab.kway import (
    KWayResult,
    kway_accuracy,
    kway_curve,
    mfcc_knn_accuracy,
    mfcc_stats,
    random_baseline,
    sample_kway_tasks,
    score_kway_tasks,
)


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


# --------------------------------------------------------------------------------- k-way


def test_clustered_embeddings_are_identified() -> None:
    x, spk, rec = embedding_corpus()
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
    x, spk, rec = embedding_corpus(noise=0.02)
    res = kway_accuracy(x, spk, rec, k=6, n_shot=3, trials=300, method=method, metric=metric, rng=1)
    assert res.accuracy >= 0.99
    assert (res.method, res.metric) == (method, metric)


@pytest.mark.parametrize("k", [2, 4, 10])
def test_noise_embeddings_score_chance(k: int) -> None:
    rng = np.random.default_rng(3)
    _, spk, rec = embedding_corpus(n_speakers=20, n_recordings=3, per_recording=6)
    x = rng.standard_normal((len(spk), 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    trials = 2000
    res = kway_accuracy(x, spk, rec, k=k, trials=trials, rng=4)
    assert abs(res.accuracy - random_baseline(k)) < 4 * binomial_se(1 / k, trials)


def test_identical_embeddings_score_exactly_chance() -> None:
    """Ties are shared out, so a constant encoder cannot look better than guessing."""
    _, spk, rec = embedding_corpus()
    x = np.ones((len(spk), 8), dtype=np.float32) / math.sqrt(8)
    for method in ("prototype", "nearest"):
        res = kway_accuracy(x, spk, rec, k=5, trials=200, method=method, rng=0)
        assert res.accuracy == pytest.approx(0.2)


def test_more_shots_help_prototypes_on_noisy_clusters() -> None:
    x, spk, rec = embedding_corpus(
        n_speakers=20, n_recordings=2, per_recording=8, noise=0.3, seed=5
    )
    one = kway_accuracy(x, spk, rec, k=10, n_shot=1, trials=1500, rng=6)
    five = kway_accuracy(x, spk, rec, k=10, n_shot=5, trials=1500, rng=6)
    assert 0.2 < one.accuracy < 0.9  # the task is hard enough to leave room
    assert five.accuracy > one.accuracy + 4 * binomial_se(one.accuracy, 1500)


def test_seed_fixes_the_result() -> None:
    x, spk, rec = embedding_corpus(noise=0.3)
    a = kway_accuracy(x, spk, rec, k=4, trials=300, rng=7)
    b = kway_accuracy(x, spk, rec, k=4, trials=300, rng=np.random.default_rng(7))
    assert a == b


def test_tasks_are_well_formed_and_cross_recording() -> None:
    # Speakers 0-7 have three recordings, 8-11 one recording (of 15 fragments).
    x, spk, rec = embedding_corpus()
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
    _, spk, rec = embedding_corpus(n_recordings=2, per_recording=6)
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
    x, spk, rec = embedding_corpus(n_speakers=3)
    with pytest.raises(DataError):
        kway_accuracy(x, spk, rec, k=4, rng=0)
    with pytest.raises(ValueError):
        tasks = sample_kway_tasks(spk, rec, k=2, trials=5, rng=0)
        score_kway_tasks(x, tasks, method="median")  # type: ignore[arg-type]


def test_kway_curve_covers_all_k_and_falls() -> None:
    x, spk, rec = embedding_corpus(n_speakers=8, noise=0.25)
    curve = kway_curve(x, spk, rec, trials=300, rng=11)
    assert list(curve) == list(range(2, 9))
    acc = [curve[k].accuracy for k in curve]
    assert all(0.0 <= a <= 1.0 for a in acc)
    assert acc[0] > acc[-1]
    assert all(curve[k].accuracy > random_baseline(k) for k in curve)


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
