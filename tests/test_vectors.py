"""vectors: unit length, pooling and the one score, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from speakerid.vectors import l2_normalize, pool, score, score_pairs, similarity


def _unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, d)))


def test_l2_normalize_makes_unit_rows_and_keeps_zeros() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_pool_is_the_normalised_mean_of_unit_rows() -> None:
    x = np.array([[2.0, 0.0], [0.0, 5.0]])  # unit rows (1, 0) and (0, 1): mean along the diagonal
    np.testing.assert_allclose(pool(x), [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-7)


def test_score_shapes_and_values_follow_a_dot_product() -> None:
    a, b = _unit_rows(3, 8, 1), _unit_rows(5, 8, 2)
    assert score(a[0], b[0]).shape == ()
    np.testing.assert_allclose(score(a[0], b[0]), float(np.dot(a[0], b[0])), rtol=1e-6)
    assert score(a, b[0]).shape == (3,)
    full = score(a, b)
    assert full.shape == (3, 5)
    np.testing.assert_allclose(full[2, 4], np.dot(a[2], b[4]), rtol=1e-6)
    np.testing.assert_allclose(np.diag(score(a, a)), 1.0, rtol=1e-6)


def test_similarity_metrics_rank_the_same_neighbour_first() -> None:
    q = np.array([[1.0, 0.0]], np.float32)
    cands = np.array([[[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]], np.float32)  # (B=1, 3, D=2)
    np.testing.assert_allclose(similarity(q, cands, "cosine"), [[0.0, 1.0, -1.0]])
    np.testing.assert_allclose(similarity(q, cands, "euclidean"), [[-np.sqrt(2), 0.0, -2.0]])
    np.testing.assert_allclose(similarity(q, cands, "l1"), [[-2.0, 0.0, -2.0]])
    with pytest.raises(ValueError, match="unknown metric"):
        similarity(q, cands, "dot")


def test_score_pairs_is_the_diagonal_of_score() -> None:
    a, b = _unit_rows(6, 8, 3), _unit_rows(6, 8, 4)
    np.testing.assert_allclose(score_pairs(a, b), np.diag(score(a, b)), rtol=1e-6)
