"""Who speaks when: the pure decoding steps, the streaming windows, and the whole timeline.

The timeline tests use a fake embedder (a centred log band-energy spectrum), which tells
the synthetic voices apart at once and runs in milliseconds, so the smoothing and merging
are tested independently of which trained model is the default.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import SR, VOICES, synth_voice, write_wav

from speakerid.audio import MIN_SPEECH_SECONDS, TRIM_FRAME_SAMPLES, stream_audio
from speakerid.decision.timeline import (
    SegmentConfig,
    fit_window,
    identify_segments,
    rttm_field,
    rttm_lines,
    score_windows,
    step_of_frames,
    voice_activity,
)
from speakerid.decision.turns import (
    crossing_changes,
    decode,
    enforce_min_duration,
    resegment_rewards,
    snap_changes,
    viterbi,
)
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.errors import AudioError, SpeakerIDError
from speakerid.store.speakers import SpeakerStore

BANDS = np.geomspace(60, 4000, 25)  # Hz, edges of the fake embedder's bands

# ---------------------------------------------------------------- a fake embedder


def band_spectrum(frags: np.ndarray) -> np.ndarray:
    """``(n, samples)`` -> ``(n, 24)`` log band energies, mean over 32-ms frames."""
    size = 512
    freqs = np.fft.rfftfreq(size, 1 / SR)
    out = []
    for x in frags:
        frames = x[: len(x) // size * size].reshape(-1, size) * np.hanning(size)
        power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
        bands = [power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in itertools.pairwise(BANDS)]
        out.append(np.log(np.asarray(bands) + 1e-10))
    return np.asarray(out)


@dataclass(frozen=True)
class FakeModel:
    fingerprint: str = "fake-model"
    path: Path = Path("fake.safetensors")
    threshold: float | None = 0.4  # between its genuine (~0.95) and other-voice (< 0) scores


class FakeEmbedder(BaseEmbedder):
    """A backend of centred band spectra as unit vectors; counts its inputs."""

    vad = "energy"  # how speech is found (the synthetic voices are not speech to Silero)

    def __init__(self, centre: np.ndarray) -> None:
        self.model = FakeModel()
        self.centre = centre
        self.min_speech = MIN_SPEECH_SECONDS
        self.lengths: list[int] = []

    @property
    def dim(self) -> int:
        return len(self.centre)

    def embed_fragments(self, frags: np.ndarray) -> np.ndarray:
        self.lengths.extend([frags.shape[1]] * len(frags))
        v = band_spectrum(frags) - self.centre
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def fake() -> FakeEmbedder:
    background = [synth_voice(v, 1.5, seed=900 + i) for i, v in enumerate(VOICES.values())]
    return FakeEmbedder(band_spectrum(np.stack(background)).mean(axis=0))


@pytest.fixture
def fake_store(tmp_path: Path, fake: FakeEmbedder) -> Path:
    """alice and bob enrolled from their own recordings (seeds not used in conversations)."""
    path = tmp_path / "fake.sqlite"
    vectors = []
    for name in ("alice", "bob"):
        emb = fake.embed_fragments(
            np.stack([synth_voice(VOICES[name], 3.0, seed=s) for s in (1, 2)])
        )
        vectors.append(emb.mean(axis=0))
    with SpeakerStore(path) as store:
        store.add_vectors(["alice", "bob"], np.stack(vectors), fingerprint="fake-model")
    return path


def conversation(turns: list[tuple[str, float]], seed: int = 10) -> tuple[np.ndarray, list[float]]:
    """Concatenated synthetic turns and the boundaries between them (seconds)."""
    parts = [synth_voice(VOICES[who], secs, seed=seed + i) for i, (who, secs) in enumerate(turns)]
    bounds = np.cumsum([len(p) / SR for p in parts])[:-1].tolist()
    return np.concatenate(parts), bounds


# ---------------------------------------------------------------- pure steps


def test_decode_without_penalty_is_the_open_set_rule() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(-1, 1, size=(50, 3))
    labels = decode(scores, np.ones(50, bool), threshold=0.4, switch_penalty=0.0)
    expected = np.where(scores.max(axis=1) >= 0.4, scores.argmax(axis=1), 3)
    np.testing.assert_array_equal(labels, expected)


def test_decode_penalty_removes_a_short_blip_but_keeps_a_long_turn() -> None:
    scores = np.tile([0.8, 0.1], (20, 1))
    scores[5] = [0.1, 0.8]  # one window says speaker 1: cheaper to stay than to switch twice
    scores[12:] = [0.1, 0.8]  # a real turn
    labels = decode(scores, np.ones(20, bool), threshold=0.4, switch_penalty=0.5)
    np.testing.assert_array_equal(labels, [0] * 12 + [1] * 8)


def test_decode_carries_the_speaker_through_unscored_windows() -> None:
    scores = np.array([[0.9, 0.0]] * 3 + [[0.0, 0.0]] * 4 + [[0.9, 0.0]] * 3)
    scored = np.array([True] * 3 + [False] * 4 + [True] * 3)
    labels = decode(scores, scored, threshold=0.4, switch_penalty=0.1)
    np.testing.assert_array_equal(labels, [0] * 10)


def test_decode_below_threshold_is_unknown() -> None:
    scores = np.array([[0.9, 0.1]] * 5 + [[0.2, 0.1]] * 5)
    labels = decode(scores, np.ones(10, bool), threshold=0.4, switch_penalty=0.1)
    np.testing.assert_array_equal(labels, [0] * 5 + [2] * 5)


def test_min_duration_merges_short_runs_into_the_better_neighbour() -> None:
    labels = np.array([0, 0, 0, 0, 2, 1, 1, 1, 1])
    scores = np.array([[0.9, 0.0]] * 4 + [[0.3, 0.35]] + [[0.0, 0.9]] * 4)
    out = enforce_min_duration(labels, scores, np.ones(9, bool), 0.4, min_steps=2)
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 1, 1, 1, 1])
    # Runs long enough stay, and one lone run is left alone.
    np.testing.assert_array_equal(
        enforce_min_duration(labels[:4], scores[:4], np.ones(4, bool), 0.4, 9), labels[:4]
    )
    np.testing.assert_array_equal(
        enforce_min_duration(labels, scores, np.ones(9, bool), 0.4, 1), labels
    )


def test_snap_moves_a_change_to_the_quietest_point_within_reach() -> None:
    labels = np.array([0] * 10 + [1] * 10)
    levels = np.full(20, -20.0)
    levels[12:15] = -80.0  # a pause two frames after the change
    np.testing.assert_array_equal(snap_changes(labels, levels, 5), [0] * 13 + [1] * 7)
    levels = np.full(20, -20.0)
    levels[5:8] = -80.0  # ... and one before it (searched from frame 5 on)
    np.testing.assert_array_equal(snap_changes(labels, levels, 5), [0] * 7 + [1] * 13)
    # out of reach, or no reach: the change stays where the windows put it
    np.testing.assert_array_equal(snap_changes(labels, levels, 2), [0] * 8 + [1] * 12)
    np.testing.assert_array_equal(snap_changes(labels, levels, 0), labels)
    # no pause (a dip of 6 dB is a syllable, not a pause): the change stays
    levels = np.full(20, -20.0)
    levels[12:15] = -26.0
    np.testing.assert_array_equal(snap_changes(labels, levels, 5), labels)


def test_snap_moves_labels_only_between_neighbouring_runs() -> None:
    """Whatever the levels, a frame ends up with a label found within ``reach`` of it."""
    rng = np.random.default_rng(5)
    reach = 6
    for _ in range(50):
        labels = np.repeat(rng.integers(0, 4, 12), rng.integers(3, 20, 12))
        levels = np.where(rng.random(len(labels)) < 0.3, -90.0, -20.0)
        out = snap_changes(labels, levels, reach)
        for i, label in enumerate(out):
            assert label in labels[max(0, i - reach) : i + reach + 1], (i, labels, out)


def test_snap_stays_inside_the_two_runs_that_meet() -> None:
    labels = np.array([0] * 6 + [1] * 3 + [2] * 6)
    levels = np.full(15, -20.0)
    levels[0:3] = -90.0  # quieter than anything, but beyond the run of 0s
    out = snap_changes(labels, levels, 10)
    assert (out == 1).any() and out[0] == 0 and out[-1] == 2


def test_a_change_goes_where_the_scores_cross() -> None:
    cfg = SegmentConfig()  # 1.5-s windows every 0.75 s: centres 25 frames apart
    labels = np.array([0, 0, 1, 1])
    steps = step_of_frames(120, len(labels), cfg)
    centres = np.array([25.0, 50.0, 75.0, 100.0])  # frames: (t * 0.75 + 0.75) s / 0.03 s
    scored = np.ones(4, bool)
    halfway = crossing_changes(
        labels, np.array([[1, 0], [1, 0], [0, 1], [0, 1.0]]), scored, steps, centres
    )
    # window 1 barely prefers 0 and window 2 strongly prefers 1: the change comes early
    early = crossing_changes(
        labels, np.array([[1, 0], [0.55, 0.45], [0, 0.9], [0, 1.0]]), scored, steps, centres
    )
    assert np.flatnonzero(halfway)[0] == pytest.approx((50 + 75) / 2, abs=1)
    assert np.flatnonzero(early)[0] == pytest.approx(50 + 25 * 0.1 / 1.0, abs=1)
    assert set(np.unique(early)) == {0, 1} and (np.diff(early) >= 0).all()


def test_resegment_gives_a_voice_its_stray_windows_back() -> None:
    """Windows of A that the enrollment scores under the threshold go to unknown in the first
    pass; against A's own mean in the recording (and the true unknown voice's) they are A's."""
    rng = np.random.default_rng(3)
    e = np.eye(6)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    voice_a = lambda w: unit(w * e[0] + 0.8 * e[2] + 0.05 * rng.normal(size=6))  # noqa: E731
    stranger = lambda: unit(e[3] + 0.3 * e[4] + 0.05 * rng.normal(size=6))  # noqa: E731
    kinds = "AAAAsAAAAUUUUUUUUAAAsAAA"  # s: A's window scored low against A's enrollment
    emb = np.stack(
        [voice_a(0.6) if k == "A" else voice_a(0.25) if k == "s" else stranger() for k in kinds]
    ).astype(np.float32)
    refs = np.stack([e[0], e[1]]).astype(np.float32)  # enrolled: A, B
    scores = emb @ refs.T
    scored = np.ones(len(kinds), dtype=bool)
    threshold = 0.35
    rewards = np.concatenate([scores, np.full((len(kinds), 1), threshold)], axis=1)
    first = viterbi(rewards, 0.0)
    expected = np.array([{"A": 0, "s": 0, "U": 2}[k] for k in kinds])
    stray = np.array([k == "s" for k in kinds])
    assert (first[stray] == 2).all() and (first[~stray] == expected[~stray]).all()
    second = viterbi(resegment_rewards(first, rewards, emb, scored, 0.85), 0.0)
    np.testing.assert_array_equal(second, expected)
    # weight 0: the first pass as it was
    np.testing.assert_array_equal(
        viterbi(resegment_rewards(first, rewards, emb, scored, 0.0), 0.0), first
    )


