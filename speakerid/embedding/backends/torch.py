"""The torch backend: a loaded checkpoint run by torch on CPU or GPU, in batches.

torch is imported inside the functions, so that importing this module (for its names, as
the CLI's options do) stays light; only building an ``Embedder`` loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from speakerid.audio import MIN_SPEECH_SECONDS, resolve_vad
from speakerid.embedding.constants import PRECISIONS, Precision
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.encoders.checkpoint import refuse_onnx
from speakerid.encoders.registry import resolve_model
from speakerid.errors import SpeakerIDError, require_torch
from speakerid.vectors import l2_normalize

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from speakerid.encoders.twin import LoadedModel


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 matrix products are emulated and no faster than fp32. (On CUDA, ``auto``
    stays fp32 too: the GPU benchmark measures both and fp32 is not the bottleneck there.)
    """
    if device.type != "cpu":
        return False
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device has native bf16, else ``fp32``."""
    if precision not in PRECISIONS:
        raise SpeakerIDError(f"unknown precision {precision!r}; one of {list(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        # emulated bf16 is many times slower, and oneDNN has no bf16 LSTM kernel for it
        raise SpeakerIDError(
            "--precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); this one has "
            "none: use auto or fp32"
        )
    return precision


class Embedder(BaseEmbedder):
    """Runs a loaded encoder over fragments in batches, on CPU or GPU (torch backend).

    Parameters
    ----------
    model: the checkpoint to embed with (see ``load_model``).
    device: ``"cpu"``, ``"cuda"`` or ``None`` for CUDA when available.
    batch_size: fragments per forward pass.
    precision: the encoder body's arithmetic: ``fp32``, ``bf16`` (autocast; the front-end and
        the whitening stay fp32), or ``auto``: bf16 on CPUs with native bf16, which about
        halves the LSTM's time at a cosine of at least 0.998 (median 0.9998) to the fp32
        embedding on the held-out fragments (docs/benchmarks.md).
    min_speech: seconds of speech (after trimming) a recording needs.
    vad: how speech is found before embedding (``audio.VADS``); None: ``audio.resolve_vad``.
    """

    def __init__(
        self,
        model: LoadedModel,
        device: str | None = None,
        batch_size: int = 64,
        precision: Precision | str = "auto",
        min_speech: float = MIN_SPEECH_SECONDS,
        vad: str | None = None,
    ):
        import torch

        self.model = model
        self.min_speech = min_speech
        self.vad = resolve_vad(vad)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.encoder = model.encoder.to(self.device).eval()
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, self.device)

    @property
    def dim(self) -> int:
        return self.model.encoder.config.embedding_dim

    def embed_fragments(self, fragments: np.ndarray) -> np.ndarray:
        """``(n, FRAGMENT_SAMPLES)`` float32 -> ``(n, D)`` unit-length embeddings."""
        import torch

        out = []
        bf16 = self.precision == "bf16"
        with torch.inference_mode():
            for start in range(0, len(fragments), self.batch_size):
                chunk = np.ascontiguousarray(fragments[start : start + self.batch_size])
                batch = torch.from_numpy(chunk).to(self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                    out.append(self.encoder(batch).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))


def load_model(spec: str | Path | None = None) -> LoadedModel:
    """Load a shipped model by name (``accurate``, ``fast``, ``ecapa``; sha256-checked) or a file.

    ``None`` is the default shipped model (``registry.DEFAULT_MODEL``).
    """
    path, sha256 = resolve_model(spec)
    require_torch("the torch backend")
    from speakerid.encoders.twin import load_encoder

    refuse_onnx(path)  # torch runs checkpoints; a graph needs --backend onnx
    return load_encoder(path, expected_sha256=sha256)
