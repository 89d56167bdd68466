"""Numpy twins of the torch front-ends in ``features.py``, for the torch-free ONNX backend.

Each ``FRONTENDS_NP[name](config)`` returns a function from ``(batch, samples)`` float32
16 kHz fragments to the same ``(batch, features, frames)`` array the torch front-end of that
name computes (tested equal in ``tests/test_npfeatures.py``). The constants repeat
``features.py``'s by name (a test checks that they agree) and the windows and filterbanks
are rebuilt from their definitions, so this module imports neither torch nor torchaudio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from speakerid.audio import SAMPLE_RATE
from speakerid.errors import CheckpointError
from speakerid.features.constants import (
    FBANK_F_MAX,
    FBANK_F_MIN,
    FBANK_HOP,
    FBANK_N_FFT,
    FBANK_WIN,
    KALDI_F_MAX,
    KALDI_F_MIN,
    KALDI_HOP,
    KALDI_N_FFT,
    KALDI_N_MELS,
    KALDI_POVEY_POWER,
    KALDI_PREEMPH,
    KALDI_WIN,
    MFCC_HOP,
    MFCC_N_FFT,
    MFCC_N_MELS,
    MFCC_TOP_DB,
    POWERMEL_HOP,
    POWERMEL_N_MELS,
    POWERMEL_TARGET_DBFS,
    POWERMEL_WIN,
    RAW_RATE,
    RESAMPLE_ROLLOFF,
    RESAMPLE_ZERO_CROSSINGS,
    SB_AMIN,
    SB_HOP,
    SB_TOP_DB,
    SB_WIN,
)

Frontend = Callable[[np.ndarray], np.ndarray]


def periodic_window(kind: str, length: int) -> np.ndarray:
    """``torch.hann_window`` / ``torch.hamming_window`` (periodic) as float32."""
    phase = 2.0 * math.pi * np.arange(length) / length
    alpha = {"hann": 0.5, "hamming": 0.54}[kind]
    return (alpha - (1.0 - alpha) * np.cos(phase)).astype(np.float32)


def _hz_to_mel(freq: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0  # Slaney: linear below 1 kHz, logarithmic above
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    safe = np.maximum(freq, min_log_hz)
    return np.where(
        freq >= min_log_hz, min_log_mel + np.log(safe / min_log_hz) / logstep, freq / f_sp
    )


def _mel_to_hz(mels: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(
        mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels
    )


def mel_filterbank(
    n_fft: int, n_mels: int, f_min: float, f_max: float, scale: str, slaney_norm: bool
) -> np.ndarray:
    """Triangular mel filters as ``torchaudio.functional.melscale_fbanks``: (freqs, n_mels)."""
    all_freqs = np.linspace(0, SAMPLE_RATE // 2, n_fft // 2 + 1)
    mel_pts = np.linspace(
        _hz_to_mel(np.array(f_min), scale), _hz_to_mel(np.array(f_max), scale), n_mels + 2
    )
    f_pts = _mel_to_hz(mel_pts, scale)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    if slaney_norm:  # equal area per filter
        fb *= 2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])[None, :]
    return fb.astype(np.float32)


def power_spectrogram(
    wav: np.ndarray, n_fft: int, hop: int, window: np.ndarray, pad_mode: str
) -> np.ndarray:
    """``|torch.stft(center=True)|**2``: ``(B, samples)`` -> ``(B, frames, n_fft // 2 + 1)``.

    A window shorter than ``n_fft`` is zero-padded on both sides, as torch does.
    """
    left = (n_fft - len(window)) // 2
    full = np.zeros(n_fft, dtype=np.float32)
    full[left : left + len(window)] = window
    padded = np.pad(wav, ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]
    spec = np.fft.rfft(frames * full, axis=-1)
    return (spec.real**2 + spec.imag**2).astype(np.float32)


def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II, ``torchaudio.functional.create_dct(norm="ortho")``: (mels, mfcc)."""
    n = np.arange(n_mels)
    k = np.arange(n_mfcc)[:, None]
    dct = np.cos(math.pi / n_mels * (n + 0.5) * k)
    dct[0] *= 1.0 / math.sqrt(2.0)
    return (dct * math.sqrt(2.0 / n_mels)).T.astype(np.float32)


def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """Resampling filters for coprime rates ``orig -> new``: ``(new, taps)`` float32 and the
    padding width in input samples. One filter per output phase."""
    base = min(orig, new) * RESAMPLE_ROLLOFF
    width = math.ceil(RESAMPLE_ZERO_CROSSINGS * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx[None, :]) * base
    t = np.clip(t, -RESAMPLE_ZERO_CROSSINGS, RESAMPLE_ZERO_CROSSINGS)
    window = np.cos(t * math.pi / RESAMPLE_ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    safe = np.where(t == 0, 1.0, t)
    kernel = np.where(t == 0, 1.0, np.sin(safe) / safe) * window * (base / orig)
    return kernel.astype(np.float32), width


def torch_resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """``torchaudio.functional.resample`` with its defaults, on ``(samples,)`` float32.

    The raw front-end's twin only (16 kHz -> 4 kHz: a 4 x 1 table). Its table is
    ``new x (orig + taps)`` after dividing the rates by their gcd, so audio input is
    resampled by ``audio.resample`` (libsoxr) instead, which has no such table.
    """
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    if orig == new:
        return np.asarray(wav, dtype=np.float32)
    kernel, width = _sinc_kernel(orig, new)
    padded = np.pad(np.asarray(wav, dtype=np.float32), (width, width + orig))
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]
    out = (windows @ kernel.T).reshape(-1)  # (frames, phases) -> interleaved samples
    return np.ascontiguousarray(out[: math.ceil(new * len(wav) / orig)], dtype=np.float32)


def raw_frontend(config: Mapping[str, Any]) -> Frontend:
    """``features.RawFrontend``: 4 kHz waveform, standardised per fragment, (B, 1, samples)."""

    def apply(wav: np.ndarray) -> np.ndarray:
        x = np.stack([torch_resample(row, SAMPLE_RATE, RAW_RATE) for row in wav])
        # torch's std is the unbiased one
        x = (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, ddof=1, keepdims=True) + 1e-5)
        return x[:, None, :].astype(np.float32)

    return apply


