"""model.py and embed.py: twin encoders, distances, strict checkpoints, embedding rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import VOICES, synth_voice
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import speakerid.embed as embed_mod
from speakerid.embed import Embedder, load_model, pool
from speakerid.errors import CheckpointError
from speakerid.model import (
    DISTANCES,
    Encoder,
    ModelConfig,
    file_sha256,
    load_encoder,
    save_encoder,
)

SMALL = dict(channels=32, embedding_dim=16)


@pytest.mark.parametrize(
    ("frontend", "arch"),
    [
        ("raw", "cnn1d"),
        ("mfcc", "cnn2d"),
        ("fbank", "ecapa_lite"),
        ("mfcc", "ecapa_lite"),
        ("fbank", "cnn2d"),
    ],
)
def test_every_combination_embeds(frontend: str, arch: str) -> None:
    enc = Encoder(ModelConfig(frontend=frontend, arch=arch, **SMALL)).eval()
    x = torch.randn(3, 48_000) * 0.1
    with torch.no_grad():
        out = enc(x)
        assert out.shape == (3, 16) and torch.isfinite(out).all()
        # twin: one set of weights, so the same input gives the same embedding on either side
        assert torch.allclose(enc(x[:1]), enc(x[:1]))


def test_distances() -> None:
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    for name, dist in DISTANCES.items():
        assert torch.allclose(dist(a, b), dist(b, a)), name
        assert (dist(a, a) < 1e-5).all(), name
        assert (dist(a, b) >= 0).all(), name
    assert (DISTANCES["cosine"](a, -a) <= 2.0 + 1e-6).all()


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_encoder(Encoder(ModelConfig(**SMALL)), path, threshold=0.7, info={"note": "x"})
    return path


def test_round_trip(ckpt: Path, tmp_path: Path) -> None:
    m = load_encoder(ckpt)
    assert m.threshold == 0.7 and m.info == {"note": "x"}
    assert m.fingerprint == file_sha256(ckpt)
    x = torch.randn(2, 48_000) * 0.1
    half = tmp_path / "h.safetensors"
    save_encoder(m.encoder, half, half=True)
    with torch.no_grad():
        again = load_encoder(ckpt).encoder(x)
        assert torch.equal(m.encoder(x), again)
        assert torch.allclose(load_encoder(half).encoder(x), again, atol=5e-2)


def _rewrite_metadata(src: Path, dst: Path, **changes: str) -> None:
    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
    meta.update(changes)
    save_file(load_file(str(src)), str(dst), metadata=meta)


def test_refusals(ckpt: Path, tmp_path: Path) -> None:
    with safe_open(str(ckpt), framework="pt") as fh:
        cfg = json.loads(fh.metadata()["config"])
    bad = {
        "mismatched": {"config": json.dumps({**cfg, "channels": 48})},
        "unknown_field": {"config": json.dumps({**cfg, "depth": 3})},
        "foreign": {"format": "something-else"},
    }
    cases = {}
    for name, change in bad.items():
        cases[name] = tmp_path / f"{name}.safetensors"
        _rewrite_metadata(ckpt, cases[name], **change)
    cases["random"] = tmp_path / "random.safetensors"
    cases["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    cases["truncated"] = tmp_path / "trunc.safetensors"
    cases["truncated"].write_bytes(ckpt.read_bytes()[:1000])
    cases["missing"] = tmp_path / "none.safetensors"
    for name, path in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_encoder(path)
        assert "\n" not in str(info.value), name


def test_tampered_weights_fail_the_checksum(ckpt: Path, tmp_path: Path) -> None:
    data = bytearray(ckpt.read_bytes())
    data[-10] ^= 0xFF
    tampered = tmp_path / "t.safetensors"
    tampered.write_bytes(bytes(data))
    load_encoder(tampered)  # still a valid file...
    with pytest.raises(CheckpointError, match="sha256"):  # ...but not the pinned one
        load_encoder(tampered, expected_sha256=file_sha256(ckpt))


def test_default_model_is_the_pinned_one() -> None:
    m = load_model(None)
    assert m.fingerprint == embed_mod.DEFAULT_MODEL_SHA256
    assert m.threshold is not None and 0 < m.threshold < 1


def test_default_model_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embed_mod, "PACKAGE_MODEL", tmp_path / "a.safetensors")
    monkeypatch.setattr(embed_mod, "REPO_MODEL", tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        load_model(None)


def test_path_and_array_embed_alike(ckpt: Path, tmp_path: Path) -> None:
    embedder = Embedder(load_encoder(ckpt), device="cpu")
    wav = synth_voice(VOICES["bob"], seconds=7.0)
    sf.write(tmp_path / "v.wav", wav, 16_000, subtype="FLOAT")
    from_file = embedder.embed_file(tmp_path / "v.wav")
    from_array = embedder.embed_waveform(wav)
    assert np.allclose(from_file, from_array, atol=1e-5)
    assert abs(np.linalg.norm(from_file) - 1.0) < 1e-5
    spk = embedder.embed_speaker([tmp_path / "v.wav", tmp_path / "v.wav"])
    assert np.allclose(spk, from_file, atol=1e-5)


def test_pool_is_normalised_mean() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert np.allclose(pool(x), [2**-0.5, 2**-0.5])
