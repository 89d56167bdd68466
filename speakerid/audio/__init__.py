"""Audio in: load, mix to mono, resample to 16 kHz, trim silence, cut into 3-second fragments.

``load_audio`` is the only function here that touches files (or stdin, named ``-``);
everything after it works on float32 numpy arrays of shape ``(samples,)`` at ``SAMPLE_RATE``.
Long files take the streamed path instead (``stream_audio`` -> ``stream_fragments``): the
same reading, mixing, resampling, trimming and cutting, done block by block, so memory stays
flat whatever the length and the rate. Stdin is spooled to an anonymous temporary file
(``read_stdin``) and then read like a file. Numpy, soundfile and soxr only: every backend,
the torch-free one included, reads audio here; what libsndfile does not read (M4A/AAC, AMR,
WebM, a video's sound) is decoded through FFmpeg when PyAV is installed.

The package: ``constants`` (every audio constant), ``io`` (files, stdin, blocks),
``ffmpeg`` (what libsndfile does not read, through PyAV),
``speech`` (the energy rule, Silero's regions and trimming by either, ``--vad``), ``vad``
(Silero VAD on onnxruntime), ``fragments`` (the 3-s cut, whole or
streamed). Callers import from ``speakerid.audio``; its constants load with it, the rest on
first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from speakerid.audio.constants import (
    DEFAULT_VAD,
    FRAGMENT_SAMPLES,
    FRAGMENT_SECONDS,
    LEGACY_VAD,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    MIN_SPEECH_SAMPLES,
    MIN_SPEECH_SECONDS,
    RAW_SAMPLE_WIDTH,
    RESAMPLE_QUALITY,
    SAMPLE_RATE,
    SILENCE_FLOOR_DBFS,
    STDIN,
    STDIN_MAX_BYTES,
    STDIN_READ_BYTES,
    STREAM_ABOVE_VALUES,
    STREAM_BLOCK_SECONDS,
    STREAM_CHUNK_SECONDS,
    TAIL_KEEP_RATIO,
    TRIM_FRAME_SAMPLES,
    TRIM_FRAME_SECONDS,
    TRIM_PAD_FRAMES,
    TRIM_TOP_DB,
    VAD_ENV,
    VADS,
)

# The functions and types, imported from their module on first use: the constants above
# need no numpy, so the CLI's help texts read them without loading numpy, soundfile, soxr
# or onnxruntime (``--help`` stays instant). ``TYPE_CHECKING`` gives checkers the same names.
_LAZY = {
    "check_speech": "fragments",
    "fragment": "fragments",
    "fragment_starts": "fragments",
    "prepare": "fragments",
    "stream_fragments": "fragments",
    "Clip": "io",
    "Source": "io",
    "Spooled": "io",
    "check_audio_file": "io",
    "check_rate": "io",
    "is_long": "io",
    "load_audio": "io",
    "os_problem": "io",
    "read_error": "io",
    "read_stdin": "io",
    "resample": "io",
    "stream_audio": "io",
    "to_16k_mono": "io",
    "check_vad": "speech",
    "frame_dbfs": "speech",
    "keep_frames": "speech",
    "resolve_vad": "speech",
    "silero_frames": "speech",
    "speech_frames": "speech",
    "speech_mask": "speech",
    "trim_silence": "speech",
}

if TYPE_CHECKING:
    from speakerid.audio.fragments import (
        check_speech,
        fragment,
        fragment_starts,
        prepare,
        stream_fragments,
    )
    from speakerid.audio.io import (
        Clip,
        Source,
        Spooled,
        check_audio_file,
        check_rate,
        is_long,
        load_audio,
        os_problem,
        read_error,
        read_stdin,
        resample,
        stream_audio,
        to_16k_mono,
    )
    from speakerid.audio.speech import (
        check_vad,
        frame_dbfs,
        keep_frames,
        resolve_vad,
        silero_frames,
        speech_frames,
        speech_mask,
        trim_silence,
    )


def __getattr__(name: str) -> Any:
    """A function or type of ``_LAZY``, imported from its module and kept here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_VAD",
    "FRAGMENT_SAMPLES",
    "FRAGMENT_SECONDS",
    "LEGACY_VAD",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "MIN_SPEECH_SAMPLES",
    "MIN_SPEECH_SECONDS",
    "RAW_SAMPLE_WIDTH",
    "RESAMPLE_QUALITY",
    "SAMPLE_RATE",
    "SILENCE_FLOOR_DBFS",
    "STDIN",
    "STDIN_MAX_BYTES",
    "STDIN_READ_BYTES",
    "STREAM_ABOVE_VALUES",
    "STREAM_BLOCK_SECONDS",
    "STREAM_CHUNK_SECONDS",
    "TAIL_KEEP_RATIO",
    "TRIM_FRAME_SAMPLES",
    "TRIM_FRAME_SECONDS",
    "TRIM_PAD_FRAMES",
    "TRIM_TOP_DB",
    "VADS",
    "VAD_ENV",
    "Clip",
    "Source",
    "Spooled",
    "check_audio_file",
    "check_rate",
    "check_speech",
    "check_vad",
    "fragment",
    "fragment_starts",
    "frame_dbfs",
    "is_long",
    "keep_frames",
    "load_audio",
    "os_problem",
    "prepare",
    "read_error",
    "read_stdin",
    "resample",
    "resolve_vad",
    "silero_frames",
    "speech_frames",
    "speech_mask",
    "stream_audio",
    "stream_fragments",
    "to_16k_mono",
    "trim_silence",
]
