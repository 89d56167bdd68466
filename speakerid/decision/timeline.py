"""Who speaks when: a timeline of enrolled speakers (and "unknown") along one recording.

The recording streams through in chunks (``audio.stream_audio``), so an hour of audio
takes the memory of one chunk plus a few numbers and one embedding per window. Five steps:

1. voice activity on 30-ms frames, a first pass over the chunks, by the timeline's own
   ``timeline_vad`` (not the store's ``--vad``, which says how the enrolled speakers were
   embedded): the trimming rule of ``audio.speech_frames`` with the loudest frame of the
   whole recording as reference (``energy``, the default: it names more of the speech time
   right than Silero's regions on every set of ``bench/bench_segments.py``), Silero VAD's
   regions (``audio.vad``), or every frame above the silence floor (``none``);
2. sliding windows (``window`` s every ``hop`` s); a window's voiced samples, repeated to
   fill the encoder's 3-s fragment (``fit="tile"``, the rule ``audio.fragment`` applies to
   short recordings) or the window's own length (``fit="direct"``), give one embedding;
   windows with less than half their length voiced are not scored;
3. scores: every window against every enrolled speaker, one matrix product per batch;
4. smoothing: a Viterbi path over the enrolled speakers plus "unknown" (whose score is the
   threshold, so without smoothing each window goes to the best speaker above threshold,
   as ``identify`` decides, but with the threshold lowered by ``threshold_offset`` for short
   windows), paying ``switch_penalty`` per change of speaker; then runs shorter than
   ``min_segment`` seconds of speech join the neighbour that fits them best. A second pass
   (``resegment``, VBx-like) mixes each state's score with the cosine against that state's
   own mean in this recording (the mean of the windows the first pass gave it, unknown's
   included) and decodes again: a voice is more like itself in the same room and mood than
   like its enrollment, so windows of one voice that the enrollment scored on either side
   of the threshold come together;
5. segments: each window labels the ``hop``-long stretch around its centre. A change of
   speaker is put where the two speakers' scores cross between the windows either side of
   it, then moved to a pause (a 90-ms level ``SNAP_DEPTH_DB`` under the median around it,
   the longest one) within ``snap`` seconds, if there is one: turns mostly change at a
   pause, and the windows place a change only to within a hop. Voiced frames with one label
   form a segment, and pauses shorter than ``max_gap`` inside one speaker's turn are
   bridged. Voiced frames in windows too short of speech to be scored take the label of
   the nearest scored window.

Overlapping speech is out of scope: each instant gets at most one speaker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from speakerid.audio import (
    FRAGMENT_SAMPLES,
    MIN_SPEECH_SECONDS,
    SAMPLE_RATE,
    SILENCE_FLOOR_DBFS,
    STREAM_CHUNK_SECONDS,
    TRIM_FRAME_SAMPLES,
    TRIM_FRAME_SECONDS,
    VADS,
    Source,
    check_vad,
    frame_dbfs,
    speech_frames,
    stream_audio,
)
from speakerid.audio.vad import SileroVAD, VadConfig, region_frames, speech_regions
from speakerid.decision.turns import (
    crossing_changes,
    merge_short_runs,
    nearest_scored,
    resegment_rewards,
    rewards_of,
    runs_of,
    snap_changes,
    viterbi,
)
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.errors import AudioError, SpeakerIDError, StoreError
from speakerid.outputs import save_figure
from speakerid.recognition import model_id, scorer_for
from speakerid.store.speakers import SpeakerStore
from speakerid.vectors import score

Fit = Literal["tile", "direct"]
FITS: tuple[str, ...] = get_args(Fit)
UNKNOWN = "unknown"  # how the timeline's table, RTTM and plot name a voice nobody matches
MIN_WINDOW_SECONDS = 0.5  # shorter windows carry too little of a voice to score
WINDOW_SPEECH_RATIO = 0.5  # a window with less of its length voiced is not scored
EMBED_BATCH = 64  # windows per forward pass
# Silero's regions for a timeline (--timeline-vad silero): looser than trimming's (onset 0.5,
# offset 0.35, 0.25-s pauses bridged, 0.1-s margins), because a timeline counts the pauses
# inside a turn as that speaker's, and trimming's settings cut them out (bench_segments).
TIMELINE_SILERO = VadConfig(onset=0.3, offset=0.15, min_silence=1.0, pad=0.15)


@dataclass(frozen=True)
class SegmentConfig:
    """How a recording is cut, scored and smoothed (CLI flags use the field names)."""

    window: float = 1.5  # seconds of audio per scored window
    hop: float = 0.75  # seconds between window starts; the timeline's resolution
    fit: str = "tile"  # tile: voiced samples repeated to a 3-s fragment; direct: to the window
    # Cosine-score units a change of speaker must earn. 0 since the second pass (resegment):
    # any penalty that keeps blips out of long turns also drops 1-3-s turns (bench_segments).
    switch_penalty: float = 0.0
    min_segment: float = 1.0  # seconds of speech below which a run joins a neighbour
    max_gap: float = 1.0  # pauses shorter than this inside one speaker's turn are bridged
    # Added to the model's recording-level threshold (never to an explicit --threshold): a
    # short window scores lower against its own speaker than a whole recording does. -0.15
    # was best on development conversations for both shipped models (docs/benchmarks.md).
    threshold_offset: float = -0.15
    # How the timeline finds speech (``audio.VADS``), whatever VAD the store was enrolled
    # with: the energy rule measured better for timelines than Silero (docs/benchmarks.md).
    timeline_vad: str = "energy"
    # Seconds either side of a change of speaker searched for a pause to move it to (0: the
    # change stays where the scores cross).
    snap: float = 0.75
    # Weight of the in-recording means in the second pass (0: one pass; 1: those means alone).
    resegment: float = 0.85

    def __post_init__(self) -> None:
        if not (np.isfinite(self.window) and self.window >= MIN_WINDOW_SECONDS):
            raise SpeakerIDError(f"--window must be at least {MIN_WINDOW_SECONDS} s")
        if not (np.isfinite(self.hop) and 0 < self.hop <= self.window):
            raise SpeakerIDError("--hop must be positive and at most --window")
        if self.fit not in FITS:
            raise SpeakerIDError(f"--fit must be one of {list(FITS)}, not {self.fit!r}")
        if self.timeline_vad not in VADS:
            raise SpeakerIDError(
                f"--timeline-vad must be one of {list(VADS)}, not {self.timeline_vad!r}"
            )
        if not np.isfinite(self.threshold_offset):
            raise SpeakerIDError("--threshold-offset must be a finite number")
        for name in ("switch_penalty", "min_segment", "max_gap", "snap"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise SpeakerIDError(f"--{name.replace('_', '-')} must be 0 or more")
        if not (np.isfinite(self.resegment) and 0 <= self.resegment <= 1):
            raise SpeakerIDError("--resegment must lie between 0 and 1")

    @property
    def window_samples(self) -> int:
        return round(self.window * SAMPLE_RATE)

    @property
    def hop_samples(self) -> int:
        return round(self.hop * SAMPLE_RATE)


@dataclass(frozen=True)
class Segment:
    """One stretch of one voice."""

    start: float  # seconds from the start of the recording
    end: float  # seconds
    speaker: str | None  # an enrolled name, or None: a voice no enrolled speaker matches
    score: float  # mean cosine of its windows against ``speaker`` (unknown: the best one)


@dataclass(frozen=True)
class Timeline:
    """``identify --segments``: who speaks when in one recording."""

    file: str
    duration: float  # seconds
    segments: list[Segment]
    speakers: list[str]  # the enrolled speakers it was scored against, in store order
    threshold: float
    config: SegmentConfig


@dataclass(frozen=True)
class WindowScores:
    """Step 1-3's output: one row per window (step) of the recording."""

    scores: np.ndarray  # (T, S) cosine of each window against each enrolled speaker
    scored: np.ndarray  # (T,) bool: the window held enough speech to be scored
    voiced: np.ndarray  # (frames,) bool: voice activity per 30-ms frame
    samples: int  # length of the recording
    levels: np.ndarray | None = None  # (frames,) dBFS per 30-ms frame; None: no snapping
    embeddings: np.ndarray | None = None  # (T, D) unit embeddings (0 where not scored)


