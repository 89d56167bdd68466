"""Training-only distances and heads (losses.py)."""

from __future__ import annotations

import pytest
import torch

from speakerid.lab.losses import DISTANCES, AAMHead, PairBCEHead, cosine_distance, euclidean, l1


@pytest.fixture(scope="module")
def vectors() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(64, 16, generator=gen), torch.randn(64, 16, generator=gen)


@pytest.mark.parametrize("name", sorted(DISTANCES))
def test_distance_properties(name: str, vectors: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = vectors
    dist = DISTANCES[name]
    d = dist(a, b)
    assert d.shape == (64,)
    assert (d >= 0).all() and (d > 1e-3).all()
    torch.testing.assert_close(dist(a, b), dist(b, a))
    assert (dist(a, a) < 1e-5).all()


def test_distance_values(vectors: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = vectors
    torch.testing.assert_close(euclidean(a, b), torch.linalg.vector_norm(a - b, dim=-1))
    torch.testing.assert_close(l1(a, b), (a - b).abs().sum(-1))
    cos = cosine_distance(a, b)
    assert (cos >= 0).all() and (cos <= 2).all()
    torch.testing.assert_close(cosine_distance(a, -a), torch.full((64,), 2.0))
    torch.testing.assert_close(cosine_distance(a, 3.0 * a), torch.zeros(64), atol=1e-6, rtol=0)
    # orthogonal vectors sit at distance 1
    e = torch.eye(2)
    torch.testing.assert_close(cosine_distance(e[:1], e[1:]), torch.ones(1))


def test_euclidean_gradient_is_finite_at_zero() -> None:
    """The clamp before sqrt keeps training finite when a pair's embeddings coincide."""
    a = torch.ones(2, 4, requires_grad=True)
    euclidean(a, a.detach()).sum().backward()
    assert torch.isfinite(a.grad).all()


def test_pair_head_logit_falls_with_distance() -> None:
    head = PairBCEHead("euclidean")
    a = torch.zeros(3, 4)
    b = torch.tensor([[0.0] * 4, [1.0] + [0.0] * 3, [3.0] + [0.0] * 3])
    logits = head(a, b)
    assert logits.shape == (3,) and (logits.diff() < 0).all()


def test_aam_margin_raises_the_loss_of_correct_embeddings() -> None:
    torch.manual_seed(0)
    plain = AAMHead(dim=8, n_classes=4, margin=0.0, scale=30.0)
    margin = AAMHead(dim=8, n_classes=4, margin=0.2, scale=30.0)
    margin.load_state_dict(plain.state_dict())
    labels = torch.arange(4)
    emb = plain.weight.detach().clone()  # each embedding on its own class centre
    assert margin(emb, labels) > plain(emb, labels)
    assert plain(emb, labels) < plain(emb, labels.roll(1))
