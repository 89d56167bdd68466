"""Every front-end constant, once: the torch (``features.torch``) and numpy
(``features.numpy``) implementations both read them, so they cannot drift apart."""

from __future__ import annotations

import numpy as np

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

KALDI_WIN = 400  # 25 ms frames (Kaldi's frame_length)
KALDI_HOP = 160  # 10 ms (frame_shift)
KALDI_N_FFT = 512  # the frame zero-padded to a power of two
KALDI_PREEMPH = 0.97
KALDI_POVEY_POWER = 0.85  # Povey window: a Hann window raised to this power
KALDI_F_MIN = 20.0  # Hz
KALDI_F_MAX = SAMPLE_RATE / 2  # Hz: the upper edge is Nyquist (8 kHz)
KALDI_N_MELS = 80  # CAM++'s input
KALDI_LOG_FLOOR = float(np.finfo(np.float32).eps)  # log(max(energy, eps))

POWERMEL_N_MELS = 40  # Resemblyzer's GE2E input: 40-band power mel (not log)
POWERMEL_WIN = 400  # 25 ms, also the FFT size
POWERMEL_HOP = 160  # 10 ms
POWERMEL_TARGET_DBFS = -30.0  # Resemblyzer raises quieter audio to this level first

SB_WIN = 400  # SpeechBrain's Fbank (the ECAPA-TDNN input): 25 ms frames, also the FFT size
SB_HOP = 160  # 10 ms
SB_AMIN = 1e-10  # power floor before the log
SB_TOP_DB = 80.0  # each fragment's log mels are floored this far below its peak
# torchaudio's default ``resample`` kernel (windowed sinc, Hann window), for the raw front-end
RESAMPLE_ZERO_CROSSINGS = 6  # sinc lobes each side of the kernel's centre
RESAMPLE_ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist frequency
