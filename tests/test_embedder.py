"""Embedding (speakerid.embedding): a recording -> fragments -> one unit vector, torch backend.

File, array, stream and speaker embeddings, batching and precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import VOICES, synth_voice
from encoder_helpers import SMALL, small_checkpoint, small_encoder, waves

from speakerid.audio import FRAGMENT_SAMPLES, SAMPLE_RATE
from speakerid.embedding.backends.torch import Embedder, native_bf16, resolve_precision
from speakerid.encoders.twin import (
    load_encoder,
    save_encoder,
)
from speakerid.errors import AudioError, SpeakerIDError
from speakerid.vectors import l2_normalize, pool

# ----------------------------------------------------------------------------- encoder


@pytest.fixture(scope="module")
def embedder(ckpt: Path) -> Embedder:
    return Embedder(load_encoder(ckpt), device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Float wav files, so that reading them back is exact: 7 s of bob, 2 x 4 s of alice."""
    root = tmp_path_factory.mktemp("rec")
    out = {}
    for key, name, seconds, seed in (
        ("bob", "bob", 7.0, 0),
        ("alice1", "alice", 4.0, 1),
        ("alice2", "alice", 4.0, 2),
    ):
        out[key] = root / f"{key}.wav"
        wav = synth_voice(VOICES[name], seconds=seconds, seed=seed)
        sf.write(str(out[key]), wav, SAMPLE_RATE, subtype="FLOAT")
    return out


