"""From recordings to embeddings: file -> fragments -> fragment embeddings -> one vector.

A recording's embedding is the L2-normalised mean of its fragment embeddings; a speaker's
is the L2-normalised mean of their recordings' embeddings (as Resemblyzer's
``embed_utterance`` / ``embed_speaker``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from speakerid.audio import load_audio, prepare
from speakerid.errors import CheckpointError
from speakerid.model import LoadedModel, load_encoder

PACKAGE_MODEL = Path(__file__).parent / "_models" / "default.safetensors"  # in a wheel
REPO_MODEL = Path(__file__).parent.parent / "models" / "default.safetensors"  # in a checkout
# sha256 of models/default.safetensors; the shipped model refuses to load if it differs.
DEFAULT_MODEL_SHA256 = "f9699bbb79eadabd27a4ed652d35e47c0b2b9ec98916557a16f8fa2b450e26e7"


def default_model_path() -> Path:
    """Where the shipped model lies: inside the installed package, else the source tree."""
    return PACKAGE_MODEL if PACKAGE_MODEL.is_file() else REPO_MODEL


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale vectors to unit length along ``axis`` (zero vectors stay zero)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def pool(embeddings: np.ndarray) -> np.ndarray:
    """Normalised mean of ``(n, D)`` unit vectors -> ``(D,)`` unit vector."""
    return l2_normalize(l2_normalize(np.asarray(embeddings, dtype=np.float32)).mean(axis=0))


class Embedder:
    """Runs a loaded encoder over fragments in batches, on CPU or GPU.

    Parameters
    ----------
    model: the checkpoint to embed with (see ``load_model``).
    device: ``"cpu"``, ``"cuda"`` or ``None`` for CUDA when available.
    batch_size: fragments per forward pass.
    """

    def __init__(self, model: LoadedModel, device: str | None = None, batch_size: int = 64):
        self.model = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.encoder = model.encoder.to(self.device).eval()
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return self.model.encoder.config.embedding_dim

    @torch.inference_mode()
    def embed_fragments(self, fragments: np.ndarray) -> np.ndarray:
        """``(n, FRAGMENT_SAMPLES)`` float32 -> ``(n, D)`` unit-length embeddings."""
        out = []
        for start in range(0, len(fragments), self.batch_size):
            chunk = np.ascontiguousarray(fragments[start : start + self.batch_size])
            batch = torch.from_numpy(chunk)
            out.append(self.encoder(batch.to(self.device)).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))

    def embed_waveform(self, wav: np.ndarray, name: str = "audio", trim: bool = True) -> np.ndarray:
        """One 16 kHz mono recording -> ``(D,)`` unit vector (mean of its fragments)."""
        return pool(self.embed_fragments(prepare(wav, name=name, trim=trim)))

    def embed_file(self, path: str | Path) -> np.ndarray:
        """An audio file -> ``(D,)`` unit vector. Raises ``AudioError`` for unusable audio."""
        return self.embed_waveform(load_audio(path), name=str(path))

    def embed_speaker(self, paths: list[str | Path]) -> np.ndarray:
        """Several recordings of one speaker -> ``(D,)`` unit vector."""
        return pool(np.stack([self.embed_file(p) for p in paths]))


def load_model(path: str | Path | None = None) -> LoadedModel:
    """Load a checkpoint, or the shipped default (sha256-checked) when ``path`` is None."""
    if path is not None:
        return load_encoder(path)
    default = default_model_path()
    if not default.is_file():
        raise CheckpointError(
            f"the shipped model is missing ({default}); reinstall speakerid or pass --model"
        )
    return load_encoder(default, expected_sha256=DEFAULT_MODEL_SHA256)
