"""Training-only parts: pair distances and the heads that turn embeddings into a loss.

The shipped encoder (``model.py``) maps audio to an embedding and nothing else; what
training puts on top of it lives here and is never saved in a checkpoint:

- ``DISTANCES``: row-wise distances between the two sides of a pair (the case study's
  euclidean, cosine and l1), used by the ``bce`` objective's ``PairBCEHead``.
- ``AAMHead``: additive angular margin softmax (ArcFace/AAM) over the training speakers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 distance, (N, D) x (N, D) -> (N,)."""
    return (a - b).pow(2).sum(dim=-1).clamp_min(1e-12).sqrt()


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise 1 - cosine similarity, in [0, 2]."""
    return 1.0 - F.cosine_similarity(a, b, dim=-1)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise L1 distance."""
    return (a - b).abs().sum(dim=-1)


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euclidean": euclidean,
    "cosine": cosine_distance,
    "l1": l1,
}


class PairBCEHead(nn.Module):
    """Distance -> same-speaker logit: ``bias - exp(log_scale) * d`` (monotone in d)."""

    def __init__(self, distance: str) -> None:
        super().__init__()
        self.distance = DISTANCES[distance]
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.ones(()))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.bias - self.log_scale.exp() * self.distance(a, b)


class AAMHead(nn.Module):
    """Additive angular margin softmax over ``n_classes`` speakers."""

    def __init__(self, dim: int, n_classes: int, margin: float, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb.float()), F.normalize(self.weight)).clamp(
            -1 + 1e-6, 1 - 1e-6
        )
        theta = torch.acos(cos)
        target = torch.cos(theta + self.margin)
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        logits = self.scale * torch.where(onehot, target, cos)
        return F.cross_entropy(logits, labels)