def test_fit_window_tiles_to_a_fragment_or_the_window() -> None:
    speech = np.arange(10_000, dtype=np.float32)
    tiled = fit_window(speech, SegmentConfig())
    assert tiled.shape == (48_000,) and np.array_equal(tiled[10_000:20_000], speech)
    assert fit_window(speech, SegmentConfig(fit="direct")).shape == (24_000,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0.1},
        {"hop": 0.0},
        {"hop": 2.0},
        {"fit": "stretch"},
        {"switch_penalty": -1.0},
        {"min_segment": float("nan")},
        {"max_gap": -0.5},
        {"snap": -0.1},
        {"resegment": 1.5},
        {"timeline_vad": "webrtc"},
    ],
)
def test_config_refuses_bad_values(kwargs: dict) -> None:
    with pytest.raises(SpeakerIDError):
        SegmentConfig(**kwargs)


# ---------------------------------------------------------------- streaming


def test_stream_audio_joins_into_the_whole_file(tmp_path: Path) -> None:
    from speakerid.audio import load_audio

    rng = np.random.default_rng(1)
    for rate in (16_000, 44_100):
        path = tmp_path / f"noise{rate}.wav"
        import soundfile as sf

        sf.write(
            str(path),
            (0.1 * rng.standard_normal((int(rate * 5.3), 2))).astype(np.float32),
            rate,
            subtype="FLOAT",
        )
        chunks = list(stream_audio(path, block_seconds=1.0))
        assert all(len(c) == SR for c in chunks[:-1])
        np.testing.assert_allclose(np.concatenate(chunks), load_audio(path), atol=1e-6)


