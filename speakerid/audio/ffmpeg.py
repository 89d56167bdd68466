"""Recordings libsndfile cannot read, decoded through FFmpeg: phone voice memos (M4A/AAC),
AMR, WebM/Opus, the audio track of a video.

PyAV binds FFmpeg and its wheels bundle it, so nothing outside Python is installed. It is an
extra (``pip install av``; in a checkout, ``pip install -e '.[ffmpeg]'``), not a dependency:
its wheel is 36 MB to download and 106 MB installed (av 18.1, manylinux x86-64), which
would take the torch-free runtime past its 400 MB budget for files most users never have.

``FFmpegFile`` offers the few ``soundfile.SoundFile`` members the readers in
``speakerid.audio`` use (``samplerate``, ``channels``, ``frames``, ``read``, ``close``), so
a decoded file takes the same whole-file and streamed paths as any other: it is decoded a
packet at a time as blocks are read, and memory is bounded by the block asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

FFMPEG_INSTALL = "pip install av (in a speakerid checkout: pip install -e '.[ffmpeg]')"
FFMPEG_FORMATS = "M4A/AAC, AMR, WebM, MP4 and other FFmpeg formats"
# Read when a container states no duration (a WebM written live): large enough that the
# file is streamed, the path whose memory does not depend on the length.
UNKNOWN_FRAMES = 2**40


class DecodeError(RuntimeError):
    """FFmpeg could not open or decode the file; the message is FFmpeg's reason."""


class FFmpegMissing(DecodeError):
    """PyAV is not installed."""


def _reason(exc: Exception) -> str:
    """FFmpeg's words for an error, without the file name PyAV adds to some."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0].strip()


class FFmpegFile:
    """The first audio stream of a media file, decoded to float32 at its own rate.

    Parameters
    ----------
    source: a path, or a binary file object positioned anywhere (read from its start).
    """

    def __init__(self, source: str | BinaryIO) -> None:
        try:
            import av
        except ImportError:
            raise FFmpegMissing(f"reading {FFMPEG_FORMATS} needs PyAV: {FFMPEG_INSTALL}") from None
        self._av = av
        if not isinstance(source, str):
            source.seek(0)
        try:
            self._container = av.open(source, mode="r")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise DecodeError(_reason(exc)) from None
        streams = self._container.streams.audio
        if not streams:
            self._container.close()
            raise DecodeError("the file holds no audio stream")
        self._stream = streams[0]
        context = self._stream.codec_context
        self.samplerate = int(context.sample_rate or 0)
        self.channels = int(context.layout.nb_channels) if context.layout else 1
        self.frames = self._frames_stated()
        self._blocks = self._decoded()
        self._carry = np.zeros((0, self.channels), np.float32)

    def _frames_stated(self) -> int:
        """Frames the container announces (an estimate: codecs pad), or ``UNKNOWN_FRAMES``."""
        stream, container = self._stream, self._container
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / self._av.time_base
        else:
            return UNKNOWN_FRAMES
        return max(0, round(seconds * self.samplerate))

    def _decoded(self) -> Iterator[np.ndarray]:
        """``(n, channels)`` float32 blocks, one per decoded frame, in order."""
        # Packed float at the stream's own rate and layout: the readers mix and resample.
        resampler = self._av.AudioResampler(format="flt")
        try:
            for frame in self._container.decode(self._stream):
                for out in resampler.resample(frame):
                    yield self._as_array(out)
            for out in resampler.resample(None):
                yield self._as_array(out)
        except (self._av.FFmpegError, ValueError) as exc:
            raise DecodeError(_reason(exc)) from None

    def _as_array(self, frame: Any) -> np.ndarray:
        channels = int(frame.layout.nb_channels)
        if channels != self.channels:  # a stream that changes layout midway
            raise DecodeError(f"the audio changes from {self.channels} to {channels} channels")
        return frame.to_ndarray().reshape(-1, channels).astype(np.float32, copy=False)

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """The next ``frames`` frames (all that is left if -1) as ``(n, channels)`` float32;
        fewer at the end. ``dtype`` and ``always_2d`` are accepted as ``SoundFile.read``'s."""
        del dtype, always_2d  # always float32 and 2-D, what the readers ask for
        parts, held = [self._carry], len(self._carry)
        while frames < 0 or held < frames:
            block = next(self._blocks, None)
            if block is None:
                break
            parts.append(block)
            held += len(block)
        data = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if frames < 0 or len(data) <= frames:
            self._carry = data[:0]
            return data
        self._carry = data[frames:]
        return data[:frames]

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> FFmpegFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
