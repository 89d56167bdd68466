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
``speech`` (the energy rule and trimming), ``fragments`` (the 3-s cut, whole or
streamed). Callers import from ``speakerid.audio``.
"""

from __future__ import annotations

from speakerid.audio.constants import (
    FRAGMENT_SAMPLES,
    FRAGMENT_SECONDS,
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
)
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
    frame_dbfs,
    keep_frames,
    speech_frames,
    trim_silence,
)

__all__ = [
    "FRAGMENT_SAMPLES",
    "FRAGMENT_SECONDS",
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
    "Clip",
    "Source",
    "Spooled",
    "check_audio_file",
    "check_rate",
    "check_speech",
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
    "speech_frames",
    "stream_audio",
    "stream_fragments",
    "to_16k_mono",
    "trim_silence",
]
