"""The service: enroll, verify, identify and describe, over a store and an embedder.

What the CLI and the Python API call. Each function takes arrays or paths and returns a
result dataclass, raising only ``SpeakerIDError`` subclasses. Files become embeddings here
(``speakerid.embedding.pipeline``); the store (``speakerid.store.speakers``) only keeps
vectors, and ranking is ``speakerid.store.search``; which threshold a decision uses, and why,
is ``speakerid.decision.thresholds``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from pathlib import Path
from typing import TypeVar

import numpy as np

from speakerid.audio import (
    FRAGMENT_SECONDS,
    STDIN,
    Clip,
    Spooled,
    check_audio_file,
)
from speakerid.audio import Source as AudioSource
from speakerid.decision.calibration import (
    Calibration,
    agreements,
)
from speakerid.decision.model import Quality
from speakerid.decision.scorer import ModelIdentity, Scorer
from speakerid.decision.thresholds import (
    calibration_for,
    calibration_notes,
    identify_threshold,
    resolve_threshold,
)
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.encoders.checkpoint import ModelHeader, read_header
from speakerid.encoders.registry import (
    DEFAULT_MODEL,
    FUSIONS,
    decision_model,
    model_cohort,
    resolve_model,
)
from speakerid.errors import (
    AudioError,
    DataError,
    EnrollmentQualityError,
    InvalidNameError,
    SpeakerIDError,
    StoreError,
)
from speakerid.store.search import Candidate
from speakerid.store.speakers import (
    EnrollResult,
    RecordingQuality,
    SpeakerStore,
    StoreSummary,
    recording_key,
    refuse_collisions,
    validate_name,
)
from speakerid.vectors import score

# Less speech than this is warned about: over half of its one fragment is repeated audio.
GOOD_SPEECH_SECONDS = FRAGMENT_SECONDS / 2  # 1.5
# What enroll-dir and calibrate take from a folder: libsndfile's formats, then those read
# through FFmpeg when PyAV is installed (audio.ffmpeg; without it each is refused in words).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3"}) | frozenset(
    {".m4a", ".aac", ".amr", ".3gp", ".webm", ".mka", ".mkv", ".mp4", ".mov"}
)

Source = AudioSource  # a path as given, ``-`` or stdin spooled (``Spooled``), or a ``Clip``
OnFile = Callable[[int, int], None]  # progress: ``on_file(files_done, files_total)``
T = TypeVar("T")


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class FileError:
    """A file (or speaker folder) a batch could not use, and why (one line, path first)."""

    file: str
    error: str


@dataclass(frozen=True)
class BulkEnrollResult:
    """What ``enroll_directory`` did."""

    root: str
    enrolled: list[EnrollResult]
    errors: list[FileError]


@dataclass(frozen=True)
class EmbedResult:
    """What ``embed_files`` made: vectors keyed by the path as given, and the files that failed."""

    vectors: dict[str, np.ndarray]
    errors: list[FileError]


@dataclass(frozen=True)
class Verification:
    """A 1:1 decision (``speakerid.decision.scorer`` says by which rule).

    With a decision calibration, ``accepted`` holds false accepts at ``far`` for this clip's
    and this enrollment's quality, and ``threshold`` is the cosine that means here; with a
    fixed threshold (given, or an older store calibration), ``far`` and ``quality`` are None.
    """

    speaker: str
    file: str
    score: float  # raw cosine in [-1, 1]
    threshold: float  # the cosine (or AS-norm) threshold this comparison was decided at
    accepted: bool
    threshold_source: str = "model"  # "given", "store", "model" or "default"
    normalized_score: float | None = None  # AS-norm score the decision used, if calibrated so
    llr: float | None = None  # log-likelihood ratio (same vs different speaker), when known
    far: float | None = None  # the target false-accept rate of the decision
    stranger_rate: float | None = None  # how often a stranger scores this high, estimated
    quality: Quality | None = None  # the quality measures the decision used


@dataclass(frozen=True)
class Identification:
    """A 1:N answer for one file: ranked candidates, ``best`` None when no one is accepted.

    ``accepted[i]`` and ``thresholds[i]`` are candidate i's decision and the cosine threshold
    it was judged at (its own enrollment's quality, see ``speakerid.decision.scorer``);
    ``threshold`` is the top candidate's.
    """

    file: str
    candidates: list[Candidate]
    best: str | None
    threshold: float
    threshold_source: str = "model"  # "given", "store", "model" or "default"
    normalized_score: float | None = None  # AS-norm score of the top candidate, if in use
    far: float | None = None  # the per-query rate of naming a stranger, when calibrated
    accepted: list[bool] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    llrs: list[float | None] = field(default_factory=list)
    test_seconds: float | None = None


@dataclass(frozen=True)
class ModelSummary:
    """The model a command would use, or why it cannot be loaded."""

    path: str
    fingerprint: str | None
    threshold: float | None  # the model's threshold (``threshold_source`` says why)
    threshold_source: str
    embedding_dim: int | None
    error: str | None = None


@dataclass(frozen=True)
class Info:
    """``speakerid info``: the model, the store, and whether they fit together."""

    model: ModelSummary
    store: StoreSummary
    compatible: bool | None  # None when either side is unknown (no model, unbound store)
    verify_threshold: float | None = None  # what verify uses without --threshold
    verify_source: str = "model"
    identify_threshold: float | None = None  # what identify uses without --threshold
    identify_source: str = "model"
    calibration: Calibration | None = None  # the store's, whatever model made it
    notes: list[str] = field(default_factory=list)  # why a calibration applies or not
    decisions: str = ""  # the rule verify and identify decide by, in words (``Scorer``)


# ---------------------------------------------------------------- operations


def model_id(embedder: BaseEmbedder) -> tuple[str, int, str]:
    """(fingerprint, embedding size, absolute path) of the embedder's model."""
    return embedder.identity()


def embed_checked(embedder: BaseEmbedder, path: Source) -> np.ndarray:
    """``embedder.embed_file`` that refuses non-finite output (a damaged model's mark)."""
    return embedder.finite(embedder.embed_file(path), path)


def embed_measured(embedder: BaseEmbedder, path: Source) -> tuple[np.ndarray, float]:
    """``embed_checked`` that also returns the recording's seconds of speech (after trimming).

    The same embedding as ``embed_file`` (``BaseEmbedder.embed_measured``).
    """
    vector, seconds = embedder.embed_measured(path)
    return embedder.finite(vector, path), seconds


def recording_quality(
    paths: Sequence[str],
    embeddings: np.ndarray,
    seconds: Sequence[float],
    earlier: np.ndarray,
    threshold: float,
) -> list[RecordingQuality]:
    """Speech and agreement of new recordings, with what is wrong with each.

    Parameters
    ----------
    embeddings: ``(n, D)`` of the new recordings; ``earlier``: ``(m, D)`` the speaker keeps.
    threshold: the 1:1 (raw cosine) threshold: a recording agreeing less with the speaker's
        other recordings would be rejected by ``verify`` against them.
    """
    both = np.concatenate(
        [np.asarray(earlier, np.float32).reshape(-1, embeddings.shape[1]), embeddings]
    )
    agree = agreements(both)[len(both) - len(embeddings) :]
    out = []
    for path, sec, value in zip(paths, seconds, agree, strict=True):
        problems = []
        if sec < GOOD_SPEECH_SECONDS:
            problems.append(
                f"only {sec:.1f} s of speech ({GOOD_SPEECH_SECONDS:g} s or more recommended)"
            )
        agreement = None if np.isnan(value) else float(value)
        if agreement is not None and agreement < threshold:
            problems.append(
                f"agrees with the speaker's other recordings at {agreement:.4f}, below the "
                f"threshold {threshold:.4f} (another voice, or a very different channel?)"
            )
        out.append(RecordingQuality(str(path), float(sec), agreement, problems))
    return out


def _quality(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    name: str,
    paths: list[str],
    embeddings: np.ndarray,
    seconds: Sequence[float],
    replace: bool,
) -> list[RecordingQuality]:
    """``recording_quality`` of new recordings against those the speaker keeps."""
    earlier = np.zeros((0, embeddings.shape[1]), np.float32)
    if not replace and name in store:
        known, vectors = store.recording_vectors(name)
        again = {recording_key(p, hash_=False)[0] for p in paths}  # as the store names them
        earlier = vectors[[i for i, p in enumerate(known) if p not in again]]
    calibration = calibration_for(store, embedder.model.fingerprint)
    threshold, _ = resolve_threshold(
        embedder.model.threshold, None, calibration.raw_threshold if calibration else None
    )
    return recording_quality(paths, embeddings, seconds, earlier, threshold)


def enroll(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    name: str,
    paths: Sequence[Source],
    *,
    replace: bool = False,
    strict: bool = False,
) -> EnrollResult:
    """Embed recordings and add them to a speaker (all embeddings first, then one write).

    Any unusable file raises ``AudioError`` before the store is touched. Each new
    recording's speech and agreement are measured (``EnrollResult.quality``); with
    ``strict``, a recording with a problem raises ``EnrollmentQualityError`` instead, and
    nothing is written.
    """
    name = validate_name(name)
    fingerprint, dim, source = model_id(embedder)
    store.check_model(fingerprint, dim, source, embedder.vad)  # fail before the slow part
    measured = [embed_measured(embedder, p) for p in paths]
    embeddings = np.stack([m[0] for m in measured]) if paths else np.zeros((0, dim))
    seconds = [m[1] for m in measured]
    quality = _quality(store, embedder, name, [str(p) for p in paths], embeddings, seconds, replace)
    flagged = [q for q in quality if q.problems]
    if strict and flagged:
        more = f" (and {len(flagged) - 1} more)" if len(flagged) > 1 else ""
        raise EnrollmentQualityError(
            f"{flagged[0].path}: {flagged[0].problems[0]}{more}; nothing was enrolled "
            "(leave out --strict to enroll anyway)"
        )
    result = store.add_recordings(
        name,
        [str(p) for p in paths],
        embeddings,
        fingerprint=fingerprint,
        source=source,
        vad=embedder.vad,
        replace=replace,
        speech_seconds=seconds,
    )
    return replace_fields(result, quality=quality)


# ---------------------------------------------------------------- checks before the model
# Loading a model takes seconds (the accurate one about 4 s on a CPU, an ONNX graph's first
# export about 30 s): what can be refused without it is refused first.


def check_source(path: Source) -> None:
    """``AudioError`` now if ``path`` is a file that cannot be read (missing, a directory,
    unreadable, empty); arrays and stdin are read later."""
    if isinstance(path, Clip | Spooled) or str(path) == STDIN:
        return
    check_audio_file(Path(path))


def unreadable(paths: Sequence[Source]) -> list[FileError]:
    """A ``FileError`` for each path ``check_source`` refuses, in order."""
    errors = []
    for path in paths:
        try:
            check_source(path)
        except AudioError as exc:
            errors.append(FileError(str(path), str(exc)))
    return errors


def check_root(root: str | Path) -> Path:
    """``root`` if it is a directory, else ``DataError`` naming it."""
    root = Path(root)
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "no such directory"
        raise DataError(f"{root}: {problem}")
    return root


def check_gallery(store: SpeakerStore, top_k: int) -> None:
    """What identify needs before any audio: a ``top_k`` of 1 or more, someone enrolled."""
    if top_k < 1:
        raise SpeakerIDError(f"top must be at least 1, not {top_k}")
    if len(store) == 0:
        raise StoreError(f"{store.path}: no speakers are enrolled; enroll some first")


def speaker_folders(root: str | Path) -> list[tuple[str, list[Path]]]:
    """Speaker folders under ``root`` and their audio files, sorted.

    Layouts: ``root/<speaker>/*.wav|flac`` or LibriSpeech's
    ``root/<speaker>/<chapter>/*.flac`` (any depth below the speaker folder). Hidden
    files and folders are ignored. Raises ``DataError`` when none hold audio.
    """
    root = check_root(root)
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f
            for f in folder.rglob("*")
            if f.suffix.lower() in AUDIO_EXTENSIONS
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)
            and f.is_file()
        )
        if files:
            found.append((folder.name, files))
    if not found:
        raise DataError(
            f"{root}: no speaker folders with audio (expected {root}/<speaker>/*.wav|flac "
            f"or {root}/<speaker>/<chapter>/*.flac)"
        )
    return found


