"""Recordings cut to many lengths, embedded once: the data behind the decision calibration.

Shared by ``bench/fit_decisions.py`` (fits the model's decision calibration on training-allowed
speakers) and ``bench/bench_decisions.py`` (measures it on held-out ones). Each corpus is
embedded once per model and cached (``runs/decisions/<model>-<corpus>.npz``):

- every *recording* (a file, or half of a long single-file LibriSpeech utterance, see
  ``recordings``) is embedded whole, as ``enroll`` would embed it, with its seconds of
  speech;
- every recording is also cut to ``CUT_SECONDS`` of speech (one cut per length it is long
  enough for, at a seeded offset) and each cut embedded as ``verify`` would embed a clip of
  that length.

Speakers are split in two by a hash of their name (``split_of``): ``fit`` speakers for the
model's calibration, ``held`` speakers for measurement. RAVDESS (``eval-only``) is only ever
measured.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speakerid.audio import SAMPLE_RATE, fragment, load_audio, trim_silence
from speakerid.decision.model import QualityTrials
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.errors import AudioError
from speakerid.vectors import pool, score

CUT_SECONDS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)  # test speech lengths
SPLIT_MIN_SECONDS = 8.0  # a lone LibriSpeech utterance this long is split into two recordings
CORPORA = ("libri", "studio", "aishell", "ami", "ravdess")
TRAINING_ALLOWED = ("libri", "studio", "aishell", "ami")
MAX_FILES = {"libri": 20, "studio": 20, "aishell": 20, "ami": 40, "ravdess": 8}  # per speaker
LIBRI_SINGLE_SPEAKERS = 100  # of the 248 one-utterance LibriSpeech speakers (CPU budget)


@dataclass(frozen=True)
class Recording:
    speaker: str
    path: Path
    half: int  # 0: the whole file; 1 / 2: first / second half of its speech


@dataclass
class Embedded:
    """One corpus embedded: recordings and their cuts."""

    speakers: np.ndarray  # (R,) speaker of each recording
    rec_vectors: np.ndarray  # (R, D) whole-recording unit vectors
    rec_seconds: np.ndarray  # (R,) seconds of speech of each recording
    cut_rec: np.ndarray  # (C,) recording each cut comes from
    cut_seconds: np.ndarray  # (C,) seconds of speech in each cut
    cut_vectors: np.ndarray  # (C, D)


def split_of(speaker: str) -> str:
    """``fit`` or ``held``, fixed by the speaker's name (half of each corpus's speakers)."""
    return "fit" if hashlib.sha256(speaker.encode()).digest()[0] % 2 == 0 else "held"


def _files(folder: Path, limit: int, seed: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.flac"))
    if len(files) > limit:
        rng = np.random.default_rng(seed)
        files = sorted(rng.choice(files, size=limit, replace=False).tolist())
    return files


def recordings(data: Path, corpus: str, seed: int = 0) -> list[Recording]:
    """The recordings of one corpus under ``data`` (``../shared/data``)."""
    roots = {
        "libri": [data / "LibriSpeech/train-clean-100"],
        "studio": [data / "extra/vctk", data / "extra/cmu_arctic"],
        "aishell": [data / "extra/aishell1"],
        "ami": [data / "extra/ami"],
        "ravdess": [data / "eval-only/ravdess"],
    }[corpus]
    out = []
    singles = []
    for root in roots:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            files = _files(folder, MAX_FILES[corpus], seed)
            speaker = f"{corpus}:{folder.name}"
            if corpus == "libri" and len(files) == 1:
                singles.append([Recording(speaker, files[0], 1), Recording(speaker, files[0], 2)])
            else:
                out += [Recording(speaker, f, 0) for f in files]
    if len(singles) > LIBRI_SINGLE_SPEAKERS:
        rng = np.random.default_rng(seed)
        keep = rng.choice(len(singles), LIBRI_SINGLE_SPEAKERS, replace=False)
        singles = [singles[i] for i in sorted(keep)]
    return out + [r for pair in singles for r in pair]


def _speech(rec: Recording, vad: str) -> np.ndarray | None:
    try:
        speech = trim_silence(load_audio(rec.path), name=str(rec.path), vad=vad)
    except AudioError:
        return None
    if rec.half == 0:
        return speech
    if len(speech) < SPLIT_MIN_SECONDS * SAMPLE_RATE:
        return speech if rec.half == 1 else None  # too short to split: one recording
    middle = len(speech) // 2
    return speech[:middle] if rec.half == 1 else speech[middle:]


def embed_corpus(
    embedder: BaseEmbedder, recs: list[Recording], seed: int = 0, log: bool = True
) -> Embedded:
    """Embed every recording whole and cut to each length of ``CUT_SECONDS`` it allows.

    Speech is found as the embedder finds it (``embedder.vad``), so that the seconds of
    speech and the vectors are what ``enroll`` and ``verify`` would see."""
    rng = np.random.default_rng(seed)
    speakers, rec_vectors, rec_seconds = [], [], []
    cut_rec, cut_seconds, cut_vectors = [], [], []
    for i, rec in enumerate(recs):
        speech = _speech(rec, embedder.vad)
        if speech is None or len(speech) < CUT_SECONDS[0] * SAMPLE_RATE:
            continue
        pieces = [speech]
        for seconds in CUT_SECONDS:
            n = int(seconds * SAMPLE_RATE)
            if n <= len(speech):
                start = int(rng.integers(0, len(speech) - n + 1))
                pieces.append(speech[start : start + n])
        frags = [fragment(p, name=str(rec.path)) for p in pieces]
        vectors = embedder.embed_fragments(np.concatenate(frags))
        bounds = np.cumsum([0] + [len(f) for f in frags])
        pooled = [embedder.pool_fragments(vectors[a:b]) for a, b in itertools.pairwise(bounds)]
        r = len(speakers)
        speakers.append(rec.speaker)
        rec_vectors.append(pooled[0])
        rec_seconds.append(len(speech) / SAMPLE_RATE)
        for piece, vector in zip(pieces[1:], pooled[1:], strict=True):
            cut_rec.append(r)
            cut_seconds.append(len(piece) / SAMPLE_RATE)
            cut_vectors.append(vector)
        if log and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(recs)} recordings", flush=True)
    return Embedded(
        np.asarray(speakers),
        np.stack(rec_vectors).astype(np.float32),
        np.asarray(rec_seconds),
        np.asarray(cut_rec),
        np.asarray(cut_seconds),
        np.stack(cut_vectors).astype(np.float32),
    )


def cache_path(cache: Path, model_name: str, corpus: str, vad: str) -> Path:
    """Where one corpus's embeddings by one model and VAD are kept."""
    return cache / f"{model_name}-{vad}-{corpus}.npz"


