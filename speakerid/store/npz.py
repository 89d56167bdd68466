"""Embeddings files: ``.npz`` archives of vectors with the model that made them.

An embeddings file is an ``.npz`` (``np.load(path)[key]``, one ``(D,)`` float32 vector per
key) whose zip comment holds a small JSON header: the fingerprint, size and source of the
model that made the vectors, and, for ``enroll-dir --out``, the folder the keys lie under
(the speaker of a key is its first folder below it). Files from different models are
never merged or enrolled together. Each shard's process writes one; ``embed --merge``
joins them and ``enroll --from-npz`` puts them into a store. Reading checks every bound
before a member is decoded: a crafted archive cannot exhaust memory.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from speakerid.encoders.checkpoint import EMBEDDING_MAX_DIM, read_metadata
from speakerid.encoders.registry import shipped_name
from speakerid.errors import SpeakerIDError
from speakerid.outputs import replacing
from speakerid.vectors import EPS

EMBEDDINGS_FORMAT = "speakerid-embeddings"
# Bounds checked before a file's members are read. 500k keys of 192-d float32 are 384 MB of
# vectors; a larger archive is written in shards (--shard) and enrolled part by part.
EMBEDDINGS_MAX_KEYS = 500_000
_NPY_HEADER_MAX = 4096  # bytes of a member's npy header (numpy writes 128)
_DIRECTORY_ENTRY_MAX = 1024  # bytes of zip directory per member: 46 + name + zip64 fields
_SHA256 = re.compile(r"[0-9a-f]{64}")
# zip end-of-central-directory records: classic, zip64 locator, zip64 (little-endian)
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


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
    identity, see ``header``) goes into the zip comment as JSON, where
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
    """Read an embeddings ``.npz``, checking it before anything is allocated; never unpickles.

    The zip's directory size and member count (``EMBEDDINGS_MAX_KEYS``), each member's
    declared size, npy header, dtype and shape, and the JSON header's fields are checked
    before a member's data is read; then every vector must be finite and non-zero once in
    float32. Raises ``SpeakerIDError`` naming the file (and the key) and what is wrong.
    """
    path = Path(path)
    try:
        if not path.exists():
            raise SpeakerIDError(f"{path}: no such file")
        if not path.is_file():
            raise SpeakerIDError(f"{path}: not a regular file, so not an embeddings .npz")
        with open(path, "rb") as fh:
            _check_directory(path, fh)
            with zipfile.ZipFile(fh) as zf:
                head = _read_header(path, zf.comment)
                return _read_vectors(path, zf, head)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpeakerIDError(f"{path}: not a readable embeddings .npz ({reason})") from None


def _check_directory(path: Path, fh: BinaryIO) -> None:
    """Refuse a zip whose central directory (read whole by ``zipfile``) is too large.

    Reads the end-of-central-directory record (and its zip64 twin) as ``zipfile`` finds it:
    the last ``PK\\x05\\x06`` in the file's final 64 KiB + 22 bytes.
    """
    size = fh.seek(0, os.SEEK_END)
    tail_size = min(size, _EOCD.size + 0xFFFF)
    fh.seek(size - tail_size)
    tail = fh.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise zipfile.BadZipFile("File is not a zip file")
    *_, entries, directory, _offset, _comment = _EOCD.unpack_from(tail, at)
    locator = at - _ZIP64_LOCATOR.size
    if locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        (record,) = _ZIP64_LOCATOR.unpack_from(tail, locator)[2:3]
        fh.seek(record)
        raw = fh.read(_ZIP64_EOCD.size)
        if len(raw) == _ZIP64_EOCD.size and raw[:4] == b"PK\x06\x06":
            entries, directory = _ZIP64_EOCD.unpack(raw)[7:9]
    if entries > EMBEDDINGS_MAX_KEYS or directory > EMBEDDINGS_MAX_KEYS * _DIRECTORY_ENTRY_MAX:
        raise SpeakerIDError(
            f"{path}: holds {entries} members ({directory} bytes of zip directory); one "
            f"embeddings file holds at most {EMBEDDINGS_MAX_KEYS} keys: split it (--shard)"
        )


def _read_header(path: Path, comment: bytes) -> dict[str, Any]:
    """The zip comment's JSON header, its fields type-checked; ``{}`` when there is none
    (a file from an older speakerid, or a comment that is not speakerid's)."""
    try:
        head = json.loads(comment.decode()) if comment else {}
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    if not isinstance(head, dict) or head.get("format") != EMBEDDINGS_FORMAT:
        return {}
    fingerprint, dim = head.get("model_fingerprint"), head.get("embedding_dim")
    if not isinstance(fingerprint, str) or not _SHA256.fullmatch(fingerprint):
        raise SpeakerIDError(
            f"{path}: its header's model_fingerprint {_shown(fingerprint)} is not a sha256 "
            "in hex; the file was not written by speakerid or was edited"
        )
    if type(dim) is not int or not 1 <= dim <= EMBEDDING_MAX_DIM:
        raise SpeakerIDError(
            f"{path}: its header's embedding_dim {_shown(dim)} is not a whole number from 1 "
            f"to {EMBEDDING_MAX_DIM}"
        )
    for name in ("model_source", "root"):
        if name in head and not isinstance(head[name], str):
            raise SpeakerIDError(
                f"{path}: its header's {name} {_shown(head[name])} is not a string"
            )
    known = known_dim(fingerprint)
    if known is not None and known != dim:
        raise SpeakerIDError(
            f"{path}: its header says size {dim}, but model {fingerprint[:12]} "
            f"({shipped_name(fingerprint)}) makes vectors of size {known}"
        )
    return head


def _shown(value: object) -> str:
    """A header value as messages quote it: repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def known_dim(fingerprint: str) -> int | None:
    """The embedding size of the shipped model with this fingerprint, from its header
    (not hashed: the pin names it); None for another model or a missing file."""
    from speakerid.encoders.registry import SHIPPED, shipped_path

    name = shipped_name(fingerprint)
    if name is None:
        return None
    try:
        dim = json.loads(read_metadata(shipped_path(SHIPPED[name]))["config"])["embedding_dim"]
    except (SpeakerIDError, KeyError, TypeError, ValueError):
        return None
    return dim if type(dim) is int else None


def _read_vectors(path: Path, zf: zipfile.ZipFile, head: Mapping[str, Any]) -> EmbeddingsFile:
    """Every member's npy header checked, then its data read into one ``(n, dim)`` matrix."""
    infos = zf.infolist()
    if len(infos) > EMBEDDINGS_MAX_KEYS:  # the directory said fewer: refuse all the same
        raise SpeakerIDError(f"{path}: holds more than {EMBEDDINGS_MAX_KEYS} keys")
    dim = head["embedding_dim"] if head else None
    keys: list[str] = []
    matrix = np.zeros((0, 0), np.float32)
    for i, info in enumerate(infos):
        if not info.filename.endswith(".npy") or info.is_dir():
            raise SpeakerIDError(f"{path}: member {info.filename!r} is not a .npy array")
        key = info.filename[: -len(".npy")]
        with zf.open(info) as member:
            dtype, shape = _npy_header(path, key, member)
            if dim is None:  # no header: the first vector sets the size
                dim = shape[0] if len(shape) == 1 and 1 <= shape[0] <= EMBEDDING_MAX_DIM else 0
            if shape != (dim,):
                said = "header says" if head else "first vector has"
                raise SpeakerIDError(f"{path}: {key!r} has shape {shape}; the {said} size {dim}")
            if info.file_size > _NPY_HEADER_MAX + dim * dtype.itemsize + 16:
                raise SpeakerIDError(
                    f"{path}: {key!r} declares {info.file_size} bytes for {dim} values"
                )
            data = member.read(dim * dtype.itemsize)
        if len(data) != dim * dtype.itemsize:
            raise SpeakerIDError(f"{path}: {key!r} is cut short")
        if i == 0:
            matrix = np.empty((len(infos), dim), np.float32)
        with np.errstate(over="ignore", under="ignore"):
            matrix[i] = np.frombuffer(data, dtype=dtype)
        _check_vector(path, key, matrix[i])
        keys.append(key)
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise SpeakerIDError(f"{path}: the key {twice!r} is in the file twice")
    return EmbeddingsFile(
        dict(zip(keys, matrix, strict=True)),
        head.get("model_fingerprint"),
        int(dim or 0),
        head.get("model_source", ""),
        head.get("root"),
        [str(path)],
    )


def _npy_header(path: Path, key: str, member: BinaryIO) -> tuple[np.dtype, tuple[int, ...]]:
    """A member's dtype and shape from its npy header; only real floats are accepted."""
    version = np.lib.format.read_magic(member)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise SpeakerIDError(f"{path}: {key!r} is npy format {version}, not a float vector")
    shape, _fortran, dtype = readers[version](member, max_header_size=_NPY_HEADER_MAX)
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8) or dtype.fields is not None:
        raise SpeakerIDError(f"{path}: {key!r} holds {dtype} values; embeddings are real floats")
    return dtype, tuple(int(n) for n in shape)


def _check_vector(path: Path, key: str, vector: np.ndarray) -> None:
    """Refuse a float32 vector that is not finite or has (rounds to) zero length."""
    if not np.isfinite(vector).all():
        raise SpeakerIDError(
            f"{path}: {key!r} holds NaN or infinite values (as float32); the file is damaged"
        )
    if float(np.linalg.norm(vector)) <= EPS:
        raise SpeakerIDError(
            f"{path}: {key!r} is a zero vector (or too small to scale to unit length in "
            "float32); it cannot be scored"
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
        if len(merged) + len(part.vectors) > EMBEDDINGS_MAX_KEYS:
            raise SpeakerIDError(
                f"{path}: the merged file would hold more than {EMBEDDINGS_MAX_KEYS} keys, "
                "the most one embeddings file may; enroll the parts one by one instead"
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
