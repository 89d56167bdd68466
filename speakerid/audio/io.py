"""Reading audio: files, stdin, in-memory clips -> float32 mono 16 kHz, whole or in blocks.

``load_audio`` is the only function that reads a whole recording; ``stream_audio`` reads
one block at a time (long files). Stdin is spooled to an anonymous temporary file
(``read_stdin``) and then read like a file. Numpy, soundfile and soxr only; what
libsndfile does not read (M4A/AAC, AMR, WebM, a video's sound) is decoded through FFmpeg
when PyAV is installed (``audio.ffmpeg``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from speakerid.audio.constants import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    RAW_SAMPLE_WIDTH,
    RESAMPLE_QUALITY,
    SAMPLE_RATE,
    STDIN,
    STDIN_MAX_BYTES,
    STDIN_READ_BYTES,
    STREAM_ABOVE_VALUES,
    STREAM_CHUNK_SECONDS,
)
from speakerid.audio.ffmpeg import (
    FFMPEG_FORMATS,
    FFMPEG_INSTALL,
    DecodeError,
    FFmpegFile,
    FFmpegMissing,
)
from speakerid.errors import AudioError

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