def enroll_directory(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    root: str | Path,
    *,
    replace: bool = False,
    on_file: Callable[[str, int, int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    strict: bool = False,
) -> BulkEnrollResult:
    """Enroll every speaker folder under ``root`` (see ``speaker_folders``).

    Each speaker is one transaction, so an interrupted run keeps the speakers it finished.
    Unusable files and folders with unusable names are reported in ``errors`` and the rest
    enrolled (with ``strict`` the first one raises instead); a speaker with no usable file
    is left out. Raises ``DataError`` when nothing could be enrolled.

    Parameters
    ----------
    on_file: called as ``on_file(speaker, files_done, files_total)`` after each file.
    shard: ``(I, N)``: only every N-th speaker folder from the I-th (``speakerid.embedding.bulk``).
    """
    folders = speaker_folders(root)
    refuse_collisions([(name, str(Path(root) / name)) for name, _ in folders])  # every shard's
    folders = folders[shard[0] :: shard[1]]
    fingerprint, dim, source = model_id(embedder)
    store.check_model(fingerprint, dim, source, embedder.vad)
    total = sum(len(files) for _, files in folders)
    done = 0
    enrolled: list[EnrollResult] = []
    skipped: list[FileError] = []
    for folder_name, files in folders:
        try:
            name = validate_name(folder_name)
        except InvalidNameError as exc:
            if strict:
                raise InvalidNameError(f"{Path(root) / folder_name}: {exc}") from None
            skipped.append(FileError(str(Path(root) / folder_name), str(exc)))
            done += len(files)
            if on_file:
                on_file(folder_name, done, total)
            continue
        good: list[str] = []
        vectors: list[np.ndarray] = []
        seconds: list[float] = []
        for path in files:
            try:
                vector, speech = embed_measured(embedder, path)
                vectors.append(vector)
                seconds.append(speech)
                good.append(str(path))
            except AudioError as exc:
                if strict:
                    raise
                skipped.append(FileError(str(path), str(exc)))
            done += 1
            if on_file:
                on_file(name, done, total)
        if good:
            quality = _quality(store, embedder, name, good, np.stack(vectors), seconds, replace)
            result = store.add_recordings(
                name,
                good,
                np.stack(vectors),
                fingerprint=fingerprint,
                source=source,
                vad=embedder.vad,
                replace=replace,
                speech_seconds=seconds,
            )
            enrolled.append(replace_fields(result, quality=quality))
    if not enrolled:
        first = f"; first problem: {skipped[0].error}" if skipped else ""
        raise DataError(f"{root}: nothing could be enrolled ({len(skipped)} failed){first}")
    return BulkEnrollResult(str(root), enrolled, skipped)


def model_identity(embedder: BaseEmbedder) -> ModelIdentity:
    """What decisions need to know of the embedder's model, the same for every backend."""
    model = embedder.model
    fingerprint = model.fingerprint

    def cohort() -> np.ndarray | None:
        loaded = getattr(model, "cohort", None)  # the torch backend has read it already
        return loaded if loaded is not None else model_cohort(fingerprint, model.path)

    return ModelIdentity(fingerprint, model.threshold, decision_model(fingerprint), cohort)


def scorer_for(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    threshold: float | None = None,
    far: float | None = None,
) -> Scorer:
    """The decision home for this store and this embedder's model (``decision.scorer``)."""
    return Scorer(store, model_identity(embedder), threshold=threshold, far=far)


def verify(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    name: str,
    path: Source,
    threshold: float | None = None,
    *,
    far: float | None = None,
) -> Verification:
    """1:1: does ``path`` sound like the enrolled speaker ``name``?

    ``threshold`` (a cosine) decides exactly when given; else the decision holds false
    accepts at ``far`` (default ``decision.DEFAULT_FAR``) for this clip's and this
    enrollment's quality, through the store's or the model's decision calibration (see
    ``speakerid.decision.scorer`` for the rules).
    """
    name = validate_name(name)
    fingerprint, dim, source = model_id(embedder)
    scorer = scorer_for(store, embedder, threshold, far)
    store.check_model(fingerprint, dim, source, embedder.vad)
    reference = store.vector(name)  # an unknown speaker fails before the slow part
    query, seconds = embed_measured(embedder, path)
    raw = float(score(reference, query))
    j = scorer.verify(name, raw, query, seconds)
    return Verification(
        name,
        str(path),
        raw,
        float(j.threshold),
        j.accepted,
        j.source,
        j.normalized_score,
        j.llr,
        j.far,
        j.stranger_rate,
        j.quality,
    )


def identify(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    paths: Sequence[Source],
    threshold: float | None = None,
    top_k: int = 5,
    *,
    far: float | None = None,
    strict: bool = False,
    on_file: OnFile | None = None,
) -> list[Identification | FileError]:
    """1:N, open set: rank enrolled speakers for each file; ``best`` is None for a stranger.

    All files are embedded first, then scored together with one matrix product. A file
    that cannot be used gets a ``FileError`` in its place (with ``strict`` it raises).
    Candidates are ranked by raw cosine; who is named follows ``speakerid.decision.scorer``: each
    candidate judged with its own enrollment's quality, a stranger named at most about
    ``far`` of the time whatever the number of speakers (or a fixed threshold when given).
    """
    check_gallery(store, top_k)
    fingerprint, dim, source = model_id(embedder)
    scorer = scorer_for(store, embedder, threshold, far)
    store.check_model(fingerprint, dim, source, embedder.vad)
    embedded, seconds = _embed_measured_files(embedder, paths, strict=strict, on_file=on_file)
    vectors = embedded.vectors
    ranked = store.search(np.stack(list(vectors.values())), top_k) if vectors else []
    found = dict(zip(vectors, zip(vectors.values(), ranked, strict=True), strict=True))
    failed = {e.file: e for e in embedded.errors}
    results: list[Identification | FileError] = []
    for path in map(str, paths):
        if path in failed:
            results.append(failed[path])
            continue
        query, candidates = found[path]
        pairs = [(c.speaker, c.score) for c in candidates]
        best, judged = scorer.identify(pairs, query, seconds[path])
        top = judged[0] if judged else None
        results.append(
            Identification(
                path,
                candidates,
                best,
                float(top.threshold) if top else float("nan"),
                top.source if top else "default",
                top.normalized_score if top else None,
                scorer.far if scorer.calibrated else None,
                [j.accepted for j in judged],
                [float(j.threshold) for j in judged],
                [j.llr for j in judged],
                seconds[path],
            )
        )
    return results


def _embed_measured_files(
    embedder: BaseEmbedder,
    paths: Sequence[Source],
    *,
    strict: bool = False,
    on_file: OnFile | None = None,
) -> tuple[EmbedResult, dict[str, float]]:
    """``embed_files`` that also returns each file's seconds of speech."""
    seconds: dict[str, float] = {}

    def measured(embedder: BaseEmbedder, path: Source) -> np.ndarray:
        vector, seconds[str(path)] = embed_measured(embedder, path)
        return vector

    return embed_files(embedder, paths, strict=strict, on_file=on_file, embed=measured), seconds


def embed_files(
    embedder: BaseEmbedder,
    paths: Sequence[Source],
    *,
    strict: bool = False,
    on_file: OnFile | None = None,
    embed: Callable[[BaseEmbedder, Source], np.ndarray] = embed_checked,
) -> EmbedResult:
    """One ``(D,)`` unit embedding per file, keyed by the path exactly as given.

    Every file is tried: one that cannot be used is listed in ``errors`` (with ``strict``,
    the first one raises instead). A damaged model still raises at once.
    """
    vectors: dict[str, np.ndarray] = {}
    errors: list[FileError] = []
    work = lambda path: embed(embedder, path)  # noqa: E731
    for path, result in each_file(paths, work, strict=strict, on_file=on_file):
        if isinstance(result, FileError):
            errors.append(result)
        else:
            vectors[str(path)] = result
    return EmbedResult(vectors, errors)


def each_file(
    paths: Sequence[Source],
    work: Callable[[Source], T],
    *,
    strict: bool = False,
    on_file: OnFile | None = None,
) -> Iterator[tuple[Source, T | FileError]]:
    """``work`` on each file in order: its result, or a ``FileError`` for audio that cannot be
    used (with ``strict`` the first one raises). A batch's rule: one bad file never costs
    the others. Anything else (a damaged model, a store error) raises at once."""
    for done, path in enumerate(paths, 1):
        try:
            result: T | FileError = work(path)
        except AudioError as exc:
            if strict:
                raise
            result = FileError(str(path), str(exc))
        if on_file:
            on_file(done, len(paths))
        yield path, result


def fusion_header(name: str) -> ModelHeader | None:
    """What ``info`` shows of a shipped fusion (``registry.FUSIONS``): its identity and its
    size, from its members' headers (pinned); None for any other name."""
    fusion = FUSIONS.get(name)
    if fusion is None:
        return None
    members = [read_header(*resolve_model(m)) for m in fusion.members]
    path = Path(" + ".join(str(m.path) for m in members))
    config = {"embedding_dim": sum(m.embedding_dim for m in members)}
    info = {"fusion": list(fusion.members), "weight": fusion.weight}
    return ModelHeader(path, fusion.sha256, config, fusion.threshold, info)


def describe(store: SpeakerStore, model_path: str | Path | None) -> Info:
    """``speakerid info``: the model (or why it does not load) and the store's contents.

    The model is described from its header (``modelinfo.read_header``), without loading
    the weights or importing torch.
    """
    shown = str(model_path) if model_path is not None else f"{DEFAULT_MODEL} (shipped default)"
    try:
        model = fusion_header(str(model_path)) or read_header(*resolve_model(model_path))
    except SpeakerIDError as exc:
        threshold, source = resolve_threshold(None, None)
        model_summary = ModelSummary(shown, None, threshold, source, None, error=str(exc))
    else:
        threshold, source = resolve_threshold(model.threshold, None)
        dim = model.embedding_dim
        model_summary = ModelSummary(str(model.path), model.fingerprint, threshold, source, dim)
    summary = store.summary()
    compatible = None
    if model_summary.fingerprint and summary.model_fingerprint and summary.speakers:
        compatible = model_summary.fingerprint == summary.model_fingerprint
    calibration = store.calibration()
    applies = (
        calibration
        if calibration is not None and calibration.model_fingerprint == model_summary.fingerprint
        else None
    )
    model_threshold = threshold if source == "model" else None
    verify_at, verify_source = resolve_threshold(
        model_threshold, None, applies.threshold if applies else None
    )
    identify_at, identify_source = resolve_threshold(
        model_threshold, None, identify_threshold(applies)
    )
    decisions = ""
    if model_summary.fingerprint is not None:
        fp = model_summary.fingerprint
        own = model_summary.threshold if model_summary.threshold_source == "model" else None
        try:
            identity = ModelIdentity(fp, own, decision_model(fp), lambda: None)
            decisions = Scorer(store, identity).operating_point()
        except SpeakerIDError as exc:
            decisions = str(exc)
    return Info(
        model_summary,
        summary,
        compatible,
        verify_at,
        verify_source,
        identify_at,
        identify_source,
        calibration,
        calibration_notes(store, model_summary.fingerprint),
        decisions,
    )
