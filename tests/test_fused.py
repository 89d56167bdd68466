"""The fused model (embedding.fused, ``--model best``): block-wise pooling, the weighted
cosine, its identity, store checks, and the CLI on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import VOICES, synth_voice
from test_cli import as_json, error, ok, voice

from speakerid.audio import SAMPLE_RATE
from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.embedding.fused import FusedEmbedder, fuse
from speakerid.embedding.pipeline import open_embedder
from speakerid.encoders import registry
from speakerid.errors import CheckpointError, SpeakerIDError
from speakerid.vectors import l2_normalize, pool

WEIGHT = 0.3  # not 0.5, so that a block swapped or weighted the wrong way shows


@pytest.fixture(scope="module")
def fused(model_path: Path, other_model_path: Path) -> FusedEmbedder:
    """Two tiny checkpoints (16-d each), fused with ``WEIGHT``."""
    first = Embedder(load_model(model_path), device="cpu", precision="fp32", vad="energy")
    second = Embedder(load_model(other_model_path), device="cpu", precision="fp32", vad="energy")
    return FusedEmbedder(first, second, WEIGHT)


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, dim)))


def test_pool_fragments_pools_each_block_apart() -> None:
    a, e = _unit_rows(5, 16, 0), _unit_rows(5, 8, 1)
    rows = fuse(a, e, WEIGHT)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)

    class Stub(FusedEmbedder):
        def __init__(self) -> None:  # only what pool_fragments reads
            self.members = (type("M", (), {"dim": 16})(), None)
            self.model = type("F", (), {"weight": WEIGHT})()

    pooled = Stub().pool_fragments(rows)
    expected = np.concatenate([np.sqrt(WEIGHT) * pool(a), np.sqrt(1 - WEIGHT) * pool(e)])
    np.testing.assert_allclose(pooled, expected, atol=1e-6)
    assert abs(float(np.linalg.norm(pooled)) - 1.0) < 1e-6
    # the whole-vector pool is another vector: the blocks' weights would drift
    assert np.abs(pool(rows) - pooled).max() > 1e-3
    assert np.array_equal(BaseEmbedder.pool_fragments(None, rows), pool(rows))  # type: ignore[arg-type]


def test_fused_vectors_are_unit_and_score_the_weighted_cosine(fused: FusedEmbedder) -> None:
    first, second = fused.members
    waves = [
        synth_voice(VOICES["alice"], seconds=7.0, seed=1),
        synth_voice(VOICES["bob"], seconds=4.0, seed=2),
    ]
    rows = fused.embed_fragments(np.stack([waves[0][:48000], waves[1][:48000]]))
    assert rows.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    x, y = (fused.embed_waveform(w) for w in waves)
    assert x.shape == (32,) and abs(float(np.linalg.norm(x)) - 1.0) < 1e-6
    cos_a = float(first.embed_waveform(waves[0]) @ first.embed_waveform(waves[1]))
    cos_e = float(second.embed_waveform(waves[0]) @ second.embed_waveform(waves[1]))
    assert float(x @ y) == pytest.approx(WEIGHT * cos_a + (1 - WEIGHT) * cos_e, abs=1e-5)
    np.testing.assert_allclose(x[:16], np.sqrt(WEIGHT) * first.embed_waveform(waves[0]), 1e-5)


def test_a_streamed_file_gives_the_fused_vector(fused: FusedEmbedder, tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    speech = np.concatenate(
        [synth_voice(VOICES[n], 4.5, seed=5) for n in ("alice", "bob", "carol")]
    )
    sf.write(str(path), speech, SAMPLE_RATE, subtype="FLOAT")
    streamed = fused.embed_stream(path)
    whole = fused.embed_file(path)
    assert abs(float(np.linalg.norm(streamed)) - 1.0) < 1e-6
    assert float(streamed @ whole) > 0.99999
    first = fused.members[0].embed_file(path)
    np.testing.assert_allclose(streamed[:16], np.sqrt(WEIGHT) * first, atol=1e-6)


def test_a_directory_in_batches_gives_each_files_fused_vector(
    fused: FusedEmbedder, tmp_path: Path
) -> None:
    """enroll-dir batches fragments of several files; each file is still pooled block-wise."""
    from speakerid.embedding.bulk import embed_directory

    # two voices in one file: fragments that disagree, so the blocks' means differ in length
    mixed = [synth_voice(VOICES[n], seconds=4.5, seed=5) for n in ("alice", "bob", "carol")]
    for name, wav in (("mixed", np.concatenate(mixed)), ("bob", mixed[1][:40000])):
        (tmp_path / name).mkdir()
        sf.write(str(tmp_path / name / "a.wav"), wav, SAMPLE_RATE, subtype="FLOAT")
    vectors, skipped = embed_directory(fused, tmp_path)
    assert not skipped and len(vectors) == 2
    for path, vector in vectors.items():
        np.testing.assert_allclose(vector, fused.embed_file(path), atol=1e-6)


def test_identity_fingerprints_the_pair_and_the_weight(fused: FusedEmbedder) -> None:
    first, second = fused.members
    fingerprint, dim, source = fused.identity()
    assert dim == 32 and fused.dim == 32
    assert fingerprint == registry.fusion_fingerprint(
        (first.model.fingerprint, second.model.fingerprint), WEIGHT
    )
    assert fingerprint not in (first.model.fingerprint, second.model.fingerprint)
    assert fingerprint != FusedEmbedder(second, first, WEIGHT).identity()[0]
    assert fingerprint != FusedEmbedder(first, second, 0.5).identity()[0]
    assert source == f"{first.identity()[2]} + {second.identity()[2]}"
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(SpeakerIDError, match="weight"):
            FusedEmbedder(first, second, bad)


def test_best_is_a_registered_fusion_of_two_pinned_models() -> None:
    best = registry.FUSIONS["best"]
    assert best.members == ("accurate", "ecapa") and 0 < best.weight < 1
    members = tuple(registry.SHIPPED[m].sha256 for m in best.members)
    assert best.sha256 == registry.fusion_fingerprint(members, best.weight)
    assert registry.shipped_name(best.sha256) == "best"
    assert registry.model_cohort(best.sha256, "unused") is None
    with pytest.raises(CheckpointError, match="no single checkpoint"):
        registry.resolve_model("best")
    row = next(r for r in registry.list_models() if r.name == "best")
    assert row.embedding_dim == 384 and row.error is None and not row.default
    assert row.sha256 == best.sha256


def test_best_opens_on_onnx_with_the_registered_identity() -> None:
    best = open_embedder("best", "onnx")
    assert isinstance(best, FusedEmbedder)
    assert best.identity()[:2] == (registry.FUSIONS["best"].sha256, 384)
    assert [m.dim for m in best.members] == [192, 192]
    # its fixed cosine threshold is the registry's, as a checkpoint's is its own
    assert best.model.threshold == registry.FUSIONS["best"].threshold
    assert 0 < best.model.threshold < 1


# ---------------------------------------------------------------- the CLI


def _round_trip(cli, store: Path, voices_dir: Path, backend: str) -> None:
    """enroll, verify and identify with ``--model best`` on ``backend``."""
    env = {"SPEAKERID_BACKEND": backend}
    for name in ("alice", "bob"):
        files = [voice(voices_dir, name, k) for k in (1, 2)]
        r = as_json(ok(cli("enroll", name, *files, "--json", store=store, model="best", env=env)))
        assert r["speaker"] == name and r["recordings"] == 2
    meta = json.loads(ok(cli("info", "--json", store=store, model="best", env=env)).stdout)
    assert meta["model"]["threshold"] == registry.FUSIONS["best"].threshold
    assert meta["store"]["model_fingerprint"] == registry.FUSIONS["best"].sha256
    assert meta["store"]["embedding_dim"] == 384 and meta["compatible"] is True
    probe = voice(voices_dir, "alice", 3)
    same = cli("verify", "alice", probe, "--json", "-t", "0.0", store=store, model="best", env=env)
    v = as_json(ok(same, same.exit_code))
    assert -1.0 <= v["score"] <= 1.0 and v["accepted"]
    # without a threshold, best decides by its shipped calibration at a false-accept rate
    calibrated = cli("verify", "alice", probe, "--json", store=store, model="best", env=env)
    c = as_json(ok(calibrated, calibrated.exit_code))
    assert c["far"] == 0.01 and isinstance(c["llr"], float) and c["score"] == v["score"]
    probe = voice(voices_dir, "bob", 3)
    found = cli("identify", probe, "--json", "-t", "-1", store=store, model="best", env=env)
    (ranked,) = as_json(ok(found))
    assert {c["speaker"] for c in ranked["candidates"]} == {"alice", "bob"}
    assert ranked["best"] == ranked["candidates"][0]["speaker"]


def test_cli_round_trip_on_onnx_and_stores_refuse_mixing(
    cli, store_path: Path, voices_dir: Path, tmp_path: Path
) -> None:
    _round_trip(cli, store_path, voices_dir, "onnx")
    before = store_path.read_bytes()
    probe = voice(voices_dir, "alice", 3)
    line = error(cli("verify", "alice", probe, store=store_path, model="accurate"))
    assert "--model best" in line
    assert store_path.read_bytes() == before
    other = tmp_path / "accurate.sqlite"
    ok(cli("enroll", "alice", voice(voices_dir, "alice", 1), store=other, model="accurate"))
    line = error(cli("verify", "alice", probe, store=other, model="best"))
    assert "--model accurate" in line


@pytest.mark.slow
def test_cli_round_trip_on_torch_shares_the_onnx_store(
    cli, store_path: Path, voices_dir: Path
) -> None:
    _round_trip(cli, store_path, voices_dir, "torch")
    # the members' graphs compute their checkpoints' embeddings: one store serves both
    probe, scores = voice(voices_dir, "alice", 3), []
    for backend in ("torch", "onnx"):  # fp32 both (torch's auto is bf16 on some CPUs)
        env = {"SPEAKERID_BACKEND": backend}
        args = ("verify", "alice", probe, "--json", "--precision", "fp32")
        res = cli(*args, store=store_path, model="best", env=env)
        scores.append(as_json(ok(res, res.exit_code))["score"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)
