"""Recordings libsndfile cannot read, through FFmpeg (PyAV): one per container/codec family,
encoded here by PyAV itself, read as the same voice as its WAV, whole and streamed."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import SR, VOICES, synth_voice

from speakerid.audio import (
    SAMPLE_RATE,
    Spooled,
    load_audio,
    stream_audio,
)
from speakerid.errors import AudioError

av = pytest.importorskip("av")

# (suffix, container format, audio codec, codec rate, with a video track)
FAMILIES = {
    "m4a-aac": (".m4a", "ipod", "aac", 16_000, False),
    "amr-nb": (".amr", "amr", "libopencore_amrnb", 8_000, False),
    "webm-opus": (".webm", "webm", "libopus", 48_000, False),
    "mp4-video": (".mp4", "mp4", "aac", 44_100, True),
}


def encode(path: Path, wav: np.ndarray, family: str) -> Path:
    """``wav`` (16 kHz mono float32) written as ``family`` by PyAV, resampled to the codec's
    rate; a video family gets a few black frames beside the audio."""
    _, fmt, codec, rate, video = FAMILIES[family]
    from speakerid.audio import resample

    samples = resample(wav, SR, rate)
    with av.open(str(path), "w", format=fmt) as container:
        if video:
            picture = container.add_stream("mpeg4", rate=5)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream(codec, rate=rate, layout="mono")
        if codec == "libopencore_amrnb":
            sound.bit_rate = 12_200
        if video:
            black = np.zeros((48, 64, 3), np.uint8)
            for k in range(int(len(wav) / SR * 5)):
                frame = av.VideoFrame.from_ndarray(black, format="rgb24")
                frame.pts, frame.time_base = k, Fraction(1, 5)
                container.mux(picture.encode(frame))
            container.mux(picture.encode(None))
        step = 960 if codec == "libopus" else 1024 if codec == "aac" else 160
        for start in range(0, len(samples), step):
            block = samples[start : start + step]
            if len(block) < step:  # codecs take whole frames: pad the last one with silence
                block = np.pad(block, (0, step - len(block)))
            frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    return path


def similar(a: np.ndarray, b: np.ndarray) -> float:
    """Highest normalised correlation of two signals within 100 ms of shift (codecs delay)."""
    n = min(len(a), len(b)) - 1600
    best = 0.0
    for shift in range(0, 1600, 8):
        x, y = a[shift : shift + n], b[:n]
        best = max(best, float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    return best


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_reads_as_its_wav(family: str, tmp_path: Path) -> None:
    wav = synth_voice(VOICES["alice"], 2.0, seed=3)
    path = encode(tmp_path / f"voice{FAMILIES[family][0]}", wav, family)
    whole = load_audio(path)
    assert whole.dtype == np.float32 and whole.ndim == 1
    assert abs(len(whole) / SAMPLE_RATE - 2.0) < 0.2  # codecs pad a frame or two
    # AMR-NB is an 8-kHz speech codec: its 4-8 kHz are gone, the voice is not
    assert similar(whole, wav) > (0.6 if family == "amr-nb" else 0.9), similar(whole, wav)
    streamed = np.concatenate(list(stream_audio(path, block_seconds=0.25)))
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=2e-3)


def test_stdin_bytes_of_an_m4a_are_read(tmp_path: Path) -> None:
    wav = synth_voice(VOICES["bob"], 1.5, seed=1)
    data = encode(tmp_path / "memo.m4a", wav, "m4a-aac").read_bytes()
    spooled = Spooled("-", io.BytesIO(data))
    assert similar(load_audio(spooled), wav) > 0.9


def test_what_neither_reader_knows_is_refused_in_words(tmp_path: Path) -> None:
    junk = tmp_path / "notes.m4a"
    junk.write_bytes(b"these are not the bytes of a recording " * 50)
    with pytest.raises(AudioError) as caught:
        load_audio(junk)
    message = str(caught.value)
    assert message.startswith(f"{junk}: cannot be read as audio"), message
    assert "Error opening" not in message and "<_io" not in message


def test_a_video_without_sound_says_so(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        picture = container.add_stream("mpeg4", rate=5)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        for k in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 5)
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(path)


def test_without_pyav_the_refusal_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = encode(tmp_path / "memo.m4a", synth_voice(VOICES["carol"], 1.0), "m4a-aac")
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # import av fails
    with pytest.raises(AudioError) as caught:
        load_audio(path)
    assert "pip install av" in str(caught.value) and ".[ffmpeg]" in str(caught.value)


def test_stdin_bytes_no_reader_knows_name_no_python_object() -> None:
    spooled = Spooled("-", io.BytesIO(b"\x01\x02raw pcm without a header " * 40))
    with pytest.raises(AudioError) as caught:
        load_audio(spooled)
    message = str(caught.value)
    assert "<_io" not in message and "object at 0x" not in message, message
    assert message.startswith("-: cannot be read as audio") and "--sample-rate" in message
