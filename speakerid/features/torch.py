"""Front-ends: batched torch modules from 16 kHz fragments to the encoder's input.

Each takes ``(batch, samples)`` float waveforms at ``SAMPLE_RATE`` and returns
``(batch, features, frames)``. They hold no trainable weights (the pretrained front-ends
hold frozen ones), run on CPU or GPU, and report their output shape for a fragment length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
import torchaudio.transforms as T
from torch import nn

from speakerid.audio import SAMPLE_RATE
from speakerid.features.constants import (
    FBANK_F_MAX,
    FBANK_F_MIN,
    FBANK_HOP,
    FBANK_N_FFT,
    FBANK_WIN,
    KALDI_F_MIN,
    KALDI_HOP,
    KALDI_LOG_FLOOR,
    KALDI_N_FFT,
    KALDI_POVEY_POWER,
    KALDI_PREEMPH,
    KALDI_WIN,
    MFCC_HOP,
    MFCC_N,
    MFCC_N_FFT,
    MFCC_N_MELS,
    MFCC_TOP_DB,
    POWERMEL_HOP,
    POWERMEL_N_MELS,
    POWERMEL_TARGET_DBFS,
    POWERMEL_WIN,
    RAW_RATE,
    SB_AMIN,
    SB_HOP,
    SB_TOP_DB,
    SB_WIN,
)


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


def kaldi_mel_banks(n_mels: int, n_fft: int = KALDI_N_FFT) -> torch.Tensor:
    """Kaldi's triangular mel filters, ``(n_mels, n_fft // 2 + 1)``, on a 1127 ln(1 + f/700) scale.

    Triangles are equal-width on the mel scale between ``KALDI_F_MIN`` and Nyquist; the
    Nyquist bin gets no weight, as in Kaldi.
    """

    def mel(f: torch.Tensor) -> torch.Tensor:
        return 1127.0 * torch.log1p(f / 700.0)

    nyquist = SAMPLE_RATE / 2
    low, high = mel(torch.tensor(KALDI_F_MIN)), mel(torch.tensor(nyquist))
    delta = (high - low) / (n_mels + 1)
    left = low + delta * torch.arange(n_mels, dtype=torch.float32)[:, None]
    center, right = left + delta, left + 2 * delta
    bins = mel(torch.arange(n_fft // 2, dtype=torch.float32) * (SAMPLE_RATE / n_fft))[None, :]
    rising = (bins - left) / (center - left)
    falling = (right - bins) / (right - center)
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return F.pad(banks, (0, 1))  # (n_mels, n_fft // 2 + 1)


class KaldiFbankFrontend(nn.Module):
    """Kaldi-compatible log mel filterbank, batched: ``(B, samples)`` -> ``(B, n_mels, frames)``.

    The input CAM++ was trained on, computed as ``torchaudio.compliance.kaldi.fbank`` does with
    its defaults (no dither, snip_edges: ``1 + (samples - 400) // 160`` frames): per 25-ms
    frame, remove the DC offset, pre-emphasise (0.97), apply a Povey window, zero-pad to 512,
    power spectrum, mel filters from 20 Hz to Nyquist, log with a float-epsilon floor. Then
    the per-fragment mean of each bin is subtracted (cepstral mean normalisation, no variance
    normalisation). Audio is float in [-1, 1], not Kaldi's 16-bit integer scale.
    """

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.n_features = n_mels
        window = torch.hann_window(KALDI_WIN, periodic=False, dtype=torch.float64)
        self.register_buffer("window", window.pow(KALDI_POVEY_POWER).float(), persistent=False)
        self.register_buffer("banks", kaldi_mel_banks(n_mels), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        frames = wav.float().unfold(-1, KALDI_WIN, KALDI_HOP)  # (B, T, 400)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - KALDI_PREEMPH * previous) * self.window
        spectrum = torch.fft.rfft(frames, n=KALDI_N_FFT)
        power = spectrum.real.square() + spectrum.imag.square()  # (B, T, 257)
        x = torch.log(torch.matmul(power, self.banks.T).clamp_min(KALDI_LOG_FLOOR))
        x = x - x.mean(dim=1, keepdim=True)
        return x.transpose(1, 2)

    def frames(self, samples: int) -> int:
        return 1 + (samples - KALDI_WIN) // KALDI_HOP


def sb_mel_banks(n_mels: int, n_fft: int = SB_WIN) -> torch.Tensor:
    """SpeechBrain's triangular mel filters, ``(n_mels, n_fft // 2 + 1)``, 0 Hz to Nyquist.

    Centres equally spaced on the HTK mel scale (2595 log10(1 + f/700)); unlike torchaudio's,
    each triangle is symmetric in Hz, its half-width the distance to the previous centre.
    Built in float64 (the numpy twin builds the same), stored float32.
    """
    mel = torch.linspace(
        0.0, 2595.0 * math.log10(1.0 + SAMPLE_RATE / 2 / 700.0), n_mels + 2, dtype=torch.float64
    )
    hz = 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)
    centre, half_width = hz[1:-1, None], (hz[1:-1] - hz[:-2])[:, None]
    freqs = torch.linspace(0.0, SAMPLE_RATE / 2, n_fft // 2 + 1, dtype=torch.float64)[None, :]
    slope = (freqs - centre) / half_width
    return torch.clamp(torch.minimum(1.0 + slope, 1.0 - slope), min=0.0).float()


class SBFbankFrontend(nn.Module):
    """SpeechBrain's ``Fbank``, sentence mean removed: ``(B, samples)`` -> ``(B, n_mels, frames)``.

    The input of SpeechBrain's ECAPA-TDNN (``spkrec-ecapa-voxceleb``): centred 25-ms periodic
    Hamming frames every 10 ms (zero-padded ends, ``1 + samples // 160`` frames), 400-point
    power spectrum, ``sb_mel_banks``, ``10 log10`` with a 1e-10 floor, floored again at 80 dB
    below the fragment's peak, then each bin's mean over the fragment removed (no variance
    normalisation).
    """

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.n_features = n_mels
        self.register_buffer("window", torch.hamming_window(SB_WIN), persistent=False)
        self.register_buffer("banks", sb_mel_banks(n_mels), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        stft = torch.stft(
            wav.float(),
            n_fft=SB_WIN,
            hop_length=SB_HOP,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = stft.real.square() + stft.imag.square()  # (B, freqs, frames)
        db = 10.0 * torch.log10(torch.matmul(self.banks, power).clamp_min(SB_AMIN))
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - SB_TOP_DB)
        return db - db.mean(dim=-1, keepdim=True)

    def frames(self, samples: int) -> int:
        return 1 + samples // SB_HOP


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