# ---------------------------------------------------------------- pure steps


def step_of_frames(n_frames: int, n_steps: int, cfg: SegmentConfig) -> np.ndarray:
    """For each 30-ms frame, the window whose centre ``hop`` stretch holds it: ``(frames,)``."""
    centres = (np.arange(n_frames) + 0.5) * TRIM_FRAME_SAMPLES
    lead = (cfg.window_samples - cfg.hop_samples) / 2  # window start -> its labelled stretch
    steps = np.floor((centres - lead) / cfg.hop_samples).astype(np.int64)
    return np.clip(steps, 0, max(n_steps - 1, 0))


def to_segments(
    labels: np.ndarray,
    windows: WindowScores,
    names: list[str],
    cfg: SegmentConfig,
    rewards: np.ndarray | None = None,
) -> list[Segment]:
    """Turn per-window labels into segments on the voiced frames (see the module's step 5)."""
    labels = labels[nearest_scored(windows.scored)]
    steps = step_of_frames(len(windows.voiced), len(labels), cfg)
    along = labels[steps]
    if rewards is not None:
        centres = (np.arange(len(labels)) * cfg.hop_samples + cfg.window_samples / 2) / (
            TRIM_FRAME_SAMPLES
        )
        along = crossing_changes(labels, rewards, windows.scored, steps, centres)
    if windows.levels is not None and cfg.snap > 0:
        along = snap_changes(along, windows.levels, round(cfg.snap / TRIM_FRAME_SECONDS))
    # Every voiced frame is labelled, also in a window with too little speech to be scored
    # (the nearest scored window's label): those are mostly a turn's first or last words.
    frame_label = np.where(windows.voiced & windows.scored.any(), along, -1)
    # Bridge short pauses: a silent stretch between two frames of one label takes that label.
    max_gap_frames = cfg.max_gap * SAMPLE_RATE / TRIM_FRAME_SAMPLES
    runs = runs_of(frame_label)
    for i in range(1, len(runs) - 1):
        a, b = runs[i]
        before, after = frame_label[runs[i - 1][0]], frame_label[runs[i + 1][0]]
        if frame_label[a] == -1 and before == after != -1 and b - a < max_gap_frames:
            frame_label[a:b] = before
    best = windows.scores.max(axis=1) if windows.scores.shape[1] else np.zeros(len(labels))
    segments = []
    frame_seconds = TRIM_FRAME_SAMPLES / SAMPLE_RATE
    end_of_audio = windows.samples / SAMPLE_RATE
    for a, b in runs_of(frame_label):
        label = int(frame_label[a])
        if label < 0:
            continue
        in_run = np.unique(steps[a:b])
        in_run = in_run[windows.scored[in_run]]
        values = best[in_run] if label == len(names) else windows.scores[in_run, label]
        segments.append(
            Segment(
                start=round(a * frame_seconds, 3),
                end=round(min(b * frame_seconds, end_of_audio), 3),
                speaker=None if label == len(names) else names[label],
                score=float(values.mean()) if len(values) else float("nan"),
            )
        )
    return segments


