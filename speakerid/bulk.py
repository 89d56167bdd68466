"""Bulk embedding over many processes or machines: shards, embedding files, merging.

A large archive is embedded by N independent processes, each taking one deterministic
slice (``--shard I/N``) of the sorted file list (``embed``) or speaker list (``enroll-dir``),
each writing an ``.npz``; ``embed --merge`` joins the parts and ``enroll --from-npz`` puts
them into a store. No process talks to another: the only coordination is the shard rule.

An embeddings file is an ``.npz`` (``np.load(path)[key]``, one ``(D,)`` float32 vector per
key) whose zip comment holds a small JSON header: the fingerprint, size and source of the
model that made the vectors, and, for ``enroll-dir --out``, the folder the keys lie under
(the speaker of a key is its first folder below it). Files from different models are
never merged or enrolled together.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from speakerid.errors import AudioError, InvalidNameError, SpeakerIDError
from speakerid.outputs import replacing

if TYPE_CHECKING:
    from speakerid.embed import Embedder
    from speakerid.service import BulkEnrollResult
    from speakerid.store import SpeakerStore

EMBEDDINGS_FORMAT = "speakerid-embeddings"
BATCH_FRAGMENTS = 256  # fragments gathered across files per encoder call (GPU-sized)
_SHARD = re.compile(r"(\d+)/(\d+)")

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` of ``count`` (0-based): every ``count``-th item of the sorted list."""

    index: int = 0
    count: int = 1

    def take(self, items: Sequence[T], key: Callable[[T], str] = str) -> list[T]:
        """This shard's items: sorted by ``key``, then every ``count``-th from ``index``.

        Round-robin over the sorted list keeps shards within one item of each other in size
        and the same for every process that is given the same list.
        """
        return sorted(items, key=key)[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None) -> Shard:
    """``"I/N"`` with ``0 <= I < N`` -> ``Shard``; None -> the whole list."""
    if text is None:
        return Shard()
    match = _SHARD.fullmatch(text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise SpeakerIDError(
            f"--shard {text!r}: give I/N with 0 <= I < N, e.g. 0/4 ... 3/4 for four processes"
        )
    return Shard(int(match[1]), int(match[2]))


@dataclass(frozen=True)
class EmbeddingsFile:
    """The contents of an embeddings ``.npz``: vectors by key and the model that made them."""

    vectors: dict[str, np.ndarray]
    model_fingerprint: str | None  # None: written without a header (older speakerid)
    embedding_dim: int
    model_source: str = ""
    root: str | None = None  # enroll-dir --out: the speakers' parent folder
    parts: list[str] = field(default_factory=list)  # the files merged into this one


def header(fingerprint: str, dim: int, source: str, root: str | None = None) -> dict:
    """The JSON header ``save_embeddings`` writes into the zip comment."""
    head = {
        "format": EMBEDDINGS_FORMAT,
        "model_fingerprint": fingerprint,
        "embedding_dim": dim,
        "model_source": source,
    }
    if root is not None:
        head["root"] = root
    return head


def save_embeddings(
    path: str | Path,
    embeddings: Mapping[str, np.ndarray],
    header: Mapping[str, Any] | None = None,
) -> None:
    """Write embeddings as ``.npz`` (``np.load(path)[key]``), atomically and through links;
    a directory, FIFO or device at ``path`` is refused (``outputs.replacing``).

    Written member by member rather than with ``np.savez(**embeddings)``, so that any key
    (even ``"file"``, or one with slashes) survives unchanged. ``header`` (the model's
    identity, see ``speakerid.bulk.header``) goes into the zip comment as JSON, where
    ``np.load`` does not see it.
    """
    with (
        replacing(path) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        if header is not None:
            zf.comment = json.dumps(dict(header)).encode()
        for key, vector in embeddings.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(
                    fh, np.asarray(vector, dtype=np.float32), allow_pickle=False
                )


def load_embeddings(path: str | Path) -> EmbeddingsFile:
    """Read an embeddings ``.npz`` (never unpickling). Raises ``SpeakerIDError``."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            comment = zf.comment
        with np.load(path, allow_pickle=False) as z:
            vectors = {key: np.asarray(z[key], dtype=np.float32) for key in z.files}
    except FileNotFoundError:
        raise SpeakerIDError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpeakerIDError(f"{path}: not a readable embeddings .npz ({reason})") from None
    head: dict = {}
    if comment:
        try:
            head = json.loads(comment.decode())
        except (UnicodeDecodeError, ValueError):
            head = {}
        if not isinstance(head, dict) or head.get("format") != EMBEDDINGS_FORMAT:
            head = {}
    dims = {v.shape for v in vectors.values()}
    if len(dims) > 1 or any(len(shape) != 1 for shape in dims):
        raise SpeakerIDError(f"{path}: vectors of different shapes {sorted(dims)}")
    dim = next(iter(dims))[0] if dims else int(head.get("embedding_dim", 0))
    if head and int(head.get("embedding_dim", dim)) != dim:
        raise SpeakerIDError(f"{path}: header says size {head['embedding_dim']}, vectors are {dim}")
    return EmbeddingsFile(
        vectors,
        head.get("model_fingerprint") or None,
        dim,
        head.get("model_source", ""),
        head.get("root"),
        [str(path)],
    )


def merge_embeddings(paths: Sequence[str | Path]) -> EmbeddingsFile:
    """Join embeddings files of one model; a key in two files is an error.

    Every file must carry a model header (``speakerid embed`` writes one), all the same.
    """
    if not paths:
        raise SpeakerIDError("--merge needs the .npz files to merge")
    merged: dict[str, np.ndarray] = {}
    first: EmbeddingsFile | None = None
    seen: dict[str, str] = {}
    for path in paths:
        part = load_embeddings(path)
        if part.model_fingerprint is None:
            raise SpeakerIDError(
                f"{path}: has no model header (written by an older speakerid); embed it again"
            )
        if first is None:
            first = part
        elif (part.model_fingerprint, part.embedding_dim) != (
            first.model_fingerprint,
            first.embedding_dim,
        ):
            raise SpeakerIDError(
                f"{path}: made by model {part.model_fingerprint[:12]}, but {paths[0]} by "
                f"model {first.model_fingerprint[:12]}; embeddings of different models "
                "cannot be merged"
            )
        elif part.root != first.root:
            raise SpeakerIDError(
                f"{path}: its speakers lie under {part.root!r}, those of {paths[0]} under "
                f"{first.root!r}"
            )
        for key, vector in part.vectors.items():
            if key in seen:
                raise SpeakerIDError(f"{key!r} is in both {seen[key]} and {path}")
            seen[key] = str(path)
            merged[key] = vector
    assert first is not None
    return EmbeddingsFile(
        merged,
        first.model_fingerprint,
        first.embedding_dim,
        first.model_source,
        first.root,
        [str(p) for p in paths],
    )


def speakers_of(emb: EmbeddingsFile) -> dict[str, list[str]]:
    """Keys grouped by speaker: the first folder of each key below the file's ``root``.

    Raises ``SpeakerIDError`` for a file without a root (``embed`` output: no speakers).
    """
    if emb.root is None:
        raise SpeakerIDError(
            f"{emb.parts[0] if emb.parts else 'the file'}: its keys name no speakers; "
            "write it with `speakerid enroll-dir DIR --out FILE.npz`"
        )
    root = Path(emb.root)
    groups: dict[str, list[str]] = {}
    for key in emb.vectors:
        try:
            speaker = Path(key).relative_to(root).parts[0]
        except (ValueError, IndexError):
            raise SpeakerIDError(f"{key!r} does not lie under {emb.root}") from None
        groups.setdefault(speaker, []).append(key)
    return groups


# ---------------------------------------------------------------- batching across files


def embed_batched(
    embed_fragments: Callable[[np.ndarray], np.ndarray],
    load: Callable[[str], np.ndarray],
    paths: Sequence[str],
    batch_fragments: int = BATCH_FRAGMENTS,
    on_file: Callable[[str], None] | None = None,
) -> Iterator[tuple[str, np.ndarray | AudioError]]:
    """Embed many files with fragments of several files in each encoder call.

    Parameters
    ----------
    embed_fragments: ``(F, samples)`` -> ``(F, D)`` unit embeddings (``Embedder``'s).
    load: path -> ``(n_fragments, samples)`` fragments; raises ``AudioError`` when unusable.
    batch_fragments: fragments gathered before one call (a GPU wants hundreds).

    Yields
    ------
    ``(path, (D,) unit vector)`` per usable file, ``(path, AudioError)`` per unusable one,
    in the order given: one bad file never costs the others.
    """
    from speakerid.embed import pool

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
    from speakerid.service import speaker_folders

    folders = shard.take(speaker_folders(root), key=lambda f: f[0])
    if not folders:
        raise DataError(f"{root}: shard {shard} holds no speaker folder (fewer speakers than N)")
    paths = [str(f) for _, files in folders for f in files]
    vectors: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    load = lambda p: prepare(load_audio(p), name=p)  # noqa: E731
    for path, item in embed_batched(embedder.embed_fragments, load, paths, on_file=on_file):
        if isinstance(item, AudioError):
            skipped.append((path, str(item)))
        elif not np.isfinite(item).all():
            raise SpeakerIDError(f"{embedder.model.path}: the model produced NaN for {path}")
        else:
            vectors[path] = item
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
    from speakerid.service import BulkEnrollResult, FileError
    from speakerid.store import validate_name

    groups = speakers_of(emb)
    if emb.model_fingerprint is None:
        raise SpeakerIDError(f"{emb.parts[0]}: has no model header, so its model is unknown")
    store.check_model(emb.model_fingerprint, emb.embedding_dim, emb.model_source)
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
        todo, fingerprint=emb.model_fingerprint, source=emb.model_source, replace=replace
    )
    if on_speaker:
        for done, (name, _, _) in enumerate(todo, 1):
            on_speaker(name, done, len(groups))
    if not enrolled:
        raise DataError(f"{emb.parts[0]}: nothing could be enrolled ({len(skipped)} skipped)")
    return BulkEnrollResult(emb.root or "", enrolled, skipped)
