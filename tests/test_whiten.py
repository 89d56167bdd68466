"""The WCCN back-end: the within-speaker whitening and its fit on a checkpoint's speakers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import quiet, tiny, write_corpus

from speakerid.encoders.twin import load_encoder, save_encoder
from speakerid.errors import DataError
from speakerid.lab.train import train
from speakerid.lab.whiten import fit_whitening, wccn


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic voices of ``test_train``."""
    return write_corpus(tmp_path_factory.mktemp("voices"))


def test_wccn_whitens_the_within_speaker_covariance() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 6))
    speakers = np.repeat(np.arange(20), 30)
    scale = np.array([3.0, 1.0, 0.5, 0.2, 0.1, 0.05])  # anisotropic within-speaker spread
    emb = centres[speakers] + rng.standard_normal((600, 6)) * scale
    mean, matrix = wccn(emb, speakers, shrinkage=1e-6)
    assert mean.shape == (6,) and matrix.shape == (6, 6)
    assert np.allclose(mean, emb.mean(axis=0), atol=1e-5)
    assert np.allclose(matrix, matrix.T, atol=1e-4)
    white = (emb - mean) @ matrix
    dev = white - np.stack([white[speakers == s].mean(axis=0) for s in speakers])
    assert np.allclose(dev.T @ dev / len(dev), np.eye(6), atol=1e-3)
    # Shrinkage pulls the map towards a scaled identity.
    _, shrunk = wccn(emb, speakers, shrinkage=1e3)
    assert np.allclose(shrunk / shrunk[0, 0], np.eye(6), atol=0.02)


def test_wccn_needs_within_speaker_variation() -> None:
    with pytest.raises(DataError):
        wccn(np.eye(4), np.arange(4), shrinkage=0.1)  # one sample per speaker


@pytest.mark.slow
def test_fit_whitening_chooses_on_validation_speakers(corpus: Path, tmp_path: Path) -> None:
    train(tiny(corpus, tmp_path, val_speakers=2, val_ways=(2,)), console=quiet())
    model = load_encoder(tmp_path / "best.safetensors")
    encoder, report = fit_whitening(model, [str(corpus)], shrinkages=(0.1, 1.0))
    assert report["speakers"] == 4 and report["validation_speakers"] == 2
    assert set(report["validation"]) == {"none", "0.1", "1.0"}
    assert report["shrinkage"] in (0.1, 1.0)
    assert isinstance(report["better_than_none"], bool)
    assert all(0.0 <= v["eer"] <= 1.0 for v in report["validation"].values())
    assert encoder.config == replace(model.encoder.config, whiten=True)
    body = {k: v for k, v in encoder.state_dict().items() if not k.startswith("whitening.")}
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in body.items())
    assert not torch.equal(encoder.whitening.matrix, torch.eye(16))
    # Refitting a whitened checkpoint starts from its body: the same result.
    save_encoder(encoder, tmp_path / "w.safetensors", info=model.info)
    again, _ = fit_whitening(load_encoder(tmp_path / "w.safetensors"), [str(corpus)], (0.1, 1.0))
    for key, value in again.state_dict().items():
        assert torch.allclose(value, encoder.state_dict()[key], atol=1e-5), key
