"""From recordings to embeddings: file -> fragments -> fragment embeddings -> one vector.

A recording's embedding is the L2-normalised mean of its fragment embeddings; a speaker's
is the L2-normalised mean of their recordings' embeddings (as Resemblyzer's
``embed_utterance`` / ``embed_speaker``).

Two backends run the encoder: ``backends.torch.Embedder`` and ``backends.onnx.OnnxEmbedder``
(onnxruntime, no torch). Both share ``BaseEmbedder``'s path from audio to one vector, and
``open_embedder`` picks one. torch is imported only when the torch backend is used, so that
commands that embed nothing start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from speakerid.audio import MIN_SPEECH_SECONDS, resolve_vad
from speakerid.embedding.constants import BACKEND_ENV, BACKENDS
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.encoders.registry import FUSIONS
from speakerid.errors import SpeakerIDError


def resolve_backend(backend: str | None) -> str:
    """``backend``, else ``$SPEAKERID_BACKEND``, else ``onnx``; refuses unknown names.

    onnx is the default because it is the one every install has (the runtime install has
    no torch), its shipped graphs need no export, and on CPU it is the faster one
    (docs/benchmarks.md). torch stays for GPUs, training and checkpoints being worked on.
    """
    name = backend or os.environ.get(BACKEND_ENV) or "onnx"
    if name not in BACKENDS:
        raise SpeakerIDError(f"unknown backend {name!r}; one of {list(BACKENDS)}")
    return name


def open_embedder(
    model: str | Path | None = None,
    backend: str | None = None,
    precision: str = "auto",
    min_speech: float = MIN_SPEECH_SECONDS,
    vad: str | None = None,
) -> BaseEmbedder:
    """The embedder every runtime command uses: ``model`` run by ``backend``.

    ``model``: a shipped name, a checkpoint path, an ``.onnx`` file (onnx backend) or None
    for the default. A shipped fusion (``best``) opens its members on ``backend`` and fuses
    them (``fused.FusedEmbedder``). ``onnx`` runs onnxruntime on a graph (shipped, or
    exported once from a checkpoint into the cache, see ``backends.onnx``) and never imports
    torch. ``precision``: torch ``auto | fp32 | bf16``; onnx ``auto`` (the model's first
    graph, fp32) or a shipped graph's variant (``fp32``, ``accurate``'s ``int8``).
    ``vad``: how speech is found before embedding (``audio.VADS``; None: ``$SPEAKERID_VAD``,
    else ``audio.DEFAULT_VAD``).
    """
    vad = resolve_vad(vad)
    if min_speech <= 0:
        raise SpeakerIDError(f"--min-speech must be positive, not {min_speech}")
    fusion = FUSIONS.get(str(model)) if model is not None else None
    if fusion is not None:
        from speakerid.embedding.fused import FusedEmbedder

        first, second = (
            open_embedder(name, backend, precision, min_speech, vad) for name in fusion.members
        )
        return FusedEmbedder(first, second, fusion.weight, fusion.threshold)
    if resolve_backend(backend) == "onnx":
        from speakerid.embedding.backends.onnx import OnnxEmbedder, load_onnx_model

        return OnnxEmbedder(load_onnx_model(model, precision), min_speech=min_speech, vad=vad)
    from speakerid.embedding.backends.torch import Embedder, load_model

    return Embedder(load_model(model), precision=precision, min_speech=min_speech, vad=vad)


def open_soon(
    model: str | Path | None = None, backend: str | None = None, precision: str = "auto"
) -> None:
    """Start loading, on a second thread, what ``open_embedder(model, backend, precision)``
    will run: each shipped graph's session on the onnx backend (``backends.onnx.open_soon``;
    both members of a fusion). Nothing for the torch backend or an unknown name: the
    embedder's opening handles and words those."""
    try:
        if resolve_backend(backend) != "onnx":
            return
    except SpeakerIDError:
        return
    from speakerid.embedding.backends.onnx import open_soon as start

    fusion = FUSIONS.get(str(model)) if model is not None else None
    for name in fusion.members if fusion is not None else (model,):
        start(name, precision)
