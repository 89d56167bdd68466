"""Cutting speech into the encoder's 3-second fragments, whole or streamed.

``prepare`` is the path every in-memory recording takes to the encoder (trim, then
``fragment``); ``stream_fragments`` gives the same fragments from a long file block by
block, so memory stays flat whatever the length and the rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from speakerid.audio.constants import (
    FRAGMENT_SAMPLES,
    FRAGMENT_SECONDS,
    MIN_SPEECH_SECONDS,
    SAMPLE_RATE,
    SILENCE_FLOOR_DBFS,
    STREAM_BLOCK_SECONDS,
    TAIL_KEEP_RATIO,
    TRIM_FRAME_SAMPLES,
)
from speakerid.audio.io import Source, stream_audio
from speakerid.audio.speech import frame_dbfs, keep_frames, trim_silence
from speakerid.errors import AudioError


def fragment_starts(n: int, hop_seconds: float = FRAGMENT_SECONDS) -> list[int]:
    """Where the 3-s fragments of ``n >= FRAGMENT_SAMPLES`` samples of speech start.

    The rule: a fragment every ``hop_seconds``; a tail of at least half a fragment gets one
    more fragment aligned to the end of the speech (overlapping its neighbour), a shorter
    tail is dropped. Both the whole and the streamed paths cut by it.
    """
    if hop_seconds <= 0:
        raise ValueError("hop_seconds must be positive")
    hop = max(1, round(hop_seconds * SAMPLE_RATE))
    starts = list(range(0, n - FRAGMENT_SAMPLES + 1, hop))
    if n - (starts[-1] + FRAGMENT_SAMPLES) >= TAIL_KEEP_RATIO * FRAGMENT_SAMPLES:
        starts.append(n - FRAGMENT_SAMPLES)
    return starts


def check_speech(n: int, name: str, min_speech: float) -> None:
    """Refuse ``n`` samples of speech when they are fewer than ``min_speech`` seconds."""
    if min_speech <= 0:
        raise AudioError(f"the minimum speech must be positive, not {min_speech} s")
    if n == 0 or n < round(min_speech * SAMPLE_RATE):
        raise AudioError(
            f"{name}: only {n / SAMPLE_RATE:.2f} s of speech; at least "
            f"{min_speech:g} s is needed (--min-speech)"
        )


def fragment(
    wav: np.ndarray,
    hop_seconds: float = FRAGMENT_SECONDS,
    name: str = "audio",
    min_speech: float = MIN_SPEECH_SECONDS,
) -> np.ndarray:
    """Cut speech into 3-second fragments.

    Fragments start where ``fragment_starts`` says. A recording shorter than one fragment but
    at least
    ``min_speech`` seconds long (``MIN_SPEECH_SECONDS`` unless overridden) is repeated end to
    end up to 3 s; a shorter one is refused with its measured length.

    Returns
    -------
    np.ndarray, shape (n_fragments, FRAGMENT_SAMPLES), float32.
    """
    if hop_seconds <= 0:
        raise ValueError("hop_seconds must be positive")
    n = len(wav)
    check_speech(n, name, min_speech)
    if n < FRAGMENT_SAMPLES:
        reps = -(-FRAGMENT_SAMPLES // n)
        return np.tile(wav, reps)[None, :FRAGMENT_SAMPLES].astype(np.float32)
    starts = fragment_starts(n, hop_seconds)
    return np.stack([wav[s : s + FRAGMENT_SAMPLES] for s in starts]).astype(np.float32)


def prepare(
    wav: np.ndarray,
    name: str = "audio",
    trim: bool = True,
    min_speech: float = MIN_SPEECH_SECONDS,
) -> np.ndarray:
    """Trim silence (optional) and fragment: the path every recording takes to the encoder."""
    speech = trim_silence(wav, name=name) if trim else wav
    if not trim and float(frame_dbfs(wav).max()) <= SILENCE_FLOOR_DBFS:
        raise AudioError(f"{name}: the audio is silent")
    return fragment(speech, name=name, min_speech=min_speech)


# ---------------------------------------------------------------- the streamed path


def _frames(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Re-cut a stream into ``(k, TRIM_FRAME_SAMPLES)`` arrays of whole frames, then the
    last partial frame (if any) as a ``(1, r)`` array."""
    carry = np.zeros(0, np.float32)
    for block in blocks:
        carry = np.concatenate([carry, block])
        whole = len(carry) // TRIM_FRAME_SAMPLES * TRIM_FRAME_SAMPLES
        if whole:
            yield carry[:whole].reshape(-1, TRIM_FRAME_SAMPLES)
            carry = carry[whole:]
    if len(carry):
        yield carry[None, :]


