"""n-shot k-way identification tasks: sampling, scoring, accuracy curves and baselines.

The k-way task follows the case study: pick k distinct speakers, one query fragment of the
first ("target") speaker and ``n_shot`` support fragments of each, and predict the speaker
whose support is closest to the query. With ``cross_recording`` the query comes from a
different recording than the target's supports wherever the speaker has one, so that a
model cannot win by recognising the room or the microphone.

Everything takes arrays: ``embeddings`` of shape ``(N, D)`` (one row per 3-second
fragment), and per-fragment ``speakers`` and ``recordings`` labels of shape ``(N,)``.
The baselines are chance (``random_baseline``) and a k-NN on MFCC statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from speakerid.audio import FRAGMENT_SAMPLES
from speakerid.errors import DataError
from speakerid.features.torch import MFCCFrontend
from speakerid.lab.metrics import Seed, as_rng, label_codes, wilson_interval
from speakerid.vectors import METRICS, Metric, l2_normalize, similarity

Method = Literal["prototype", "nearest"]

METHODS = ("prototype", "nearest")
# The case study's reported k-way accuracy (1-shot), as a range read off its figure.
CASE_STUDY_KWAY: dict[int, tuple[float, float]] = {
    4: (0.72, 0.79),
    10: (0.50, 0.60),
    40: (0.22, 0.26),
}
TASK_BATCH_ELEMENTS = 1 << 22  # random keys / embedding values held at once while batching


@dataclass(frozen=True)
class KWayTasks:
    """Sampled n-shot k-way tasks, as indices into the evaluated arrays.

    Attributes
    ----------
    query: (T,) fragment index of each task's query (always of speaker column 0).
    supports: (T, k, n_shot) fragment indices of each speaker's support set.
    speakers: (T, k) indices into ``speaker_names``; column 0 is the target.
    cross_recording: (T,) True where the query's recording differs from all target supports.
    speaker_names: (S,) the distinct speaker labels.
    """

    query: np.ndarray
    supports: np.ndarray
    speakers: np.ndarray
    cross_recording: np.ndarray
    speaker_names: np.ndarray


@dataclass(frozen=True)
class KWayResult:
    """Accuracy of one n-shot k-way evaluation.

    ``accuracy`` counts a tie between the target and others as 1/(number tied), the expected
    accuracy under random tie-breaking. ``ci_low``/``ci_high`` bound a 95% Wilson interval
    for the task success probability (treating trials as independent).
    """

    k: int  # speakers per task
    n_shot: int  # support fragments per speaker
    accuracy: float  # fraction of tasks answered correctly, in [0, 1]
    trials: int  # number of tasks
    cross_recording_fraction: float  # fraction of tasks whose query and supports differ
    ci_low: float  # lower end of the 95% interval
    ci_high: float  # upper end of the 95% interval
    method: str = "prototype"  # "prototype" or "nearest"
    metric: str = "cosine"  # "cosine", "euclidean" or "l1"

    @property
    def chance(self) -> float:
        """The accuracy of guessing, 1/k."""
        return random_baseline(self.k)


def random_baseline(k: int) -> float:
    """Accuracy of a random guess among ``k`` speakers: ``1 / k``."""
    if k < 1:
        raise ValueError("k must be at least 1")
    return 1.0 / k


def _speaker_tables(
    spk: np.ndarray, rec: np.ndarray, counts: np.ndarray, eligible: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Padded per-speaker tables ``(S_eligible, M)``: each eligible speaker's fragment
    indices and their recording codes, ``-1`` where a row is padding."""
    width = int(counts[eligible].max())
    frag = np.full((len(eligible), width), -1, dtype=np.int64)
    frag_rec = np.full((len(eligible), width), -1, dtype=np.int64)
    by_speaker = np.split(np.argsort(spk, kind="stable"), np.cumsum(counts)[:-1])
    for row, s in enumerate(eligible):
        idx = by_speaker[s]
        frag[row, : len(idx)] = idx
        frag_rec[row, : len(idx)] = rec[idx]
    return frag, frag_rec


