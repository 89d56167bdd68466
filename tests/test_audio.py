"""Audio in: reading files, mixing and resampling, silence trimming, the fragment rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerid.audio import (
    FRAGMENT_SAMPLES,
    MIN_SPEECH_SAMPLES,
    SAMPLE_RATE,
    TRIM_FRAME_SAMPLES,
    TRIM_PAD_FRAMES,
    fragment,
    load_audio,
    prepare,
    to_16k_mono,
    trim_silence,
)
from speakerid.errors import AudioError

SR = SAMPLE_RATE


def sine(freq: float, seconds: float, rate: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wav: np.ndarray, rate: int = SR) -> float:
    """Frequency of the strongest FFT bin (Hann-windowed)."""
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1 / rate)[spectrum.argmax()])


def ramp(n: int) -> np.ndarray:
    """Distinct sample values, so that a fragment's position can be read off its content."""
    return np.arange(n, dtype=np.float32) / n


def assert_one_line(exc: pytest.ExceptionInfo[AudioError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# ----------------------------------------------------------------------------- load_audio


@pytest.mark.parametrize(
    ("suffix", "subtype", "atol"),
    [
        (".wav", "PCM_16", 1 / 2**15),
        (".wav", "FLOAT", 0.0),
        (".flac", "PCM_16", 1 / 2**15),
        (".flac", "PCM_24", 1 / 2**23),
    ],
)
def test_load_lossless_formats_round_trip(
    tmp_path: Path, suffix: str, subtype: str, atol: float
) -> None:
    wav = sine(440.0, 1.0)
    path = tmp_path / f"a{suffix}"
    sf.write(str(path), wav, SR, subtype=subtype)

    out = load_audio(path)

    assert out.dtype == np.float32 and out.ndim == 1
    assert out.shape == wav.shape
    np.testing.assert_allclose(out, wav, atol=atol + 1e-7)


def test_load_ogg_vorbis_is_close(tmp_path: Path) -> None:
    wav = sine(440.0, 1.0)
    path = tmp_path / "a.ogg"
    sf.write(str(path), wav, SR, format="OGG", subtype="VORBIS")

    out = load_audio(path)

    assert out.dtype == np.float32 and out.shape == wav.shape
    assert np.corrcoef(out, wav)[0, 1] > 0.99  # lossy, but the same signal
    assert peak_hz(out) == pytest.approx(440.0, abs=2.0)


def test_load_accepts_str_path(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(str(path), sine(300.0, 0.5), SR)
    assert load_audio(str(path)).shape == (SR // 2,)


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    left, right = sine(300.0, 1.0, amp=0.4), sine(700.0, 1.0, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), SR, subtype="FLOAT")

    out = load_audio(path)

    assert out.shape == left.shape
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100])
def test_other_rates_are_resampled_to_16k(tmp_path: Path, rate: int) -> None:
    seconds, freq = 1.0, 440.0
    path = tmp_path / f"r{rate}.wav"
    sf.write(str(path), sine(freq, seconds, rate=rate), rate, subtype="PCM_16")

    out = load_audio(path)

    assert out.dtype == np.float32
    assert len(out) == round(seconds * SR)
    assert peak_hz(out) == pytest.approx(freq, abs=1.0)  # 1 s of audio: 1 Hz bins
    assert np.abs(out).max() == pytest.approx(0.5, abs=0.02)  # the level survives


def test_resampled_length_follows_duration(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    sf.write(str(path), sine(200.0, 0.75, rate=44_100), 44_100)  # 33075 samples
    assert len(load_audio(path)) == pytest.approx(0.75 * SR, abs=1)


def _expect_audio_error(path: Path, *fragments: str) -> str:
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    message = assert_one_line(exc)
    assert str(path) in message
    for text in fragments:
        assert text in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    _expect_audio_error(tmp_path / "nope.wav", "no such file")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "dir.wav"
    folder.mkdir()
    _expect_audio_error(folder, "directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _expect_audio_error(path, "the file is empty (0 bytes)")


def test_zero_sample_wav(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), SR)
    assert path.stat().st_size > 0  # a valid header with no frames
    _expect_audio_error(path, "no audio samples")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\nsecond line\n")
    _expect_audio_error(path, "cannot be read as audio")


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9])
def test_truncated_flac(tmp_path: Path, keep: float) -> None:
    whole = tmp_path / "whole.flac"
    sf.write(str(whole), sine(440.0, 2.0), SR)
    data = whole.read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: int(len(data) * keep)])
    _expect_audio_error(path, "cut short or damaged")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad: float) -> None:
    wav = sine(440.0, 0.5)
    wav[100] = bad
    with pytest.raises(AudioError) as exc:
        to_16k_mono(wav, SR, name="clip")
    assert "NaN or infinite" in assert_one_line(exc)


