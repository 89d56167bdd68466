"""audio.py: reading, resampling, silence trimming and the fragment rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerid.audio import (
    FRAGMENT_SAMPLES,
    SAMPLE_RATE,
    fragment,
    load_audio,
    prepare,
    to_16k_mono,
    trim_silence,
)
from speakerid.errors import AudioError


def tone(seconds: float, freq: float = 220.0, rate: int = SAMPLE_RATE, amp: float = 0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")]
)
def test_formats_read_as_16k_mono(tmp_path: Path, fmt: str, subtype: str) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, tone(1.0), SAMPLE_RATE, format=fmt, subtype=subtype)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - SAMPLE_RATE) <= 1 and np.abs(wav).max() <= 1.0


@pytest.mark.parametrize("rate", [8_000, 44_100])
def test_resampled_to_16k_keeps_pitch(tmp_path: Path, rate: int) -> None:
    stereo = np.stack([tone(2.0, 440.0, rate), tone(2.0, 440.0, rate)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, rate)
    wav = load_audio(tmp_path / "s.wav")
    assert abs(len(wav) - 2 * SAMPLE_RATE) <= 2
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(wav) - 440.0) < 2.0


def test_stereo_is_averaged() -> None:
    left, right = tone(0.5), -tone(0.5)
    assert np.allclose(to_16k_mono(np.stack([left, right], 1), SAMPLE_RATE), 0.0)


def bad_files(tmp: Path) -> dict[str, Path]:
    (tmp / "empty.wav").write_bytes(b"")
    sf.write(tmp / "zero.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    (tmp / "text.wav").write_text("this is not audio\n" * 20)
    sf.write(tmp / "good.flac", tone(2.0), SAMPLE_RATE)
    data = (tmp / "good.flac").read_bytes()
    (tmp / "truncated.flac").write_bytes(data[:200])
    (tmp / "garbage.flac").write_bytes(data[:60] + bytes(range(256)) * 40)
    (tmp / "a_dir.wav").mkdir()
    return {p.stem: p for p in tmp.iterdir() if p.stem != "good"} | {"missing": tmp / "no.wav"}


def test_bad_files_raise_one_line_audio_errors(tmp_path: Path) -> None:
    for name, path in bad_files(tmp_path).items():
        try:
            wav = load_audio(path)
            prepare(wav, name=str(path))
        except AudioError as exc:
            assert "\n" not in str(exc), name
            assert str(path) in str(exc), name
        else:
            pytest.fail(f"{name} was accepted")


def test_nan_samples_refused() -> None:
    wav = tone(1.0)
    wav[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        to_16k_mono(wav, SAMPLE_RATE)


def test_trim_removes_long_silence_keeps_speech() -> None:
    burst = tone(1.0)
    wav = np.concatenate([np.zeros(SAMPLE_RATE * 2), burst, np.zeros(SAMPLE_RATE * 3), burst])
    trimmed = trim_silence(wav.astype(np.float32))
    # both bursts kept, with at most the 150 ms margins on each side of each
    assert 2 * SAMPLE_RATE <= len(trimmed) <= 2 * SAMPLE_RATE + 4 * int(0.16 * SAMPLE_RATE)


@pytest.mark.parametrize("level_dbfs", [None, -80.0])
def test_silence_and_near_silence_are_refused(level_dbfs: float | None) -> None:
    wav = np.zeros(SAMPLE_RATE * 3, np.float32)
    if level_dbfs is not None:
        rng = np.random.default_rng(0)
        wav = (10 ** (level_dbfs / 20) * rng.standard_normal(len(wav))).astype(np.float32)
    with pytest.raises(AudioError, match="silent"):
        prepare(wav)


@pytest.mark.parametrize(
    ("seconds", "count"), [(3.0, 1), (4.0, 1), (4.6, 2), (6.0, 2), (7.6, 3), (1.5, 1)]
)
def test_fragment_rule(seconds: float, count: int) -> None:
    wav = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32)
    frags = fragment(wav)
    assert frags.shape == (count, FRAGMENT_SAMPLES) and frags.dtype == np.float32
    if seconds >= 3.0:
        assert frags[0, 0] == 0.0
    if seconds in (4.6, 7.6):  # a long tail gets an end-aligned fragment
        assert frags[-1, -1] == wav[-1]
    if seconds < 3.0:  # short recordings are repeated end to end
        assert np.array_equal(frags[0, : len(wav)], wav)
        assert frags[0, len(wav)] == wav[0]


def test_fragment_overlapping_hop() -> None:
    wav = np.zeros(6 * SAMPLE_RATE, np.float32)
    assert len(fragment(wav, hop_seconds=1.0)) == 4


def test_too_short_refused() -> None:
    with pytest.raises(AudioError, match="at least"):
        fragment(np.ones(SAMPLE_RATE // 2, np.float32))