def mfcc_frontend(config: Mapping[str, Any]) -> Frontend:
    """``features.MFCCFrontend``: librosa-style MFCCs with a per-fragment 80 dB floor."""
    fb = mel_filterbank(MFCC_N_FFT, MFCC_N_MELS, 0.0, SAMPLE_RATE / 2, "slaney", True)
    window = periodic_window("hann", MFCC_N_FFT)
    dct = dct_matrix(int(config["n_mfcc"]), MFCC_N_MELS)

    def apply(wav: np.ndarray) -> np.ndarray:
        power = power_spectrogram(wav, MFCC_N_FFT, MFCC_HOP, window, "constant") @ fb
        db = 10.0 * np.log10(np.maximum(power, 1e-10))  # (B, frames, mels)
        db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - MFCC_TOP_DB)
        return np.einsum("btm,mc->bct", db, dct).astype(np.float32)

    return apply


def fbank_frontend(config: Mapping[str, Any]) -> Frontend:
    """``features.FbankFrontend``: log mel (HTK scale), per-fragment mean removed."""
    n_mels = int(config["n_mels"])
    fb = mel_filterbank(FBANK_N_FFT, n_mels, FBANK_F_MIN, FBANK_F_MAX, "htk", False)
    window = periodic_window("hamming", FBANK_WIN)

    def apply(wav: np.ndarray) -> np.ndarray:
        power = power_spectrogram(wav, FBANK_N_FFT, FBANK_HOP, window, "reflect")
        x = np.log(power @ fb + 1e-6).transpose(0, 2, 1)  # (B, mels, frames)
        return (x - x.mean(axis=-1, keepdims=True)).astype(np.float32)

    return apply


def powermel_frontend(config: Mapping[str, Any]) -> Frontend:
    """``features.PowerMelFrontend``: GE2E's power mel, ``stem_stride`` frames stacked."""
    stack = int(config["stem_stride"])
    fb = mel_filterbank(POWERMEL_WIN, POWERMEL_N_MELS, 0.0, SAMPLE_RATE / 2, "slaney", True)
    window = periodic_window("hann", POWERMEL_WIN)

    def apply(wav: np.ndarray) -> np.ndarray:
        rms = np.maximum(np.sqrt((wav.astype(np.float32) ** 2).mean(axis=-1, keepdims=True)), 1e-8)
        gain_db = np.maximum(POWERMEL_TARGET_DBFS - 20.0 * np.log10(rms), 0.0)
        wav = (wav * np.power(10.0, gain_db / 20.0)).astype(np.float32)
        mels = power_spectrogram(wav, POWERMEL_WIN, POWERMEL_HOP, window, "constant") @ fb
        batch, frames, n_mels = mels.shape
        steps = frames // stack
        x = mels[:, : steps * stack].reshape(batch, steps, n_mels * stack)
        return np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32)

    return apply


