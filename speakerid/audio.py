"""Audio in: load, mix to mono, resample to 16 kHz, trim silence, cut into 3-second fragments.

``load_audio`` is the only function here that touches files (or stdin, named ``-``);
everything after it works on float32 numpy arrays of shape ``(samples,)`` at ``SAMPLE_RATE``.
Long files take the streamed path instead (``stream_audio`` -> ``stream_fragments``): the
same reading, mixing, resampling, trimming and cutting, done block by block, so memory stays
flat whatever the length and the rate. Numpy and soundfile only: every backend, the
torch-free one included, reads audio here.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from speakerid.errors import AudioError

SAMPLE_RATE = 16_000  # Hz, the rate every array in the core is at
FRAGMENT_SECONDS = 3.0  # the case study's fragment length
FRAGMENT_SAMPLES = int(FRAGMENT_SECONDS * SAMPLE_RATE)  # 48000
# Less speech than this (after trimming) is refused (--min-speech raises or lowers it). The
# accurate model's EER on 0.5-s crops (4.2%) beats the previous model's at its old 1-s limit
# (5.8%): bench/bench_short.py, docs/benchmarks.md "Short recordings".
MIN_SPEECH_SECONDS = 0.5
MIN_SPEECH_SAMPLES = int(MIN_SPEECH_SECONDS * SAMPLE_RATE)  # 8000
TAIL_KEEP_RATIO = 0.5  # a tail shorter than this fraction of a fragment is dropped

STREAM_CHUNK_SECONDS = 60.0  # long recordings are read and resampled this much at a time
RESAMPLE_CONTEXT_SAMPLES = 256  # input samples read beyond each block's edges when resampling

TRIM_FRAME_SECONDS = 0.03  # energy frame for silence trimming
TRIM_FRAME_SAMPLES = int(TRIM_FRAME_SECONDS * SAMPLE_RATE)  # 480
TRIM_TOP_DB = 40.0  # frames this far below the loudest frame count as silence
SILENCE_FLOOR_DBFS = -60.0  # frames below this level are silence whatever the peak
TRIM_PAD_FRAMES = 5  # voiced regions are widened by this many frames (150 ms) each side

STDIN = "-"  # the FILE name that means "read the audio from standard input"
RAW_SAMPLE_WIDTH = 2  # bytes per sample of raw PCM on stdin: signed 16-bit little-endian
STREAM_BLOCK_SECONDS = 10.0  # input read, mixed and resampled at a time on the streamed path
# Files holding more decoded values than this (frames x channels; 16 MB as float32, about
# 4 min of 16 kHz mono or 42 s of 48 kHz stereo) are streamed. Reading a whole file costs
# several copies of it (decode, mix, resample, trim, fragments): 1.45 GB for an hour of
# 16 kHz mono, 7.1 GB at 48 kHz stereo (docs/reliability.md).
STREAM_ABOVE_VALUES = 4_000_000

# Band-limited resampling (windowed sinc, Hann window), the same kernel as torchaudio's
# default ``resample`` so that both backends see the same samples.
RESAMPLE_ZERO_CROSSINGS = 6  # sinc lobes each side of the kernel's centre
RESAMPLE_ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist frequency


@dataclass(frozen=True)
class Clip:
    """Audio already in memory (16 kHz mono float32) standing in for a file, e.g. stdin.

    ``name`` is what messages, stores and ``embed`` keys show for it.
    """

    name: str
    samples: np.ndarray

    def __str__(self) -> str:
        return self.name


def load_audio(path: str | Path | Clip) -> np.ndarray:
    """Read an audio file as float32 mono at ``SAMPLE_RATE``.

    Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3 with libsndfile >= 1.1)
    is accepted; channels are averaged and other rates are resampled. A ``Clip`` is
    returned as it is; ``-`` reads stdin (see ``read_stdin``).

    Returns
    -------
    np.ndarray, shape (samples,), float32 in [-1, 1].
    """
    if isinstance(path, Clip):
        return path.samples
    if str(path) == STDIN:
        return read_stdin().samples
    path = Path(path)
    check_audio_file(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise read_error(path, exc) from None
    except OSError as exc:
        raise AudioError(f"{path}: {os_problem(path, exc)}") from None
    if data.size == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    return to_16k_mono(data, rate, name=str(path))


def os_problem(path: Path, exc: OSError) -> str:
    """What an ``OSError`` on ``path`` means, in the user's words."""
    if exc.errno == errno.ELOOP:
        return "is a symbolic link loop (the link leads back to itself)"
    if exc.errno == errno.ENOENT:
        if path.is_symlink():
            return "is a symbolic link to a file that does not exist"
        return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (this user may not read the file)"
    if exc.errno == errno.EISDIR:
        return "is a directory, not an audio file"
    return f"cannot be read ({exc.strerror or exc})"


