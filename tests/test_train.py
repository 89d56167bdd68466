"""train.py: tiny synthetic speakers learn on CPU; checkpoints, resume, determinism."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import Voice, synth_voice

from speakerid.errors import DataError
from speakerid.model import load_encoder
from speakerid.train import TrainConfig, spec_augment, train

N_SPEAKERS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 source-filter voices (pitch 95-240 Hz, distinct formants), 2 recordings of 6 s."""
    root = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(0)
    for s in range(N_SPEAKERS):
        pitch = 95.0 + s * 20.0
        f1, f2, f3 = 500 + 60 * ((s * 3) % 8), 1100 + 140 * ((s * 5) % 8), 2400 + 90 * s
        voice = Voice(pitch, ((f1, 80.0), (f2, 110.0), (f3, 150.0)))
        for r in range(2):
            wav = synth_voice(voice, seconds=6.0, seed=int(rng.integers(1 << 30)))
            path = root / f"spk{s}" / f"rec{r}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav, 16_000)
    return root


def small(corpus: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=(str(corpus),),
        out=str(out),
        objective="aam",
        channels=32,
        embedding_dim=32,
        steps=40,
        batch_size=16,
        test_speakers=4,
        val_every=40,
        val_ways=(4,),
        val_trials=300,
        augment=False,
        device="cpu",
        lr=3e-3,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_aam_learns_synthetic_speakers(corpus: Path, tmp_path: Path) -> None:
    summary = train(small(corpus, tmp_path / "aam"))
    acc = summary["history"]["acc4"]
    assert acc >= 0.6, f"1-shot 4-way accuracy {acc} (chance 0.25)"
    model = load_encoder(summary["best"])
    assert model.threshold is not None
    assert len(model.info["split"]["test"]) == 4
    assert not set(model.info["split"]["test"]) & set(model.info["split"]["train"])
    assert (tmp_path / "aam" / "training_curves.png").stat().st_size > 0


def test_case_study_bce_runs_and_saves(corpus: Path, tmp_path: Path) -> None:
    cfg = small(
        corpus,
        tmp_path / "bce",
        objective="bce",
        frontend="mfcc",
        arch="cnn2d",
        steps=4,
        val_every=2,
        distance="cosine",
        optimizer="radam",
    )
    summary = train(cfg)
    assert [h["step"] for h in json.loads((tmp_path / "bce" / "history.json").read_text())] == [
        2,
        4,
    ]
    assert 0.0 <= summary["history"]["pair_acc"] <= 1.0
    load_encoder(summary["best"])


def test_resume_continues(corpus: Path, tmp_path: Path) -> None:
    train(small(corpus, tmp_path / "r", steps=4, val_every=2))
    summary = train(small(corpus, tmp_path / "r", steps=6, val_every=2, resume=True))
    steps = [h["step"] for h in json.loads((tmp_path / "r" / "history.json").read_text())]
    assert steps == [2, 4, 6] and summary["history"]["step"] == 6


def test_same_seed_same_run(corpus: Path, tmp_path: Path) -> None:
    a = train(small(corpus, tmp_path / "a", steps=3, val_every=3))["history"]
    b = train(small(corpus, tmp_path / "b", steps=3, val_every=3))["history"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert a["acc4"] == b["acc4"]


@pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None, reason="needs resemblyzer")
def test_distillation_step_runs(corpus: Path, tmp_path: Path) -> None:
    summary = train(
        small(
            corpus,
            tmp_path / "d",
            objective="distill",
            steps=2,
            val_every=2,
            embedding_dim=256,
            augment=True,
            spec_augment=True,
            mix_prob=0.5,
        )
    )
    assert 0.0 <= summary["history"]["distill"] <= 2.0


def test_bad_settings_are_refused(corpus: Path, tmp_path: Path) -> None:
    for bad in ({"objective": "triplet"}, {"distance": "hamming"}, {"optimizer": "sgd"}):
        with pytest.raises(DataError):
            train(small(corpus, tmp_path / "x", **bad))
    with pytest.raises(DataError):
        train(small(corpus, tmp_path / "x", test_speakers=20))


def test_spec_augment_masks() -> None:
    import torch

    feats = torch.ones(4, 80, 300)
    out = spec_augment(feats, torch.Generator().manual_seed(0))
    assert out.shape == feats.shape and out.min() == 0.0 and out.mean() > 0.7
    raw = torch.ones(2, 1, 1000)
    assert torch.equal(spec_augment(raw, torch.Generator()), raw)
