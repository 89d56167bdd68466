"""Silero VAD on onnxruntime: the pin, streaming, both rates, the region rule, no torch."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerid.audio import (
    DEFAULT_VAD,
    VAD_ENV,
    load_audio,
    prepare,
    resample,
    resolve_vad,
    stream_fragments,
    trim_silence,
)
from speakerid.audio.vad import (
    CHUNK_SECONDS,
    STREAM_FILE,
    STREAM_SHA256,
    SileroVAD,
    VadConfig,
    hysteresis,
    load_session,
    region_frames,
    shipped_path,
    speech_regions,
)
from speakerid.errors import AudioError, CheckpointError, SpeakerIDError, StoreError
from speakerid.store.speakers import SpeakerStore

pytest.importorskip("onnxruntime")

SR = 16_000
REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SPEAKERID_DATA", REPO.parent / "shared" / "data"))
VCTK = DATA / "extra" / "vctk" / "p225"


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


def real_speech() -> np.ndarray:
    """Three VCTK sentences with 1.5 s of silence before, between and after (skip without)."""
    files = sorted(VCTK.glob("*.flac"))[:3]
    if len(files) < 3:
        pytest.skip(f"no VCTK recordings under {VCTK}")
    gap = np.zeros(int(1.5 * SR), np.float32)
    parts = [gap]
    for f in files:
        wav, rate = sf.read(f, dtype="float32")
        assert rate == SR
        parts += [wav, gap]
    return np.concatenate(parts)


# ---------------------------------------------------------------- generated audio


@pytest.mark.parametrize(
    "signal",
    [
        np.zeros(4 * SR, np.float32),
        0.1 * np.random.default_rng(0).standard_normal(4 * SR).astype(np.float32),
        0.01 * np.random.default_rng(1).standard_normal(4 * SR).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * 440 * np.arange(4 * SR) / SR)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * 1000 * np.arange(4 * SR) / SR)).astype(np.float32),
    ],
    ids=["silence", "loud-noise", "quiet-noise", "tone-440", "tone-1k"],
)
def test_no_speech_in_silence_noise_or_tones(vad: SileroVAD, signal: np.ndarray) -> None:
    probs = vad.probabilities([signal])
    assert probs.shape == (round(len(signal) / SR / CHUNK_SECONDS),)
    assert probs.max() < 0.2
    assert speech_regions(probs, len(signal) / SR) == []


def test_probabilities_do_not_depend_on_block_sizes_or_graph(vad: SileroVAD) -> None:
    """Blocks of any size (across the sequence graph's 16.4-s calls) give the same numbers,
    and the streaming graph gives the sequence graph's."""
    rng = np.random.default_rng(2)
    t = np.arange(40 * SR) / SR
    wav = (0.2 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    wav += 0.01 * rng.standard_normal(len(wav)).astype(np.float32)
    whole = vad.probabilities([wav])
    assert whole.shape == (-(-len(wav) // 512),)
    cuts = [0, 7, 519, 1000, 1512, 30001, 262_143, 262_145, 300_000, 524_288, len(wav)]
    blocks = [wav[a:b] for a, b in itertools.pairwise(cuts)]
    assert np.array_equal(vad.probabilities(iter(blocks)), whole)
    stream = SileroVAD(sequence=False).probabilities([wav[: 20 * SR]])
    np.testing.assert_allclose(stream, whole[: len(stream)], atol=1e-5)
    # a part-chunk at the end is completed with zeros: one more probability
    assert len(vad.probabilities([wav[: 512 * 10 + 1]])) == 11


def test_bad_input_is_refused(vad: SileroVAD) -> None:
    with pytest.raises(AudioError, match="NaN or infinite"):
        vad.probabilities([np.array([0.0, np.nan], np.float32)])
    with pytest.raises(AudioError, match="8000 or 16000 Hz"):
        SileroVAD(rate=44_100)
    with pytest.raises(AudioError, match="16000 Hz audio only"):
        SileroVAD(rate=8_000, sequence=True)
    assert len(vad.probabilities([])) == 0
    assert vad.regions([]) == []


def test_the_pin_refuses_a_changed_graph(tmp_path: Path) -> None:
    tampered = tmp_path / "silero_vad.onnx"
    data = bytearray(shipped_path(STREAM_FILE).read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the shipped Silero VAD"):
        load_session(tampered, STREAM_SHA256)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_session(garbage, hashlib.sha256(b"not onnx").hexdigest())
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_session(tmp_path / "missing.onnx", STREAM_SHA256)


# ---------------------------------------------------------------- the region rule


def test_hysteresis_keeps_dips_above_offset_and_needs_onset() -> None:
    probs = np.array([0.1, 0.6, 0.4, 0.6, 0.2, 0.4, 0.45, 0.1, 0.9, 0.3])
    assert hysteresis(probs, 0.5, 0.35).tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 1, 0]


def test_regions_bridge_short_silences_drop_short_speech_and_pad() -> None:
    step = CHUNK_SECONDS
    probs = np.zeros(200)
    probs[10:40] = 0.9  # 0.96 s of speech
    probs[45:60] = 0.9  # after a 0.16-s pause: bridged
    probs[100:104] = 0.9  # 0.128 s alone: dropped
    probs[150:199] = 0.9  # runs to 0.032 s before the end: padding is clipped
    cfg = VadConfig(min_silence=0.25, min_speech=0.25, pad=0.1)
    regions = speech_regions(probs, 200 * step, cfg)
    assert regions == [
        (round(10 * step - 0.1, 4), round(60 * step + 0.1, 4)),
        (round(150 * step - 0.1, 4), round(200 * step, 4)),
    ]
    # no bridging, no dropping, no padding: the raw runs
    raw = speech_regions(probs, 200 * step, VadConfig(min_silence=0, min_speech=0, pad=0))
    assert len(raw) == 4 and raw[0] == (round(10 * step, 4), round(40 * step, 4))
    # padding joins regions that come to touch
    wide = speech_regions(probs, 200 * step, VadConfig(min_silence=0, min_speech=0.25, pad=0.5))
    assert len(wide) == 2 and wide[0][0] == 0.0


def test_config_is_checked() -> None:
    with pytest.raises(SpeakerIDError):
        VadConfig(onset=0.3, offset=0.5)
    with pytest.raises(SpeakerIDError):
        VadConfig(pad=-0.1)


def test_region_frames_marks_frames_by_their_centre() -> None:
    flags = region_frames([(0.05, 0.1), (0.2, 0.31)], 12, 0.03)
    # centres 0.015, 0.045, 0.075, ..., 0.345
    assert flags.tolist() == [0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert not region_frames([], 5, 0.03).any()


# ---------------------------------------------------------------- real speech


def test_real_speech_is_found_between_silences(vad: SileroVAD) -> None:
    wav = real_speech()
    regions = vad.regions([wav[i : i + 16_000] for i in range(0, len(wav), 16_000)])
    assert 3 <= len(regions) <= 8
    assert regions[0][0] > 1.3  # the leading 1.5 s of silence is not speech
    assert regions[-1][1] < len(wav) / SR - 1.3
    speech = sum(b - a for a, b in regions)
    assert 0.4 * len(wav) / SR < speech < len(wav) / SR - 3 * 1.5 + 0.5


def test_8k_agrees_with_16k_on_real_speech(vad: SileroVAD) -> None:
    wav = real_speech()
    n = round(len(wav) / SR / 0.01)
    at16 = region_frames(vad.regions([wav]), n, 0.01)
    at8 = region_frames(SileroVAD(rate=8_000).regions([resample(wav, SR, 8_000)]), n, 0.01)
    agree = (at16 == at8).mean()
    assert agree > 0.9


# ---------------------------------------------------------------- trimming with --vad


def test_trimming_by_each_vad(vad: SileroVAD, tmp_path: Path) -> None:
    wav = real_speech()
    energy = trim_silence(wav, vad="energy")
    silero = trim_silence(wav, vad="silero")
    assert len(trim_silence(wav, vad="none")) == len(wav)
    assert len(silero) < len(energy) < len(wav)  # the silences go; Silero cuts pauses too
    assert len(silero) > 0.5 * len(energy)
    with pytest.raises(AudioError, match="Silero VAD finds no speech"):
        trim_silence(
            0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32), vad="silero"
        )
    with pytest.raises(SpeakerIDError, match="--vad must be one of energy, silero, none"):
        trim_silence(wav, vad="webrtc")
    # the streamed path cuts the same fragments, whatever the block size
    path = tmp_path / "speech.flac"
    sf.write(path, np.concatenate([wav, wav, wav]), SR)
    whole = prepare(load_audio(path), vad="silero")
    streamed = np.concatenate(list(stream_fragments(path, block_seconds=7.3, vad="silero")))
    assert whole.shape[0] > 3 and np.array_equal(whole, streamed)


def test_cli_vad_option_and_the_store_binding(cli, enrolled_store: Path, voices_dir: Path) -> None:
    alice = str(voices_dir / "alice_3.wav")
    result = cli("verify", "alice", alice, "--vad", "webrtc", store=enrolled_store)
    assert result.exit_code == 2 and "--vad must be one of" in result.stderr
    result = cli("verify", "alice", alice, "--vad", "silero", store=enrolled_store)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "--vad energy, but --vad silero" in line and "\n" not in line
    assert "Traceback" not in result.output
    assert cli("verify", "alice", alice, "--vad", "energy", store=enrolled_store).exit_code == 0
    fresh = enrolled_store.with_name("none.sqlite")
    assert cli("enroll", "carol", alice, "--vad", "none", store=fresh).exit_code == 0
    assert SpeakerStore(fresh).meta()["vad"] == "none"
    result = cli("identify", alice, "--vad", "none", "--json", store=fresh)
    assert result.exit_code == 0, result.output


def test_the_vad_is_chosen_by_flag_then_environment_then_store_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(VAD_ENV)
    assert DEFAULT_VAD == "silero" and resolve_vad(None) == "silero"
    assert resolve_vad(None, bound="energy") == "energy"  # an older store keeps its rule
    assert resolve_vad("none", bound="energy") == "none"  # (and the store then refuses it)
    monkeypatch.setenv(VAD_ENV, "none")
    assert resolve_vad(None, bound="energy") == "none"
    assert resolve_vad("silero") == "silero"
    monkeypatch.setenv(VAD_ENV, "webrtc")
    with pytest.raises(SpeakerIDError, match="--vad must be one of"):
        resolve_vad(None)


def test_api_takes_the_vad(
    enrolled_store: Path, model_path: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from speakerid import SpeakerID

    with pytest.raises(SpeakerIDError, match="--vad must be one of"):
        SpeakerID(enrolled_store, model_path, vad="webrtc")
    with SpeakerID(enrolled_store, model_path, vad="none") as sid:
        assert sid.embedder.vad == "none"
        with pytest.raises(StoreError, match="--vad energy, but --vad none"):
            sid.verify("alice", voices_dir / "alice_3.wav")
    monkeypatch.delenv(VAD_ENV)
    with SpeakerID(enrolled_store, model_path) as sid:  # no choice made: the store's own
        assert sid.embedder.vad == "energy"
        assert sid.verify("alice", voices_dir / "alice_3.wav").score > 0
    with SpeakerID(enrolled_store.with_name("new.sqlite"), model_path) as sid:
        assert sid.embedder.vad == DEFAULT_VAD  # an empty store: the default


# ---------------------------------------------------------------- the runtime


def test_it_runs_without_torch() -> None:
    probe = (
        "import sys, numpy as np\n"
        "from speakerid.audio.vad import SileroVAD\n"
        "SileroVAD().regions([np.zeros(16000, np.float32)])\n"
        "print(sorted(m for m in ('torch', 'torchaudio') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_graph_ships_in_the_wheel() -> None:
    text = (REPO / "pyproject.toml").read_text()
    for name in ("silero_vad.onnx", "silero_vad_16k_sequence.onnx", "LICENSE-SILERO.txt"):
        assert f'"models/{name}" = "speakerid/_models/{name}"' in text
