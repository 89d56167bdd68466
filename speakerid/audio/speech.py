"""Finding speech: the energy rule that marks 30-ms frames voiced, Silero VAD's regions on
the same frames (``audio.vad``), and trimming by either (``--vad``)."""

from __future__ import annotations

import os

import numpy as np

from speakerid.audio.constants import (
    DEFAULT_VAD,
    SAMPLE_RATE,
    SILENCE_FLOOR_DBFS,
    TRIM_FRAME_SAMPLES,
    TRIM_FRAME_SECONDS,
    TRIM_PAD_FRAMES,
    TRIM_TOP_DB,
    VAD_ENV,
    VADS,
)
from speakerid.audio.vad import SileroVAD, region_frames, speech_regions
from speakerid.errors import AudioError, SpeakerIDError


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


def check_vad(vad: str) -> str:
    """``vad`` if it names a way to find speech (``VADS``), else ``SpeakerIDError``."""
    if vad not in VADS:
        raise SpeakerIDError(f"--vad must be one of {', '.join(VADS)}, not {vad!r}")
    return vad


def resolve_vad(vad: str | None, bound: str | None = None) -> str:
    """The VAD to embed with: ``vad`` if given, else ``$SPEAKERID_VAD``, else ``bound`` (the
    store's own, so that a store keeps working without --vad), else ``DEFAULT_VAD``."""
    return check_vad(vad or os.environ.get(VAD_ENV) or bound or DEFAULT_VAD)


def silero_frames(probs: np.ndarray, samples: int, name: str = "audio") -> np.ndarray:
    """Silero VAD's regions as the trimming frames to keep: bool ``(frames,)`` on the grid of
    ``frame_dbfs`` (a frame is kept when its centre lies in a region; a part frame at the end
    follows the last whole one). Raises ``AudioError`` when no speech is found.

    ``probs``: ``SileroVAD.probabilities`` of the ``samples``-long recording.
    """
    regions = speech_regions(probs, samples / SAMPLE_RATE)
    keep = region_frames(regions, max(1, samples // TRIM_FRAME_SAMPLES), TRIM_FRAME_SECONDS)
    if not keep.any():
        raise AudioError(f"{name}: Silero VAD finds no speech in the audio (--vad)")
    return keep


def speech_mask(wav: np.ndarray, vad: str = "energy", name: str = "audio") -> np.ndarray:
    """Which trimming frames of ``wav`` hold speech by ``vad``: bool ``(frames,)``.

    Raises ``AudioError`` when none does (for ``none``: when the audio is silent).
    """
    check_vad(vad)
    levels = frame_dbfs(wav)
    if vad == "silero":
        return silero_frames(SileroVAD().probabilities([wav]), len(wav), name)
    if vad == "none":
        if float(levels.max()) <= SILENCE_FLOOR_DBFS:
            raise AudioError(f"{name}: the audio is silent")
        return np.ones(len(levels), dtype=bool)
    return keep_frames(levels, name)


def trim_silence(wav: np.ndarray, name: str = "audio", vad: str = "energy") -> np.ndarray:
    """Keep the speech of ``wav``: by default the frames above peak-40 dB and -60 dBFS with
    150-ms margins (``vad="energy"``), or Silero VAD's regions (``"silero"``), or all of it
    (``"none"``).

    Raises ``AudioError`` when nothing is left, i.e. the input holds no speech.
    """
    keep = speech_mask(wav, vad, name)
    mask = np.repeat(keep, TRIM_FRAME_SAMPLES)
    tail = len(wav) - len(mask)
    if tail > 0:  # the last partial frame follows the last full frame's decision
        mask = np.concatenate([mask, np.full(tail, keep[-1])])
    return wav[mask[: len(wav)]]
