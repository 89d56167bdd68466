"""Front-ends: librosa parity of the MFCCs, per-fragment normalisation, shapes, devices."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from speakerid.audio import FRAGMENT_SAMPLES, SAMPLE_RATE
from speakerid.features.torch import (
    MFCC_N,
    MFCC_TOP_DB,
    RAW_RATE,
    FbankFrontend,
    MFCCFrontend,
    PowerMel,
    PowerMelFrontend,
    RawFrontend,
    mel_power,
)

SR = SAMPLE_RATE
# Measured on this machine (librosa 0.11, torch 2.14, float32 on both sides): the largest
# |ours - librosa| over the three signals below is 2.7e-4, on coefficients whose range
# (max - min) is 400-700 and whose magnitude reaches ~610. 1e-2 leaves ~35x headroom while
# still failing on any real difference (a different mel norm, pad mode or dB floor moves
# coefficients by whole units).
MFCC_ATOL = 1e-2


def speech_like(f0: float, formant: float, level: float, seed: int) -> np.ndarray:
    """3 s of harmonics (f0) through one resonance, syllable-modulated, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(FRAGMENT_SAMPLES) / SR
    harmonics = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 20))
    r, theta = 0.97, 2 * np.pi * formant / SR
    x = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], harmonics)
    x = x * 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t)) + 0.05 * x.std() * rng.standard_normal(len(t))
    return (level * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def signals() -> np.ndarray:
    """(3, 48000): different pitches, resonances and levels."""
    return np.stack(
        [
            speech_like(110.0, 700.0, 0.8, seed=0),
            speech_like(205.0, 1800.0, 0.05, seed=1),
            speech_like(160.0, 1200.0, 0.3, seed=2),
        ]
    )


# ----------------------------------------------------------------------------- MFCC


@pytest.mark.slow
def test_mfcc_matches_librosa(signals: np.ndarray) -> None:
    ours = MFCCFrontend()(torch.from_numpy(signals)).numpy()

    assert ours.shape == (3, MFCC_N, 94)
    for i, wav in enumerate(signals):
        ref = librosa.feature.mfcc(y=wav, sr=SR, n_mfcc=32)
        assert ref.shape == (32, 94)
        assert np.ptp(ref) > 100  # real, varied coefficients, so the bound below means something
        np.testing.assert_allclose(ours[i], ref, rtol=0, atol=MFCC_ATOL)


def test_mfcc_matches_librosa_where_the_80_db_floor_bites() -> None:
    """Half digital silence: the floor sets half the frames, so it must be librosa's."""
    wav = speech_like(130.0, 900.0, 0.5, seed=3)
    wav[: FRAGMENT_SAMPLES // 2] = 0.0
    ours = MFCCFrontend()(torch.from_numpy(wav[None]))[0].numpy()
    ref = librosa.feature.mfcc(y=wav, sr=SR, n_mfcc=32)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=MFCC_ATOL)


def quiet_and_loud() -> np.ndarray:
    """A loud fragment and one 70 dB quieter with silent stretches: a batch-wide 80 dB floor
    would clamp the quiet one at the loud one's level and change it."""
    loud = speech_like(120.0, 800.0, 0.9, seed=4)
    quiet = speech_like(220.0, 2000.0, 0.9 * 10 ** (-70 / 20), seed=5)
    quiet[SR : 2 * SR] = 0.0
    return np.stack([quiet, loud])


def test_mfcc_top_db_is_per_fragment() -> None:
    batch = torch.from_numpy(quiet_and_loud())
    front = MFCCFrontend()

    together = front(batch)
    alone = torch.cat([front(batch[:1]), front(batch[1:])])

    torch.testing.assert_close(together, alone, rtol=0, atol=1e-4)
    # The test has teeth: the quiet fragment's own floor lies far below the loud one's.
    power = front.mel(batch)
    db = 10 * torch.log10(power.clamp_min(1e-10))
    assert db[0].amax() < db[1].amax() - MFCC_TOP_DB / 2
    assert db[0].amax() - MFCC_TOP_DB < db[1].amax() - MFCC_TOP_DB - 40


def test_mfcc_in_batch_matches_librosa_for_the_quiet_fragment() -> None:
    quiet = quiet_and_loud()
    ours = MFCCFrontend()(torch.from_numpy(quiet))[0].numpy()
    ref = librosa.feature.mfcc(y=quiet[0], sr=SR, n_mfcc=32)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=MFCC_ATOL)


def test_mfcc_frames_and_coefficient_count() -> None:
    front = MFCCFrontend(n_mfcc=20)
    assert front.n_features == 20
    assert front.frames(FRAGMENT_SAMPLES) == 94
    assert front(torch.zeros(2, FRAGMENT_SAMPLES)).shape == (2, 20, 94)
    assert torch.isfinite(front(torch.zeros(1, FRAGMENT_SAMPLES))).all()  # silence: no -inf


