"""The onnx backend: export, the cache, and parity with the torch backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import VOICES, synth_voice

from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.embedding.pipeline import open_embedder
from speakerid.encoders import registry
from speakerid.encoders.twin import Encoder, ModelConfig, save_encoder
from speakerid.errors import CheckpointError
from speakerid.pins import file_sha256

pytest.importorskip("onnxruntime")
from speakerid.embedding.backends.onnx import (
    OnnxEmbedder,
    cached_onnx_path,
    export_onnx,
    exported_from,
    load_onnx_model,
    open_onnx,
)
from speakerid.encoders.checkpoint import read_header

PARITY = 0.9999  # least cosine between the two backends' embeddings of the same audio

TINY = {
    "fbank-ecapa": ModelConfig(channels=32, embedding_dim=16),
    "powermel-lstm-whiten": ModelConfig(
        frontend="powermel",
        arch="lstm",
        stem_stride=3,
        channels=24,
        embedding_dim=12,
        lstm_layers=2,
        whiten=True,
    ),
    "powermel-lstm-windows": ModelConfig(
        frontend="powermel",
        arch="lstm",
        stem_stride=3,
        channels=16,
        embedding_dim=8,
        lstm_layers=1,
        windows=2,
    ),
    "mfcc-cnn2d": ModelConfig(frontend="mfcc", arch="cnn2d", channels=16, embedding_dim=8),
    "raw-cnn1d": ModelConfig(frontend="raw", arch="cnn1d", channels=16, embedding_dim=8),
}
# Every model that ships with speakerid must run on onnx.
SHIPPED = list(registry.SHIPPED)


def _recordings() -> list[np.ndarray]:
    """Speech-like audio: a short, a 3-s and a long (several fragments) recording."""
    voices = list(VOICES.values())
    return [
        synth_voice(voices[0], seconds=1.7, seed=1),
        synth_voice(voices[1], seconds=3.0, seed=2),
        synth_voice(voices[2], seconds=7.5, seed=3),
    ]


def _tiny(tmp_path: Path, name: str) -> Path:
    torch.manual_seed(0)
    encoder = Encoder(TINY[name])
    if encoder.whitening is not None:  # a fitted-looking whitening, not the identity
        dim = TINY[name].embedding_dim
        encoder.whitening.mean.normal_(0.0, 0.05)
        encoder.whitening.matrix.copy_(torch.eye(dim) + 0.1 * torch.randn(dim, dim))
    return_path = tmp_path / f"{name}.safetensors"
    save_encoder(encoder, return_path, threshold=0.3)
    return return_path


def _assert_parity(torch_side: Embedder, onnx_side: OnnxEmbedder) -> None:
    for wav in _recordings():
        a = torch_side.embed_waveform(wav)
        b = onnx_side.embed_waveform(wav)
        assert a.shape == b.shape
        assert float(a @ b) >= PARITY, float(a @ b)


@pytest.mark.parametrize("name", list(TINY))
def test_exported_tiny_models_match_torch(name: str, tmp_path: Path) -> None:
    ckpt = _tiny(tmp_path, name)
    out = export_onnx(ckpt, tmp_path / f"{name}.onnx")
    model = open_onnx(out)
    assert model.fingerprint == file_sha256(ckpt)  # the store identity is the checkpoint's
    assert model.threshold == pytest.approx(0.3)
    _assert_parity(Embedder(load_model(ckpt), precision="fp32"), OnnxEmbedder(model))


@pytest.mark.slow
@pytest.mark.parametrize("shipped", SHIPPED)
def test_shipped_models_match_torch_on_onnx(shipped: str) -> None:
    torch_side = open_embedder(shipped, "torch", precision="fp32")
    onnx_side = open_embedder(shipped, "onnx")
    assert isinstance(onnx_side, OnnxEmbedder)
    assert onnx_side.model.fingerprint == torch_side.model.fingerprint
    assert onnx_side.model.threshold == torch_side.model.threshold
    _assert_parity(torch_side, onnx_side)


def test_shipped_graphs_are_pinned_and_run_as_shipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_cache: Path
) -> None:
    """A shipped model's graph is the pinned file, with the checkpoint's identity (fp32) or
    its own (any other variant, e.g. accurate's int8); nothing is exported into the cache,
    and a changed byte is refused."""
    graphs = [(m, g) for m in registry.SHIPPED.values() for g in m.graphs]
    assert graphs  # the default model ships one

    def exported() -> list[Path]:  # the optimised-session cache (``sessions/``) may grow
        return sorted(p for p in onnx_cache.rglob("*") if "sessions" not in p.parts)

    cached = exported()
    for model, graph in graphs:
        path = registry.shipped_path(graph)
        assert file_sha256(path) == graph.sha256
        loaded = load_onnx_model(model.name, graph.variant)
        assert loaded.onnx_path == path and loaded.fingerprint == model.identity(graph)
        expected = model.sha256 if graph.variant == "fp32" else graph.sha256
        assert loaded.fingerprint == expected
    assert exported() == cached
    model, graph = graphs[0]
    tampered = bytearray(registry.shipped_path(graph).read_bytes())
    tampered[-1] ^= 1
    (tmp_path / graph.filename).write_bytes(bytes(tampered))
    monkeypatch.setattr(registry, "PACKAGE_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="pinned"):
        load_onnx_model(model.name)


def test_cache_is_built_once_and_checked(model_path: Path, onnx_cache: Path) -> None:
    first = load_onnx_model(model_path)
    target = cached_onnx_path(read_header(model_path))
    assert first.onnx_path == target and target.is_file()
    assert target.is_relative_to(onnx_cache)
    stamp = target.stat().st_mtime_ns
    assert load_onnx_model(model_path).onnx_path == target
    assert target.stat().st_mtime_ns == stamp  # reused, not rebuilt
    # a damaged cache file fails its sha256 check and is rebuilt
    target.write_bytes(target.read_bytes()[:1000])
    again = load_onnx_model(model_path)
    assert exported_from(file_sha256(target)) == file_sha256(model_path)
    sample = synth_voice(VOICES["alice"], seed=5)
    np.testing.assert_allclose(
        OnnxEmbedder(again).embed_waveform(sample),
        OnnxEmbedder(first).embed_waveform(sample),
        atol=1e-6,
    )


def test_bad_onnx_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match=r"junk\.onnx"):
        open_onnx(junk)
    with pytest.raises(CheckpointError, match="no such model"):
        open_onnx(tmp_path / "none.onnx")


def test_frontend_without_numpy_twin_cannot_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = Encoder(ModelConfig(channels=16, embedding_dim=8))
    path = tmp_path / "m.safetensors"
    save_encoder(encoder, path)
    # rewrite the config's front-end name in the header: a model of a front-end with no twin
    data = path.read_bytes().replace(b'\\"frontend\\": \\"fbank\\"', b'\\"frontend\\": \\"vggsh\\"')
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data)
    with pytest.raises(CheckpointError):
        export_onnx(bad, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_identity_is_the_graph_unless_speakerid_noted_exporting_it(
    model_path: Path, tmp_path: Path
) -> None:
    import shutil

    import onnx
    from hostile_corpus import forged_graph

    claim = file_sha256(model_path)
    config = read_header(model_path).config
    forged = forged_graph(tmp_path / "forged.onnx", config, np.ones(16) / 4.0, claim)
    model = open_onnx(forged)
    assert model.claimed_source == claim  # what it says, reported...
    assert model.fingerprint == file_sha256(forged) != claim  # ...binding nothing

    exported = export_onnx(model_path, tmp_path / "m.onnx")
    copy = shutil.copy(exported, tmp_path / "copy.onnx")
    assert open_onnx(copy).fingerprint == claim  # the same bytes speakerid wrote
    graph = onnx.load(str(exported))
    graph.metadata_props.add(key="note", value="edited")
    onnx.save(graph, str(tmp_path / "edited.onnx"))
    edited = open_onnx(tmp_path / "edited.onnx")
    assert edited.fingerprint == file_sha256(tmp_path / "edited.onnx") != claim


def test_graph_output_is_probed_at_load(model_path: Path, tmp_path: Path) -> None:
    from hostile_corpus import forged_graph

    config = read_header(model_path).config
    with pytest.raises(CheckpointError, match=r"shape \(2, 10\), not \(batch, 16\)"):
        open_onnx(forged_graph(tmp_path / "ten.onnx", config, np.ones(10)))
    with pytest.raises(CheckpointError, match=r"nan\.onnx: the graph produced NaN"):
        open_onnx(forged_graph(tmp_path / "nan.onnx", config, np.full(16, np.nan)))
    bad = {"config": json.dumps({**config, "n_mels": 10**9})}
    with pytest.raises(CheckpointError, match="n_mels"):
        open_onnx(forged_graph(tmp_path / "big.onnx", config, np.ones(16), metadata=bad))


def test_a_graph_claiming_a_shipped_model_cannot_use_its_store(
    voices_dir: Path, tmp_path: Path
) -> None:
    """The issue's repro: a constant graph whose metadata claims ``fast``'s sha256."""
    from hostile_corpus import forged_graph

    from speakerid.errors import StoreError
    from speakerid.recognition import enroll, verify
    from speakerid.store.speakers import SpeakerStore

    fast = registry.SHIPPED["fast"]
    config = read_header(registry.shipped_path(fast)).config
    dim = config["embedding_dim"]
    forged = forged_graph(tmp_path / "fast.onnx", config, np.ones(dim) / np.sqrt(dim), fast.sha256)
    with SpeakerStore(tmp_path / "s.sqlite") as store:
        enroll(store, open_embedder("fast", "torch"), "alice", [voices_dir / "alice_1.wav"])
        mallory = OnnxEmbedder(open_onnx(forged))
        assert mallory.model.fingerprint != fast.sha256
        with pytest.raises(StoreError, match="embeddings made by"):
            verify(store, mallory, "alice", voices_dir / "bob_1.wav")