def check_audio_file(path: Path) -> None:
    """Raise ``AudioError`` unless ``path`` is a regular file this user may read.

    Done before libsndfile opens it, whose messages for these cases ("System error.", or
    "no such file" for a symbolic link loop) do not say what is wrong.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise AudioError(f"{path}: {os_problem(path, exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: {os_problem(path, PermissionError(errno.EACCES, ''))}")


# libsndfile's words for a file whose data ends or breaks off early.
_CUT_SHORT = ("lost sync", "psf_fseek", "unexpected end", "truncated", "premature")


def read_error(path: Path, exc: Exception) -> AudioError:
    """An ``AudioError`` for a failed libsndfile read, saying what is wrong in words."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if any(mark in reason.lower() for mark in _CUT_SHORT):
        return AudioError(
            f"{path}: the audio is cut short or damaged: its data breaks off before the end "
            f"the file announces ({reason.strip()})"
        )
    if "system error" in reason.lower() and not os.access(path, os.R_OK):
        return AudioError(f"{path}: {os_problem(path, PermissionError(errno.EACCES, ''))}")
    return AudioError(f"{path}: cannot be read as audio ({reason})")


def stream_audio(
    path: str | Path, block_seconds: float = STREAM_CHUNK_SECONDS
) -> Iterator[np.ndarray]:
    """Read an audio file as consecutive float32 mono 16 kHz chunks, never holding it whole.

    Each chunk is ``block_seconds`` long (the last one shorter). Other rates are resampled
    block by block, each block read with some context on both sides that is cut off after
    resampling, so the seams match resampling the whole file; at 16 kHz the chunks join into
    exactly ``load_audio(path)``. Raises ``AudioError`` as ``load_audio`` does.
    """
    path = Path(path)
    check_audio_file(path)
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise read_error(path, exc) from None
    except OSError as exc:
        raise AudioError(f"{path}: {os_problem(path, exc)}") from None
    with handle:
        rate, total = int(handle.samplerate), int(handle.frames)
        if total <= 0:
            raise AudioError(f"{path}: the file holds no audio samples")
        # Block edges fall on multiples of rate/gcd input samples, which map to whole output
        # samples, so every block's output lands on the global output grid.
        unit_in = rate // math.gcd(rate, SAMPLE_RATE)
        unit_out = SAMPLE_RATE // math.gcd(rate, SAMPLE_RATE)
        block = unit_in * max(1, round(block_seconds * rate / unit_in))
        pad = 0 if rate == SAMPLE_RATE else unit_in * -(-RESAMPLE_CONTEXT_SAMPLES // unit_in)
        total_out = -(-total * SAMPLE_RATE // rate)
        for start in range(0, total, block):
            first = max(0, start - pad)
            try:
                handle.seek(first)
                data = handle.read(
                    min(total, start + block + pad) - first, dtype="float32", always_2d=True
                )
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise read_error(path, exc) from None
            wav = to_16k_mono(data, rate, name=str(path))
            offset = (start - first) // unit_in * unit_out
            begin = start // unit_in * unit_out
            count = min(block // unit_in * unit_out, total_out - begin)
            yield wav[offset : offset + count]


def read_stdin(sample_rate: int | None = None, stream: BinaryIO | None = None) -> Clip:
    """Read one recording from stdin: an audio file's bytes, or raw PCM with ``sample_rate``.

    Without ``sample_rate`` the bytes must be a file libsndfile reads (wav, flac, ogg, ...);
    with it they are headerless mono signed 16-bit little-endian samples at that rate (what
    ``arecord -f S16_LE -t raw`` writes).
    """
    stream = stream if stream is not None else sys.stdin.buffer
    data = stream.read()
    if not data:
        raise AudioError(f"{STDIN}: nothing was read from stdin")
    if sample_rate is not None:
        if sample_rate <= 0:
            raise AudioError(f"{STDIN}: invalid sample rate {sample_rate}")
        usable = len(data) - len(data) % RAW_SAMPLE_WIDTH
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
        if pcm.size == 0:
            raise AudioError(f"{STDIN}: less than one 16-bit sample was read from stdin")
        return Clip(STDIN, to_16k_mono(pcm, sample_rate, name=STDIN))
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(
            f"{STDIN}: stdin cannot be read as audio ({reason}); for raw PCM pass --sample-rate"
        ) from None
    if samples.size == 0:
        raise AudioError(f"{STDIN}: stdin holds no audio samples")
    return Clip(STDIN, to_16k_mono(samples, rate, name=STDIN))


def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """Resampling filters for coprime rates ``orig -> new``: ``(new, taps)`` float32 and the
    padding width in input samples. One filter per output phase."""
    base = min(orig, new) * RESAMPLE_ROLLOFF
    width = math.ceil(RESAMPLE_ZERO_CROSSINGS * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx[None, :]) * base
    t = np.clip(t, -RESAMPLE_ZERO_CROSSINGS, RESAMPLE_ZERO_CROSSINGS)
    window = np.cos(t * math.pi / RESAMPLE_ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    safe = np.where(t == 0, 1.0, t)
    kernel = np.where(t == 0, 1.0, np.sin(safe) / safe) * window * (base / orig)
    return kernel.astype(np.float32), width


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of ``(samples,)`` float32 audio; output ``ceil(n * new / orig)``.

    Numerically the same as ``torchaudio.functional.resample`` with its defaults (tested).
    """
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    if orig == new:
        return np.asarray(wav, dtype=np.float32)
    kernel, width = _sinc_kernel(orig, new)
    padded = np.pad(np.asarray(wav, dtype=np.float32), (width, width + orig))
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]
    out = (windows @ kernel.T).reshape(-1)  # (frames, phases) -> interleaved samples
    return np.ascontiguousarray(out[: math.ceil(new * len(wav) / orig)], dtype=np.float32)


def to_16k_mono(data: np.ndarray, rate: int, name: str = "audio") -> np.ndarray:
    """Mix ``(samples, channels)`` or ``(samples,)`` audio to mono and resample to 16 kHz."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.ndim != 1 or data.size == 0:
        raise AudioError(f"{name}: expected a non-empty 1-D or (samples, channels) signal")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: the audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        if rate <= 0:
            raise AudioError(f"{name}: invalid sample rate {rate}")
        data = resample(data, int(rate), SAMPLE_RATE)
    return np.ascontiguousarray(data, dtype=np.float32)


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


def fragment(
    wav: np.ndarray,
    hop_seconds: float = FRAGMENT_SECONDS,
    name: str = "audio",
    min_speech: float = MIN_SPEECH_SECONDS,
) -> np.ndarray:
    """Cut speech into 3-second fragments.

    The rule: fragments start every ``hop_seconds``. A tail of at least half a fragment gets
    one more fragment aligned to the end of the recording (overlapping its neighbour); a
    shorter tail is dropped. A recording shorter than one fragment but at least
    ``min_speech`` seconds long (``MIN_SPEECH_SECONDS`` unless overridden) is repeated end to
    end up to 3 s; a shorter one is refused with its measured length.

    Returns
    -------
    np.ndarray, shape (n_fragments, FRAGMENT_SAMPLES), float32.
    """
    if hop_seconds <= 0:
        raise ValueError("hop_seconds must be positive")
    if min_speech <= 0:
        raise AudioError(f"the minimum speech must be positive, not {min_speech} s")
    n = len(wav)
    if n == 0 or n < round(min_speech * SAMPLE_RATE):
        raise AudioError(
            f"{name}: only {n / SAMPLE_RATE:.2f} s of speech; at least "
            f"{min_speech:g} s is needed (--min-speech)"
        )
    if n < FRAGMENT_SAMPLES:
        reps = -(-FRAGMENT_SAMPLES // n)
        return np.tile(wav, reps)[None, :FRAGMENT_SAMPLES].astype(np.float32)
    hop = max(1, round(hop_seconds * SAMPLE_RATE))
    starts = list(range(0, n - FRAGMENT_SAMPLES + 1, hop))
    tail = n - (starts[-1] + FRAGMENT_SAMPLES)
    if tail >= TAIL_KEEP_RATIO * FRAGMENT_SAMPLES:
        starts.append(n - FRAGMENT_SAMPLES)
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


def is_long(path: str | Path) -> bool:
    """Whether ``path`` holds more than ``STREAM_ABOVE_VALUES`` decoded values (streamed).

    False when the header cannot be read: the whole-file path then reports the problem.
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return False
    return info.frames * info.channels > STREAM_ABOVE_VALUES


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
    path: str | Path,
    hop_seconds: float = FRAGMENT_SECONDS,
    block_seconds: float = STREAM_BLOCK_SECONDS,
    batch: int = 64,
    on_speech: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """``prepare(load_audio(path))`` as a stream: batches of ``(k, FRAGMENT_SAMPLES)`` fragments.

    Two passes over the file: the first measures the trimming frames' levels (one number
    per 30 ms) and the speech length, the second trims and cuts, keeping only the speech
    not yet cut. Same rules as ``trim_silence`` and ``fragment``, same fragments.
    ``on_speech(samples)`` is told the length of the speech kept, once it is known.
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
        yield fragment(wav, hop_seconds, name)
        return
    keep = keep_frames(np.concatenate(levels), name)
    speech = int(keep.sum()) * TRIM_FRAME_SAMPLES + (tail if keep[-1] else 0)
    if on_speech:
        on_speech(speech)
    if speech < FRAGMENT_SAMPLES:  # repeated end to end: short enough to hold
        kept = [f.ravel() for f, k in _kept_frames(path, keep, block_seconds) if k]
        yield fragment(np.concatenate(kept), hop_seconds, name)
        return
    hop = max(1, round(hop_seconds * SAMPLE_RATE))
    starts = list(range(0, speech - FRAGMENT_SAMPLES + 1, hop))
    if speech - (starts[-1] + FRAGMENT_SAMPLES) >= TAIL_KEEP_RATIO * FRAGMENT_SAMPLES:
        starts.append(speech - FRAGMENT_SAMPLES)
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
    path: str | Path, keep: np.ndarray, block_seconds: float
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