# ----------------------------------------------------------------------------- raw, fbank


def test_raw_frontend_is_standardised_4khz(signals: np.ndarray) -> None:
    front = RawFrontend()
    out = front(torch.from_numpy(signals))

    assert out.shape == (3, 1, 12_000) == (3, front.n_features, front.frames(FRAGMENT_SAMPLES))
    assert FRAGMENT_SAMPLES * RAW_RATE // SR == 12_000
    torch.testing.assert_close(out.mean(-1), torch.zeros(3, 1), rtol=0, atol=1e-4)
    torch.testing.assert_close(out.std(-1), torch.ones(3, 1), rtol=0, atol=1e-3)
    # Loudness carries no identity: a scaled copy gives the same input (up to the 1e-5 eps
    # beside a std of ~0.01 for the quietest signal).
    torch.testing.assert_close(front(torch.from_numpy(signals) * 7.0), out, rtol=5e-3, atol=1e-4)


def test_fbank_shape_and_zero_time_mean(signals: np.ndarray) -> None:
    front = FbankFrontend(80)
    out = front(torch.from_numpy(signals))

    assert out.shape == (3, 80, 301) == (3, front.n_features, front.frames(FRAGMENT_SAMPLES))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.mean(-1), torch.zeros(3, 80), rtol=0, atol=1e-4)


def test_fbank_band_count() -> None:
    assert FbankFrontend(40)(torch.zeros(1, FRAGMENT_SAMPLES)).shape == (1, 40, 301)


@pytest.mark.parametrize("stack", [1, 2, 3])
def test_powermel_stacks_consecutive_frames(signals: np.ndarray, stack: int) -> None:
    wav = torch.from_numpy(signals)
    mels = PowerMel()(wav)  # (B, frames, 40)
    front = PowerMelFrontend(stack)
    out = front(wav)
    steps = 301 // stack
    assert mels.shape == (3, 301, 40)
    assert out.shape == (3, 40 * stack, steps) == (3, front.n_features, front.frames(48_000))
    for j in range(stack):  # step t holds frames stack*t ... stack*t + stack - 1, in order
        torch.testing.assert_close(out[:, 40 * j : 40 * (j + 1)], mels[:, j::stack][:, :steps].mT)


def test_powermel_raises_quiet_audio_to_minus_30_dbfs(signals: np.ndarray) -> None:
    quiet = torch.from_numpy(signals[1:2])  # peak 0.05: RMS well below -30 dBFS
    mel = PowerMel()
    torch.testing.assert_close(mel(quiet), mel(quiet * 0.25), rtol=1e-4, atol=1e-6)
    loud = torch.from_numpy(signals[0:1])  # peak 0.8: left as it is
    torch.testing.assert_close(mel(loud * 0.5), mel(loud) * 0.25, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("front", [MFCCFrontend, FbankFrontend, PowerMel])
def test_mel_power_is_torchaudios_mel_spectrogram(signals: np.ndarray, front: type) -> None:
    mel = front().mel
    wav = torch.from_numpy(signals)
    expected = mel(wav)  # torchaudio's own forward: |STFT|^2 through the filterbank
    torch.testing.assert_close(mel_power(mel, wav), expected, rtol=1e-5, atol=1e-6)


def test_mel_power_refuses_a_magnitude_spectrogram() -> None:
    import torchaudio.transforms as T

    with pytest.raises(ValueError, match="power-2"):
        mel_power(T.MelSpectrogram(SR, n_mels=40, power=1.0), torch.zeros(1, FRAGMENT_SAMPLES))


FRONTENDS = {
    "raw": RawFrontend,
    "mfcc": MFCCFrontend,
    "fbank": FbankFrontend,
    "powermel": PowerMelFrontend,
}


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_frontends_are_batch_independent_and_weightless(name: str, signals: np.ndarray) -> None:
    front = FRONTENDS[name]()
    batch = torch.from_numpy(signals)
    together = front(batch)
    for i in range(len(batch)):
        torch.testing.assert_close(together[i], front(batch[i : i + 1])[0], rtol=0, atol=1e-4)
    assert not list(front.parameters())  # nothing trainable, nothing in a checkpoint


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_output_stays_on_the_input_device_and_dtype(name: str) -> None:
    front = FRONTENDS[name]()
    out = front(torch.zeros(2, FRAGMENT_SAMPLES, dtype=torch.float64).normal_(0, 0.1))
    assert out.device == torch.device("cpu")
    assert out.dtype in (torch.float32, torch.float64)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_frontends_run_on_cuda_and_agree_with_cpu(name: str, signals: np.ndarray) -> None:
    front = FRONTENDS[name]()
    cpu = front(torch.from_numpy(signals))
    gpu = front.to("cuda")(torch.from_numpy(signals).to("cuda"))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-2)
