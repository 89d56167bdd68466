"""Voice activity from Silero VAD: where a recording holds speech, on onnxruntime and numpy.

Silero VAD (``models/``, MIT, card in ``models/README.md``) is a small recurrent network
that reads 32 ms of audio at a time, each chunk preceded by the last few samples of the one
before, and gives one speech probability per chunk. It ships as two graphs of the same
network: the streaming one (8 and 16 kHz, one chunk per call) and a sequence one (16 kHz,
many chunks per call, the same probabilities at about half the time: the per-call overhead
and the convolutions are paid once per block). 16-kHz audio, the rate of every array in the
core, takes the sequence graph; 8-kHz audio the streaming one.

``SileroVAD`` feeds either from any iterable of sample blocks, carrying the recurrent state,
the context samples and any part-chunk from block to block, so a recording of any length
streams through with the memory of one block; what it keeps is one float per 32 ms (450 kB
for an hour).

Reading the probabilities into regions (``speech_regions``) is speakerid's own rule, four
steps with the settings of ``VadConfig``:

1. hysteresis: speech starts at a chunk whose probability reaches ``onset`` and lasts while
   the probability stays at or above ``offset``, so a dip inside a word does not cut it;
2. silences shorter than ``min_silence`` between two speech runs are bridged;
3. runs shorter than ``min_speech`` are dropped (clicks, coughs, a door);
4. each run is widened by ``pad`` on both sides (word onsets and decays), clipped to the
   recording, and runs that then touch are joined.

Each graph is checked against its pinned sha256 before it is loaded (or its optimised form,
cached per machine after that check: ``speakerid.onnx_sessions``). No torch here: this is
part of the torch-free runtime.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.errors import AudioError, SpeakerIDError
from speakerid.onnx_sessions import open_pinned

# Silero VAD 6.2.3's graphs, unchanged, under models/ (a checkout) or speakerid/_models/ (a
# wheel), with their pinned sha256.
STREAM_FILE = "silero_vad.onnx"  # input (1, context + chunk), state (2, 1, 128), sr
STREAM_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
SEQUENCE_FILE = "silero_vad_16k_sequence.onnx"  # input (chunks, 64 + 512), h, c (1, 1, 128)
SEQUENCE_SHA256 = "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"

VAD_RATES = (8_000, 16_000)  # Hz, the rates the network was trained for
CHUNK_SECONDS = 0.032  # audio per probability, at either rate
CHUNK_SAMPLES = {rate: round(CHUNK_SECONDS * rate) for rate in VAD_RATES}  # 256, 512
# Samples of the previous chunk put in front of each chunk (zeros before the first). The
# graph's first layer needs them: without them the probabilities bear no relation to speech.
CONTEXT_SAMPLES = {rate: CHUNK_SAMPLES[rate] // 8 for rate in VAD_RATES}  # 32, 64
STATE_UNITS = 128  # the recurrent state's width
# Chunks per call of the sequence graph (16.4 s): longer blocks save nothing more and cost
# memory (each chunk is 576 floats in the call's input).
SEQUENCE_CHUNKS = 512

ONSET = 0.5  # probability at which speech starts
OFFSET = 0.35  # probability below which it ends (hysteresis: below ONSET)
MIN_SILENCE_SECONDS = 0.25  # shorter pauses inside speech are bridged
MIN_SPEECH_SECONDS = 0.25  # shorter runs of speech are dropped
PAD_SECONDS = 0.1  # each region is widened by this much on both sides


@dataclass(frozen=True)
class VadConfig:
    """How speech probabilities become regions (the module's steps 1-4)."""

    onset: float = ONSET  # probability at which speech starts
    offset: float = OFFSET  # probability below which speech ends; at most ``onset``
    min_silence: float = MIN_SILENCE_SECONDS  # seconds; shorter pauses are bridged
    min_speech: float = MIN_SPEECH_SECONDS  # seconds; shorter runs are dropped
    pad: float = PAD_SECONDS  # seconds added on both sides of each region

    def __post_init__(self) -> None:
        if not 0.0 <= self.offset <= self.onset <= 1.0:
            raise SpeakerIDError("the VAD needs 0 <= offset <= onset <= 1")
        for name in ("min_silence", "min_speech", "pad"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise SpeakerIDError(f"the VAD's {name} must be 0 s or more")


def shipped_path(filename: str) -> Path:
    """Where a shipped graph lies: inside the installed package, else the checkout."""
    package = Path(__file__).resolve().parent.parent  # speakerid/
    packaged = package / "_models" / filename
    return packaged if packaged.is_file() else package.parent / "models" / filename


@functools.lru_cache(maxsize=4)
def load_session(path: Path, expected_sha256: str) -> Any:
    """An onnxruntime session on ``path`` after its sha256 check (``onnx_sessions``: the
    optimised graph cached per machine); one thread (the network is small: more threads
    cost more in hand-offs than they save)."""
    return open_pinned(
        path,
        expected_sha256,
        "shipped Silero VAD",
        threads=1,
        probe=functools.partial(_probe, path),
    )


def _probe(path: Path, session: Any = None) -> dict[str, np.ndarray]:
    """Inputs for one run of either Silero graph: noise after silence, zero state."""
    noise = 0.1 * np.random.default_rng(0).standard_normal((4, 576)).astype(np.float32)
    if path.name == SEQUENCE_FILE:
        state = np.zeros((1, 1, STATE_UNITS), dtype=np.float32)
        return {"input": noise, "h": state, "c": state}
    return {
        "input": noise[:1],
        "state": np.zeros((2, 1, STATE_UNITS), dtype=np.float32),
        "sr": np.array(16_000, dtype=np.int64),
    }


class SileroVAD:
    """Speech probabilities and regions from Silero VAD, for audio at ``rate`` (8 or 16 kHz).

    ``sequence``: run the sequence graph (16 kHz only; the default there) or the streaming
    one (the default at 8 kHz). Both give the same probabilities at 16 kHz.
    """

    def __init__(self, rate: int = 16_000, sequence: bool | None = None) -> None:
        if rate not in VAD_RATES:
            raise AudioError(f"Silero VAD reads 8000 or 16000 Hz audio, not {rate} Hz")
        self.rate = rate
        self.sequence = rate == 16_000 if sequence is None else sequence
        if self.sequence and rate != 16_000:
            raise AudioError("Silero VAD's sequence graph reads 16000 Hz audio only")
        name, pin = (
            (SEQUENCE_FILE, SEQUENCE_SHA256) if self.sequence else (STREAM_FILE, STREAM_SHA256)
        )
        self.session = load_session(shipped_path(name), pin)

    def _chunks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The audio as ``(k, context + chunk)`` arrays: each chunk after its context, the
        last part-chunk completed with zeros; ``k`` at most ``SEQUENCE_CHUNKS``."""
        size, context = CHUNK_SAMPLES[self.rate], CONTEXT_SAMPLES[self.rate]
        step = size * SEQUENCE_CHUNKS
        previous = np.zeros(context, dtype=np.float32)  # context of the next chunk
        rest = np.zeros(0, dtype=np.float32)
        pending: list[np.ndarray] = []
        for block in blocks:
            block = np.asarray(block, dtype=np.float32).reshape(-1)
            if not np.isfinite(block).all():
                raise AudioError("the audio contains NaN or infinite samples")
            pending.append(block)
            if len(rest) + sum(map(len, pending)) < step:
                continue
            audio = np.concatenate([rest, *pending])
            pending = []
            whole = len(audio) // step * step
            for start in range(0, whole, step):
                chunks = audio[start : start + step].reshape(-1, size)
                yield self._with_context(chunks, previous)
                previous = chunks[-1, -context:]
            rest = audio[whole:]
        audio = np.concatenate([rest, *pending])
        if len(audio):
            chunks = np.zeros((-(-len(audio) // size), size), dtype=np.float32)
            chunks.reshape(-1)[: len(audio)] = audio
            yield self._with_context(chunks, previous)

    @staticmethod
    def _with_context(chunks: np.ndarray, previous: np.ndarray) -> np.ndarray:
        context = np.empty((len(chunks), len(previous)), dtype=np.float32)
        context[0] = previous
        context[1:] = chunks[:-1, -len(previous) :]
        return np.concatenate([context, chunks], axis=1)

    def probabilities(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """One speech probability per 32-ms chunk of the audio that ``blocks`` join into.

        ``blocks`` are float32 ``(samples,)`` arrays at ``self.rate`` of any length; they
        are read one at a time. A last part-chunk is completed with zeros.

        Returns
        -------
        np.ndarray, shape (ceil(samples / chunk),), float32 in [0, 1].
        """
        state = np.zeros((2, 1, STATE_UNITS), dtype=np.float32)
        out: list[np.ndarray] = []
        for inputs in self._chunks(blocks):
            if self.sequence:  # state = (h, c)
                probs, h, c = self.session.run(
                    None, {"input": inputs, "h": state[:1], "c": state[1:]}
                )
                state = np.concatenate([h, c])
                out.append(np.asarray(probs, dtype=np.float32).reshape(-1))
                continue
            rate = np.array(self.rate, dtype=np.int64)
            for row in inputs:
                prob, state = self.session.run(
                    None, {"input": row[None], "state": state, "sr": rate}
                )
                out.append(np.asarray(prob, dtype=np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def regions(
        self, blocks: Iterable[np.ndarray], config: VadConfig | None = None
    ) -> list[tuple[float, float]]:
        """Speech regions ``(start, end)`` in seconds of the audio ``blocks`` join into."""
        samples = 0

        def counted() -> Iterable[np.ndarray]:
            nonlocal samples
            for block in blocks:
                samples += len(block)
                yield block

        probs = self.probabilities(counted())
        return speech_regions(probs, samples / self.rate, config)


def _runs(flags: np.ndarray) -> np.ndarray:
    """``(k, 2)`` ``[start, end)`` index pairs of the True runs of a bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges.reshape(-1, 2)


def hysteresis(probs: np.ndarray, onset: float = ONSET, offset: float = OFFSET) -> np.ndarray:
    """Step 1: ``(chunks,)`` probabilities -> ``(chunks,)`` bool speech flags.

    A run of chunks at or above ``offset`` is speech when one of its chunks reaches
    ``onset``; the rest is not.
    """
    probs = np.asarray(probs, dtype=np.float64)
    above = probs >= offset
    flags = np.zeros(len(probs), dtype=bool)
    for a, b in _runs(above):
        if (probs[a:b] >= onset).any():
            flags[a:b] = True
    return flags


def speech_regions(
    probs: np.ndarray, duration: float, config: VadConfig | None = None
) -> list[tuple[float, float]]:
    """Steps 1-4: per-chunk probabilities -> speech regions ``(start, end)`` in seconds.

    Parameters
    ----------
    probs: ``(chunks,)`` speech probabilities, one per ``CHUNK_SECONDS``.
    duration: the recording's length in seconds (regions are clipped to it).
    """
    cfg = config or VadConfig()
    runs = _runs(hysteresis(probs, cfg.onset, cfg.offset)) * CHUNK_SECONDS
    merged: list[list[float]] = []
    for start, end in runs.tolist():
        if merged and start - merged[-1][1] < cfg.min_silence:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    out: list[tuple[float, float]] = []
    for start, end in merged:
        if end - start < cfg.min_speech:
            continue
        start, end = max(0.0, start - cfg.pad), min(duration, end + cfg.pad)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], end)
        elif end > start:
            out.append((start, end))
    return [(round(a, 4), round(b, 4)) for a, b in out]


def region_frames(
    regions: list[tuple[float, float]], n_frames: int, frame_seconds: float
) -> np.ndarray:
    """Regions as ``(n_frames,)`` bool flags on a grid of ``frame_seconds`` frames: a frame
    is speech when its centre lies in a region."""
    centres = (np.arange(n_frames) + 0.5) * frame_seconds
    if not regions:
        return np.zeros(n_frames, dtype=bool)
    starts, ends = np.asarray(regions, dtype=np.float64).T
    last = np.searchsorted(starts, centres, side="right") - 1  # the region starting before
    return (last >= 0) & (centres < ends[np.maximum(last, 0)])