# ---------------------------------------------------------------- streaming


def _chunks_of(wav: np.ndarray) -> Callable[[], Iterator[np.ndarray]]:
    step = round(STREAM_CHUNK_SECONDS * SAMPLE_RATE)
    return lambda: (wav[i : i + step] for i in range(0, len(wav), step))


def voice_activity(
    chunks: Iterable[np.ndarray], vad: str = "energy"
) -> tuple[np.ndarray, int, np.ndarray]:
    """Pass 1: ``(frames,)`` bool voice activity by ``vad`` (``audio.VADS``), the
    recording's length in samples, and ``(frames,)`` float32 frame levels in dBFS.

    A trailing partial frame follows the last whole frame's decision and level, as in
    ``audio.trim_silence``.
    """
    levels: list[np.ndarray] = []
    samples = 0

    def measured() -> Iterator[np.ndarray]:
        nonlocal samples
        rest = np.zeros(0, dtype=np.float32)
        for chunk in chunks:
            yield chunk
            samples += len(chunk)
            rest = np.concatenate([rest, chunk])  # a frame may straddle two chunks
            whole = len(rest) // TRIM_FRAME_SAMPLES * TRIM_FRAME_SAMPLES
            if whole:
                levels.append(frame_dbfs(rest[:whole]))
                rest = rest[whole:]

    probs = SileroVAD().probabilities(measured()) if check_vad(vad) == "silero" else None
    if probs is None:
        for _ in measured():
            pass
    level = np.concatenate(levels) if levels else np.zeros(0)
    if probs is not None:
        regions = speech_regions(probs, samples / SAMPLE_RATE, TIMELINE_SILERO)
        voiced = region_frames(regions, len(level), TRIM_FRAME_SECONDS)
    elif vad == "none":
        voiced = level > SILENCE_FLOOR_DBFS
    else:
        voiced = speech_frames(level)
    if samples % TRIM_FRAME_SAMPLES and len(voiced):
        voiced = np.append(voiced, voiced[-1])
        level = np.append(level, level[-1])
    return voiced, samples, level.astype(np.float32)


