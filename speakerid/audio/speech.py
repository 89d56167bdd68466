"""Finding speech: the energy rule that marks 30-ms frames voiced, and trimming by it."""

from __future__ import annotations

import numpy as np

from speakerid.audio.constants import (
    SILENCE_FLOOR_DBFS,
    TRIM_FRAME_SAMPLES,
    TRIM_PAD_FRAMES,
    TRIM_TOP_DB,
)
from speakerid.errors import AudioError


def frame_dbfs(wav: np.ndarray, frame: int = TRIM_FRAME_SAMPLES) -> np.ndarray:
    """RMS level of consecutive ``frame``-sample frames in dB full scale, shape (frames,)."""
    n = max(1, len(wav) // frame)
    frames = wav[: n * frame].reshape(n, -1) if len(wav) >= frame else wav[None, :]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def speech_frames(levels: np.ndarray) -> np.ndarray:
    """The trimming rule as frame-level voice activity: ``(frames,)`` dBFS -> ``(frames,)`` bool.

    A frame is voiced above max(loudest frame - 40 dB, -60 dBFS); each voiced frame is
    widened by 150 ms each side so that word onsets and decays survive the cut.
    """
    levels = np.asarray(levels, dtype=np.float64)
    if levels.size == 0:
        return np.zeros(0, dtype=bool)
    threshold = max(float(levels.max()) - TRIM_TOP_DB, SILENCE_FLOOR_DBFS)
    voiced = levels > threshold
    kernel = np.ones(2 * TRIM_PAD_FRAMES + 1)
    return np.convolve(voiced.astype(float), kernel)[TRIM_PAD_FRAMES:][: len(voiced)] > 0


def keep_frames(levels: np.ndarray, name: str = "audio") -> np.ndarray:
    """Which trimming frames to keep, from their ``frame_dbfs`` levels: bool (frames,).

    Raises ``AudioError`` when none is voiced, i.e. the audio is silent.
    """
    keep = speech_frames(levels)
    if not keep.any():
        raise AudioError(f"{name}: the audio is silent")
    return keep


def trim_silence(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """Drop silent stretches (energy below peak-40 dB or -60 dBFS), keeping 150 ms margins.

    Raises ``AudioError`` when nothing is left, i.e. the input is silent.
    """
    keep = keep_frames(frame_dbfs(wav), name)
    mask = np.repeat(keep, TRIM_FRAME_SAMPLES)
    tail = len(wav) - len(mask)
    if tail > 0:  # the last partial frame follows the last full frame's decision
        mask = np.concatenate([mask, np.full(tail, keep[-1])])
    return wav[mask[: len(wav)]]
