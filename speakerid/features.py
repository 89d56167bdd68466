"""Front-ends: batched torch modules from 16 kHz fragments to the encoder's input.

Each takes ``(batch, samples)`` float waveforms at ``SAMPLE_RATE`` and returns
``(batch, features, frames)``. They hold no trainable weights (the pretrained front-ends
hold frozen ones), run on CPU or GPU, and report their output shape for a fragment length.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from torch import nn

from speakerid.audio import SAMPLE_RATE

RAW_RATE = 4_000  # Hz, the case study's subsampled raw waveform (12000 samples per 3 s)

MFCC_N = 32  # the case study's coefficient count
MFCC_N_FFT = 2048  # librosa's default STFT, so that 3 s gives 94 frames
MFCC_HOP = 512
MFCC_N_MELS = 128
MFCC_TOP_DB = 80.0  # librosa.power_to_db's default dynamic range

FBANK_N_FFT = 512
FBANK_WIN = 400  # 25 ms
FBANK_HOP = 160  # 10 ms
FBANK_F_MIN = 20.0
FBANK_F_MAX = 7_600.0

POWERMEL_N_MELS = 40  # Resemblyzer's GE2E input: 40-band power mel (not log)
POWERMEL_WIN = 400  # 25 ms, also the FFT size
POWERMEL_HOP = 160  # 10 ms
POWERMEL_TARGET_DBFS = -30.0  # Resemblyzer raises quieter audio to this level first


def mel_power(mel: T.MelSpectrogram, wav: torch.Tensor) -> torch.Tensor:
    """``mel(wav)`` for a power-2 ``MelSpectrogram``, computed faster: ``(B, n_mels, frames)``.

    The same STFT, window and filterbank (the module's own buffers, so checkpoints keep their
    keys), but the power is ``re**2 + im**2``: torch's complex ``abs`` (a ``hypot`` per bin,
    then squared back) took about 40% of the front-end's CPU time on one thread.
    """
    spec = mel.spectrogram
    if spec.power != 2.0 or spec.normalized or spec.pad:
        raise ValueError("mel_power handles an unnormalised, unpadded power-2 spectrogram")
    stft = torch.stft(
        wav,
        n_fft=spec.n_fft,
        hop_length=spec.hop_length,
        win_length=spec.win_length,
        window=spec.window,
        center=spec.center,
        pad_mode=spec.pad_mode,
        onesided=spec.onesided,
        return_complex=True,
    )
    power = stft.real.square() + stft.imag.square()  # (B, freqs, frames)
    return torch.matmul(mel.mel_scale.fb.T, power)


def equal_windows(frames: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, T, F)`` -> ``(B * n, T // n, F)``: each row cut into ``n`` equal consecutive windows.

    The frames' tail under one window is dropped. Used by the lstm body and the GE2E teacher
    to read a fragment in windows (``ModelConfig.windows``).
    """
    batch, steps, n_features = frames.shape
    size = steps // n
    return frames[:, : size * n].reshape(batch * n, size, n_features)


class RawFrontend(nn.Module):
    """Waveform subsampled to 4 kHz, as the case study fed its 1-D CNN: (B, 1, 12000)."""

    def __init__(self) -> None:
        super().__init__()
        self.n_features = 1

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = AF.resample(wav, SAMPLE_RATE, RAW_RATE)
        # Per-fragment standardisation: loudness carries no identity.
        x = (x - x.mean(dim=-1, keepdim=True)) / (x.std(dim=-1, keepdim=True) + 1e-5)
        return x.unsqueeze(1)

    def frames(self, samples: int) -> int:
        return math.ceil(samples * RAW_RATE / SAMPLE_RATE)


class MFCCFrontend(nn.Module):
    """32 MFCCs computed exactly as ``librosa.feature.mfcc(y, sr=16000, n_mfcc=32)``: (B, 32, 94).

    Slaney mel scale and normalisation, power spectrogram, ``power_to_db`` with a per-fragment
    80 dB floor, orthonormal DCT-II. torchaudio's ``MFCC`` applies its top_db clamp across the
    whole batch, so the dB step is done here per fragment.
    """

    def __init__(self, n_mfcc: int = MFCC_N) -> None:
        super().__init__()
        self.n_features = n_mfcc
        self.mel = T.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=MFCC_N_FFT,
            hop_length=MFCC_HOP,
            n_mels=MFCC_N_MELS,
            power=2.0,
            center=True,
            pad_mode="constant",
            norm="slaney",
            mel_scale="slaney",
        )
        dct = AF.create_dct(n_mfcc, MFCC_N_MELS, norm="ortho")  # (n_mels, n_mfcc)
        self.register_buffer("dct", dct, persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        power = mel_power(self.mel, wav.float())  # (B, n_mels, frames)
        db = 10.0 * torch.log10(power.clamp_min(1e-10))
        peak = db.amax(dim=(-2, -1), keepdim=True)
        db = torch.maximum(db, peak - MFCC_TOP_DB)
        return torch.einsum("bmt,mc->bct", db, self.dct)

    def frames(self, samples: int) -> int:
        return 1 + samples // MFCC_HOP


class FbankFrontend(nn.Module):
    """Log-mel filterbank (25 ms / 10 ms, 20-7600 Hz) with per-fragment mean normalisation."""

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.n_features = n_mels
        self.mel = T.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=FBANK_N_FFT,
            win_length=FBANK_WIN,
            hop_length=FBANK_HOP,
            f_min=FBANK_F_MIN,
            f_max=FBANK_F_MAX,
            n_mels=n_mels,
            power=2.0,
            center=True,
            window_fn=torch.hamming_window,
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = torch.log(mel_power(self.mel, wav.float()) + 1e-6)
        return x - x.mean(dim=-1, keepdim=True)

    def frames(self, samples: int) -> int:
        return 1 + samples // FBANK_HOP


class PowerMel(nn.Module):
    """Resemblyzer's GE2E input: ``(B, samples)`` -> ``(B, frames, 40)`` power mel.

    Quieter audio is first raised to -30 dBFS (Resemblyzer's ``normalize_volume`` with
    ``increase_only``); 25-ms windows every 10 ms, Slaney mel scale and normalisation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mel = T.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=POWERMEL_WIN,
            hop_length=POWERMEL_HOP,
            n_mels=POWERMEL_N_MELS,
            power=2.0,
            center=True,
            pad_mode="constant",
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        rms = wav.float().pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-8)
        gain_db = (POWERMEL_TARGET_DBFS - 20.0 * torch.log10(rms)).clamp_min(0.0)
        wav = wav * torch.pow(10.0, gain_db / 20.0)
        return mel_power(self.mel, wav.float()).transpose(1, 2)


class PowerMelFrontend(nn.Module):
    """``PowerMel`` with ``stack`` consecutive frames side by side: (B, 40 * stack, 301 // stack).

    Stacking cuts the steps a recurrent body runs (3: one step per 30 ms) without dropping
    frames; the tail frames that do not fill a step are left out.
    """

    def __init__(self, stack: int = 1) -> None:
        super().__init__()
        self.stack = stack
        self.n_features = POWERMEL_N_MELS * stack
        self.power_mel = PowerMel()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mels = self.power_mel(wav)  # (B, frames, 40)
        batch, frames, n_mels = mels.shape
        steps = frames // self.stack
        x = mels[:, : steps * self.stack].reshape(batch, steps, n_mels * self.stack)
        return x.transpose(1, 2)

    def frames(self, samples: int) -> int:
        return (1 + samples // POWERMEL_HOP) // self.stack
