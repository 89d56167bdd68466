"""Distillation teachers too slow to run on every training batch: label a fixed pool once.

Resemblyzer's GE2E is light enough to embed every batch as it is drawn (``train``'s default
teacher). CAM++ on a CPU is not: about 12 fragments a second on one thread, against a student
step of 64 fragments. ``TeacherPool`` draws ``size`` clean crops the way training batches are
drawn (uniform speakers, random crops, speed perturbation), has the teacher embed each once,
and then serves batches from the pool; the student sees the crops augmented (gain, reverb,
noise), so one teacher label serves many student inputs.

The labels are cached in the run folder (``teacher_pool.npz``) under a key naming the teacher's
weights, the pool's size and seed and the speakers' recordings, so a resumed or repeated run
does not embed them again; the crops themselves are redrawn from the seed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from speakerid.errors import DataError
from speakerid.lab.data import AudioBank, Sampler

if TYPE_CHECKING:
    from speakerid.embedding.embedder import BaseEmbedder

POOL_FILE = "teacher_pool.npz"


class TeacherPool:
    """Clean crops ``(size, samples)`` with their speakers and the teacher's unit embeddings.

    ``draw(batch)`` returns ``(waves, labels, targets)`` for a batch drawn uniformly from the
    pool with ``rng`` (which ``train`` reseeds on resume, as it does a ``Sampler``'s).
    """

    def __init__(
        self,
        waves: np.ndarray,
        labels: np.ndarray,
        targets: np.ndarray,
        seed: int,
        teacher: str | Path | None = None,
    ) -> None:
        if not len(waves) == len(labels) == len(targets):
            raise DataError("teacher pool: waves, labels and targets differ in length")
        self.waves = waves
        self.labels = labels
        self.targets = targets
        self.rng = np.random.default_rng(seed)
        self.teacher = teacher  # the checkpoint, for ``label``

    def label(self, waves: np.ndarray) -> np.ndarray:
        """The teacher's unit embeddings of other fragments ``(n, samples)`` (validation's)."""
        if self.teacher is None:
            raise DataError("this teacher pool was built without its teacher")
        return _open_teacher(self.teacher).embed_fragments(waves)

    @property
    def dim(self) -> int:
        return int(self.targets.shape[1])

    def draw(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.rng.integers(len(self.waves), size=batch)
        return self.waves[idx], self.labels[idx], self.targets[idx]

    @classmethod
    def build(
        cls,
        bank: AudioBank,
        teacher: str,
        size: int,
        seed: int,
        speed: tuple[float, float] | None,
        folder: Path,
        console: Console | None = None,
    ) -> TeacherPool:
        """Draw the pool and label it with ``teacher`` (a speakerid model: name or checkpoint).

        The teacher runs through the onnx backend when onnxruntime is installed (faster on a
        CPU), else torch. Labels found in ``folder / POOL_FILE`` under the same key are reused.
        """
        from speakerid.encoders.checkpoint import read_header
        from speakerid.encoders.registry import resolve_model

        if size < 1:
            raise DataError(f"teacher pool size must be positive, not {size}")
        console = console or Console(stderr=True, quiet=True)
        path, expected = resolve_model(teacher)
        fingerprint = read_header(path, expected).fingerprint
        # Crops come from their own seeded sampler, so that the pool does not depend on how
        # many batches anything else has drawn.
        waves, labels = Sampler(bank, seed=seed, speed=speed).classes(size)
        key = pool_key(fingerprint, size, seed, speed, bank)
        cache = folder / POOL_FILE
        targets = _cached(cache, key)
        if targets is None:
            console.print(f"teacher {teacher} labels {size} crops once")
            # embed_fragments batches by itself (the embedder's batch_size)
            targets = _open_teacher(path).embed_fragments(waves)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, key=np.array(key), targets=targets)
            tmp.replace(cache)
        return cls(waves, labels, targets, seed, path)


def pool_key(
    fingerprint: str, size: int, seed: int, speed: tuple[float, float] | None, bank: AudioBank
) -> str:
    """What the pool's labels depend on, hashed: teacher weights, size, seed, speed, audio."""
    text = json.dumps(
        {"teacher": fingerprint, "size": size, "seed": seed, "speed": speed, "files": bank.names}
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _cached(path: Path, key: str) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return data["targets"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache is recomputed, never trusted


def _open_teacher(path: str | Path) -> BaseEmbedder:
    """The teacher's embedder: onnxruntime when installed (faster on a CPU), else torch."""
    from speakerid.embedding.pipeline import open_embedder

    backend = "onnx" if _has_onnxruntime() else "torch"
    return open_embedder(path, backend=backend, precision="fp32")


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
