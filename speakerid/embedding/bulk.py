"""Many files at once: fragments batched across files, a directory of speakers embedded, and
an embeddings file enrolled into a store without running a model.

The shard rule is ``embedding.shards``; the embeddings file format is ``store.npz``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerid.embedding.shards import Shard
from speakerid.errors import AudioError, InvalidNameError, SpeakerIDError
from speakerid.store.npz import EmbeddingsFile, speakers_of

if TYPE_CHECKING:
    from speakerid.embedding.backends.torch import Embedder
    from speakerid.recognition import BulkEnrollResult
    from speakerid.store.speakers import SpeakerStore

BATCH_FRAGMENTS = 256  # fragments gathered across files per encoder call (GPU-sized)


def embed_batched(
    embed_fragments: Callable[[np.ndarray], np.ndarray],
    load: Callable[[str], np.ndarray],
    paths: Sequence[str],
    batch_fragments: int = BATCH_FRAGMENTS,
    on_file: Callable[[str], None] | None = None,
    pool: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[str, np.ndarray | AudioError]]:
    """Embed many files with fragments of several files in each encoder call.

    Parameters
    ----------
    embed_fragments: ``(F, samples)`` -> ``(F, D)`` unit embeddings (``Embedder``'s).
    load: path -> ``(n_fragments, samples)`` fragments; raises ``AudioError`` when unusable.
    batch_fragments: fragments gathered before one call (a GPU wants hundreds).
    pool: a file's ``(n, D)`` fragment embeddings -> its ``(D,)`` vector (the embedder's
        ``pool_fragments``); None: ``vectors.pool``.

    Yields
    ------
    ``(path, (D,) unit vector)`` per usable file, ``(path, AudioError)`` per unusable one,
    in the order given: one bad file never costs the others.
    """
    if pool is None:
        from speakerid.vectors import pool

    pending: list[tuple[str, np.ndarray | AudioError]] = []
    count = 0

    def flush() -> Iterator[tuple[str, np.ndarray | AudioError]]:
        frags = [f for _, f in pending if isinstance(f, np.ndarray)]
        emb = embed_fragments(np.concatenate(frags)) if frags else None
        start = 0
        for path, item in pending:
            if isinstance(item, AudioError):
                yield path, item
                continue
            yield path, pool(emb[start : start + len(item)])
            start += len(item)

    for path in paths:
        try:
            frags = load(path)
        except AudioError as exc:
            pending.append((path, exc))
        else:
            pending.append((path, frags))
            count += len(frags)
        if on_file:
            on_file(path)
        if count >= batch_fragments:
            yield from flush()
            pending, count = [], 0
    if pending:
        yield from flush()


def embed_directory(
    embedder: Embedder,
    root: str | Path,
    shard: Shard = Shard(),
    on_file: Callable[[str], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Embed this shard's speaker folders under ``root`` (see ``service.speaker_folders``).

    Returns the vectors keyed by file path (``root/<speaker>/...``) and the skipped files
    as ``(path, reason)``. Raises ``DataError`` when the shard holds no speaker folder.
    """
    from speakerid.audio import load_audio, prepare
    from speakerid.errors import DataError
    from speakerid.recognition import speaker_folders
    from speakerid.store.speakers import refuse_collisions

    every = speaker_folders(root)
    refuse_collisions([(name, str(Path(root) / name)) for name, _ in every])  # every shard's
    folders = shard.take(every, key=lambda f: f[0])
    if not folders:
        raise DataError(f"{root}: shard {shard} holds no speaker folder (fewer speakers than N)")
    paths = [str(f) for _, files in folders for f in files]
    vectors: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    load = lambda p: prepare(load_audio(p), name=p, vad=embedder.vad)  # noqa: E731
    batches = embed_batched(
        embedder.embed_fragments, load, paths, on_file=on_file, pool=embedder.pool_fragments
    )
    for path, item in batches:
        if isinstance(item, AudioError):
            skipped.append((path, str(item)))
        else:
            vectors[path] = embedder.finite(item, path)
    return vectors, skipped


def enroll_embeddings(
    store: SpeakerStore,
    emb: EmbeddingsFile,
    *,
    replace: bool = False,
    on_speaker: Callable[[str, int, int], None] | None = None,
) -> BulkEnrollResult:
    """Enroll the speakers of an ``enroll-dir --out`` file into ``store`` without running a
    model, ``SpeakerStore.add_many``'s batch of speakers per transaction: the file's model
    header binds or must match the store's model. Folders with unusable names are skipped
    and reported."""
    from speakerid.errors import DataError
    from speakerid.recognition import BulkEnrollResult, FileError
    from speakerid.store.speakers import refuse_collisions, validate_name

    groups = speakers_of(emb)
    refuse_collisions(
        [(speaker, str(Path(emb.root or "") / speaker)) for speaker in sorted(groups)]
    )
    if emb.model_fingerprint is None:
        raise SpeakerIDError(f"{emb.parts[0]}: has no model header, so its model is unknown")
    meta = store.meta()
    stored = int(meta.get("embedding_dim") or 0)
    if meta.get("model_fingerprint") == emb.model_fingerprint and stored not in (
        0,
        emb.embedding_dim,
    ):
        raise SpeakerIDError(
            f"{emb.parts[0]}: its header says model {emb.model_fingerprint[:12]} makes vectors "
            f"of size {emb.embedding_dim}, but {store.path} holds that model's vectors of size "
            f"{stored}; the file's header is wrong"
        )
    store.check_model(emb.model_fingerprint, emb.embedding_dim, emb.model_source, emb.vad)
    todo, skipped = [], []
    for speaker in sorted(groups):
        keys = groups[speaker]
        try:
            name = validate_name(speaker)
        except InvalidNameError as exc:
            skipped.append(FileError(str(Path(emb.root or "") / speaker), str(exc)))
            continue
        todo.append((name, keys, np.stack([emb.vectors[k] for k in keys])))
    enrolled = store.add_many(
        todo,
        fingerprint=emb.model_fingerprint,
        source=emb.model_source,
        vad=emb.vad,
        replace=replace,
    )
    if on_speaker:
        for done, (name, _, _) in enumerate(todo, 1):
            on_speaker(name, done, len(groups))
    if not enrolled:
        raise DataError(f"{emb.parts[0]}: nothing could be enrolled ({len(skipped)} skipped)")
    return BulkEnrollResult(emb.root or "", enrolled, skipped)