def load_or_embed(
    embedder: BaseEmbedder | None, model_name: str, data: Path, corpus: str, cache: Path, vad: str
) -> Embedded:
    """``embed_corpus`` of one corpus, from ``cache_path`` when present (``embedder`` may
    then be None)."""
    path = cache_path(cache, model_name, corpus, vad)
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            return Embedded(**{k: npz[k] for k in npz.files})
    assert embedder is not None and embedder.vad == vad
    print(f"embedding {corpus} with {model_name} (--vad {vad})", flush=True)
    embedded = embed_corpus(embedder, recordings(data, corpus))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **embedded.__dict__)
    return embedded


ENROLL_SIZES = (1, 3, 10)


@dataclass
class CellTrials:
    """Quality-annotated trials of one corpus, with each trial's cell (length bucket, k)."""

    trials: QualityTrials
    bucket: np.ndarray  # (P,) index into CUT_SECONDS of the test cut's length
    enroll_size: np.ndarray  # (P,) recordings pooled into the enrollment


def build_trials(
    e: Embedded,
    speakers: set[str],
    enroll_sizes: tuple[int, ...] = ENROLL_SIZES,
    draws: int = 3,
    max_target: int = 40,
    max_nontarget: int = 150,
    seed: int = 0,
) -> CellTrials:
    """Enrollment-style trials among ``speakers``: pooled enrollments of 1 / 3 / 10 recordings.

    For each speaker and enrollment size (when the speaker has a recording more than that),
    ``draws`` enrollments are drawn; each is tested against cuts of the speaker's other
    recordings (same speaker) and cuts of other speakers of the set (strangers). A recording
    is never both enrolled and tested. Weights make each (class, length, size) cell count
    equally in a fit.
    """
    rng = np.random.default_rng(seed)
    keep = np.isin(e.speakers, sorted(speakers))
    recs = np.flatnonzero(keep)
    cut_speaker = e.speakers[e.cut_rec]
    bucket_of = np.argmin(np.abs(e.cut_seconds[:, None] - np.asarray(CUT_SECONDS)[None]), axis=1)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("s", "y", "t", "es", "ec", "b")}
    for speaker in sorted(speakers):
        own = recs[e.speakers[recs] == speaker]
        strangers = np.flatnonzero(np.isin(e.cut_rec, recs) & (cut_speaker != speaker))
        for size in enroll_sizes:
            if len(own) < size + 1:
                continue
            for _ in range(draws):
                enrolled = rng.choice(own, size=size, replace=False)
                vector = pool(e.rec_vectors[enrolled])
                seconds = float(e.rec_seconds[enrolled].sum())
                tests = np.flatnonzero(np.isin(e.cut_rec, np.setdiff1d(own, enrolled)))
                if len(tests) > max_target:
                    tests = rng.choice(tests, size=max_target, replace=False)
                others = strangers
                if len(others) > max_nontarget:
                    others = rng.choice(others, size=max_nontarget, replace=False)
                for cuts, label in ((tests, True), (others, False)):
                    cols["s"].append(score(e.cut_vectors[cuts], vector))
                    cols["y"].append(np.full(len(cuts), label))
                    cols["t"].append(e.cut_seconds[cuts])
                    cols["es"].append(np.full(len(cuts), seconds))
                    cols["ec"].append(np.full(len(cuts), size))
                    cols["b"].append(bucket_of[cuts])
    s, y, t, es, ec, b = (np.concatenate(cols[k]) for k in ("s", "y", "t", "es", "ec", "b"))
    cell = b * 100 + ec * 2 + y
    _, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return CellTrials(QualityTrials(s.astype(np.float64), y, t, es, ec, weights), b, ec)


def merge(parts: list[CellTrials]) -> CellTrials:
    """Trials of several corpora as one set (weights renormalised per corpus and cell)."""
    fields = ("scores", "labels", "test_seconds", "enroll_seconds", "enroll_count", "weights")
    trials = QualityTrials(*(np.concatenate([getattr(p.trials, f) for p in parts]) for f in fields))
    return CellTrials(
        trials,
        np.concatenate([p.bucket for p in parts]),
        np.concatenate([p.enroll_size for p in parts]),
    )