def sample_kway_tasks(
    speakers: np.ndarray,
    recordings: np.ndarray,
    k: int,
    n_shot: int = 1,
    trials: int = 2000,
    cross_recording: bool = True,
    rng: Seed = None,
) -> KWayTasks:
    """Draw ``trials`` n-shot k-way tasks, all at once.

    Only speakers with at least ``n_shot + 1`` fragments take part. In each task, k distinct
    speakers are drawn uniformly; the first is the target, whose query fragment is never one
    of its supports. With ``cross_recording``, a target with fragments in two or more
    recordings gets its query from one recording and all its supports from others (the
    query is drawn among fragments that leave ``n_shot`` fragments elsewhere); a target with
    one recording falls back to a different fragment of the same recording.

    Parameters
    ----------
    speakers, recordings: (N,) labels of each fragment.
    k: speakers per task (>= 2).
    n_shot: support fragments per speaker (>= 1).
    trials: number of tasks.
    cross_recording: keep the target's query and supports in different recordings.
    rng: generator or seed (None: fresh entropy).

    Raises
    ------
    DataError: fewer than ``k`` speakers have ``n_shot + 1`` fragments.
    """
    if k < 2 or n_shot < 1 or trials < 1:
        raise ValueError("need k >= 2, n_shot >= 1 and trials >= 1")
    rng = as_rng(rng)
    spk, rec, names = label_codes(speakers, recordings, len(np.asarray(speakers)))
    counts = np.bincount(spk, minlength=len(names))
    eligible = np.flatnonzero(counts >= n_shot + 1)
    if len(eligible) < k:
        raise DataError(
            f"{k}-way {n_shot}-shot tasks need {k} speakers with at least {n_shot + 1} "
            f"fragments; only {len(eligible)} have that many"
        )

    frag, frag_rec = _speaker_tables(spk, rec, counts, eligible)
    width = frag.shape[1]
    valid = frag >= 0
    outside = counts[eligible][:, None] - np.bincount(rec)[np.maximum(frag_rec, 0)]
    capable = valid & (outside >= n_shot)  # a query here leaves n_shot supports elsewhere
    cross_ok = capable.any(axis=1) & cross_recording

    query = np.empty(trials, dtype=np.int64)
    supports = np.empty((trials, k, n_shot), dtype=np.int64)
    chosen_all = np.empty((trials, k), dtype=np.int64)
    batch = max(1, TASK_BATCH_ELEMENTS // (k * width + len(eligible)))
    for start in range(0, trials, batch):
        b = min(batch, trials - start)
        chosen = np.argsort(rng.random((b, len(eligible))), axis=1)[:, :k]  # (b, k)
        target = chosen[:, 0]
        # Query: uniform among the allowed positions of the target's row.
        allowed = np.where(cross_ok[target, None], capable[target], valid[target])
        qkeys = np.where(allowed, rng.random((b, width)), np.inf)
        qpos = np.argmin(qkeys, axis=1)
        qrec = frag_rec[target, qpos]
        # Supports: the n_shot smallest of uniform keys over allowed positions.
        ok = valid[chosen]  # (b, k, M)
        same = np.where(
            cross_ok[target, None],
            frag_rec[target] == qrec[:, None],
            np.arange(width)[None, :] == qpos[:, None],
        )
        ok[:, 0] &= ~same
        skeys = np.where(ok, rng.random((b, k, width)), np.inf)
        spos = np.argpartition(skeys, n_shot - 1, axis=-1)[..., :n_shot]  # n_shot < width
        query[start : start + b] = frag[target, qpos]
        supports[start : start + b] = np.take_along_axis(frag[chosen], spos, axis=-1)
        chosen_all[start : start + b] = chosen
    speakers_idx = eligible[chosen_all]
    cross = cross_ok[chosen_all[:, 0]]
    return KWayTasks(query, supports, speakers_idx, cross, names)


def score_kway_tasks(
    embeddings: np.ndarray,
    tasks: KWayTasks,
    method: Method = "prototype",
    metric: Metric = "cosine",
) -> np.ndarray:
    """Per-task credit in [0, 1]: 1 if the target is closest, 1/m if tied with m-1 others.

    Parameters
    ----------
    embeddings: (N, D) fragment embeddings (or any features).
    tasks: indices from ``sample_kway_tasks``.
    method: ``"prototype"`` compares with the mean of each support set (renormalised for
        cosine), ``"nearest"`` with each speaker's closest single support.
    metric: ``"cosine"`` similarity, or ``"euclidean"`` / ``"l1"`` distance.

    Returns
    -------
    np.ndarray, shape (T,), float64.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError("embeddings must have shape (N, D)")
    if metric == "cosine":
        x = l2_normalize(x)
    trials, k, n_shot = tasks.supports.shape
    credit = np.empty(trials, dtype=np.float64)
    batch = max(1, TASK_BATCH_ELEMENTS // (k * n_shot * x.shape[1]))
    for start in range(0, trials, batch):
        sl = slice(start, start + batch)
        q = x[tasks.query[sl]]  # (b, D)
        s = x[tasks.supports[sl]]  # (b, k, n, D)
        if method == "prototype":
            proto = s.mean(axis=2)
            if metric == "cosine":
                proto = l2_normalize(proto)
            sim = similarity(q, proto, metric)  # (b, k)
        else:
            sim = similarity(q, s, metric).max(axis=2)
        tied = sim == sim.max(axis=1, keepdims=True)
        credit[sl] = tied[:, 0] / tied.sum(axis=1)
    return credit


def kway_accuracy(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    recordings: np.ndarray,
    k: int,
    n_shot: int = 1,
    trials: int = 2000,
    method: Method = "prototype",
    metric: Metric = "cosine",
    cross_recording: bool = True,
    rng: Seed = None,
) -> KWayResult:
    """n-shot k-way identification accuracy over ``trials`` random tasks.

    Parameters
    ----------
    embeddings: (N, D) fragment embeddings, unit rows for a trained encoder.
    speakers, recordings: (N,) labels of each fragment (recordings unique within a speaker).
    k, n_shot, trials, cross_recording, rng: see ``sample_kway_tasks``.
    method, metric: see ``score_kway_tasks``.

    Returns
    -------
    KWayResult with accuracy, its 95% interval and the fraction of cross-recording tasks.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError("embeddings must have shape (N, D)")
    label_codes(speakers, recordings, len(x))  # shape check before sampling
    tasks = sample_kway_tasks(speakers, recordings, k, n_shot, trials, cross_recording, rng)
    credit = score_kway_tasks(x, tasks, method=method, metric=metric)
    lo, hi = wilson_interval(float(credit.sum()), trials)
    return KWayResult(
        k=k,
        n_shot=n_shot,
        accuracy=float(credit.mean()),
        trials=trials,
        cross_recording_fraction=float(tasks.cross_recording.mean()),
        ci_low=lo,
        ci_high=hi,
        method=method,
        metric=metric,
    )


def eligible_speakers(speakers: np.ndarray, n_shot: int = 1) -> int:
    """Number of speakers with at least ``n_shot + 1`` fragments (the largest possible k)."""
    _, counts = np.unique(np.asarray(speakers).astype(str), return_counts=True)
    return int((counts >= n_shot + 1).sum())


def kway_curve(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    recordings: np.ndarray,
    ks: Iterable[int] | None = None,
    n_shot: int = 1,
    trials: int = 2000,
    method: Method = "prototype",
    metric: Metric = "cosine",
    cross_recording: bool = True,
    rng: Seed = None,
) -> dict[int, KWayResult]:
    """``kway_accuracy`` for each k in ``ks`` (default 2 .. number of eligible speakers).

    One generator is shared across the ks, so a seed fixes the whole curve.
    """
    rng = as_rng(rng)
    if ks is None:
        ks = range(2, eligible_speakers(speakers, n_shot) + 1)
    return {
        int(k): kway_accuracy(
            embeddings,
            speakers,
            recordings,
            int(k),
            n_shot=n_shot,
            trials=trials,
            method=method,
            metric=metric,
            cross_recording=cross_recording,
            rng=rng,
        )
        for k in ks
    }


# ----------------------------------------------------------------------- MFCC k-NN baseline


@torch.inference_mode()
def mfcc_stats(
    fragments: np.ndarray,
    batch_size: int = 64,
    standardize: bool = True,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Per-coefficient mean and standard deviation over time of 32 MFCCs per fragment.

    Parameters
    ----------
    fragments: (N, FRAGMENT_SAMPLES) float32 waveforms at 16 kHz.
    batch_size: fragments per front-end call.
    standardize: z-score each of the 64 features over the N fragments (the baseline's
        k-NN then weighs coefficients equally); constant features stay at 0.
    device: where the front-end runs.

    Returns
    -------
    np.ndarray, shape (N, 64), float32: 32 means then 32 standard deviations (dB units
    before standardisation).
    """
    wav = np.asarray(fragments, dtype=np.float32)
    if wav.ndim != 2 or wav.shape[1] != FRAGMENT_SAMPLES:
        raise ValueError(f"fragments must have shape (N, {FRAGMENT_SAMPLES})")
    frontend = MFCCFrontend().to(device).eval()
    out = []
    for start in range(0, len(wav), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(wav[start : start + batch_size]))
        mfcc = frontend(batch.to(device))  # (b, 32, frames)
        out.append(torch.cat([mfcc.mean(dim=-1), mfcc.std(dim=-1)], dim=1).cpu().numpy())
    feats = np.concatenate(out) if out else np.zeros((0, 2 * frontend.n_features), np.float32)
    if standardize and len(feats):
        std = feats.std(axis=0)
        feats = (feats - feats.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return feats.astype(np.float32)


def mfcc_knn_accuracy(
    fragments: np.ndarray,
    speakers: np.ndarray,
    recordings: np.ndarray,
    k: int,
    n_shot: int = 1,
    trials: int = 2000,
    method: Method = "nearest",
    cross_recording: bool = True,
    rng: Seed = None,
) -> KWayResult:
    """The k-NN baseline: ``kway_accuracy`` on ``mfcc_stats`` features, euclidean metric.

    ``fragments`` is ``(N, FRAGMENT_SAMPLES)``; for a curve, compute ``mfcc_stats`` once and
    call ``kway_curve(feats, ..., metric="euclidean")``.
    """
    feats = mfcc_stats(fragments)
    return kway_accuracy(
        feats, speakers, recordings, k, n_shot, trials, method, "euclidean", cross_recording, rng
    )