def stream_fragments(
    path: Source,
    hop_seconds: float = FRAGMENT_SECONDS,
    block_seconds: float = STREAM_BLOCK_SECONDS,
    batch: int = 64,
    on_speech: Callable[[int], None] | None = None,
    min_speech: float = MIN_SPEECH_SECONDS,
) -> Iterator[np.ndarray]:
    """``prepare(load_audio(path))`` as a stream: batches of ``(k, FRAGMENT_SAMPLES)`` fragments.

    Two passes over the file: the first measures the trimming frames' levels (one number
    per 30 ms) and the speech length, the second trims and cuts, keeping only the speech
    not yet cut. Same rules as ``trim_silence`` and ``fragment``, same fragments.
    ``on_speech(samples)`` is told the length of the speech kept, once it is known;
    less than ``min_speech`` seconds of it is refused, as ``fragment`` does.
    """
    if hop_seconds <= 0:
        raise ValueError("hop_seconds must be positive")
    name = str(path)
    levels, tail = [], 0
    for frames in _frames(stream_audio(path, block_seconds)):
        if frames.shape[1] == TRIM_FRAME_SAMPLES:
            levels.append(frame_dbfs(frames.ravel()))
        else:
            tail = frames.shape[1]
    if not levels:  # shorter than one trimming frame: too short for the stream to matter
        wav = trim_silence(np.concatenate(list(stream_audio(path, block_seconds))), name)
        if on_speech:
            on_speech(len(wav))
        yield fragment(wav, hop_seconds, name, min_speech)
        return
    keep = keep_frames(np.concatenate(levels), name)
    speech = int(keep.sum()) * TRIM_FRAME_SAMPLES + (tail if keep[-1] else 0)
    if on_speech:
        on_speech(speech)
    check_speech(speech, name, min_speech)
    if speech < FRAGMENT_SAMPLES:  # repeated end to end: short enough to hold
        kept = [f.ravel() for f, k in _kept_frames(path, keep, block_seconds) if k]
        yield fragment(np.concatenate(kept), hop_seconds, name, min_speech)
        return
    starts = fragment_starts(speech, hop_seconds)
    buf, offset, next_start, ready = np.zeros(0, np.float32), 0, 0, []
    for frames, kept in _kept_frames(path, keep, block_seconds):
        if not kept:
            continue
        buf = np.concatenate([buf, frames.ravel()])
        while next_start < len(starts) and starts[next_start] + FRAGMENT_SAMPLES <= offset + len(
            buf
        ):
            s = starts[next_start] - offset
            ready.append(buf[s : s + FRAGMENT_SAMPLES])
            next_start += 1
            if len(ready) == batch:
                yield np.stack(ready)
                ready = []
        drop = (starts[next_start] if next_start < len(starts) else offset + len(buf)) - offset
        if drop > 0:
            buf, offset = buf[drop:], offset + drop
    if ready:
        yield np.stack(ready)


def _kept_frames(
    path: Source, keep: np.ndarray, block_seconds: float
) -> Iterator[tuple[np.ndarray, bool]]:
    """The stream's frames, each with whether trimming keeps it (the tail follows the last
    whole frame, as in ``trim_silence``)."""
    index = 0
    for frames in _frames(stream_audio(path, block_seconds)):
        if frames.shape[1] != TRIM_FRAME_SAMPLES:
            yield frames, bool(keep[-1])
            continue
        flags = keep[index : index + len(frames)]
        index += len(frames)
        # consecutive runs of equal decisions, so whole runs are passed on at once
        edges = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
        for run in np.split(np.arange(len(frames)), edges):
            if len(run):
                yield frames[run[0] : run[-1] + 1], bool(flags[run[0]])