def test_windows_do_not_depend_on_the_chunking(fake: FakeEmbedder) -> None:
    wav, _ = conversation([("alice", 4.0), ("bob", 4.0)])
    cfg = SegmentConfig()
    refs = np.eye(fake.dim, dtype=np.float32)[:2]
    results = []
    for step in (1000, TRIM_FRAME_SAMPLES * 7, len(wav)):  # 1000: frames straddle chunks
        chunks = lambda step=step: (wav[i : i + step] for i in range(0, len(wav), step))  # noqa: E731
        results.append(score_windows(chunks, fake.embed_fragments, refs, cfg))
    for other in results[:-1]:
        np.testing.assert_array_equal(other.voiced, results[-1].voiced)
        np.testing.assert_array_equal(other.scored, results[-1].scored)
        np.testing.assert_allclose(other.scores, results[-1].scores, atol=1e-6)
    voiced, samples, levels = voice_activity([wav])
    assert samples == len(wav) and voiced.shape == (-(-len(wav) // TRIM_FRAME_SAMPLES),)
    assert levels.shape == voiced.shape


# ---------------------------------------------------------------- the timeline


def test_boundaries_within_one_hop_and_unknown_labelled_unknown(
    fake: FakeEmbedder, fake_store: Path
) -> None:
    turns = [("alice", 6.0), ("bob", 5.0), ("carol", 6.0), ("alice", 4.0), ("bob", 3.0)]
    wav, bounds = conversation(turns)
    cfg = SegmentConfig()
    with SpeakerStore(fake_store) as store:
        timeline = identify_segments(store, fake, wav, config=cfg, name="talk")
    segs = timeline.segments
    assert [s.speaker for s in segs] == ["alice", "bob", None, "alice", "bob"]
    found = [s.start for s in segs[1:]]
    assert np.all(np.abs(np.array(found) - bounds) <= cfg.hop), (found, bounds)
    assert segs[0].start < 0.5 and segs[-1].end > len(wav) / SR - 0.5
    assert all(a.end <= b.start for a, b in itertools.pairwise(segs))
    assert segs[0].score > timeline.threshold > segs[2].score
    assert set(fake.lengths) == {48_000}  # tile: every window fed as a 3-s fragment


def test_snap_puts_a_change_at_the_pause_between_turns(
    fake: FakeEmbedder, fake_store: Path
) -> None:
    """A change 0.35 s off the hop grid: snapping puts the segments' edges on the pause."""
    a = synth_voice(VOICES["alice"], 4.7, seed=41)
    b = synth_voice(VOICES["bob"], 4.0, seed=42)
    pause = 0.5
    wav = np.concatenate([a, np.zeros(round(pause * SR), np.float32), b])
    edges = {}
    with SpeakerStore(fake_store) as store:
        for snap in (0.0, SegmentConfig().snap):
            cfg = SegmentConfig(snap=snap)
            segs = identify_segments(store, fake, wav, config=cfg).segments
            assert [s.speaker for s in segs] == ["alice", "bob"]
            edges[snap] = (segs[0].end, segs[1].start)
    off = lambda e: abs(e[0] - 4.7) + abs(e[1] - 4.7 - pause)  # noqa: E731
    assert off(edges[SegmentConfig().snap]) <= 0.4  # the energy rule's margins: 0.15 s a side
    assert off(edges[0.0]) > off(edges[SegmentConfig().snap]) + 0.2, edges


def test_the_timeline_finds_speech_by_its_own_vad(fake: FakeEmbedder, fake_store: Path) -> None:
    """timeline_vad, not the embedder's (store's) VAD, decides where the timeline's speech is:
    Silero finds none in the synthetic voices, the energy rule does."""
    wav, _ = conversation([("alice", 3.0), ("bob", 3.0)])
    with SpeakerStore(fake_store) as store:
        energy = identify_segments(store, fake, wav, config=SegmentConfig(timeline_vad="energy"))
        assert [s.speaker for s in energy.segments] == ["alice", "bob"]
        assert energy.config.timeline_vad == SegmentConfig().timeline_vad == "energy"
        with pytest.raises(AudioError, match="--timeline-vad silero"):
            identify_segments(store, fake, wav, config=SegmentConfig(timeline_vad="silero"))


def test_silence_between_turns_is_not_speech(fake: FakeEmbedder, fake_store: Path) -> None:
    a = synth_voice(VOICES["alice"], 4.0, seed=31)
    b = synth_voice(VOICES["bob"], 4.0, seed=32)
    wav = np.concatenate([a, np.zeros(3 * SR, np.float32), b])
    with SpeakerStore(fake_store) as store:
        segs = identify_segments(store, fake, wav).segments
    assert [s.speaker for s in segs] == ["alice", "bob"]
    assert segs[0].end < 4.5 and segs[1].start > 6.5


def test_a_file_and_its_array_give_the_same_timeline(
    tmp_path: Path, fake: FakeEmbedder, fake_store: Path
) -> None:
    wav, _ = conversation([("bob", 3.0), ("alice", 3.0)])
    path = write_wav(tmp_path / "talk.wav", wav, subtype="FLOAT")
    with SpeakerStore(fake_store) as store:
        from_file = identify_segments(store, fake, path)
        from_array = identify_segments(store, fake, wav, name=str(path))
    assert from_file == from_array


def test_threshold_offset_applies_to_the_model_threshold_only(
    fake: FakeEmbedder, fake_store: Path
) -> None:
    wav, _ = conversation([("alice", 3.0)])
    with SpeakerStore(fake_store) as store:
        default = identify_segments(store, fake, wav)
        given = identify_segments(store, fake, wav, threshold=0.7)
        none = identify_segments(store, fake, wav, config=SegmentConfig(threshold_offset=0.0))
    assert default.threshold == pytest.approx(0.4 + SegmentConfig().threshold_offset)
    assert given.threshold == 0.7 and none.threshold == pytest.approx(0.4)


def test_silent_or_too_short_audio_is_refused(fake: FakeEmbedder, fake_store: Path) -> None:
    with SpeakerStore(fake_store) as store:
        with pytest.raises(AudioError, match="silent"):
            identify_segments(store, fake, np.zeros(5 * SR, np.float32))
        with pytest.raises(AudioError, match="of speech"):
            identify_segments(store, fake, synth_voice(VOICES["alice"], 0.3, seed=3))


RTTM_LINE = re.compile(r"^SPEAKER (\S+) 1 (\d+\.\d{3}) (\d+\.\d{3}) <NA> <NA> (\S+) <NA> <NA>$")


def test_rttm_lines(fake: FakeEmbedder, fake_store: Path) -> None:
    wav, _ = conversation([("alice", 4.0), ("carol", 4.0)])
    with SpeakerStore(fake_store) as store:
        timeline = identify_segments(store, fake, wav, name="/some/dir/my talk.flac")
    lines = rttm_lines(timeline)
    assert len(lines) == len(timeline.segments) == 2
    parsed = [RTTM_LINE.match(line).groups() for line in lines]
    assert [p[0] for p in parsed] == ["my_talk", "my_talk"]
    assert [p[3] for p in parsed] == ["alice", "unknown"]
    for (_, onset, dur, _), seg in zip(parsed, timeline.segments, strict=True):
        assert float(onset) == pytest.approx(seg.start, abs=1e-3)
        assert float(dur) == pytest.approx(seg.end - seg.start, abs=2e-3)


@pytest.mark.parametrize(
    "name", ["a\nSPEAKER x 1 0 9 <NA> <NA> mallory <NA> <NA>", "tab\there", "\x1c\u2028 ", ""]
)
def test_rttm_field_is_one_field(name: str) -> None:
    field = rttm_field(name)
    assert field and field.split() == [field] and field.isprintable()
    assert len(field) == (len(name) or len("audio"))  # one character for one


def test_short_file_reports_its_true_speech_seconds(fake: FakeEmbedder, fake_store: Path) -> None:
    wav = synth_voice(VOICES["alice"], seconds=0.2, seed=1)
    with SpeakerStore(fake_store) as store, pytest.raises(AudioError, match=r"only 0\.20 s"):
        identify_segments(store, fake, wav)


# ---------------------------------------------------------------- the command line


def test_cli_segments(cli, enrolled_store: Path, tmp_path: Path) -> None:
    """Through the real (tiny, untrained) model: the flags, formats and exit codes."""
    wav, _ = conversation([("alice", 3.0), ("bob", 3.0)])
    path = write_wav(tmp_path / "talk.wav", wav)
    r = cli("identify", str(path), "--segments", "--json", store=enrolled_store)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [d["file"] for d in data] == [str(path)]
    assert data[0]["config"]["window"] == 1.5 and data[0]["speakers"] == ["alice", "bob"]
    assert data[0]["config"]["timeline_vad"] == "energy"
    assert all(s["speaker"] in ("alice", "bob", None) for s in data[0]["segments"])
    r = cli("identify", str(path), "--segments", "--rttm", "--hop", "0.5", store=enrolled_store)
    assert r.exit_code == 0, r.output
    assert all(RTTM_LINE.match(line) for line in r.stdout.splitlines())
    r = cli("identify", str(path), "--segments", store=enrolled_store)
    assert r.exit_code == 0 and "start" in r.stdout and "Traceback" not in r.output
    png = tmp_path / "timeline.png"
    r = cli("identify", str(path), "--segments", "--plot", str(png), store=enrolled_store)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--window", "1.0"], "--segments"),
        (["--segments", "--hop", "3"], "--hop"),
        (["--segments", "--fit", "zoom"], "--fit"),
        (["--segments", "--timeline-vad", "webrtc"], "--timeline-vad"),
        (["--timeline-vad", "silero"], "--segments"),
        (["--segments", "--resegment", "2"], "--resegment"),
        (["--segments", "--snap", "-1"], "--snap"),
        (["--segments", "--json", "--rttm"], "--rttm"),
        (["--segments", "--plot", "{tmp}/x.png", "{file2}"], "--plot"),
        (["--segments", "--plot", "{tmp}/no/such/dir/x.png"], "x.png"),
    ],
)
def test_cli_segments_bad_options(
    cli, enrolled_store: Path, tmp_path: Path, voices_dir: Path, args: list[str], needle: str
) -> None:
    path = str(voices_dir / "alice_3.wav")
    args = [a.format(tmp=tmp_path, file2=str(voices_dir / "bob_3.wav")) for a in args]
    before = enrolled_store.read_bytes()
    r = cli("identify", path, *args, store=enrolled_store)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.output
    # with --json the error is also a JSON object on stdout; otherwise stdout stays empty
    assert r.stdout == "" or json.loads(r.stdout)["code"] == 2
    assert enrolled_store.read_bytes() == before


