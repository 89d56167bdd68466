"""Distilling from a speakerid model: a pool of crops labelled once, cached, then trained on."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_checkpoint
from test_train import quiet, tiny, write_corpus

import speakerid.embedding.pipeline
from speakerid.embedding.pipeline import open_embedder
from speakerid.encoders.twin import Encoder, ModelConfig, load_encoder, save_encoder
from speakerid.errors import CheckpointError, DataError
from speakerid.lab.data import AudioBank, scan_corpus
from speakerid.lab.teachers import POOL_FILE, TeacherPool
from speakerid.lab.train import train

# Slow integration tests: CI runs them (README, "Install, test, run").
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("voices"), n_speakers=4)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("teacher") / "t.safetensors", seed=3)


def _bank(corpus: Path) -> AudioBank:
    recordings = scan_corpus(corpus)
    return AudioBank.load(recordings, sorted({r.speaker for r in recordings}))


def _refuse_to_embed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(speakerid.embedding.pipeline, "open_embedder", refuse)


def test_pool_is_labelled_by_the_teacher_once_and_then_read_from_its_cache(
    corpus: Path, teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = _bank(corpus)
    pool = TeacherPool.build(bank, str(teacher), 6, seed=0, speed=(0.9, 1.1), folder=tmp_path)
    assert pool.waves.shape == (6, 48000) and pool.labels.shape == (6,) and pool.dim == 16
    expected = open_embedder(teacher, backend="torch", precision="fp32").embed_fragments(pool.waves)
    np.testing.assert_allclose(pool.targets, expected, atol=1e-4)  # the teacher's own vectors
    np.testing.assert_allclose(np.linalg.norm(pool.targets, axis=1), 1.0, atol=1e-5)
    assert (tmp_path / POOL_FILE).is_file()

    _refuse_to_embed(monkeypatch)
    again = TeacherPool.build(bank, str(teacher), 6, seed=0, speed=(0.9, 1.1), folder=tmp_path)
    np.testing.assert_array_equal(again.waves, pool.waves)  # the crops are redrawn alike
    np.testing.assert_array_equal(again.targets, pool.targets)
    with pytest.raises(AssertionError, match="ran again"):  # another pool: new labels needed
        TeacherPool.build(bank, str(teacher), 6, seed=1, speed=(0.9, 1.1), folder=tmp_path)

    waves, labels, targets = pool.draw(4)
    assert waves.shape == (4, 48000) and labels.shape == (4,) and targets.shape == (4, 16)
    rows = [int(np.flatnonzero((pool.waves == w).all(axis=1))[0]) for w in waves]
    np.testing.assert_array_equal(targets, pool.targets[rows])  # each crop keeps its label


def test_a_damaged_pool_cache_is_recomputed(corpus: Path, teacher: Path, tmp_path: Path) -> None:
    (tmp_path / POOL_FILE).write_bytes(b"not an npz")
    pool = TeacherPool.build(_bank(corpus), str(teacher), 4, seed=0, speed=None, folder=tmp_path)
    assert pool.targets.shape == (4, 16) and np.isfinite(pool.targets).all()


@pytest.mark.parametrize("embedding_dim", [16, 12])  # the teacher's size / projected onto it
def test_distill_from_a_speakerid_teacher(
    corpus: Path, teacher: Path, tmp_path: Path, embedding_dim: int
) -> None:
    cfg = tiny(
        corpus,
        tmp_path,
        objective="distill",
        teacher=str(teacher),
        teacher_pool=8,
        test_speakers=2,
        steps=2,
        batch_size=2,
        embedding_dim=embedding_dim,
        relation_weight=0.5,
        aam_weight=0.1,
        select_on="distill",
    )
    last = train(cfg, console=quiet())["history"]
    assert 0.0 <= last["distill"] <= 2.0 and math.isfinite(last["relation"])
    # validation measures the student against the teacher's own labels of the held-out
    # fragments, through the projection when the sizes differ, and selects on it
    assert 0.0 <= last["val_distill"] <= 2.0
    assert (tmp_path / POOL_FILE).is_file()
    model = load_encoder(tmp_path / "best.safetensors")
    assert model.encoder.config.embedding_dim == embedding_dim  # the projection is left out


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"objective": "aam"}, "needs the distill objective"),
        ({"init_teacher": True}, "needs teacher ge2e"),
        ({"mix_prob": 0.5}, "needs teacher ge2e"),
        ({"teacher_pool": 0}, "must be positive"),
    ],
)
def test_pool_teacher_settings_that_cannot_work_are_refused(
    corpus: Path, teacher: Path, tmp_path: Path, change: dict[str, Any], text: str
) -> None:
    cfg = tiny(corpus, tmp_path, objective="distill", teacher=str(teacher), test_speakers=2)
    with pytest.raises(DataError, match=text):
        train(cfg.changed(**change), console=quiet())


def test_init_from_a_whitened_checkpoint_loads_its_body_and_leaves_the_back_end(
    corpus: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    shipped = Encoder(ModelConfig(channels=16, embedding_dim=16, whiten=True))
    shipped.whitening.matrix.mul_(2.0)  # a fitted back-end, not the identity
    save_encoder(shipped, tmp_path / "shipped.safetensors", threshold=0.5)
    cfg = tiny(corpus, tmp_path / "run", init_from=str(tmp_path / "shipped.safetensors"))
    cfg = cfg.changed(channels=16, test_speakers=2, steps=1, lr=1e-12)
    train(cfg, console=quiet())
    started = load_encoder(tmp_path / "run" / "best.safetensors").encoder
    assert started.whitening is None
    weights = dict(shipped.body.named_parameters())  # (batch-norm statistics move in training)
    for name, value in started.body.named_parameters():
        torch.testing.assert_close(value, weights[name], atol=1e-6, rtol=0)
    with pytest.raises(CheckpointError, match="model settings differ"):
        train(cfg.changed(embedding_dim=12, out=str(tmp_path / "other")), console=quiet())


def test_the_projection_starts_at_the_least_squares_map(
    corpus: Path, teacher: Path, tmp_path: Path
) -> None:
    from speakerid.lab.train import fit_projection
    from speakerid.lab.validation import batched

    pool = TeacherPool.build(_bank(corpus), str(teacher), 64, 0, None, tmp_path)
    torch.manual_seed(0)
    student = Encoder(ModelConfig(channels=16, embedding_dim=24))
    project = torch.nn.Linear(24, pool.dim)
    fit_projection(project, student, pool, torch.device("cpu"))
    raw = torch.from_numpy(batched(student.eval(), pool.waves, torch.device("cpu"), 64))
    with torch.no_grad():
        fitted = ((project(raw) - torch.from_numpy(pool.targets)) ** 2).mean()
        other = torch.nn.Linear(24, pool.dim)
        assert fitted < ((other(raw) - torch.from_numpy(pool.targets)) ** 2).mean()


def test_a_run_keeps_its_final_encoder_and_a_resume_at_the_end_rewrites_it(
    corpus: Path, teacher: Path, tmp_path: Path
) -> None:
    cfg = tiny(corpus, tmp_path, test_speakers=2, steps=2)
    train(cfg, console=quiet())
    final = load_encoder(tmp_path / "final.safetensors")
    assert final.info["step"] == 2 and set(final.info["validation"]) == {"acc2", "eer", "threshold"}
    assert final.threshold == pytest.approx(final.info["validation"]["threshold"])
    (tmp_path / "final.safetensors").unlink()
    train(cfg.changed(resume=True), console=quiet())  # nothing left to train: only saved
    again = load_encoder(tmp_path / "final.safetensors")
    assert again.threshold == final.threshold and again.info["step"] == 2
    for name, value in again.encoder.state_dict().items():
        torch.testing.assert_close(value, final.encoder.state_dict()[name], atol=0, rtol=0)
