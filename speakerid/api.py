"""The Python API: one object that enrolls, verifies, identifies and embeds.

The CLI is a thin layer over these calls (README, "Python API", has a tested example).
The model and the store are opened on first use, so constructing a ``SpeakerID`` is free
and ``list``-like calls never load a model. What can be refused without the model (an
unknown speaker, a missing or empty file, nobody enrolled) is refused before it loads.
Results are the dataclasses the JSON output is made of; every failure is a
``SpeakerIDError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerid.audio import (
    MIN_SPEECH_SECONDS,
    SAMPLE_RATE,
    Clip,
    check_vad,
    resolve_vad,
    to_16k_mono,
)
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.embedding.pipeline import open_embedder
from speakerid.errors import SpeakerIDError, StoreError
from speakerid.recognition import (
    BulkEnrollResult,
    EmbedResult,
    FileError,
    Identification,
    OnFile,
    Source,
    Verification,
    check_gallery,
    check_root,
    check_source,
    each_file,
    embed_files,
    enroll,
    enroll_directory,
    identify,
    unreadable,
    verify,
)
from speakerid.store.speakers import EnrollResult, SpeakerStore, SpeakerSummary, validate_name

if TYPE_CHECKING:
    from speakerid.decision.timeline import SegmentConfig, Timeline


class SpeakerID:
    """Speaker recognition over one enrollment store and one model.

    Parameters
    ----------
    store: the store file (created by the first enrollment); None: ``$SPEAKERID_STORE`` or
        the user data dir's ``speakerid/store.sqlite``.
    model: a shipped model's name (``accurate``, ``fast``, ``ecapa``), a checkpoint,
        an exported ``.onnx`` file (onnx backend), or None for the default shipped model.
    backend: ``torch`` or ``onnx`` (onnxruntime, no torch); None: ``$SPEAKERID_BACKEND``,
        else torch.
    precision: torch ``auto`` | ``fp32`` | ``bf16``; onnx ``auto`` | ``fp32`` | ``int8``
        (``accurate``'s int8 graph).
    min_speech: seconds of speech (after trimming silence) a recording needs.
    vad: how speech is found before embedding: ``energy`` | ``silero`` | ``none``
        (``speakerid.audio.VADS``); None: ``$SPEAKERID_VAD``, else the one the store was
        enrolled with, else ``silero`` (``audio.DEFAULT_VAD``). A store refuses another.
    """

    def __init__(
        self,
        store: str | Path | None = None,
        model: str | Path | None = None,
        *,
        backend: str | None = None,
        precision: str = "auto",
        min_speech: float = MIN_SPEECH_SECONDS,
        vad: str | None = None,
    ) -> None:
        self._store_path = store
        self._model = model
        self._backend = backend
        self._precision = precision
        self._min_speech = min_speech
        self._vad = check_vad(vad) if vad is not None else None
        self._embedder: BaseEmbedder | None = None
        self._store: SpeakerStore | None = None

    # -- what is opened on first use

    @property
    def embedder(self) -> BaseEmbedder:
        """The model and the backend running it, loaded on first use."""
        if self._embedder is None:
            vad = resolve_vad(self._vad, None if self._vad else self._store_vad())
            self._embedder = open_embedder(
                self._model, self._backend, self._precision, self._min_speech, vad
            )
        return self._embedder

    def _store_vad(self) -> str | None:
        """The VAD the store's vectors were made with (None: empty, or unreadable: the store
        then reports its own problem when used)."""
        try:
            return self.store.bound_vad()
        except StoreError:
            return None

    @property
    def store(self) -> SpeakerStore:
        """The enrollment store, opened on first use."""
        if self._store is None:
            self._store = SpeakerStore(self._store_path)
        return self._store

    def load(self) -> SpeakerID:
        """Load the model now rather than on first use (e.g. before a progress bar starts)."""
        _ = self.embedder
        return self

    def close(self) -> None:
        """Close the store (the model needs no closing)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> SpeakerID:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the four operations

    def enroll(
        self,
        name: str,
        files: Sequence[Source],
        *,
        replace: bool = False,
        strict: bool = False,
    ) -> EnrollResult:
        """Add recordings to speaker ``name`` (created if new); all or nothing.

        ``strict``: refuse recordings with too little speech or that disagree with the
        speaker's others (``EnrollResult.quality`` reports them otherwise).
        """
        if isinstance(files, str | Path):  # one path is not a sequence of its characters
            files = [files]
        validate_name(name)
        for file in files:  # all or nothing: one unreadable file refuses the enrollment
            check_source(file)
        return enroll(self.store, self.embedder, name, list(files), replace=replace, strict=strict)

    def enroll_dir(
        self,
        root: str | Path,
        *,
        replace: bool = False,
        strict: bool = False,
        on_file: Callable[[str, int, int], None] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> BulkEnrollResult:
        """Enroll every ``root/<speaker>/`` folder (of shard ``(index, count)``); files that
        fail are listed in ``errors``, not fatal (with ``strict`` the first one raises)."""
        check_root(root)
        return enroll_directory(
            self.store,
            self.embedder,
            root,
            replace=replace,
            strict=strict,
            on_file=on_file,
            shard=shard,
        )

    def verify(
        self,
        name: str,
        file: Source,
        *,
        threshold: float | None = None,
        far: float | None = None,
    ) -> Verification:
        """1:1: is ``file`` the enrolled speaker ``name``?

        Decided at the false-accept rate ``far`` (default 1 %) for this clip's and this
        enrollment's quality, or at exactly ``threshold`` (a cosine) when given.
        """
        self.store.vector(name)  # an unknown speaker or a bad name, before the model
        check_source(file)
        return verify(self.store, self.embedder, name, file, threshold, far=far)

    def identify(
        self,
        file: Source,
        top: int = 3,
        *,
        threshold: float | None = None,
        far: float | None = None,
    ) -> Identification:
        """1:N for one recording: ranked candidates, ``best`` None for a stranger.

        ``far``: how often a stranger may be named, per query (default 1 %).
        """
        check_gallery(self.store, top)
        check_source(file)
        (result,) = identify(
            self.store, self.embedder, [file], threshold, top, far=far, strict=True
        )
        assert isinstance(result, Identification)  # strict: a bad file raised instead
        return result

    def identify_many(
        self,
        files: Sequence[Source],
        top: int = 5,
        *,
        threshold: float | None = None,
        far: float | None = None,
        strict: bool = False,
        on_file: OnFile | None = None,
    ) -> list[Identification | FileError]:
        """1:N for several recordings, in order; a file that fails gets a ``FileError``."""
        check_gallery(self.store, top)
        refused = self._refused(files, strict)
        if refused is not None:
            return list(refused)
        return identify(
            self.store,
            self.embedder,
            files,
            threshold,
            top,
            far=far,
            strict=strict,
            on_file=on_file,
        )

    def identify_segments(
        self,
        files: Sequence[Source],
        *,
        threshold: float | None = None,
        config: SegmentConfig | None = None,
        strict: bool = False,
        on_file: OnFile | None = None,
    ) -> list[Timeline | FileError]:
        """Who speaks when along each recording, in order; a file that fails gets a
        ``FileError`` (with ``strict`` the first one raises). Each recording streams in
        chunks and needs ``min_speech`` seconds of speech."""
        from speakerid.decision.timeline import identify_segments

        def timeline(file: Source) -> Timeline:
            return identify_segments(self.store, self.embedder, file, threshold, config)

        done = each_file(files, timeline, strict=strict, on_file=on_file)
        return [result for _, result in done]

    def embed(self, audio: Source | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """One recording -> its ``(D,)`` unit embedding.

        ``audio`` is a path, or samples (``(n,)`` or ``(n, channels)``, float in [-1, 1]) at
        ``sample_rate`` Hz (default 16000), resampled as files are.
        """
        if isinstance(audio, np.ndarray):
            rate = SAMPLE_RATE if sample_rate is None else int(sample_rate)
            audio = Clip("array", to_16k_mono(audio, rate, name="array"))
        elif sample_rate is not None:
            raise SpeakerIDError("sample_rate applies to arrays; files carry their own rate")
        return embed_files(self.embedder, [audio], strict=True).vectors[str(audio)]

    def embed_many(
        self, files: Sequence[Source], *, strict: bool = False, on_file: OnFile | None = None
    ) -> EmbedResult:
        """Embeddings of several files keyed by path; files that fail are in ``errors``."""
        refused = self._refused(files, strict)
        if refused is not None:
            return EmbedResult({}, refused)
        return embed_files(self.embedder, files, strict=strict, on_file=on_file)

    @staticmethod
    def _refused(files: Sequence[Source], strict: bool) -> list[FileError] | None:
        """Every file's ``FileError`` when none can be read, so no model loads for nothing
        (with ``strict``, the first unreadable file raises); None when some can."""
        if strict:
            for file in files:
                check_source(file)
            return None
        errors = unreadable(files)
        return errors if errors and len(errors) == len(files) else None

    # -- the store

    def speakers(self) -> list[SpeakerSummary]:
        """Enrolled speakers, by name."""
        return self.store.speakers()

    def remove(self, name: str) -> int:
        """Remove a speaker; returns how many recordings went with them."""
        return self.store.remove(name)

    def __repr__(self) -> str:
        return f"SpeakerID(store={self._store_path!r}, model={self._model!r})"