def _windows(
    chunks: Iterable[np.ndarray], voiced: np.ndarray, samples: int, cfg: SegmentConfig
) -> Iterator[np.ndarray | None]:
    """Pass 2: each window's voiced samples (None when too few), holding one window at a time."""
    size, hop = cfg.window_samples, cfg.hop_samples
    n_steps = max(1, -(-(samples - size) // hop) + 1)
    buffer, offset, step = np.zeros(0, dtype=np.float32), 0, 0
    source = iter(chunks)
    done = False
    while step < n_steps:
        start = step * hop
        while not done and offset + len(buffer) < min(start + size, samples):
            try:
                buffer = np.concatenate([buffer, next(source)])
            except StopIteration:
                done = True
        part = buffer[start - offset : start - offset + size]
        first, last = start // TRIM_FRAME_SAMPLES, -(-(start + len(part)) // TRIM_FRAME_SAMPLES)
        mask = np.repeat(voiced[first:last], TRIM_FRAME_SAMPLES)
        mask = mask[start - first * TRIM_FRAME_SAMPLES :][: len(part)]
        speech = part[mask]
        yield speech if len(speech) >= WINDOW_SPEECH_RATIO * size else None
        step += 1
        drop = min(len(buffer), step * hop - offset)
        buffer, offset = buffer[drop:], offset + drop


def fit_window(speech: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """Repeat a window's voiced samples end to end to the encoder's input length."""
    length = max(cfg.window_samples, FRAGMENT_SAMPLES) if cfg.fit == "tile" else cfg.window_samples
    return np.resize(speech, length).astype(np.float32)


def score_windows(
    chunks: Callable[[], Iterable[np.ndarray]],
    embed: Callable[[np.ndarray], np.ndarray],
    references: np.ndarray,
    cfg: SegmentConfig,
    name: str = "audio",
    min_speech: float = MIN_SPEECH_SECONDS,
    vad: str = "energy",
) -> WindowScores:
    """Steps 1-3: voice activity, windows, and their ``(T, S)`` scores against ``references``.

    Parameters
    ----------
    chunks: returns a fresh iterator over the recording's 16 kHz chunks (it is read twice).
    embed: ``(n, samples)`` float32 -> ``(n, D)`` unit embeddings.
    references: ``(S, D)`` unit vectors of the enrolled speakers.
    min_speech: seconds of voiced audio the recording needs (``--min-speech``).
    vad: how speech is found (``audio.VADS``).
    """
    voiced, samples, levels = voice_activity(chunks(), vad)
    if samples == 0:
        raise AudioError(f"{name}: the audio holds no samples")
    if not voiced.any():
        found = "" if vad == "energy" else f" (no speech found by --timeline-vad {vad})"
        raise AudioError(f"{name}: the audio is silent{found}")
    lengths = np.full(len(voiced), TRIM_FRAME_SAMPLES)  # the last frame may be partial
    lengths[-1] = samples - (len(voiced) - 1) * TRIM_FRAME_SAMPLES
    speech_seconds = int(lengths[voiced].sum()) / SAMPLE_RATE
    if speech_seconds < min_speech:
        raise AudioError(
            f"{name}: only {speech_seconds:.2f} s of speech; at least {min_speech:g} s is needed"
        )
    rows: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    scored: list[bool] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            emb = embed(np.stack(batch))
            rows.append(score(emb, references).astype(np.float32))
            vectors.append(np.asarray(emb, dtype=np.float32))
            batch.clear()

    for speech in _windows(chunks(), voiced, samples, cfg):
        scored.append(speech is not None)
        if speech is not None:
            batch.append(fit_window(speech, cfg))
            if len(batch) == EMBED_BATCH:
                flush()
    flush()
    mask = np.array(scored, dtype=bool)
    scores = np.zeros((len(mask), len(references)), dtype=np.float32)
    embeddings = np.zeros((len(mask), references.shape[1]), dtype=np.float32)
    if rows:
        scores[mask] = np.concatenate(rows)
        embeddings[mask] = np.concatenate(vectors)
    return WindowScores(scores, mask, voiced, samples, levels, embeddings)


def segment_scores(
    windows: WindowScores, names: list[str], threshold: float, cfg: SegmentConfig
) -> list[Segment]:
    """Steps 4-5: smooth the window scores and merge them into segments."""
    rewards = rewards_of(windows.scores, windows.scored, threshold)
    labels = viterbi(rewards, cfg.switch_penalty)
    labels = merge_short_runs(labels, rewards, windows.scored, cfg.min_segment / cfg.hop)
    if cfg.resegment > 0 and windows.embeddings is not None:
        rewards = resegment_rewards(
            labels, rewards, windows.embeddings, windows.scored, cfg.resegment
        )
        labels = viterbi(rewards, cfg.switch_penalty)
        labels = merge_short_runs(labels, rewards, windows.scored, cfg.min_segment / cfg.hop)
    return to_segments(labels, windows, names, cfg, rewards)


# ---------------------------------------------------------------- the operation


def identify_segments(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    audio: Source | np.ndarray,
    threshold: float | None = None,
    config: SegmentConfig | None = None,
    name: str | None = None,
) -> Timeline:
    """Who speaks when in one recording, among the speakers enrolled in ``store``.

    Parameters
    ----------
    audio: a file path or stdin's spooled recording (read in chunks), or a float32 mono
        16 kHz ``(samples,)`` array. The recording needs ``embedder.min_speech`` seconds
        of speech.
    threshold: cosine score a window needs to name an enrolled speaker; None: the model's
        calibrated one plus ``config.threshold_offset``. A store's ``calibrate``d thresholds
        are not used: they were set on whole recordings (and maybe on AS-norm scores).
    name: how errors and the result name the recording (default: the path, or "audio").
    """
    cfg = config or SegmentConfig()
    threshold = scorer_for(store, embedder, threshold).window_threshold(cfg.threshold_offset)
    fingerprint, dim, source = model_id(embedder)
    store.check_model(fingerprint, dim, source, embedder.vad)
    names, references = store.matrix()
    if not names:
        raise StoreError(f"{store.path}: no speakers are enrolled; enroll some first")
    if isinstance(audio, np.ndarray):
        label = name or "audio"
        wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim != 1 or not np.isfinite(wav).all():
            raise AudioError(f"{label}: expected finite float32 samples of shape (samples,)")
        chunks = _chunks_of(wav)
    else:
        label = name or str(audio)
        chunks = lambda: stream_audio(audio)  # noqa: E731

    def embed(batch: np.ndarray) -> np.ndarray:
        return embedder.finite(embedder.embed_fragments(batch), label)

    windows = score_windows(
        chunks,
        embed,
        references,
        cfg,
        name=label,
        min_speech=embedder.min_speech,
        vad=cfg.timeline_vad,
    )
    segments = segment_scores(windows, names, threshold, cfg)
    return Timeline(label, windows.samples / SAMPLE_RATE, segments, names, threshold, cfg)


# ---------------------------------------------------------------- output


def rttm_field(text: str, empty: str = "audio") -> str:
    """``text`` as one RTTM field: every whitespace or control character (space, tab,
    newline, ...) becomes ``_``, so a name cannot add fields or forge lines."""
    field = "".join("_" if ch.isspace() or not ch.isprintable() else ch for ch in text)
    return field or empty


def rttm_lines(timeline: Timeline, file_id: str | None = None) -> list[str]:
    """Standard RTTM ``SPEAKER`` lines: file id, channel 1, onset, duration, name.

    The file id defaults to the file's name without its extension; it and the names pass
    through ``rttm_field``, so every line has exactly the ten RTTM fields.
    """
    fid = rttm_field(file_id or Path(timeline.file).stem)
    lines = []
    for seg in timeline.segments:
        who = rttm_field(seg.speaker or UNKNOWN)
        lines.append(
            f"SPEAKER {fid} 1 {seg.start:.3f} {seg.end - seg.start:.3f} <NA> <NA> {who} <NA> <NA>"
        )
    return lines


def plot_timeline(timeline: Timeline, path: str | Path) -> None:
    """Draw the timeline as a PNG: one row per enrolled speaker, plus unknown."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = len(timeline.speakers) + 1  # the last row is unknown
    fig = Figure(figsize=(10, 1.0 + 0.4 * rows))
    ax = fig.add_subplot()
    for i in range(rows):
        who = timeline.speakers[i] if i < len(timeline.speakers) else None
        spans = [(s.start, s.end - s.start) for s in timeline.segments if s.speaker == who]
        ax.broken_barh(spans, (i - 0.4, 0.8), color="0.6" if who is None else f"C{i % 10}")
    ax.set_yticks(range(rows), [*timeline.speakers, f"({UNKNOWN})"])
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlim(0, max(timeline.duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_title(Path(timeline.file).name)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
