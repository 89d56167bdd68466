"""``best``: two shipped models over the same fragments, their vectors fused block-wise.

Each member embeds the same fragments to unit rows ``a_f`` and ``e_f``. With ``w`` the first
member's weight (``registry.ShippedFusion.weight``):

- a fragment's fused row is ``concat(sqrt(w) a_f, sqrt(1 - w) e_f)``, a unit row, so code
  that scores single fragments works unchanged;
- a recording's fused vector is ``concat(sqrt(w) pool(a_f), sqrt(1 - w) pool(e_f))``: each
  member pooled on its own (``vectors.pool``), then weighted (``pool_fragments``). It is a
  unit vector, and its cosine with another is ``w cos_a + (1 - w) cos_e``.

Above the recording (speakers' means, search, decisions) fused vectors are ordinary unit
vectors. The store identity is ``registry.fusion_fingerprint`` of the members' identities
and ``w``, so a store made with a fusion refuses its members and the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speakerid.embedding.embedder import BaseEmbedder
from speakerid.encoders.registry import fusion_fingerprint
from speakerid.errors import SpeakerIDError
from speakerid.vectors import pool


def fuse(first: np.ndarray, second: np.ndarray, weight: float) -> np.ndarray:
    """Unit vectors ``(..., D1)`` and ``(..., D2)`` -> ``(..., D1 + D2)`` unit vectors
    ``concat(sqrt(weight) first, sqrt(1 - weight) second)``."""
    return np.concatenate(
        [np.sqrt(weight) * first, np.sqrt(1.0 - weight) * second], axis=-1
    ).astype(np.float32)


@dataclass(frozen=True)
class FusedModel:
    """What a fusion says about itself (``embedder.ModelInfo``)."""

    threshold: float | None  # its fixed cosine threshold (a shipped fusion's), None if none
    fingerprint: str  # ``registry.fusion_fingerprint`` of the members and the weight
    path: Path  # what messages name: the first member's file
    weight: float  # the first member's share of the cosine


class FusedEmbedder(BaseEmbedder):
    """Two embedders over the same fragments, fused (see the module's docstring).

    ``first`` and ``second`` run on the same backend or not; they must trim speech the same
    way (``vad``, ``min_speech``), since they see the same fragments.
    """

    def __init__(
        self,
        first: BaseEmbedder,
        second: BaseEmbedder,
        weight: float,
        threshold: float | None = None,
    ) -> None:
        if not 0.0 < weight < 1.0:
            raise SpeakerIDError(f"a fusion weight must lie in (0, 1), not {weight}")
        if (first.vad, first.min_speech) != (second.vad, second.min_speech):
            raise SpeakerIDError("the members of a fusion must find speech the same way")
        self.members = (first, second)
        self.vad = first.vad
        self.min_speech = first.min_speech
        self.batch_size = first.batch_size  # each member batches its own forward passes
        fingerprint = fusion_fingerprint(
            (first.model.fingerprint, second.model.fingerprint), weight
        )
        self.model = FusedModel(threshold, fingerprint, Path(first.model.path), weight)

    @property
    def dim(self) -> int:
        return self.members[0].dim + self.members[1].dim

    def identity(self) -> tuple[str, int, str]:
        """(fingerprint, embedding size, both members' absolute paths joined by `` + ``)."""
        paths = " + ".join(member.identity()[2] for member in self.members)
        return self.model.fingerprint, self.dim, paths

    def embed_fragments(self, fragments: np.ndarray) -> np.ndarray:
        """``(n, FRAGMENT_SAMPLES)`` float32 -> ``(n, D1 + D2)`` fused unit rows."""
        first, second = (member.embed_fragments(fragments) for member in self.members)
        return fuse(first, second, self.model.weight)

    def pool_fragments(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, D1 + D2)`` fused rows -> ``(D1 + D2,)``: each member's block pooled on its
        own, then weighted. ``pool`` makes every row unit first, so a block's scale
        (``sqrt(w)``) does not change its pool."""
        split = self.members[0].dim
        first, second = pool(embeddings[:, :split]), pool(embeddings[:, split:])
        return fuse(first, second, self.model.weight)