def test_cli_segments_honours_identify_flags(
    cli, enrolled_store: Path, tmp_path: Path, voices_dir: Path
) -> None:
    """--segments takes identify's flags: stdin as -, --sample-rate, --min-speech, --strict,
    --backend; --top and --far, which a timeline cannot use, are refused in one line."""
    wav, _ = conversation([("alice", 2.0), ("bob", 2.0)])
    path = write_wav(tmp_path / "talk.wav", wav)
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes()
    r = cli(
        "identify",
        "-",
        "--segments",
        "--json",
        "--sample-rate",
        "16000",
        store=enrolled_store,
        input=pcm,
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["file"] == "-"
    r = cli("identify", str(path), "--segments", "--min-speech", "30", store=enrolled_store)
    assert r.exit_code == 2 and "at least 30 s" in r.stderr, r.output
    missing = str(tmp_path / "gone.wav")
    r = cli("identify", missing, str(path), "--segments", "--json", store=enrolled_store)
    assert r.exit_code == 2, r.output
    data = json.loads(r.stdout)
    assert "error" in data[0] and data[1]["file"] == str(path) and data[1]["segments"]
    r = cli("identify", missing, str(path), "--segments", "--strict", store=enrolled_store)
    assert r.exit_code == 2 and r.stdout == "" and "gone.wav" in r.stderr, r.output
    for flag, value in (("--top", "3"), ("--far", "0.01")):
        r = cli("identify", str(path), "--segments", flag, value, store=enrolled_store)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and flag in lines[0], r.output
    r = cli("identify", str(path), "--segments", "--backend", "tensorflow", store=enrolled_store)
    assert r.exit_code == 2 and "tensorflow" in r.stderr, r.output


def test_cli_segments_bad_audio(cli, enrolled_store: Path, tmp_path: Path) -> None:
    silent = write_wav(tmp_path / "silent.wav", np.zeros(4 * SR, np.float32))
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio")
    for path, needle in (
        (silent, "silent"),
        (bogus, "cannot be read"),
        (tmp_path / "x.wav", "no such"),
    ):
        r = cli("identify", str(path), "--segments", store=enrolled_store)
        assert r.exit_code == 2 and needle in r.stderr and "Traceback" not in r.output, r.output
