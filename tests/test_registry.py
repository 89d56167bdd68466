"""The shipped models by name (speakerid.encoders.registry): pins, paths, checkout vs wheel.

The shipped files' paths are redirected into tmp_path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from encoder_helpers import assert_one_line, small_checkpoint, small_encoder

import speakerid.encoders.registry as registry
from speakerid.embedding.backends.torch import load_model
from speakerid.encoders.twin import save_encoder
from speakerid.errors import CheckpointError
from speakerid.pins import file_sha256

# ----------------------------------------------------------------------------- encoder


def _default() -> registry.ShippedModel:
    return registry.SHIPPED[registry.DEFAULT_MODEL]


def _pin(monkeypatch: pytest.MonkeyPatch, sha256: str) -> None:
    entry = dataclasses.replace(_default(), sha256=sha256)
    monkeypatch.setitem(registry.SHIPPED, entry.name, entry)


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


@pytest.mark.parametrize("name", sorted({*registry.SHIPPED, *registry.FUSIONS}))
def test_every_shipped_decision_calibration_matches_its_pin(name: str) -> None:
    model = registry.SHIPPED.get(name) or registry.FUSIONS[name]
    assert model.decision_file  # every shipped model decides at a false-accept rate
    decision = registry.decision_model(model.sha256)
    assert decision is not None and decision.n_target > 0 and decision.n_nontarget > 0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.safetensors")


def test_shipped_flags_name_the_options_that_embed_like_a_store_again() -> None:
    """A store's mismatch message tells which options reproduce its embeddings: the model's
    name, and the graph variant when that variant has an identity of its own (int8)."""
    accurate = registry.SHIPPED["accurate"]
    assert registry.shipped_flags(accurate.sha256) == "--model accurate --precision auto"
    assert registry.shipped_flags(registry.SHIPPED["ecapa"].sha256) == "--model ecapa"
    int8 = accurate.graph("int8")
    assert int8 is not None
    assert registry.shipped_flags(accurate.identity(int8)) == (
        "--model accurate --backend onnx --precision int8"
    )
    assert registry.shipped_flags(registry.FUSIONS["best"].sha256) == "--model best"
    assert registry.shipped_flags("0" * 64) is None
