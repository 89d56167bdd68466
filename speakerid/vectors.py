"""Vector maths every caller shares: unit length, pooling and the one similarity score.

Numpy only (no torch), so the store, search, calibration and evaluation code all score the
same way without importing the encoder. Embeddings are unit rows; the score of two of them
is their cosine (``score``), in [-1, 1], never rescaled. ``similarity`` adds the two distance
metrics the case study compared (negated, so that larger always means more alike).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Metric = Literal["cosine", "euclidean", "l1"]
METRICS: tuple[str, ...] = get_args(Metric)
EPS = 1e-12  # norms below this are treated as zero: a zero vector stays zero


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale vectors to unit length along ``axis`` (zero vectors stay zero), as float32."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, EPS)).astype(np.float32)


def pool(embeddings: np.ndarray) -> np.ndarray:
    """Normalised mean of ``(n, D)`` vectors, each first made unit -> ``(D,)`` unit vector.

    A recording is the pool of its fragments, a speaker the pool of their recordings.
    """
    return l2_normalize(l2_normalize(np.asarray(embeddings, dtype=np.float32)).mean(axis=0))


def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine scores of unit vectors: ``(D,)`` or ``(n, D)`` against ``(D,)`` or ``(m, D)``.

    Shapes follow the inputs: vector x vector -> scalar array, ``(n, D)`` x ``(D,)`` ->
    ``(n,)``, ``(n, D)`` x ``(m, D)`` -> ``(n, m)``. The inputs are assumed unit length (the
    store and every embedder hand out unit rows), so this is a plain matrix product.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    return a @ (b.T if b.ndim == 2 else b)


def score_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``score`` of matched rows: ``(n, D)`` and ``(n, D)`` -> ``(n,)``, row i against row i.

    What verification trials need (one score per listed pair) without the ``(n, n)`` matrix.
    """
    return np.einsum("pd,pd->p", a, b)


def similarity(queries: np.ndarray, candidates: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Queries ``(B, D)`` against candidates ``(B, ..., D)`` -> ``(B, ...)``, larger = closer.

    ``cosine`` is ``score`` row by row (unit inputs); ``euclidean`` and ``l1`` are negated
    distances, the case study's alternatives.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {list(METRICS)}")
    q = queries.reshape(queries.shape[0], *([1] * (candidates.ndim - 2)), queries.shape[1])
    if metric == "cosine":
        return np.sum(q * candidates, axis=-1)
    if metric == "euclidean":
        return -np.sqrt(np.sum((candidates - q) ** 2, axis=-1))
    return -np.sum(np.abs(candidates - q), axis=-1)
