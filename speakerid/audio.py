"""Audio in: load, mix to mono, resample to 16 kHz, trim silence, cut into 3-second fragments.

``load_audio`` is the only function here that touches files (or stdin, named ``-``);
everything after it works on float32 numpy arrays of shape ``(samples,)`` at ``SAMPLE_RATE``.
Numpy and soundfile only: every backend, the torch-free one included, reads audio here.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from speakerid.errors import AudioError

SAMPLE_RATE = 16_000  # Hz, the rate every array in the core is at
FRAGMENT_SECONDS = 3.0  # the case study's fragment length
FRAGMENT_SAMPLES = int(FRAGMENT_SECONDS * SAMPLE_RATE)  # 48000
MIN_SPEECH_SECONDS = 1.0  # less speech than this (after trimming) is refused (--min-speech)
MIN_SPEECH_SAMPLES = int(MIN_SPEECH_SECONDS * SAMPLE_RATE)  # 16000
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
    path = _existing_file(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: cannot be read as audio ({reason})") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    return to_16k_mono(data, rate, name=str(path))


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    return path


def stream_audio(
    path: str | Path, chunk_seconds: float = STREAM_CHUNK_SECONDS
) -> Iterator[np.ndarray]:
    """Read an audio file as consecutive float32 mono 16 kHz chunks, never holding it whole.

    Each chunk is ``chunk_seconds`` long (the last one shorter). Other rates are resampled
    block by block, each block read with some context on both sides that is cut off after
    resampling, so the seams match resampling the whole file; at 16 kHz the chunks join into
    exactly ``load_audio(path)``. Raises ``AudioError`` as ``load_audio`` does.
    """
    path = _existing_file(path)
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: cannot be read as audio ({reason})") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with handle:
        rate, total = int(handle.samplerate), int(handle.frames)
        if total <= 0:
            raise AudioError(f"{path}: the file holds no audio samples")
        # Block edges fall on multiples of rate/gcd input samples, which map to whole output
        # samples, so every block's output lands on the global output grid.
        unit_in = rate // math.gcd(rate, SAMPLE_RATE)
        unit_out = SAMPLE_RATE // math.gcd(rate, SAMPLE_RATE)
        block = unit_in * max(1, round(chunk_seconds * rate / unit_in))
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
                raise AudioError(f"{path}: cannot be read as audio ({exc})") from None
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
    return np.convolve(voiced.astype(float), kernel, mode="same") > 0


def trim_silence(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """Drop silent stretches (energy below peak-40 dB or -60 dBFS), keeping 150 ms margins.

    Raises ``AudioError`` when nothing is left, i.e. the input is silent.
    """
    keep = speech_frames(frame_dbfs(wav))
    if not keep.any():
        raise AudioError(f"{name}: the audio is silent")
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