def test_path_and_array_give_the_same_embedding(
    embedder: Embedder, recordings: dict[str, Path]
) -> None:
    path = recordings["bob"]
    wav, _ = sf.read(str(path), dtype="float32")
    from_file = embedder.embed_file(path)
    from_str = embedder.embed_file(str(path))
    from_array = embedder.embed_waveform(wav)
    assert from_file.shape == (embedder.dim,) == (SMALL["embedding_dim"],)
    np.testing.assert_allclose(from_file, from_array, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(from_file, from_str)


def test_embeddings_are_unit_norm(embedder: Embedder, recordings: dict[str, Path]) -> None:
    frags = np.stack([synth_voice(VOICES["carol"], seconds=3.0, seed=s) for s in range(5)])
    emb = embedder.embed_fragments(frags)
    assert emb.shape == (5, embedder.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    for path in recordings.values():
        assert np.linalg.norm(embedder.embed_file(path)) == pytest.approx(1.0, abs=1e-5)


def test_batch_size_does_not_change_embeddings(ckpt: Path) -> None:
    frags = np.stack([synth_voice(VOICES["carol"], seconds=3.0, seed=s) for s in range(5)])
    model = load_encoder(ckpt)
    one = Embedder(model, device="cpu", batch_size=1).embed_fragments(frags)
    many = Embedder(model, device="cpu", batch_size=64).embed_fragments(frags)
    np.testing.assert_allclose(one, many, rtol=0, atol=1e-5)


def test_recording_embedding_is_the_pooled_fragments(
    embedder: Embedder, recordings: dict[str, Path]
) -> None:
    wav, _ = sf.read(str(recordings["bob"]), dtype="float32")
    from speakerid.audio import prepare

    frags = prepare(wav)
    assert len(frags) == 2  # 7 s of speech-like audio
    expected = pool(embedder.embed_fragments(frags))
    np.testing.assert_allclose(embedder.embed_waveform(wav), expected, rtol=0, atol=1e-6)


def test_embed_speaker_pools_recordings(embedder: Embedder, recordings: dict[str, Path]) -> None:
    paths = [recordings["alice1"], recordings["alice2"]]
    each = np.stack([embedder.embed_file(p) for p in paths])
    speaker = embedder.embed_speaker(paths)
    np.testing.assert_allclose(speaker, pool(each), rtol=0, atol=1e-6)
    assert np.linalg.norm(speaker) == pytest.approx(1.0, abs=1e-5)
    # The normalised mean lies between its recordings: closer to each than they are apart.
    assert (each @ speaker >= each[0] @ each[1] - 1e-6).all()
    np.testing.assert_allclose(embedder.embed_speaker(paths[:1]), each[0], atol=1e-6)


def test_embed_fragments_empty_and_silence(embedder: Embedder, tmp_path: Path) -> None:
    assert embedder.embed_fragments(np.zeros((0, FRAGMENT_SAMPLES), np.float32)).shape == (
        0,
        embedder.dim,
    )
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(4 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="silent"):
        embedder.embed_file(silent)


def test_pool_and_normalise_helpers() -> None:
    x = np.array([[3.0, 0.0], [0.0, 0.5]], np.float32)
    np.testing.assert_allclose(pool(x), [2**-0.5, 2**-0.5], atol=1e-7)  # each unit first
    np.testing.assert_array_equal(l2_normalize(np.zeros((1, 3))), np.zeros((1, 3)))
    m = l2_normalize(np.random.default_rng(0).standard_normal((4, 6)))
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, rtol=1e-6)


@pytest.mark.skipif(
    not native_bf16(torch.device("cpu")),
    reason="this CPU has no native bf16 (explicit bf16 refused)",
)
@pytest.mark.parametrize(("frontend", "arch"), [("powermel", "lstm"), ("fbank", "ecapa_lite")])
def test_bf16_embeddings_stay_close_to_fp32(tmp_path: Path, frontend: str, arch: str) -> None:
    path = tmp_path / "m.safetensors"
    save_encoder(small_encoder(frontend=frontend, arch=arch, whiten=True, stem_stride=3), path)
    model = load_encoder(path)
    frags = np.stack([synth_voice(VOICES[v], seconds=3.0, seed=1) for v in VOICES])
    full = Embedder(model, "cpu", precision="fp32")
    half = Embedder(model, "cpu", precision="bf16")
    assert (full.precision, half.precision) == ("fp32", "bf16")
    a, b = full.embed_fragments(frags), half.embed_fragments(frags)
    assert a.dtype == b.dtype == np.float32
    assert not np.array_equal(a, b)  # bf16 really ran
    assert (a * b).sum(axis=1).min() > 0.99


def test_autocast_reaches_only_the_body() -> None:
    # ecapa_lite: oneDNN has no bf16 LSTM kernel on CPUs without native bf16, convs run anywhere
    enc = small_encoder(frontend="powermel", arch="ecapa_lite", whiten=True, stem_stride=3)
    seen: dict[str, torch.dtype] = {}
    enc.frontend.register_forward_hook(lambda m, i, o: seen.__setitem__("frontend", o.dtype))
    enc.body.embed.register_forward_hook(lambda m, i, o: seen.__setitem__("body", o.dtype))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(waves(2))
    assert seen == {"frontend": torch.float32, "body": torch.bfloat16}
    assert out.dtype == torch.float32  # the whitening ran in fp32


def test_precision_auto_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
        assert resolve_precision("fp32", cpu) == "fp32"
        if native:
            assert resolve_precision("bf16", cpu) == "bf16"
        else:  # emulated bf16 is slow and has no LSTM kernel: a clear refusal, not a crash
            with pytest.raises(SpeakerIDError, match="native bf16"):
                resolve_precision("bf16", cpu)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # an older or other torch
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(SpeakerIDError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", cpu)


def test_long_files_are_embedded_as_a_stream_with_the_same_vector(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speakerid.audio.io as audio_mod

    path = tmp_path / "long.wav"
    speech = np.concatenate(
        [synth_voice(VOICES["alice"], 4.0, seed=s) for s in range(4)] + [np.zeros(8000)]
    )
    stereo = np.stack([speech, 0.5 * speech], axis=1)
    sf.write(str(path), stereo, SAMPLE_RATE)
    whole = embedder.embed_file(path)
    assert not audio_mod.is_long(path)
    monkeypatch.setattr(audio_mod, "STREAM_ABOVE_VALUES", 1000)
    assert audio_mod.is_long(path)
    streamed_calls = []
    real = Embedder.embed_stream

    def spy(self, p, on_speech=None):
        streamed_calls.append(p)
        return real(self, p, on_speech=on_speech)

    monkeypatch.setattr(Embedder, "embed_stream", spy)
    streamed = embedder.embed_file(path)
    assert streamed_calls == [path]
    assert float(whole @ streamed) > 0.99999


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.safetensors")