def test_to_16k_mono_shapes_and_errors() -> None:
    stereo = np.stack([sine(300.0, 0.5), -sine(300.0, 0.5)], axis=1)
    assert np.abs(to_16k_mono(stereo, SR)).max() == 0.0  # opposite channels cancel
    assert to_16k_mono(sine(300.0, 0.5).astype(np.float64), SR).dtype == np.float32
    for bad in (np.zeros(0), np.zeros((2, 3, 4))):
        with pytest.raises(AudioError) as exc:
            to_16k_mono(bad, SR)
        assert_one_line(exc)
    with pytest.raises(AudioError, match="invalid sample rate"):
        to_16k_mono(sine(300.0, 0.5), 0)


# ----------------------------------------------------------------------------- trim_silence


def bursts(gap_seconds: float = 2.0) -> tuple[np.ndarray, int]:
    """Tone (1 s) - silence - tone (1 s) - silence (0.5 s); returns the signal and tone length."""
    tone = sine(300.0, 1.0)
    gap = np.zeros(round(gap_seconds * SR), dtype=np.float32)
    return np.concatenate([gap[: SR // 2], tone, gap, tone, gap[: SR // 2]]), len(tone)


def test_trim_removes_long_silences_and_keeps_bursts() -> None:
    wav, tone = bursts(gap_seconds=2.0)

    out = trim_silence(wav)

    margin = TRIM_PAD_FRAMES * TRIM_FRAME_SAMPLES  # 150 ms kept either side of speech
    slack = 4 * TRIM_FRAME_SAMPLES  # partial frames at the tones' edges
    assert 2 * tone + 4 * margin - slack <= len(out) <= 2 * tone + 4 * margin + slack
    # Every tone sample survives, in order.
    loud = out[np.abs(out) > 0]
    expected = np.concatenate([sine(300.0, 1.0), sine(300.0, 1.0)])
    np.testing.assert_array_equal(loud, expected[np.abs(expected) > 0])


def test_trim_keeps_continuous_speech() -> None:
    t = np.arange(3 * SR) / SR
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))  # dips to zero 4 times a second
    harmonics = sum(np.sin(2 * np.pi * 140.0 * k * t) / k for k in range(1, 8))
    wav = (0.3 * syllables * harmonics / np.abs(harmonics).max()).astype(np.float32)

    out = trim_silence(wav)

    assert len(out) == len(wav)  # short dips between syllables are not silence
    np.testing.assert_array_equal(out, wav)


def test_trim_keeps_a_short_recording_whole() -> None:
    wav = sine(300.0, TRIM_FRAME_SAMPLES * 2.5 / SR)  # a partial final frame
    np.testing.assert_array_equal(trim_silence(wav), wav)


def test_trim_raises_on_digital_silence() -> None:
    with pytest.raises(AudioError) as exc:
        trim_silence(np.zeros(3 * SR, dtype=np.float32), name="quiet.wav")
    message = assert_one_line(exc)
    assert "silent" in message and "quiet.wav" in message


def test_trim_raises_on_very_quiet_noise() -> None:
    rng = np.random.default_rng(0)
    noise = (1e-4 * rng.standard_normal(3 * SR)).astype(np.float32)  # about -80 dBFS RMS
    with pytest.raises(AudioError, match="silent"):
        trim_silence(noise)


# ----------------------------------------------------------------------------- fragment


def test_fragment_exactly_three_seconds() -> None:
    wav = ramp(FRAGMENT_SAMPLES)
    out = fragment(wav)
    assert out.shape == (1, FRAGMENT_SAMPLES)
    np.testing.assert_array_equal(out[0], wav)


def test_fragment_drops_a_short_tail() -> None:
    out = fragment(ramp(4 * SR))  # tail of 1 s < 1.5 s
    assert out.shape == (1, FRAGMENT_SAMPLES)
    np.testing.assert_array_equal(out[0], ramp(4 * SR)[:FRAGMENT_SAMPLES])


def test_fragment_keeps_a_long_tail_aligned_to_the_end() -> None:
    wav = ramp(round(4.6 * SR))  # tail of 1.6 s >= 1.5 s
    out = fragment(wav)
    assert out.shape == (2, FRAGMENT_SAMPLES)
    np.testing.assert_array_equal(out[0], wav[:FRAGMENT_SAMPLES])
    np.testing.assert_array_equal(out[1], wav[-FRAGMENT_SAMPLES:])


def test_fragment_tail_boundary_is_half_a_fragment() -> None:
    half = FRAGMENT_SAMPLES // 2
    assert len(fragment(ramp(FRAGMENT_SAMPLES + half))) == 2
    assert len(fragment(ramp(FRAGMENT_SAMPLES + half - 1))) == 1


def test_fragment_repeats_a_short_recording() -> None:
    wav = ramp(round(1.5 * SR))
    out = fragment(wav)
    assert out.shape == (1, FRAGMENT_SAMPLES)
    np.testing.assert_array_equal(out[0, : len(wav)], wav)
    np.testing.assert_array_equal(out[0, len(wav) :], wav)


def test_fragment_repeats_an_uneven_short_recording() -> None:
    wav = ramp(round(1.3 * SR))
    out = fragment(wav)
    assert out.shape == (1, FRAGMENT_SAMPLES)
    np.testing.assert_array_equal(out[0], np.tile(wav, 3)[:FRAGMENT_SAMPLES])


def test_fragment_minimum_speech() -> None:
    assert fragment(ramp(MIN_SPEECH_SAMPLES)).shape == (1, FRAGMENT_SAMPLES)
    with pytest.raises(AudioError) as exc:
        fragment(ramp(SR // 4), name="short.wav")
    message = assert_one_line(exc)
    assert "short.wav" in message and "0.25 s" in message
    with pytest.raises(AudioError):
        fragment(ramp(MIN_SPEECH_SAMPLES - 1))


@pytest.mark.parametrize(
    ("seconds", "hop", "expected_starts"),
    [
        (6.0, 1.5, [0.0, 1.5, 3.0]),  # overlapping, no tail
        (7.0, 1.0, [0.0, 1.0, 2.0, 3.0, 4.0]),
        (6.5, 1.5, [0.0, 1.5, 3.0]),  # 0.5 s tail dropped
        (8.0, 1.5, [0.0, 1.5, 3.0, 4.5]),  # 0.5 s tail after the last start dropped
        (9.0, 3.0, [0.0, 3.0, 6.0]),
        (10.0, 3.0, [0.0, 3.0, 6.0]),  # 1 s tail dropped
        (11.0, 3.0, [0.0, 3.0, 6.0, 8.0]),  # 2 s tail: an end-aligned fragment
    ],
)
def test_fragment_hop_counts(seconds: float, hop: float, expected_starts: list[float]) -> None:
    wav = ramp(round(seconds * SR))
    out = fragment(wav, hop_seconds=hop)
    assert out.shape == (len(expected_starts), FRAGMENT_SAMPLES)
    for row, start in zip(out, expected_starts, strict=True):
        s = round(start * SR)
        np.testing.assert_array_equal(row, wav[s : s + FRAGMENT_SAMPLES])


def test_fragment_rejects_non_positive_hop() -> None:
    with pytest.raises(ValueError):
        fragment(ramp(4 * SR), hop_seconds=0.0)


@pytest.mark.parametrize("seconds", [1.2, 3.0, 5.0, 12.3])
def test_fragment_output_dtype_and_shape(seconds: float) -> None:
    wav = ramp(round(seconds * SR)).astype(np.float64)
    out = fragment(wav)
    assert out.dtype == np.float32
    assert out.ndim == 2 and out.shape[1] == FRAGMENT_SAMPLES and len(out) >= 1
    assert out.flags.c_contiguous


# ----------------------------------------------------------------------------- prepare


def test_prepare_trims_then_fragments() -> None:
    wav, _ = bursts(gap_seconds=3.0)  # 6 s holding 2 s of tone
    assert prepare(wav).shape == (1, FRAGMENT_SAMPLES)  # ~2.6 s of speech, repeated to 3 s
    assert prepare(wav, trim=False).shape == (2, FRAGMENT_SAMPLES)  # 6 s: two fragments


@pytest.mark.parametrize("trim", [True, False])
def test_prepare_refuses_silence(trim: bool) -> None:
    with pytest.raises(AudioError) as exc:
        prepare(np.zeros(5 * SR, dtype=np.float32), name="blank.wav", trim=trim)
    message = assert_one_line(exc)
    assert "silent" in message and "blank.wav" in message


@pytest.mark.parametrize("orig", [8_000, 11_025, 22_050, 44_100, 48_000])
def test_resample_agrees_with_the_former_kernel(orig: int) -> None:
    """libsoxr against the windowed sinc it replaced (torchaudio's, what main computed):
    on tones below 80 % of the lower Nyquist frequency the two agree to 30 dB SNR."""
    torch = pytest.importorskip("torch")
    import torchaudio.functional as AF

    from speakerid.audio import resample

    rng = np.random.default_rng(orig)
    t = np.arange(2 * orig) / orig
    top = 0.8 * min(orig, SR) / 2
    wav = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(80, top, 40))
    wav = (0.02 * wav).astype(np.float32)
    before = AF.resample(torch.from_numpy(wav), orig, SR).numpy()
    got = resample(wav, orig, SR)
    assert got.dtype == np.float32 and abs(len(got) - len(before)) <= 1
    n = min(len(got), len(before))
    snr = 10 * np.log10(np.sum(before[:n] ** 2) / np.sum((before[:n] - got[:n]) ** 2))
    assert snr > 30.0
    assert np.corrcoef(before[:n], got[:n])[0, 1] > 0.999


@pytest.mark.parametrize("rate", [1, 7, 15_999, 22_254, 44_101, 383_999, 384_000])
def test_odd_rates_resample_to_the_right_length(tmp_path: Path, rate: int) -> None:
    from speakerid.audio import stream_audio

    frames = max(3, rate // 10)  # 0.1 s (3 samples at the lowest rates)
    path = tmp_path / f"odd{rate}.wav"
    sf.write(str(path), (0.1 * np.sin(np.arange(frames))).astype(np.float32), rate)
    whole = load_audio(path)
    assert abs(len(whole) - frames * SR / rate) <= 1
    streamed = np.concatenate(list(stream_audio(path, block_seconds=0.05)))
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_rates_beyond_the_bounds_are_refused(tmp_path: Path) -> None:
    from speakerid.audio import resample, to_16k_mono

    with pytest.raises(AudioError, match=r"invalid sample rate 0 Hz \(give 1 to 384000 Hz\)"):
        to_16k_mono(np.ones(10, np.float32), 0, name="x")
    with pytest.raises(AudioError, match="invalid sample rate 384001 Hz"):
        resample(np.ones(10, np.float32), 384_001, SR)
    path = tmp_path / "fast.wav"
    sf.write(str(path), np.zeros(100, np.float32), 768_000)
    _expect_audio_error(path, "invalid sample rate 768000 Hz")


def test_min_speech_override_and_message() -> None:
    speech = ramp(int(0.4 * SR))
    with pytest.raises(AudioError, match=r"only 0\.40 s of speech; at least 0\.5 s"):
        fragment(speech)
    assert fragment(speech, min_speech=0.3).shape == (1, FRAGMENT_SAMPLES)
    with pytest.raises(AudioError, match="positive"):
        fragment(speech, min_speech=0.0)


def test_read_stdin_file_bytes_and_raw_pcm(tmp_path: Path) -> None:
    import io

    from speakerid.audio import Spooled, read_stdin

    wav = sine(440, 1.5, rate=8_000)
    path = tmp_path / "x.flac"
    sf.write(str(path), wav, 8_000, subtype="PCM_16")
    clip = read_stdin(stream=io.BytesIO(path.read_bytes()))
    assert isinstance(clip, Spooled) and str(clip) == "-"
    samples = load_audio(clip)
    np.testing.assert_allclose(samples, load_audio(path), atol=1e-7)
    np.testing.assert_array_equal(load_audio(clip), samples)  # read again: it is a file
    pcm = (wav * 32767).astype("<i2").tobytes()
    raw = load_audio(read_stdin(8_000, stream=io.BytesIO(pcm + b"\x01")))  # odd byte dropped
    assert len(raw) == 2 * len(wav) and abs(peak_hz(raw) - 440) < 5
    # arecord writing WAV to a pipe cannot know the length: its header claims ~2 GB
    wav_bytes = io.BytesIO()
    sf.write(wav_bytes, wav, 8_000, format="WAV", subtype="PCM_16")
    piped = bytearray(wav_bytes.getvalue())
    at = piped.find(b"data")
    piped[4:8] = (0x7FFFFFFF).to_bytes(4, "little")
    piped[at + 4 : at + 8] = (0x7FFFFFFF - 36).to_bytes(4, "little")
    streamed = read_stdin(stream=io.BytesIO(bytes(piped)))
    np.testing.assert_allclose(load_audio(streamed), samples, atol=1e-4)
    for data, rate, needle in (
        (b"", None, "nothing was read"),
        (b"junk" * 50, None, "--sample-rate"),
        (b"\x01", 16_000, "less than one"),
        (b"\x01\x02", 0, "invalid sample rate 0 Hz"),
        (b"\x01\x02", 384_001, "invalid sample rate 384001 Hz"),
    ):
        with pytest.raises(AudioError, match=needle):
            load_audio(read_stdin(rate, stream=io.BytesIO(data)))


def test_stdin_is_spooled_with_a_stated_maximum() -> None:
    """Stdin goes to a temporary file, not memory, and stops at ``max_bytes`` with a message;
    once spooled a long recording streams like a file."""
    import io

    from speakerid.audio import STDIN_MAX_BYTES, is_long, read_stdin, stream_audio

    assert STDIN_MAX_BYTES == 2**31
    pcm = (3000 * np.sin(np.arange(48_000) / 5)).astype("<i2").tobytes()
    with pytest.raises(AudioError, match=r"more than 90000 bytes.*cut it into parts") as exc:
        read_stdin(16_000, stream=io.BytesIO(pcm), max_bytes=90_000)
    assert_one_line(exc)
    spooled = read_stdin(16_000, stream=io.BytesIO(pcm), max_bytes=96_000)
    assert not isinstance(spooled.file, io.BytesIO) and not is_long(spooled)
    chunks = list(stream_audio(spooled, block_seconds=1.0))
    assert [len(c) for c in chunks] == [16_000, 16_000, 16_000]
    # at 1 Hz, 6 s of input is 96000 samples at 16 kHz: judged by its length at 16 kHz
    slow = read_stdin(1, stream=io.BytesIO(pcm[:12]))
    assert len(load_audio(slow)) == 6 * SR and not is_long(slow)
    assert is_long(read_stdin(1, stream=io.BytesIO(pcm[:600])))  # 300 s: 4.8 M samples


# ---------------------------------------------------------------- what is wrong, in words


def test_symlink_loop_says_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    _expect_audio_error(a, "symbolic link loop")
    dangling = tmp_path / "d.wav"
    dangling.symlink_to(tmp_path / "gone.wav")
    _expect_audio_error(dangling, "symbolic link to a file that does not exist")


def test_truncated_flac_says_cut_short(tmp_path: Path) -> None:
    whole = tmp_path / "whole.flac"
    sf.write(str(whole), sine(440.0, 4.0), SR)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    message = _expect_audio_error(cut, "cut short or damaged")
    assert "lost sync" not in message.split("(")[0]


def _load_message(path: str) -> str:
    try:
        load_audio(path)
    except AudioError as exc:
        return str(exc)
    return "loaded"


def test_permission_denied_says_so(open_tmp: Path) -> None:
    from conftest import run_unprivileged

    path = open_tmp / "secret.wav"
    sf.write(str(path), sine(440.0, 2.0), SR)
    path.chmod(0)
    message = run_unprivileged(_load_message, str(path))
    assert "permission denied" in str(message) and "System error" not in str(message)


# ---------------------------------------------------------------- the streamed path


def _speechy(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """Bursts of tones and noise with silent gaps, ``(samples, channels)`` at ``rate``."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))
    wav *= (np.sin(2 * np.pi * 0.4 * t) > -0.3).astype(float)  # gaps trimming removes
    wav[: rate // 2] = 0.0  # leading silence
    out = np.stack([wav * (0.8 + 0.2 * c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


@pytest.mark.parametrize(
    ("rate", "channels", "subtype"),
    [(16_000, 1, "PCM_16"), (48_000, 2, "PCM_24"), (44_100, 2, "PCM_16"), (22_050, 1, "FLOAT")],
)
def test_streamed_equals_whole_file(tmp_path: Path, rate: int, channels: int, subtype: str):
    from speakerid.audio import stream_audio, stream_fragments

    path = tmp_path / f"long_{rate}.wav"
    sf.write(str(path), _speechy(23.3, rate, channels), rate, subtype=subtype)
    whole = load_audio(path)
    for block in (0.37, 2.0, 60.0):  # blocks smaller and larger than the resampler's steps
        streamed = np.concatenate(list(stream_audio(path, block_seconds=block)))
        assert streamed.shape == whole.shape
        np.testing.assert_allclose(streamed, whole, atol=1e-5)
        fragments = np.concatenate(list(stream_fragments(path, block_seconds=block, batch=3)))
        expected = prepare(whole)
        assert fragments.shape == expected.shape
        np.testing.assert_allclose(fragments, expected, atol=1e-5)


def test_streamed_short_and_bad_files_follow_the_whole_file_rules(tmp_path: Path) -> None:
    from speakerid.audio import stream_fragments

    short = tmp_path / "short.wav"  # under 3 s of speech: repeated to one fragment
    sf.write(str(short), _speechy(2.5, 48_000, 1), 48_000)
    np.testing.assert_allclose(
        np.concatenate(list(stream_fragments(short, block_seconds=0.5))),
        prepare(load_audio(short)),
        atol=1e-5,
    )
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(5 * SR, np.float32), SR)
    with pytest.raises(AudioError, match="silent"):
        list(stream_fragments(silent))
    whole = tmp_path / "whole.flac"
    sf.write(str(whole), _speechy(20.0, SR, 1), SR)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(AudioError, match="cut short"):
        list(stream_fragments(cut))


def test_the_streamed_path_keeps_the_minimum_speech(tmp_path: Path) -> None:
    """--min-speech holds for a long file as for a short one: both cut by one rule."""
    from speakerid.audio import stream_fragments

    path = tmp_path / "long.wav"
    sf.write(str(path), _speechy(23.3, SR, 1), SR)
    speech = len(trim_silence(load_audio(path))) / SR
    with pytest.raises(AudioError, match="at least 60 s"):
        list(stream_fragments(path, min_speech=60.0))
    with pytest.raises(AudioError, match="at least 60 s"):
        prepare(load_audio(path), min_speech=60.0)
    assert sum(len(b) for b in stream_fragments(path, min_speech=speech - 1)) > 1


@pytest.mark.parametrize("seconds", [3.0, 4.4, 4.6, 9.0, 10.5])
def test_fragment_starts_cover_the_speech_with_a_half_fragment_tail(seconds: float) -> None:
    from speakerid.audio import fragment_starts

    n = round(seconds * SAMPLE_RATE)
    starts = fragment_starts(n)
    assert starts[0] == 0 and np.all(np.diff(starts) > 0)
    assert all(s + FRAGMENT_SAMPLES <= n for s in starts)
    uncovered = n - (starts[-1] + FRAGMENT_SAMPLES)
    assert uncovered < FRAGMENT_SAMPLES / 2  # a tail of half a fragment or more got its own
    assert len(fragment(np.ones(n, np.float32))) == len(starts)
