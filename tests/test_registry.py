"""The shipped models by name (speakerid.encoders.registry): pins, paths, checkout vs wheel.

The shipped files' paths are redirected into tmp_path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import speakerid.encoders.registry as registry
from speakerid.audio import FRAGMENT_SAMPLES
from speakerid.embedding.backends.torch import load_model
from speakerid.encoders.twin import (
    Encoder,
    ModelConfig,
    file_sha256,
    save_encoder,
)
from speakerid.errors import CheckpointError

SMALL = {"channels": 32, "embedding_dim": 16}


def waves(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, FRAGMENT_SAMPLES, generator=gen)


def small_encoder(seed: int = 0, **overrides: object) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(ModelConfig(**{**SMALL, **overrides})).eval()


def assert_one_line(exc: pytest.ExceptionInfo[CheckpointError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# ----------------------------------------------------------------------------- encoder


def _default() -> registry.ShippedModel:
    return registry.SHIPPED[registry.DEFAULT_MODEL]


def _pin(monkeypatch: pytest.MonkeyPatch, sha256: str) -> None:
    entry = dataclasses.replace(_default(), sha256=sha256)
    monkeypatch.setitem(registry.SHIPPED, entry.name, entry)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    save_encoder(small_encoder(seed=3), path, threshold=0.625, info={"note": "x", "step": 7})
    return path


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """Point the package and checkout model folders into tmp_path (both absent at first)."""
    package, repo = tmp_path / "pkg", tmp_path / "repo"
    monkeypatch.setattr(registry, "PACKAGE_DIR", package)
    monkeypatch.setattr(registry, "REPO_DIR", repo)
    return package / _default().filename, repo / _default().filename


def test_shipped_model_missing(shipped: tuple[Path, Path]) -> None:
    _, repo = shipped
    assert registry.shipped_path(_default()) == repo
    with pytest.raises(CheckpointError) as exc:
        load_model(None)
    message = assert_one_line(exc)
    assert "missing" in message and "--model" in message


def test_shipped_model_in_checkout_is_loaded_and_pinned(
    shipped: tuple[Path, Path], ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, repo = shipped
    repo.parent.mkdir(parents=True)
    repo.write_bytes(ckpt.read_bytes())
    _pin(monkeypatch, file_sha256(ckpt))

    model = load_model(None)

    assert model.path == repo and model.fingerprint == file_sha256(ckpt)
    assert model.threshold == 0.625
    assert load_model(registry.DEFAULT_MODEL).path == repo  # the name means the same file


def test_installed_package_model_wins_over_checkout(
    shipped: tuple[Path, Path], ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package, repo = shipped
    for path in (package, repo):
        path.parent.mkdir(parents=True)
    package.write_bytes(ckpt.read_bytes())
    save_encoder(small_encoder(seed=9), repo)
    _pin(monkeypatch, file_sha256(package))

    assert registry.shipped_path(_default()) == package
    assert load_model(None).path == package


def test_shipped_model_replaced_is_refused(
    shipped: tuple[Path, Path], ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, repo = shipped
    repo.parent.mkdir(parents=True)
    save_encoder(small_encoder(seed=9), repo)  # a valid model, but not the pinned one
    _pin(monkeypatch, file_sha256(ckpt))
    with pytest.raises(CheckpointError) as exc:
        load_model(None)
    assert "does not match the shipped model" in assert_one_line(exc)
    # An explicit path is the user's choice: no pin applies.
    assert load_model(repo).fingerprint == file_sha256(repo)


@pytest.mark.parametrize("name", sorted(registry.SHIPPED))
def test_every_shipped_model_matches_its_pin(name: str) -> None:
    model = load_model(name)
    assert model.fingerprint == registry.SHIPPED[name].sha256
    assert model.threshold is not None and -1.0 < model.threshold < 1.0
    assert set(model.info["split"]) >= {"val", "test"}  # benchmarks hold these speakers out
