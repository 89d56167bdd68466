"""Audio in: load, mix to mono, resample to 16 kHz, trim silence, cut into 3-second fragments.

``load_audio`` reads a whole file; everything after it works on float32 numpy arrays of
shape ``(samples,)`` at ``SAMPLE_RATE``. Long files take the streamed path instead
(``stream_audio`` -> ``stream_fragments``): the same reading, mixing, resampling, trimming
and cutting, done block by block, so memory stays flat whatever the length and the rate.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T

from speakerid.errors import AudioError

SAMPLE_RATE = 16_000  # Hz, the rate every array in the core is at
FRAGMENT_SECONDS = 3.0  # the case study's fragment length
FRAGMENT_SAMPLES = int(FRAGMENT_SECONDS * SAMPLE_RATE)  # 48000
MIN_SPEECH_SECONDS = 1.0  # less speech than this (after trimming) is refused
MIN_SPEECH_SAMPLES = int(MIN_SPEECH_SECONDS * SAMPLE_RATE)  # 16000
TAIL_KEEP_RATIO = 0.5  # a tail shorter than this fraction of a fragment is dropped

TRIM_FRAME_SECONDS = 0.03  # energy frame for silence trimming
TRIM_FRAME_SAMPLES = int(TRIM_FRAME_SECONDS * SAMPLE_RATE)  # 480
TRIM_TOP_DB = 40.0  # frames this far below the loudest frame count as silence
SILENCE_FLOOR_DBFS = -60.0  # frames below this level are silence whatever the peak
TRIM_PAD_FRAMES = 5  # voiced regions are widened by this many frames (150 ms) each side

STREAM_BLOCK_SECONDS = 10.0  # input read, mixed and resampled at a time on the streamed path
# Files holding more decoded values than this (frames x channels; 16 MB as float32, about
# 4 min of 16 kHz mono or 42 s of 48 kHz stereo) are streamed. Reading a whole file costs
# several copies of it (decode, mix, resample, trim, fragments): 1.45 GB for an hour of
# 16 kHz mono, 7.1 GB at 48 kHz stereo (docs/reliability.md).
STREAM_ABOVE_VALUES = 4_000_000
# torchaudio's sinc resampler (``AF.resample``) defaults, which set its kernel's reach.
_RESAMPLE_LOWPASS_WIDTH = 6
_RESAMPLE_ROLLOFF = 0.99


def load_audio(path: str | Path) -> np.ndarray:
    """Read an audio file as float32 mono at ``SAMPLE_RATE``.

    Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3 with libsndfile >= 1.1)
    is accepted; channels are averaged and other rates are resampled.

    Returns
    -------
    np.ndarray, shape (samples,), float32 in [-1, 1].
    """
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
        data = AF.resample(torch.from_numpy(data), int(rate), SAMPLE_RATE).numpy()
    return np.ascontiguousarray(data, dtype=np.float32)


def frame_dbfs(wav: np.ndarray, frame: int = TRIM_FRAME_SAMPLES) -> np.ndarray:
    """RMS level of consecutive ``frame``-sample frames in dB full scale, shape (frames,)."""
    n = max(1, len(wav) // frame)
    frames = wav[: n * frame].reshape(n, -1) if len(wav) >= frame else wav[None, :]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def keep_frames(levels: np.ndarray, name: str = "audio") -> np.ndarray:
    """Which trimming frames to keep, from their ``frame_dbfs`` levels: bool (frames,).

    Raises ``AudioError`` when none is voiced, i.e. the audio is silent.
    """
    threshold = max(float(levels.max()) - TRIM_TOP_DB, SILENCE_FLOOR_DBFS)
    voiced = levels > threshold
    if not voiced.any():
        raise AudioError(f"{name}: the audio is silent")
    # Widen each voiced frame so that word onsets and decays survive the cut.
    kernel = np.ones(2 * TRIM_PAD_FRAMES + 1)
    return np.convolve(voiced.astype(float), kernel, mode="same") > 0


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
) -> np.ndarray:
    """Cut speech into 3-second fragments.

    The rule: fragments start every ``hop_seconds``. A tail of at least half a fragment gets
    one more fragment aligned to the end of the recording (overlapping its neighbour); a
    shorter tail is dropped. A recording shorter than one fragment but at least
    ``MIN_SPEECH_SECONDS`` long is repeated end to end up to 3 s; a shorter one is refused.

    Returns
    -------
    np.ndarray, shape (n_fragments, FRAGMENT_SAMPLES), float32.
    """
    if hop_seconds <= 0:
        raise ValueError("hop_seconds must be positive")
    n = len(wav)
    if n < MIN_SPEECH_SAMPLES:
        raise AudioError(
            f"{name}: only {n / SAMPLE_RATE:.2f} s of speech; at least "
            f"{MIN_SPEECH_SECONDS:.1f} s is needed"
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


def prepare(wav: np.ndarray, name: str = "audio", trim: bool = True) -> np.ndarray:
    """Trim silence (optional) and fragment: the path every recording takes to the encoder."""
    speech = trim_silence(wav, name=name) if trim else wav
    if not trim and float(frame_dbfs(wav).max()) <= SILENCE_FLOOR_DBFS:
        raise AudioError(f"{name}: the audio is silent")
    return fragment(speech, name=name)


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


class StreamResampler:
    """torchaudio's sinc resampler applied block by block, with the same output.

    The input is cut into steps of a multiple of ``orig / gcd`` samples (so each step maps
    to a whole number of output samples) and each step is resampled with real neighbouring
    samples, as far as the kernel reaches, on both sides. Outside the signal the kernel
    sees zeros, as ``AF.resample`` pads; so ``push``-ing a signal in any blocks and then
    calling ``flush`` gives ``AF.resample`` of the whole signal (to float rounding).
    """

    def __init__(self, orig: int, new: int = SAMPLE_RATE, step_seconds: float = 5.0) -> None:
        if orig <= 0:
            raise ValueError(f"invalid sample rate {orig}")
        self.orig, self.new = int(orig), int(new)
        g = math.gcd(self.orig, self.new)
        self._o, self._n = self.orig // g, self.new // g
        base = min(self._o, self._n) * _RESAMPLE_ROLLOFF
        reach = math.ceil(_RESAMPLE_LOWPASS_WIDTH * self._o / base) + self._o
        self._context = self._o * math.ceil(reach / self._o)  # input samples, each side
        step = max(1, round(step_seconds * self.orig / self._o)) * self._o
        self._step = max(step, self._context)
        self._buf = np.zeros(0, np.float32)
        self._left = 0  # context samples at the start of ``_buf`` (0 at the signal's start)
        # The module builds ``AF.resample``'s kernel once (AF.resample rebuilds it per call,
        # which for 44.1 kHz costs more than the filtering itself).
        self._kernel = None if self.orig == self.new else T.Resample(self.orig, self.new)

    @torch.inference_mode()
    def _resample(self, chunk: np.ndarray) -> np.ndarray:
        if self._kernel is None:
            return chunk
        return self._kernel(torch.from_numpy(chunk)).numpy()

    def _out(self, samples: int) -> int:
        return samples * self._n // self._o  # exact: ``samples`` is a multiple of _o

    def push(self, block: np.ndarray) -> np.ndarray:
        """Take more input; return the output that is final so far (may be empty)."""
        self._buf = np.concatenate([self._buf, np.asarray(block, np.float32)])
        out = []
        while len(self._buf) >= self._left + self._step + self._context:
            chunk = self._buf[: self._left + self._step + self._context]
            start = self._out(self._left)
            out.append(self._resample(chunk)[start : start + self._out(self._step)])
            self._buf = self._buf[self._left + self._step - self._context :]
            self._left = self._context
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """The rest of the output, once all input was pushed."""
        if len(self._buf) <= self._left:
            return np.zeros(0, np.float32)
        out = self._resample(self._buf)[self._out(self._left) :]
        self._buf = np.zeros(0, np.float32)
        return out


def stream_audio(
    path: str | Path, block_seconds: float = STREAM_BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Read a file as float32 mono ``SAMPLE_RATE`` blocks, a block of input at a time.

    The concatenated blocks equal ``load_audio(path)`` to float rounding; memory is a few
    blocks whatever the file's length. Raises ``AudioError`` as ``load_audio`` does (also
    part-way, for a file whose data breaks off).
    """
    path = Path(path)
    check_audio_file(path)
    name = str(path)
    try:
        with sf.SoundFile(name) as fh:
            rate = int(fh.samplerate)
            if fh.frames == 0:
                raise AudioError(f"{path}: the file holds no audio samples")
            if rate <= 0:
                raise AudioError(f"{path}: invalid sample rate {rate}")
            resampler = StreamResampler(rate)
            size = max(1, int(block_seconds * rate))
            total = 0
            for block in fh.blocks(blocksize=size, dtype="float32", always_2d=True):
                total += len(block)
                mono = block.mean(axis=1, dtype=np.float32)
                if not np.isfinite(mono).all():
                    raise AudioError(f"{path}: the audio contains NaN or infinite samples")
                out = resampler.push(mono)
                if len(out):
                    yield out
            if total == 0:
                raise AudioError(f"{path}: the file holds no audio samples")
            out = resampler.flush()
            if len(out):
                yield out
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise read_error(path, exc) from None
    except OSError as exc:
        raise AudioError(f"{path}: {os_problem(path, exc)}") from None


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
