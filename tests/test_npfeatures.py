"""The numpy front-ends (onnx backend) against the torch ones they stand in for."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from conftest import VOICES, synth_voice

from speakerid.audio import FRAGMENT_SAMPLES, SAMPLE_RATE
from speakerid.encoders.twin import FRONTENDS, ModelConfig
from speakerid.errors import CheckpointError
from speakerid.features import numpy as npfeatures
from speakerid.features import torch as features

CONFIGS = {
    "raw": ModelConfig(frontend="raw", arch="cnn1d"),
    "mfcc": ModelConfig(frontend="mfcc", arch="cnn2d", n_mfcc=20),
    "fbank": ModelConfig(frontend="fbank", n_mels=64),
    "powermel": ModelConfig(frontend="powermel", arch="lstm", stem_stride=3),
    "kaldi_fbank": ModelConfig(frontend="kaldi_fbank", n_mels=80),
    "sb_fbank": ModelConfig(frontend="sb_fbank", arch="ecapa", n_mels=80),
}


def _fragments() -> np.ndarray:
    """Two voices, a quiet one (PowerMel's gain step) and noise: (4, FRAGMENT_SAMPLES)."""
    rng = np.random.default_rng(0)
    rows = [
        synth_voice(v, seconds=FRAGMENT_SAMPLES / SAMPLE_RATE, seed=i)
        for i, v in enumerate(VOICES.values())
    ]
    rows[1] = rows[1] * 1e-3
    rows.append((0.1 * rng.standard_normal(FRAGMENT_SAMPLES)).astype(np.float32))
    return np.stack(rows).astype(np.float32)


def test_every_numpy_frontend_has_a_torch_twin() -> None:
    assert set(npfeatures.FRONTENDS_NP) <= set(FRONTENDS)
    assert set(CONFIGS) == set(npfeatures.FRONTENDS_NP)


def test_kaldi_fbank_equals_torchaudio_compliance() -> None:
    import torchaudio.compliance.kaldi as kaldi

    wav = _fragments()
    wav[2, :16_000] = 0.0  # digital silence: the log's epsilon floor
    got = npfeatures.kaldi_fbank_frontend({"n_mels": 80})(wav)
    for row, ours in zip(wav, got, strict=True):
        ref = kaldi.fbank(
            torch.from_numpy(row[None]),
            num_mel_bins=80,
            frame_length=25.0,
            frame_shift=10.0,
            dither=0.0,
            preemphasis_coefficient=0.97,
            remove_dc_offset=True,
            window_type="povey",
            round_to_power_of_two=True,
            low_freq=20.0,
            high_freq=8000.0,
            use_energy=False,
            snip_edges=True,
            sample_frequency=SAMPLE_RATE,
        ).numpy()
        ref = (ref - ref.mean(axis=0, keepdims=True)).T  # (mels, frames), mean removed
        assert ours.shape == ref.shape == (80, 298)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_numpy_frontend_equals_torch(name: str) -> None:
    cfg = CONFIGS[name]
    wav = _fragments()
    with torch.inference_mode():
        expected = FRONTENDS[name](cfg)(torch.from_numpy(wav)).numpy()
    got = npfeatures.numpy_frontend(asdict(cfg))(wav)
    assert got.shape == expected.shape and got.dtype == np.float32
    scale = float(np.abs(expected).max())
    # float32 FFTs of two libraries: equal to a few parts in a million of the range; the
    # Kaldi fbank's torch side sums its unfolded frames in float32, numpy in float64, which
    # moves the log of weak bins by up to ~5e-4 (the embeddings agree, test_onnx_backend);
    # SpeechBrain's filters reach Nyquist, where these voices lie ~100 dB under their peak
    # and float32 FFT rounding moves the dB by up to ~1.5e-3 (the embeddings agree, test_ecapa)
    atol = {"kaldi_fbank": 1e-3, "sb_fbank": 3e-3}.get(name, 2e-5 * scale)
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("n_fft", "n_mels", "f_min", "f_max", "scale", "norm"),
    [(400, 40, 0.0, 8000.0, "slaney", "slaney"), (512, 80, 20.0, 7600.0, "htk", None)],
)
def test_mel_filterbank_matches_torchaudio(n_fft, n_mels, f_min, f_max, scale, norm) -> None:
    expected = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, SAMPLE_RATE, norm, scale)
    got = npfeatures.mel_filterbank(n_fft, n_mels, f_min, f_max, scale, norm == "slaney")
    # torchaudio builds it in float32: equal to its rounding
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=2e-5 * float(expected.max()))


def test_front_end_constants_are_defined_once() -> None:
    """Both implementations read features.constants; neither assigns a constant of its own."""
    import ast
    import inspect

    from speakerid.features import constants

    defined = {n for n in dir(constants) if n.isupper()}
    assert len(defined) >= 20
    for module in (npfeatures, features):
        tree = ast.parse(inspect.getsource(module))
        assigned = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name) and t.id.isupper()
        }
        assert not assigned & defined, (module.__name__, assigned & defined)
        assert all(getattr(module, n) is getattr(constants, n) for n in defined & set(dir(module)))


def test_frontend_without_numpy_version_is_refused() -> None:
    with pytest.raises(CheckpointError, match="--backend torch"):
        npfeatures.numpy_frontend({"frontend": "vggish"})


@pytest.mark.parametrize(
    ("orig", "new", "n"),
    [
        (16_000, 4_000, 48_000),
        (16_000, 4_000, 4_801),
        (44_100, 16_000, 44_117),
        (11_025, 16_000, 11),
    ],
)
def test_torch_resample_equals_torchaudio(orig: int, new: int, n: int) -> None:
    from speakerid.features.numpy import torch_resample

    wav = (0.3 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    expected = AF.resample(torch.from_numpy(wav), orig, new).numpy()
    got = torch_resample(wav, orig, new)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5)
