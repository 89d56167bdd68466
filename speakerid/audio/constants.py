"""Every audio constant, with its unit: rates, fragment length, trimming, streaming, stdin."""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz, the rate every array in the core is at
FRAGMENT_SECONDS = 3.0  # the case study's fragment length
FRAGMENT_SAMPLES = int(FRAGMENT_SECONDS * SAMPLE_RATE)  # 48000
# Less speech than this (after trimming) is refused (--min-speech raises or lowers it). The
# accurate model's EER on 0.5-s crops (4.2%) beats the previous model's at its old 1-s limit
# (5.8%): bench/bench_short.py, docs/benchmarks.md "Short recordings".
MIN_SPEECH_SECONDS = 0.5
MIN_SPEECH_SAMPLES = int(MIN_SPEECH_SECONDS * SAMPLE_RATE)  # 8000
TAIL_KEEP_RATIO = 0.5  # a tail shorter than this fraction of a fragment is dropped

STREAM_CHUNK_SECONDS = 60.0  # long recordings are read and resampled this much at a time

TRIM_FRAME_SECONDS = 0.03  # energy frame for silence trimming
TRIM_FRAME_SAMPLES = int(TRIM_FRAME_SECONDS * SAMPLE_RATE)  # 480
TRIM_TOP_DB = 40.0  # frames this far below the loudest frame count as silence
SILENCE_FLOOR_DBFS = -60.0  # frames below this level are silence whatever the peak
TRIM_PAD_FRAMES = 5  # voiced regions are widened by this many frames (150 ms) each side

STDIN = "-"  # the FILE name that means "read the audio from standard input"
RAW_SAMPLE_WIDTH = 2  # bytes per sample of raw PCM on stdin: signed 16-bit little-endian
# Stdin is spooled to a temporary file (not memory) up to this many bytes: 2 GiB, about
# 18.6 h of 16 kHz 16-bit mono raw PCM. An endless pipe stops here with a message.
STDIN_MAX_BYTES = 2**31
STDIN_READ_BYTES = 1 << 20  # stdin is copied this much at a time
STREAM_BLOCK_SECONDS = 10.0  # input read, mixed and resampled at a time on the streamed path
# Files holding more decoded values than this (frames x channels; 16 MB as float32, about
# 4 min of 16 kHz mono or 42 s of 48 kHz stereo) are streamed. Reading a whole file costs
# several copies of it (decode, mix, resample, trim, fragments): 1.45 GB for an hour of
# 16 kHz mono, 7.1 GB at 48 kHz stereo (docs/reliability.md).
STREAM_ABOVE_VALUES = 4_000_000

# Resampling is libsoxr's (python-soxr): any ratio, set up once per stream, memory bounded
# by the block, not by the rates' gcd. "HQ" (20-bit, linear phase) is librosa's default. It
# agrees with the former windowed sinc (torchaudio's) to over 30 dB SNR below 80 % of the
# lower Nyquist frequency (tested). Accurate-model embeddings of 16-kHz recordings taken to
# 22.05 or 44.1 kHz and back agree with the old kernel's to a cosine of 0.998 or more; from
# 8 kHz only to 0.80 on average (the empty 4-8 kHz band, where the old kernel left images,
# weighs in the log fbank), soxr's being the nearer to the 16-kHz original's (0.72 vs 0.67).
RESAMPLE_QUALITY = "HQ"
MIN_SAMPLE_RATE = 1  # Hz; rates outside these bounds are refused with a message
MAX_SAMPLE_RATE = 384_000  # Hz, the highest rate audio interfaces record at
