"""Audio in: load, mix to mono, resample to 16 kHz, trim silence, cut into 3-second fragments.

``load_audio`` is the only function here that touches files; everything after it works on
float32 numpy arrays of shape ``(samples,)`` at ``SAMPLE_RATE``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

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


def trim_silence(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """Drop silent stretches (energy below peak-40 dB or -60 dBFS), keeping 150 ms margins.

    Raises ``AudioError`` when nothing is left, i.e. the input is silent.
    """
    levels = frame_dbfs(wav)
    threshold = max(float(levels.max()) - TRIM_TOP_DB, SILENCE_FLOOR_DBFS)
    voiced = levels > threshold
    if not voiced.any():
        raise AudioError(f"{name}: the audio is silent")
    # Widen each voiced frame so that word onsets and decays survive the cut.
    kernel = np.ones(2 * TRIM_PAD_FRAMES + 1)
    keep = np.convolve(voiced.astype(float), kernel, mode="same") > 0
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