def kaldi_mel_filterbank(n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Kaldi's triangular filters on its mel scale (1127 ln(1 + f/700)): (n_fft//2 + 1, n_mels).

    As ``torchaudio.compliance.kaldi.get_mel_banks`` with no VTLN warp; the Nyquist bin gets
    no weight, as in Kaldi.
    """
    n_bins = KALDI_N_FFT // 2
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    low, high = mel(f_min), mel(f_max)
    delta = (high - low) / (n_mels + 1)
    k = np.arange(n_mels)[:, None]
    left, centre, right = low + k * delta, low + (k + 1) * delta, low + (k + 2) * delta
    bins = mel(SAMPLE_RATE / KALDI_N_FFT * np.arange(n_bins))[None, :]
    up = (bins - left) / (centre - left)
    down = (right - bins) / (right - centre)
    fb = np.maximum(0.0, np.minimum(up, down))  # (n_mels, n_bins)
    return np.pad(fb, ((0, 0), (0, 1))).T.astype(np.float32)


def kaldi_fbank(wav: np.ndarray, n_mels: int = KALDI_N_MELS) -> np.ndarray:
    """Kaldi fbank of ``(B, samples)``: ``(B, frames, n_mels)`` log mel energies.

    Frames of 25 ms every 10 ms that fit inside the signal (snip_edges), DC removed,
    pre-emphasis 0.97, Povey window, 512-point power spectrum, 20 Hz-8 kHz filters, log with
    a float32-epsilon floor; no dither, no energy term.
    """
    frames = np.lib.stride_tricks.sliding_window_view(wav.astype(np.float64), KALDI_WIN, axis=-1)
    frames = frames[:, ::KALDI_HOP]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    previous = np.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = frames - KALDI_PREEMPH * previous
    n = np.arange(KALDI_WIN)
    hann = 0.5 - 0.5 * np.cos(2 * math.pi * n / (KALDI_WIN - 1))  # symmetric
    spec = np.fft.rfft(frames * hann**KALDI_POVEY_POWER, n=KALDI_N_FFT, axis=-1)
    power = spec.real**2 + spec.imag**2
    energies = power @ kaldi_mel_filterbank(n_mels, KALDI_F_MIN, KALDI_F_MAX).astype(np.float64)
    return np.log(np.maximum(energies, np.finfo(np.float32).eps)).astype(np.float32)


def kaldi_fbank_frontend(config: Mapping[str, Any]) -> Frontend:
    """Kaldi fbank with the mean over each fragment's frames removed: (B, n_mels, frames)."""
    n_mels = int(config.get("n_mels", KALDI_N_MELS))

    def apply(wav: np.ndarray) -> np.ndarray:
        x = kaldi_fbank(wav, n_mels)
        x = x - x.mean(axis=1, keepdims=True)
        return np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32)

    return apply


def sb_mel_filterbank(n_mels: int) -> np.ndarray:
    """``features.sb_mel_banks``: SpeechBrain's symmetric triangles, (SB_WIN // 2 + 1, n_mels)."""
    mel = np.linspace(0.0, 2595.0 * math.log10(1.0 + SAMPLE_RATE / 2 / 700.0), n_mels + 2)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    centre, half_width = hz[1:-1, None], (hz[1:-1] - hz[:-2])[:, None]
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, SB_WIN // 2 + 1)[None, :]
    slope = (freqs - centre) / half_width
    return np.maximum(np.minimum(1.0 + slope, 1.0 - slope), 0.0).T.astype(np.float32)


def sb_fbank_frontend(config: Mapping[str, Any]) -> Frontend:
    """``features.SBFbankFrontend``: SpeechBrain's dB fbank, per-fragment mean removed."""
    fb = sb_mel_filterbank(int(config["n_mels"]))
    window = periodic_window("hamming", SB_WIN)

    def apply(wav: np.ndarray) -> np.ndarray:
        power = power_spectrogram(wav, SB_WIN, SB_HOP, window, "constant")
        db = 10.0 * np.log10(np.maximum(power @ fb, SB_AMIN))  # (B, frames, mels)
        db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - SB_TOP_DB)
        x = db - db.mean(axis=1, keepdims=True)
        return np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32)

    return apply


FRONTENDS_NP: dict[str, Callable[[Mapping[str, Any]], Frontend]] = {
    "raw": raw_frontend,
    "mfcc": mfcc_frontend,
    "fbank": fbank_frontend,
    "powermel": powermel_frontend,
    "kaldi_fbank": kaldi_fbank_frontend,
    "sb_fbank": sb_fbank_frontend,
}


def numpy_frontend(config: Mapping[str, Any]) -> Frontend:
    """The numpy front-end a model config names; ``CheckpointError`` if there is none."""
    name = config.get("frontend")
    if name not in FRONTENDS_NP:
        raise CheckpointError(
            f"the {name!r} front-end has no numpy version, so this model cannot run on the "
            f"onnx backend (front-ends it can: {', '.join(FRONTENDS_NP)}); use --backend torch"
        )
    return FRONTENDS_NP[name](config)
