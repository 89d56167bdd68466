"""``BaseEmbedder``: from audio to one unit vector, whatever backend runs the encoder.

The torch backend (``embed.Embedder``) and the onnx backend (``onnx_backend.OnnxEmbedder``)
both subclass it; it lives in its own module so that neither backend imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from speakerid.audio import (
    LEGACY_VAD,
    MIN_SPEECH_SECONDS,
    SAMPLE_RATE,
    Source,
    is_long,
    load_audio,
    prepare,
    stream_fragments,
    trim_silence,
)
from speakerid.errors import CheckpointError
from speakerid.vectors import pool


class ModelInfo(Protocol):
    """What every backend's loaded model says about itself (``LoadedModel``, ``OnnxModel``)."""

    threshold: float | None  # its calibrated cosine threshold, None if never calibrated
    fingerprint: str  # the store's model identity
    path: Path  # what messages name


class BaseEmbedder:
    """From audio to one unit vector, whatever runs the encoder (``embed_fragments``).

    Subclasses set ``model`` (with ``threshold``, ``fingerprint`` and ``path``), ``dim``,
    ``min_speech`` (seconds of speech a recording needs after trimming) and ``vad`` (how
    speech is found: ``audio.VADS``).
    """

    model: ModelInfo
    min_speech: float = MIN_SPEECH_SECONDS
    vad: str = LEGACY_VAD
    batch_size: int = 64  # fragments per forward pass

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def identity(self) -> tuple[str, int, str]:
        """(fingerprint, embedding size, absolute path): what a store checks before mixing."""
        return self.model.fingerprint, self.dim, str(Path(self.model.path).resolve())

    def finite(self, vectors: np.ndarray, what: object = "audio") -> np.ndarray:
        """``vectors``, refused when not finite: a damaged model's mark (``CheckpointError``)."""
        if not np.isfinite(vectors).all():
            raise CheckpointError(
                f"{self.model.path}: the model produced NaN or infinite values for {what}; "
                "the checkpoint is damaged"
            )
        return vectors

    def embed_fragments(self, fragments: np.ndarray) -> np.ndarray:
        """``(n, FRAGMENT_SAMPLES)`` float32 -> ``(n, D)`` unit-length embeddings."""
        raise NotImplementedError

    def pool_fragments(self, embeddings: np.ndarray) -> np.ndarray:
        """A recording's ``(n, D)`` fragment embeddings -> its ``(D,)`` unit vector: their
        normalised mean (``vectors.pool``). A fusion pools each member's block apart."""
        return pool(embeddings)

    def embed_waveform(self, wav: np.ndarray, name: str = "audio", trim: bool = True) -> np.ndarray:
        """One 16 kHz mono recording -> ``(D,)`` unit vector (``pool_fragments``)."""
        fragments = prepare(wav, name, trim=trim, min_speech=self.min_speech, vad=self.vad)
        return self.pool_fragments(self.embed_fragments(fragments))

    def embed_file(self, path: Source) -> np.ndarray:
        """An audio file (a ``Clip``, or stdin spooled) -> ``(D,)`` unit vector. Raises
        ``AudioError``. See ``embed_measured``."""
        return self.embed_measured(path)[0]

    def embed_measured(self, path: Source) -> tuple[np.ndarray, float]:
        """An audio file -> its ``(D,)`` unit vector and its seconds of speech (trimmed).

        The one place a recording is read, trimmed and cut: long files (``audio.is_long``)
        are streamed (``embed_stream``), so that memory does not grow with the file's
        length and rate; the others are read whole.
        """
        if is_long(path):  # never true for a Clip or a bare "-" (probing would read stdin)
            samples: list[int] = []
            vector = self.embed_stream(path, on_speech=samples.append)
            return vector, samples[0] / SAMPLE_RATE
        speech = trim_silence(load_audio(path), name=str(path), vad=self.vad)
        vector = self.embed_waveform(speech, name=str(path), trim=False)
        return vector, len(speech) / SAMPLE_RATE

    def embed_stream(
        self, path: Source, on_speech: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """``embed_file`` through ``audio.stream_fragments``: the same vector, flat memory.

        The mean of the fragments' unit embeddings is accumulated batch by batch, then
        pooled (``pool_fragments``); ``on_speech(samples)`` is told the speech length (see
        ``stream_fragments``).
        """
        total = np.zeros(self.dim, np.float64)
        count = 0
        fragments = stream_fragments(
            path,
            batch=self.batch_size,
            on_speech=on_speech,
            min_speech=self.min_speech,
            vad=self.vad,
        )
        for batch in fragments:
            embeddings = self.embed_fragments(batch)
            total += embeddings.sum(axis=0, dtype=np.float64)
            count += len(embeddings)
        mean = (total / max(count, 1)).astype(np.float32)
        return self.pool_fragments(mean[None])

    def embed_speaker(self, paths: list[str | Path]) -> np.ndarray:
        """Several recordings of one speaker -> ``(D,)`` unit vector."""
        return pool(np.stack([self.embed_file(p) for p in paths]))
