"""The path of a timeline over its windows: pure steps on score matrices, no audio.

``timeline`` scores windows; these turn the ``(T, S)`` scores into labels and the labels
into frame-level turns: the Viterbi path over the enrolled speakers plus "unknown", the
merging of short runs, the second pass against each voice's own mean in the recording,
and the placing of each change of speaker (where the scores cross, then at a pause).
Labels are ints in ``[0, S]``, ``S`` meaning unknown.
"""

from __future__ import annotations

import itertools

import numpy as np


def decode(
    scores: np.ndarray, scored: np.ndarray, threshold: float, switch_penalty: float
) -> np.ndarray:
    """Viterbi path over ``S`` speakers plus unknown (label ``S``).

    Maximises the sum of the chosen states' scores (unknown scores ``threshold``; unscored
    windows score 0 for every state, so the path carries its speaker through pauses) minus
    ``switch_penalty`` per change of state.

    Parameters
    ----------
    scores: ``(T, S)`` cosine scores. scored: ``(T,)`` bool.

    Returns
    -------
    np.ndarray, shape (T,), int labels in ``[0, S]``.
    """
    return viterbi(rewards_of(scores, scored, threshold), switch_penalty)


def viterbi(rewards: np.ndarray, switch_penalty: float) -> np.ndarray:
    """The path through ``(T, states)`` rewards with the highest total, less
    ``switch_penalty`` per change of state: ``(T,)`` int labels."""
    steps, states = rewards.shape
    if steps == 0:
        return np.zeros(0, dtype=np.int64)
    back = np.zeros((steps, states), dtype=np.int64)
    total = rewards[0].copy()
    for t in range(1, steps):
        best = int(np.argmax(total))
        switch = total[best] - switch_penalty
        stay = total >= switch  # ties keep the current speaker
        back[t] = np.where(stay, np.arange(states), best)
        total = np.where(stay, total, switch) + rewards[t]
    path = np.empty(steps, dtype=np.int64)
    path[-1] = int(np.argmax(total))
    for t in range(steps - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def rewards_of(scores: np.ndarray, scored: np.ndarray, threshold: float) -> np.ndarray:
    """``(T, S + 1)``: scores, then the threshold as unknown's score; 0 where not scored."""
    scores = np.asarray(scores, dtype=np.float64)
    rewards = np.concatenate([scores, np.full((len(scores), 1), float(threshold))], axis=1)
    rewards[~np.asarray(scored, dtype=bool)] = 0.0
    return rewards


def runs_of(labels: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of equal consecutive labels."""
    if len(labels) == 0:
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    bounds = [0, *edges.tolist(), len(labels)]
    return list(itertools.pairwise(bounds))


def enforce_min_duration(
    labels: np.ndarray,
    scores: np.ndarray,
    scored: np.ndarray,
    threshold: float,
    min_steps: float,
) -> np.ndarray:
    """Relabel runs holding fewer than ``min_steps`` scored windows, shortest first.

    Each such run takes the label of the neighbouring run (before or after) whose label has
    the higher total score over the run's windows; a lone run is left alone.

    Returns
    -------
    np.ndarray, shape (T,), a new label array.
    """
    return merge_short_runs(labels, rewards_of(scores, scored, threshold), scored, min_steps)


def merge_short_runs(
    labels: np.ndarray, rewards: np.ndarray, scored: np.ndarray, min_steps: float
) -> np.ndarray:
    """``enforce_min_duration`` on ``(T, states)`` rewards."""
    labels = np.array(labels, dtype=np.int64)
    weight = np.asarray(scored, dtype=np.int64)
    while True:
        runs = runs_of(labels)
        if len(runs) < 2:
            return labels
        sizes = [int(weight[a:b].sum()) for a, b in runs]
        shortest = int(np.argmin(sizes))
        if sizes[shortest] >= min_steps:
            return labels
        a, b = runs[shortest]
        options = [labels[runs[i][0]] for i in (shortest - 1, shortest + 1) if 0 <= i < len(runs)]
        labels[a:b] = max(options, key=lambda lab: rewards[a:b, lab].sum())


RESEGMENT_MIN_WINDOWS = 2  # a voice needs this many windows for an in-recording mean


def resegment_rewards(
    labels: np.ndarray,
    rewards: np.ndarray,
    embeddings: np.ndarray,
    scored: np.ndarray,
    weight: float,
) -> np.ndarray:
    """Second pass: each state's reward mixed with the cosine against that state's own mean
    in this recording (the normalised mean of the windows the first pass gave it).

    ``(T, S + 1)`` rewards -> ``(1 - weight) * rewards + weight * cosine``; ``embeddings``:
    ``(T, D)`` unit vectors of the windows; ``scored``: ``(T,)`` bool. A state with fewer
    than ``RESEGMENT_MIN_WINDOWS`` windows keeps its reward; unscored windows score 0.
    """
    emb = embeddings
    own = rewards.copy()
    for k in range(rewards.shape[1]):
        chosen = scored & (labels == k)
        if chosen.sum() >= RESEGMENT_MIN_WINDOWS:
            mean = emb[chosen].mean(axis=0)
            own[:, k] = emb @ (mean / max(float(np.linalg.norm(mean)), 1e-12))
    own[~scored] = 0.0
    return (1.0 - weight) * rewards + weight * own


SNAP_SMOOTH_FRAMES = 3  # the level snapping looks at: a 90-ms mean, so one quiet frame
# inside a word does not pass for a pause
SNAP_DEPTH_DB = 10.0  # a pause lies this far below the median level around the change


def _runs_true(flags: np.ndarray) -> np.ndarray:
    """``(k, 2)`` ``[start, end)`` index pairs of the True runs of a bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    return np.flatnonzero(np.diff(padded)).reshape(-1, 2)


def nearest_scored(scored: np.ndarray) -> np.ndarray:
    """``(T,)`` bool -> ``(T,)`` index of the nearest scored window (the earlier on ties;
    itself when scored; 0 when none is)."""
    where = np.flatnonzero(scored)
    if not len(where):
        return np.zeros(len(scored), dtype=np.int64)
    t = np.arange(len(scored))
    after = np.clip(np.searchsorted(where, t), 0, len(where) - 1)
    before = np.clip(after - 1, 0, len(where) - 1)
    return np.where(
        np.abs(where[before] - t) <= np.abs(where[after] - t), where[before], where[after]
    )


def crossing_changes(
    labels: np.ndarray,
    rewards: np.ndarray,
    scored: np.ndarray,
    steps: np.ndarray,
    centres: np.ndarray,
) -> np.ndarray:
    """Per-frame labels ``(frames,)`` with each change of speaker put where the two
    speakers' scores cross between the windows either side of it (linear between the
    windows' centres), instead of halfway between them.

    ``labels``, ``scored``: ``(T,)`` per window; ``rewards``: ``(T, states)``; ``steps``:
    ``(frames,)`` the window each frame belongs to, never decreasing; ``centres``: ``(T,)``
    each window's centre in frames.
    """
    along = labels[steps]
    for t in np.flatnonzero(np.diff(labels)) + 1:
        a, b = labels[t - 1], labels[t]
        if not (scored[t - 1] and scored[t]):
            continue
        d0 = rewards[t - 1, a] - rewards[t - 1, b]
        d1 = rewards[t, a] - rewards[t, b]
        if not d0 > 0 > d1:
            continue
        x = centres[t - 1] + (centres[t] - centres[t - 1]) * d0 / (d0 - d1)
        # the frames the two windows label (``steps`` never decreases), split at x
        first, last = np.searchsorted(steps, t - 1), np.searchsorted(steps, t + 1)
        split = min(max(round(x), first), last)
        along[first:split] = a
        along[split:last] = b
    return along


def snap_changes(frame_label: np.ndarray, levels: np.ndarray, reach: int) -> np.ndarray:
    """Move each change of label to the pause within ``reach`` frames of it.

    ``frame_label``: ``(frames,)`` labels, one per 30-ms frame, changing only where the
    windows' path changes speaker; ``levels``: ``(frames,)`` dBFS. A pause is a stretch
    whose level (the mean over ``SNAP_SMOOTH_FRAMES`` frames) lies ``SNAP_DEPTH_DB`` below
    the median level of the frames searched; the change moves to the middle of the longest
    one (the nearest on ties), or stays where it is without one. Frames between the old
    change and the new one take the label of the side they now lie on; the search stays
    within the two runs that meet there. Returns a new array.
    """
    given = np.asarray(frame_label, dtype=np.int64)
    out = given.copy()
    if reach <= 0 or len(out) < 2:
        return out
    kernel = np.ones(SNAP_SMOOTH_FRAMES) / SNAP_SMOOTH_FRAMES
    quiet = np.convolve(np.asarray(levels, dtype=np.float64), kernel, mode="same")
    for (a, b), (_, c) in itertools.pairwise(runs_of(given)):  # [a, b) and [b, c) meet at b
        left, right = given[a], given[b]  # as given: an earlier move may have shifted out[a]
        lo, hi = max(a + 1, b - reach), min(c - 1, b + reach)
        if hi <= lo:
            continue
        span = np.arange(lo, hi + 1)
        pauses = _runs_true(quiet[span] <= np.median(quiet[span]) - SNAP_DEPTH_DB)
        if not len(pauses):
            continue  # no pause: speech runs on through the change
        middle = lo + (pauses[:, 0] + pauses[:, 1]) // 2
        best = np.lexsort((np.abs(middle - b), -(pauses[:, 1] - pauses[:, 0])))[0]
        m = int(middle[best])  # the longest pause, then the nearest
        out[min(b, m) : max(b, m)] = left if m > b else right
    return out
