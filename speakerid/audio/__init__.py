"""Audio in: load, mix to mono, resample to 16 kHz, trim silence, cut into 3-second fragments.

``load_audio`` is the only function here that touches files (or stdin, named ``-``);
everything after it works on float32 numpy arrays of shape ``(samples,)`` at ``SAMPLE_RATE``.
Long files take the streamed path instead (``stream_audio`` -> ``stream_fragments``): the
same reading, mixing, resampling, trimming and cutting, done block by block, so memory stays
flat whatever the length and the rate. Stdin is spooled to an anonymous temporary file
(``read_stdin``) and then read like a file. Numpy, soundfile and soxr only: every backend,
the torch-free one included, reads audio here; what libsndfile does not read (M4A/AAC, AMR,
WebM, a video's sound) is decoded through FFmpeg when PyAV is installed (``audio.ffmpeg``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from speakerid.audio.ffmpeg import (
    FFMPEG_FORMATS,
    FFMPEG_INSTALL,
    DecodeError,
    FFmpegFile,
    FFmpegMissing,
)
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

TRIM_FRAME_SECONDS = 0.03  # energy frame for silence trimming
TRIM_FRAME_SAMPLES = int(TRIM_FRAME_SECONDS * SAMPLE_RATE)  # 480
TRIM_TOP_DB = 40.0  # frames this far below the loudest frame count as silence
SILENCE_FLOOR_DBFS = -60.0  # frames below this level are silence whatever the peak
TRIM_PAD_FRAMES = 5  # voiced regions are widened by this many frames (150 ms) each side

STDIN = "-"  # the FILE name that means "read the audio from standard input"
RAW_SAMPLE_WIDTH = 2  # bytes per sample of raw PCM on stdin: signed 16-bit little-endian
# Stdin is spooled to a temporary file (not memory) up to this many bytes: 2 GiB, about
# 18.6 h of 16 kHz 16-bit mono raw PCM. An endless pipe stops here with a message.
STDIN_MAX_BYTES = 2**31
STDIN_READ_BYTES = 1 << 20  # stdin is copied this much at a time
STREAM_BLOCK_SECONDS = 10.0  # input read, mixed and resampled at a time on the streamed path
# Files holding more decoded values than this (frames x channels; 16 MB as float32, about
# 4 min of 16 kHz mono or 42 s of 48 kHz stereo) are streamed. Reading a whole file costs
# several copies of it (decode, mix, resample, trim, fragments): 1.45 GB for an hour of
# 16 kHz mono, 7.1 GB at 48 kHz stereo (docs/reliability.md).
STREAM_ABOVE_VALUES = 4_000_000

# Resampling is libsoxr's (python-soxr): any ratio, set up once per stream, memory bounded
# by the block, not by the rates' gcd. "HQ" (20-bit, linear phase) is librosa's default. It
# agrees with the former windowed sinc (torchaudio's) to over 30 dB SNR below 80 % of the
# lower Nyquist frequency (tested). Accurate-model embeddings of 16-kHz recordings taken to
# 22.05 or 44.1 kHz and back agree with the old kernel's to a cosine of 0.998 or more; from
# 8 kHz only to 0.80 on average (the empty 4-8 kHz band, where the old kernel left images,
# weighs in the log fbank), soxr's being the nearer to the 16-kHz original's (0.72 vs 0.67).
RESAMPLE_QUALITY = "HQ"
MIN_SAMPLE_RATE = 1  # Hz; rates outside these bounds are refused with a message
MAX_SAMPLE_RATE = 384_000  # Hz, the highest rate audio interfaces record at
_SF_ERR_UNRECOGNISED_FORMAT = 1  # libsndfile's code for a format it does not know


@dataclass(frozen=True)
class Clip:
    """Audio already in memory (16 kHz mono float32) standing in for a file, e.g. an array.

    ``name`` is what messages, stores and ``embed`` keys show for it.
    """

    name: str
    samples: np.ndarray

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class Spooled:
    """A recording read from stdin into an anonymous temporary file, read like a file.

    ``raw_rate``: the file holds headerless mono signed 16-bit little-endian PCM at this
    rate; None: it holds an audio file's bytes. The file goes with the process.
    """

    name: str
    file: BinaryIO
    raw_rate: int | None = None

    def __str__(self) -> str:
        return self.name


Source = str | Path | Clip | Spooled  # what ``load_audio`` and ``stream_audio`` read


def load_audio(path: Source) -> np.ndarray:
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
    if str(path) == STDIN and not isinstance(path, Spooled):
        path = read_stdin()
    handle, name = _open(path)
    with handle:
        try:
            data = handle.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise _read_failure(path, exc) from None
        rate = int(handle.samplerate)
    if data.size == 0:
        raise AudioError(f"{name}: {_holds_nothing(path)}")
    return to_16k_mono(data, rate, name=name)


def _open(path: str | Path | Spooled) -> tuple[sf.SoundFile | FFmpegFile, str]:
    """Open a file (or a spooled stdin) for reading; its rate checked. Raises ``AudioError``.

    libsndfile reads it when it knows the format, else FFmpeg (``audio.ffmpeg``) does.
    """
    if isinstance(path, Spooled):
        raw = {}
        if path.raw_rate is not None:
            check_rate(path.raw_rate, path.name)
            raw = {
                "samplerate": path.raw_rate,
                "channels": 1,
                "format": "RAW",
                "subtype": "PCM_16",
                "endian": "LITTLE",
            }
        try:
            path.file.seek(0)
            handle = sf.SoundFile(path.file, **raw)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
            if path.raw_rate is not None or not _unknown_format(exc):
                raise _read_failure(path, exc) from None
            handle = _through_ffmpeg(path.file, path.name, exc)
    else:
        path = Path(path)
        check_audio_file(path)
        try:
            handle = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            if not _unknown_format(exc):
                raise read_error(path, exc) from None
            handle = _through_ffmpeg(str(path), str(path), exc)
        except OSError as exc:
            raise AudioError(f"{path}: {os_problem(path, exc)}") from None
    try:
        check_rate(int(handle.samplerate), str(path))
    except AudioError:
        handle.close()
        raise
    return handle, str(path)


def _unknown_format(exc: Exception) -> bool:
    """Whether libsndfile refused a file for its format (then FFmpeg may know it), not for
    damage it found in a format it reads."""
    if not isinstance(exc, sf.LibsndfileError):
        return False
    reason = sndfile_reason(exc).lower()
    return exc.code == _SF_ERR_UNRECOGNISED_FORMAT or "unsupported" in reason


def _through_ffmpeg(source: str | BinaryIO, name: str, refused: Exception) -> FFmpegFile:
    """FFmpeg's reader for what libsndfile ``refused``, or an ``AudioError`` that says
    neither reads it (and how to add FFmpeg, when PyAV is not installed)."""
    why = sndfile_reason(refused)
    pcm = "; for raw PCM on stdin pass --sample-rate" if name == STDIN else ""
    try:
        return FFmpegFile(source)
    except FFmpegMissing:
        raise AudioError(
            f"{name}: cannot be read as audio ({why}){pcm}; {FFMPEG_FORMATS} are read "
            f"through FFmpeg: {FFMPEG_INSTALL}"
        ) from None
    except DecodeError as exc:
        raise AudioError(f"{name}: cannot be read as audio ({why}; FFmpeg: {exc}){pcm}") from None


def sndfile_reason(exc: Exception) -> str:
    """A reader's reason in words: libsndfile's without its ``Error opening <...>:``
    preamble (which names a Python object for stdin and repeats a file's path)."""
    text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    text = re.sub(r"^Error opening .*?: ", "", str(text).splitlines()[0].strip()).rstrip(".")
    # "Format not recognised" reads as a clause in parentheses; "FLAC ..." keeps its case
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def check_rate(rate: int, name: str = "audio") -> int:
    """``rate`` if it is a sample rate speakerid reads (1 Hz to 384 kHz), else ``AudioError``."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: invalid sample rate {rate} Hz (give {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz)"
        )
    return rate


def _read_failure(path: str | Path | Spooled, exc: Exception) -> AudioError:
    """``read_error`` for files; for stdin, what to pass when its bytes are no audio file."""
    if not isinstance(path, Spooled):
        return read_error(Path(path), exc)
    reason = sndfile_reason(exc)
    if path.raw_rate is not None:
        return AudioError(f"{path}: raw PCM on stdin cannot be read ({reason})")
    return AudioError(
        f"{path}: stdin cannot be read as audio ({reason}); for raw PCM pass --sample-rate"
    )


def _holds_nothing(path: str | Path | Spooled) -> str:
    """What to say of a recording with no samples."""
    if not isinstance(path, Spooled):
        return "the file holds no audio samples"
    if path.raw_rate is not None:
        return "less than one 16-bit sample was read from stdin"
    return "stdin holds no audio samples"


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
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:  # libsndfile: "Format not recognised"
        raise AudioError(f"{path}: the file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: {os_problem(path, PermissionError(errno.EACCES, ''))}")


# libsndfile's words for a file whose data ends or breaks off early ("error in flac decoder":
# what a block read says where a whole-file read, seeking first, said "psf_fseek").
_CUT_SHORT = (
    "lost sync",
    "psf_fseek",
    "unexpected end",
    "truncated",
    "premature",
    "error in flac decoder",
)


def read_error(path: Path, exc: Exception) -> AudioError:
    """An ``AudioError`` for a failed libsndfile read, saying what is wrong in words."""
    reason = sndfile_reason(exc)
    if any(mark in reason.lower() for mark in _CUT_SHORT):
        return AudioError(
            f"{path}: the audio is cut short or damaged: its data breaks off before the end "
            f"the file announces ({reason.strip()})"
        )
    if "system error" in reason.lower() and not os.access(path, os.R_OK):
        return AudioError(f"{path}: {os_problem(path, PermissionError(errno.EACCES, ''))}")
    return AudioError(f"{path}: cannot be read as audio ({reason})")


def stream_audio(path: Source, block_seconds: float = STREAM_CHUNK_SECONDS) -> Iterator[np.ndarray]:
    """Read an audio file as consecutive float32 mono 16 kHz chunks, never holding it whole.

    Each chunk is ``block_seconds`` long (the last one shorter). The file is read
    ``block_seconds`` of input at a time through one resampler set up for the whole stream,
    so the chunks join into ``load_audio(path)`` (exactly at 16 kHz, to float rounding at
    other rates) and memory is bounded by the block whatever the rate. Raises
    ``AudioError`` as ``load_audio`` does.
    """
    if isinstance(path, Clip):
        yield from _blocks_of(path.samples, block_seconds)
        return
    handle, name = _open(path)
    with handle:
        rate = int(handle.samplerate)
        step = max(1, round(block_seconds * rate))  # input frames per read
        size = max(1, round(block_seconds * SAMPLE_RATE))  # output samples per chunk
        resampler = None
        if rate != SAMPLE_RATE:
            resampler = soxr.ResampleStream(
                rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        carry, read_any = np.zeros(0, np.float32), False
        while True:
            try:
                data = handle.read(step, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
                raise _read_failure(path, exc) from None
            last = len(data) < step
            read_any = read_any or len(data) > 0
            mono = _mono(data, name) if len(data) else np.zeros(0, np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            carry = np.concatenate([carry, mono])
            while len(carry) >= size:
                yield carry[:size]
                carry = carry[size:]
            if last:
                break
    if not read_any:
        raise AudioError(f"{name}: {_holds_nothing(path)}")
    if len(carry):
        yield carry


def _blocks_of(wav: np.ndarray, block_seconds: float) -> Iterator[np.ndarray]:
    size = max(1, round(block_seconds * SAMPLE_RATE))
    for start in range(0, len(wav), size):
        yield wav[start : start + size]


def _mono(data: np.ndarray, name: str) -> np.ndarray:
    """``(frames, channels)`` float32 -> ``(frames,)`` mean over channels, checked finite."""
    mono = data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data
    if not np.isfinite(mono).all():
        raise AudioError(f"{name}: the audio contains NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32)


def read_stdin(
    sample_rate: int | None = None,
    stream: BinaryIO | None = None,
    max_bytes: int | None = None,
) -> Spooled:
    """Read one recording from stdin: an audio file's bytes, or raw PCM with ``sample_rate``.

    Without ``sample_rate`` the bytes must be a file libsndfile reads (wav, flac, ogg, ...);
    with it they are headerless mono signed 16-bit little-endian samples at that rate (what
    ``arecord -f S16_LE -t raw`` writes). The bytes are copied to an anonymous temporary
    file a block at a time, never held in memory, up to ``max_bytes``
    (``STDIN_MAX_BYTES``); then the recording is read like a file, streamed when long.
    """
    if sample_rate is not None:
        check_rate(sample_rate, STDIN)
    max_bytes = STDIN_MAX_BYTES if max_bytes is None else max_bytes
    stream = stream if stream is not None else sys.stdin.buffer
    try:
        # outlives this function: the recording is read from it later, and it goes with
        # the process (an anonymous file)
        spool = tempfile.TemporaryFile(prefix="speakerid-stdin-")  # noqa: SIM115
    except OSError as exc:
        raise AudioError(f"{STDIN}: no temporary file for stdin ({exc.strerror or exc})") from None
    total = 0
    try:
        while chunk := stream.read(STDIN_READ_BYTES):
            total += len(chunk)
            if total > max_bytes:
                raise AudioError(
                    f"{STDIN}: stdin holds more than {max_bytes} bytes, the most one recording "
                    f"may take ({max_bytes / (RAW_SAMPLE_WIDTH * SAMPLE_RATE * 3600):.1f} h of "
                    "16 kHz 16-bit PCM); cut it into parts"
                )
            spool.write(chunk)
        spool.flush()
    except OSError as exc:
        spool.close()
        raise AudioError(f"{STDIN}: cannot spool stdin ({exc.strerror or exc})") from None
    except AudioError:
        spool.close()
        raise
    if total == 0:
        spool.close()
        raise AudioError(f"{STDIN}: stdin is empty (nothing was read from it)")
    if sample_rate is not None and total < RAW_SAMPLE_WIDTH:
        spool.close()
        raise AudioError(f"{STDIN}: less than one 16-bit sample was read from stdin")
    return Spooled(STDIN, spool, sample_rate)


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of ``(samples,)`` float32 audio (libsoxr, ``RESAMPLE_QUALITY``).

    Output ``round(n * new / orig)`` samples, the same as ``stream_audio`` gives block by
    block. Rates outside ``MIN_SAMPLE_RATE``..``MAX_SAMPLE_RATE`` raise ``AudioError``.
    """
    orig, new = check_rate(int(orig_rate)), check_rate(int(new_rate))
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if orig == new:
        return wav
    return np.ascontiguousarray(soxr.resample(wav, orig, new, quality=RESAMPLE_QUALITY))


def to_16k_mono(data: np.ndarray, rate: int, name: str = "audio") -> np.ndarray:
    """Mix ``(samples, channels)`` or ``(samples,)`` audio to mono and resample to 16 kHz."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim not in (1, 2) or data.size == 0:
        raise AudioError(f"{name}: expected a non-empty 1-D or (samples, channels) signal")
    data = _mono(data, name)
    if rate != SAMPLE_RATE:
        check_rate(int(rate), name)
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


def is_long(path: Source) -> bool:
    """Whether ``path`` holds more than ``STREAM_ABOVE_VALUES`` values, decoded or at 16 kHz
    (then it is streamed): a few seconds at 1 Hz become many minutes at 16 kHz.

    False for a ``Clip`` (already in memory), for ``-`` (probing would read stdin) and when
    the header cannot be read: the whole-file path then reports the problem.
    """
    if isinstance(path, Clip) or (str(path) == STDIN and not isinstance(path, Spooled)):
        return False
    try:
        handle, _ = _open(path)
    except AudioError:
        return False
    with handle:
        frames, channels, rate = int(handle.frames), int(handle.channels), int(handle.samplerate)
    return max(frames * channels, -(-frames * SAMPLE_RATE // rate)) > STREAM_ABOVE_VALUES


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
