"""features.py: front-end shapes, librosa parity of the MFCCs, batch independence."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from conftest import VOICES, synth_voice

from speakerid.audio import FRAGMENT_SAMPLES
from speakerid.features import FbankFrontend, MFCCFrontend, RawFrontend


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    voices = [synth_voice(v, seconds=3.0, seed=i) for i, v in enumerate(VOICES.values())]
    return torch.from_numpy(np.stack(voices))


def test_mfcc_matches_librosa(batch: torch.Tensor) -> None:
    ours = MFCCFrontend()(batch).numpy()
    assert ours.shape == (3, 32, 94)
    for i, wav in enumerate(batch.numpy()):
        ref = librosa.feature.mfcc(y=wav, sr=16_000, n_mfcc=32)
        assert ref.shape == (32, 94)
        # Measured here: max abs difference 2e-4 to 6e-4 on coefficients up to ~670 in
        # magnitude (float32 STFTs on both sides); the bound leaves ~10x headroom.
        assert np.abs(ours[i] - ref).max() < 5e-3


def test_mfcc_top_db_is_per_fragment(batch: torch.Tensor) -> None:
    quiet = batch[:1] * 1e-3
    loud = batch[1:2]
    together = MFCCFrontend()(torch.cat([quiet, loud]))
    assert torch.allclose(together[0], MFCCFrontend()(quiet)[0], atol=1e-3)
    assert torch.allclose(together[1], MFCCFrontend()(loud)[0], atol=1e-3)


def test_raw_frontend_is_4khz(batch: torch.Tensor) -> None:
    out = RawFrontend()(batch)
    assert out.shape == (3, 1, 12_000)
    assert torch.allclose(out.mean(-1), torch.zeros(3, 1), atol=1e-4)


def test_fbank_shape_and_mean_normalisation(batch: torch.Tensor) -> None:
    fb = FbankFrontend(80)
    out = fb(batch)
    assert out.shape == (3, 80, 301) == (3, 80, fb.frames(FRAGMENT_SAMPLES))
    assert torch.allclose(out.mean(-1), torch.zeros(3, 80), atol=1e-4)
    assert torch.isfinite(out).all()
