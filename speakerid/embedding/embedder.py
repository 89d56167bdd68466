"""``BaseEmbedder``: from audio to one unit vector, whatever backend runs the encoder.

The torch backend (``embed.Embedder``) and the onnx backend (``onnx_backend.OnnxEmbedder``)
both subclass it; it lives in its own module so that neither backend imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.audio import (
    MIN_SPEECH_SECONDS,
    Source,
    is_long,
    load_audio,
    prepare,
    stream_fragments,
)
from speakerid.vectors import l2_normalize, pool


class BaseEmbedder:
    """From audio to one unit vector, whatever runs the encoder (``embed_fragments``).

    Subclasses set ``model`` (with ``threshold``, ``fingerprint`` and ``path``), ``dim`` and
    ``min_speech`` (seconds of speech a recording needs after trimming).
    """

    model: Any
    min_speech: float = MIN_SPEECH_SECONDS
    batch_size: int = 64  # fragments per forward pass

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def embed_fragments(self, fragments: np.ndarray) -> np.ndarray:
        """``(n, FRAGMENT_SAMPLES)`` float32 -> ``(n, D)`` unit-length embeddings."""
        raise NotImplementedError

    def embed_waveform(self, wav: np.ndarray, name: str = "audio", trim: bool = True) -> np.ndarray:
        """One 16 kHz mono recording -> ``(D,)`` unit vector (mean of its fragments)."""
        fragments = prepare(wav, name=name, trim=trim, min_speech=self.min_speech)
        return pool(self.embed_fragments(fragments))

    def embed_file(self, path: Source) -> np.ndarray:
        """An audio file (a ``Clip``, or stdin spooled) -> ``(D,)`` unit vector. Raises
        ``AudioError``.

        Long files (``audio.is_long``) are streamed (``embed_stream``), so that memory
        does not grow with the file's length and rate.
        """
        if is_long(path):  # never true for a Clip or a bare "-" (probing would read stdin)
            return self.embed_stream(path)
        return self.embed_waveform(load_audio(path), name=str(path))

    def embed_stream(
        self, path: Source, on_speech: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """``embed_file`` through ``audio.stream_fragments``: the same vector, flat memory.

        The mean of the fragments' unit embeddings is accumulated batch by batch;
        ``on_speech(samples)`` is told the speech length (see ``stream_fragments``).
        """
        total = np.zeros(self.dim, np.float64)
        count = 0
        for batch in stream_fragments(path, batch=self.batch_size, on_speech=on_speech):
            embeddings = self.embed_fragments(batch)
            total += embeddings.sum(axis=0, dtype=np.float64)
            count += len(embeddings)
        return l2_normalize((total / max(count, 1)).astype(np.float32))

    def embed_speaker(self, paths: list[str | Path]) -> np.ndarray:
        """Several recordings of one speaker -> ``(D,)`` unit vector."""
        return pool(np.stack([self.embed_file(p) for p in paths]))
