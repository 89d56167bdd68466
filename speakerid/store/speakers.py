"""The enrollment store: enrolled speakers and their recordings' embeddings, in SQLite.

Storage only: speakers and recordings in and out, the model that made them, the store's
metadata (its calibration, as JSON under ``calibration``: thresholds for this store's domain
and where they came from) and speaker names. The file itself
(schema, migrations, connections, transactions) is ``speakerid.store.db``; ranking speakers
is ``speakerid.store.search``; enroll / verify / identify are ``speakerid.recognition``.
Nothing here imports torch or the encoder, so ``speakerid list`` and ``remove`` stay light.

A speaker's vector is always the pool (normalised mean) of their recordings' embeddings and
is rewritten in the same transaction as the recordings, so a crash never leaves the two out
of step. Embeddings are computed *before* a write transaction opens (``BEGIN IMMEDIATE``),
which keeps the write lock short and lets several processes enroll at once.

Every write that changes a vector stamps it with the store's next ``vectors_seq``
(``speakerid.store.db``), and nothing else: a search index kept beside the file
(``speakerid.store.index``) reads what changed since it was written, so no write rebuilds it.
Bulk imports (``add_many``, ``add_vectors``) write thousands of speakers per transaction.

Without a kept index, search keeps all pooled vectors in one contiguous ``(N, D)`` float32
matrix, loaded once and reloaded only when the database changes, and hands it to
``speakerid.store.search``, which scores many queries with one matrix product (or with faiss
when it is importable).

At about 770 lines this module is past the style's ~600: what is left is one job, the
speakers' rows, whose writes (one speaker, or a batch of thousands), reads and matrix cache
share one connection and one model check; the file layer already lives in ``storedb``, the
ranking in ``search`` and the kept index in ``storeindex``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from platformdirs import user_data_path

from speakerid.decision.calibration import Calibration
from speakerid.errors import InvalidNameError, SpeakerIDError, StoreError, UnknownSpeakerError
from speakerid.pins import file_sha256
from speakerid.store.constants import NAME_MAX_CHARS, STORE_ENV, STORE_FILENAME
from speakerid.store.db import (
    EMBEDDING_OR_VECTOR,
    IMPORTED_EMBEDDING,
    INSERT_BATCH,
    StoreDB,
    _blob,
    _next_seq,
    _now,
    _unit_rows,
    name_key,
)
from speakerid.store.index import KeptIndex
from speakerid.store.search import Candidate, IndexInfo, exact_index, import_faiss, rank
from speakerid.vectors import l2_normalize, pool

CALIBRATION_KEY = "calibration"  # meta key of the store's calibration (JSON)
IMPORTED_SOURCE = "(imported)"  # recording path for vectors added through ``add_vectors``
BULK_SPEAKERS = 10_000  # speakers per transaction in ``add_many``

_NAME_CHARS = re.compile(r"[\w .\-]+")  # \w: Unicode letters, digits and underscore


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class SpeakerSummary:
    """An enrolled speaker as ``list`` shows them."""

    speaker: str
    recordings: int
    created: str  # UTC, ISO 8601
    updated: str  # UTC, ISO 8601
    speech_seconds: float | None = None  # total over recordings; None if any is unknown
    weakest_agreement: float | None = None  # lowest recording agreement; None with 1 recording


@dataclass(frozen=True)
class RecordingQuality:
    """What ``enroll`` measured of one new recording, and what is wrong with it."""

    path: str
    speech_seconds: float
    agreement: float | None  # cosine to the pool of the speaker's other recordings
    problems: list[str]  # empty when the recording looks fine


@dataclass(frozen=True)
class EnrollResult:
    """What one enrollment changed."""

    speaker: str
    added: int  # recordings new to this speaker
    updated: int  # recordings whose path was already enrolled: their embedding was replaced
    recordings: int  # the speaker's recordings after the change
    created: bool  # the speaker did not exist before
    replaced: bool  # the speaker's earlier recordings were dropped (``replace=True``)
    quality: list[RecordingQuality] = field(default_factory=list)  # filled by ``enroll``


@dataclass(frozen=True)
class StoreSummary:
    """What a store holds and which model made it."""

    path: str
    exists: bool
    schema_version: int
    model_fingerprint: str | None  # None while no model is bound (empty, new store)
    model_source: str | None  # where that model was loaded from, as recorded
    embedding_dim: int | None
    speakers: int
    recordings: int


# ---------------------------------------------------------------- helpers


def validate_name(name: str) -> str:
    """Check a speaker name and return it NFC-normalised.

    Rules: 1-64 characters; letters, digits, space, ``.``, ``_`` and ``-``; no leading or
    trailing space; not only dots. Names are keys in the database, never file paths; two
    names are one speaker when their ``name_key`` (NFKC, case folded) is the same.
    Raises ``InvalidNameError``.
    """
    name = unicodedata.normalize("NFC", name)
    shown = repr(name) if len(name) <= 80 else repr(name[:77] + "...")
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise InvalidNameError(f"speaker name {shown}: must be 1 to {NAME_MAX_CHARS} characters")
    if not _NAME_CHARS.fullmatch(name):
        raise InvalidNameError(f"speaker name {shown}: use only letters, digits, spaces and . _ -")
    if name != name.strip(" "):
        raise InvalidNameError(f"speaker name {shown}: must not start or end with a space")
    if set(name) == {"."}:
        raise InvalidNameError(f"speaker name {shown}: must not be only dots")
    return name


def refuse_collisions(named: Sequence[tuple[str, str]]) -> None:
    """Refuse one import whose speakers' names share a key: ``(name, source)`` pairs.

    Two folders "José" (NFC) and "Jose" + combining accent (NFD), or "Alice" and "alice",
    would otherwise be enrolled as one speaker, or one replace the other. Names that fail
    ``validate_name`` are left to the caller. Raises ``InvalidNameError`` naming both.
    """
    seen: dict[str, str] = {}
    for name, source in named:
        try:
            key = name_key(validate_name(name))
        except InvalidNameError:
            continue
        if key in seen:
            raise InvalidNameError(
                f"{seen[key]!r} and {source!r} name the same speaker (names are compared "
                "ignoring case and Unicode variants); rename one of them"
            )
        seen[key] = source


def recording_key(path: str | Path, hash_: bool = True) -> tuple[str, str | None]:
    """How the store names a recording: ``(resolved path, sha256 of its bytes)``.

    A path that is not a readable file (an imported vector, a test's placeholder) is kept
    as given, with no hash.
    """
    p = Path(path)
    try:
        if not p.is_file():
            return str(path), None
        resolved = str(p.resolve())
        return resolved, (file_sha256(p) if hash_ else None)
    except OSError:
        return str(path), None


def default_store_path() -> Path:
    """``$SPEAKERID_STORE`` if set, else ``<user data dir>/speakerid/store.sqlite``."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    return user_data_path("speakerid", appauthor=False) / STORE_FILENAME


# ---------------------------------------------------------------- the store


class SpeakerStore(StoreDB):
    """Enrolled speakers in one SQLite file.

    Opening never writes: a missing file reads as an empty store and is created (atomically)
    by the first write; an existing file must be a speakerid store of this schema, else
    ``StoreError`` and the file is left untouched. Usable as a context manager.

    Parameters
    ----------
    path: the store file (``default_store_path()`` when None).
    use_faiss: search with faiss (``IndexFlatIP``) when True, numpy when False, faiss if
        importable when None.
    """

    def __init__(self, path: str | Path | None = None, use_faiss: bool | None = None) -> None:
        # Speakers whose recordings this instance has committed, in order: what an
        # interrupted bulk enrollment kept.
        self.written_speakers: list[str] = []
        # faiss takes about 0.2 s to import: unless asked for, it is imported by the first
        # search, so that list, remove and info do not pay for it.
        self._faiss: Any = import_faiss() if use_faiss else (_LAZY if use_faiss is None else None)
        if use_faiss and self._faiss is None:
            raise StoreError("faiss was asked for but is not installed (pip install faiss-cpu)")
        self._cache: tuple[int, list[str], np.ndarray, Any] | None = None
        self._kept: KeptIndex | None = None  # the search index beside the file, if kept
        super().__init__(Path(path) if path is not None else default_store_path())
        self._kept = KeptIndex(self)

    def close(self) -> None:
        """Close the database connection (the store can be reopened by a new instance)."""
        super().close()
        self._kept = KeptIndex(self)

    def _invalidate(self) -> None:
        self._cache = None  # this process's own writes do not change ``data_version``
        if self._kept is not None:
            self._kept.forget()

    # -- calibration

    def calibration(self) -> Calibration | None:
        """The store's calibration (``speakerid calibrate``), None if never calibrated."""
        text = self.meta().get(CALIBRATION_KEY)
        if not text:
            return None
        try:
            return Calibration.from_json(text)
        except (ValueError, TypeError):
            raise StoreError(f"{self.path}: damaged store (unreadable calibration)") from None

    def set_calibration(self, calibration: Calibration | None) -> None:
        """Write (or with None, drop) the store's calibration, in one transaction."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (CALIBRATION_KEY,))
            if calibration is not None:
                conn.execute(
                    "INSERT INTO meta VALUES (?, ?)", (CALIBRATION_KEY, calibration.to_json())
                )

    # -- writes

    def add_recordings(
        self,
        name: str,
        paths: Sequence[str],
        embeddings: np.ndarray,
        *,
        fingerprint: str,
        source: str = "",
        vad: str = "",
        replace: bool = False,
        speech_seconds: Sequence[float | None] | None = None,
        hashes: Sequence[str | None] | None = None,
    ) -> EnrollResult:
        """Add (or with ``replace`` swap in) a speaker's recordings, in ONE transaction.

        Parameters
        ----------
        name: the speaker (validated, see ``validate_name``).
        paths: the recordings' files, one per embedding row.
        embeddings: ``(len(paths), D)`` float32 embeddings, computed beforehand.
        fingerprint, source: identity and location of the model that made them.
        vad: how their speech was found (``audio.VADS``; empty: the store's own).
        replace: drop the speaker's earlier recordings first.
        speech_seconds: each recording's seconds of speech, if measured.
        hashes: the files' sha256 (see ``recording_key``); computed here when None.

        A recording is its content: a file already enrolled for this speaker (the same
        bytes, from any path) has its embedding and path replaced, not duplicated, and
        another file of the same name is a new recording. Paths that are not files are
        keyed by the path as given. The pooled vector is recomputed from all recordings.
        """
        name = validate_name(name)
        if len(paths) == 0:
            raise StoreError(f"speaker {name!r}: no recordings to enroll")
        emb = np.asarray(embeddings)
        dim = emb.shape[-1] if emb.ndim else 0
        emb = _unit_rows(emb, dim, f"speaker {name!r}")
        if len(emb) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(emb)} embeddings")
        if hashes is None:
            keys = [recording_key(p) for p in paths]
        else:
            keys = [
                (recording_key(p, hash_=False)[0], h) for p, h in zip(paths, hashes, strict=True)
            ]
        seconds = list(speech_seconds) if speech_seconds is not None else [None] * len(paths)
        with self._transaction() as conn:
            self._bind(conn, fingerprint, dim, source, vad)
            seq = _next_seq(conn)
            result = self._write_speaker(conn, name, keys, emb, seconds, replace, seq, dim)
        self.written_speakers.append(name)
        self._kept.maybe_fold()
        return result

    def _write_speaker(
        self,
        conn: sqlite3.Connection,
        name: str,
        keys: Sequence[tuple[str, str | None]],
        emb: np.ndarray,
        seconds: Sequence[float | None],
        replace: bool,
        seq: int,
        dim: int,
    ) -> EnrollResult:
        """Inside a write transaction: ``add_recordings``'s work for one speaker."""
        now = _now()
        row = self._find(conn, name)
        created = row is None
        if created:
            cur = conn.execute(
                "INSERT INTO speakers (name, name_key, vector, n_recordings, created, updated) "
                "VALUES (?, ?, ?, 0, ?, ?)",
                (name, name_key(name), _blob(pool(emb)), now, now),
            )
            speaker_id = cur.lastrowid
        else:
            speaker_id, name = row  # the name as first enrolled
            if replace:
                conn.execute("DELETE FROM recordings WHERE speaker_id = ?", (speaker_id,))
            else:  # an imported recording stands for the vector about to change: spell it out
                conn.execute(
                    "UPDATE recordings SET embedding = (SELECT vector FROM speakers WHERE id = ?) "
                    "WHERE speaker_id = ? AND length(embedding) = 0",
                    (speaker_id, speaker_id),
                )
        # One row per recording: by content where known, else by path; last one wins.
        rows = {
            (h or p): (p, h, _blob(e), sec)
            for (p, h), e, sec in zip(keys, emb, seconds, strict=True)
        }
        updated = sum(
            self._put_recording(conn, speaker_id, path, sha, blob, sec, now)
            for path, sha, blob, sec in rows.values()
        )
        self._store_agreement(conn, speaker_id, dim)
        vector, count = self._pool_speaker(conn, speaker_id, dim)
        conn.execute(
            "UPDATE speakers SET vector = ?, n_recordings = ?, updated = ?, changed = ? "
            "WHERE id = ?",
            (_blob(vector), count, now, seq, speaker_id),
        )
        return EnrollResult(
            speaker=name,
            added=len(rows) - updated,
            updated=updated,
            recordings=count,
            created=created,
            replaced=replace and not created,
        )

    @staticmethod
    def _put_recording(
        conn: sqlite3.Connection,
        speaker_id: int,
        path: str,
        sha: str | None,
        blob: bytes,
        seconds: float | None,
        now: str,
    ) -> bool:
        """Insert one recording of a speaker, or update the row it replaces; True if updated.

        The row replaced holds the same bytes enrolled before; else it is a row that could
        not be hashed then (from an older schema, or a path that was no file) with this path.
        """
        found = None
        if sha is not None:
            found = conn.execute(
                "SELECT id FROM recordings WHERE speaker_id = ? AND sha256 = ?",
                (speaker_id, sha),
            ).fetchone()
        if found is None:
            found = conn.execute(
                "SELECT id FROM recordings WHERE speaker_id = ? AND path = ? AND sha256 IS NULL",
                (speaker_id, path),
            ).fetchone()
        if found is None:
            conn.execute(
                "INSERT INTO recordings (speaker_id, path, sha256, embedding, added, "
                "speech_seconds) VALUES (?, ?, ?, ?, ?, ?)",
                (speaker_id, path, sha, blob, now, seconds),
            )
            return False
        conn.execute(
            "UPDATE recordings SET path = ?, sha256 = ?, embedding = ?, added = ?, "
            "speech_seconds = ? WHERE id = ?",
            (path, sha, blob, now, seconds, found[0]),
        )
        return True

    def _pool_speaker(
        self, conn: sqlite3.Connection, speaker_id: int, dim: int
    ) -> tuple[np.ndarray, int]:
        """Pooled vector and count of a speaker's recordings, read inside the transaction."""
        blobs = [
            r[0]
            for r in conn.execute(
                f"SELECT {EMBEDDING_OR_VECTOR} FROM recordings r WHERE speaker_id = ?",
                (speaker_id,),
            )
        ]
        return pool(self._decode(blobs, dim)), len(blobs)

    def add_vectors(
        self,
        names: Sequence[str],
        vectors: np.ndarray,
        *,
        fingerprint: str,
        source: str = "",
        vad: str = "",
        validate: bool = True,
    ) -> int:
        """Bulk-add new speakers from precomputed vectors, in one transaction.

        Each speaker gets one recording whose path is ``IMPORTED_SOURCE`` and whose
        embedding is the speaker's vector (stored once, ``IMPORTED_EMBEDDING``), so that
        the pooled vector stays the pool of the recordings. Meant for imports and benchmarks.

        Parameters
        ----------
        names: new, distinct speaker names (an existing name raises ``StoreError``).
        vectors: ``(len(names), D)`` float32; normalised here.
        validate: check every name (turn off only for generated names).

        Returns
        -------
        int: the number of speakers added.
        """
        vecs = np.asarray(vectors, dtype=np.float32)
        dim = vecs.shape[-1] if vecs.ndim == 2 else 0
        vecs = _unit_rows(vecs, dim, "add_vectors")
        if len(vecs) != len(names):
            raise ValueError(f"{len(names)} names but {len(vecs)} vectors")
        checked = [validate_name(n) for n in names] if validate else [str(n) for n in names]
        keys = [name_key(n) for n in checked]
        if len(set(keys)) != len(keys):
            raise StoreError(f"{self.path}: add_vectors: two names share a key; nothing was added")
        with self._transaction() as conn:
            self._bind(conn, fingerprint, dim, source, vad)
            taken = self._taken(conn, keys)
            if taken:
                raise StoreError(
                    f"{self.path}: add_vectors: {taken!r} (or a name differing from it only "
                    "in case or Unicode variant) is already enrolled; nothing was added"
                )
            self._insert_new(
                conn,
                checked,
                np.ones(len(checked), np.int64),
                [(IMPORTED_SOURCE, None)] * len(checked),
                vecs,
                _next_seq(conn),
            )
        self._kept.maybe_fold()
        return len(checked)

    def add_many(
        self,
        speakers: Sequence[tuple[str, Sequence[str], np.ndarray]],
        *,
        fingerprint: str,
        source: str = "",
        vad: str = "",
        replace: bool = False,
        batch: int = BULK_SPEAKERS,
    ) -> list[EnrollResult]:
        """``add_recordings`` for many ``(name, paths, (n, D) embeddings)``, ``batch``
        speakers per transaction (a bulk import syncs the disk once per batch, not once per
        speaker). New speakers are written by whole batches, their pooled vectors and
        agreements computed at once; a speaker already enrolled (or named twice) goes
        through ``add_recordings``'s own path, in the same transaction. A failure keeps the
        batches committed before it (``written_speakers``)."""
        results: list[EnrollResult] = []
        for start in range(0, len(speakers), batch):
            part = []
            for name, paths, embeddings in speakers[start : start + batch]:
                name = validate_name(name)
                emb = np.asarray(embeddings, dtype=np.float32)
                if len(paths) == 0 or emb.ndim != 2 or len(emb) != len(paths):
                    raise StoreError(f"speaker {name!r}: expected one embedding per recording")
                part.append((name, [recording_key(p) for p in paths], emb))
            dim = part[0][2].shape[1]
            unit = _unit_rows(np.concatenate([e for _, _, e in part]), dim, "bulk enrollment")
            ends = np.cumsum([len(e) for _, _, e in part])
            with self._transaction() as conn:
                self._bind(conn, fingerprint, dim, source, vad)
                seq = _next_seq(conn)
                names = [n for n, _, _ in part]
                known = self._known_keys(conn, names)
                fast = []
                for i, (name, keys, _) in enumerate(part):
                    key = name_key(name)
                    if key not in known and len({h or p for p, h in keys}) == len(keys):
                        fast.append(i)
                    known.add(key)
                done: dict[int, EnrollResult] = {}
                if fast:
                    rows = np.concatenate(
                        [np.arange(ends[i] - len(part[i][2]), ends[i]) for i in fast]
                    )
                    made = self._insert_new(
                        conn,
                        [names[i] for i in fast],
                        np.array([len(part[i][2]) for i in fast]),
                        [k for i in fast for k in part[i][1]],
                        unit[rows],
                        seq,
                    )
                    done.update(zip(fast, made, strict=True))
                for i, (name, keys, _) in enumerate(part):
                    if i not in done:
                        emb = unit[ends[i] - len(keys) : ends[i]]
                        none = [None] * len(keys)
                        done[i] = self._write_speaker(
                            conn, name, keys, emb, none, replace, seq, dim
                        )
            results.extend(done[i] for i in range(len(part)))
            self.written_speakers.extend(names)
        self._kept.maybe_fold()
        return results

    def _known_keys(self, conn: sqlite3.Connection, names: Sequence[str]) -> set[str]:
        """The ``name_key``s of ``names`` that are enrolled (inside a write transaction)."""
        known: set[str] = set()
        keys = [name_key(n) for n in names]
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            known.update(
                r[0]
                for r in conn.execute(
                    f"SELECT name_key FROM speakers WHERE name_key IN ({marks})", part
                )
            )
        return known

    def _insert_new(
        self,
        conn: sqlite3.Connection,
        names: Sequence[str],
        counts: np.ndarray,
        keys: Sequence[tuple[str, str | None]],
        unit: np.ndarray,
        seq: int,
    ) -> list[EnrollResult]:
        """Inside a write transaction: new speakers ``names``, speaker ``j`` owning the
        next ``counts[j]`` rows of ``(M, D)`` unit embeddings ``unit`` and recording keys
        ``keys`` (``recording_key``). Pools and agreements are computed for all at once; a
        speaker's only recording keeps ``IMPORTED_EMBEDDING`` (its vector, stored once)."""
        now = _now()
        pooled, owner, agreement = _pools_and_agreement(unit, counts)
        first = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM speakers").fetchone()[0]
        single = counts[owner] == 1

        def speaker_row(j: int) -> tuple[Any, ...]:
            vector, n = pooled[j].tobytes(), int(counts[j])
            return (first + j, names[j], name_key(names[j]), vector, n, now, now, seq)

        def recording_row(r: int) -> tuple[Any, ...]:
            blob = IMPORTED_EMBEDDING if single[r] else unit[r].tobytes()
            score = None if np.isnan(agreement[r]) else float(agreement[r])
            return (first + int(owner[r]), keys[r][0], keys[r][1], blob, now, score)

        try:
            _insert_batched(
                conn,
                "INSERT INTO speakers (id, name, name_key, vector, n_recordings, created, "
                "updated, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                len(names),
                speaker_row,
            )
        except sqlite3.IntegrityError:
            raise StoreError(
                f"{self.path}: a name to add is already enrolled or repeated; nothing was added"
            ) from None
        _insert_batched(
            conn,
            "INSERT INTO recordings (speaker_id, path, sha256, embedding, added, agreement) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            len(unit),
            recording_row,
        )
        return [
            EnrollResult(name, int(c), 0, int(c), created=True, replaced=False)
            for name, c in zip(names, counts, strict=True)
        ]

    def remove(self, name: str) -> int:
        """Delete a speaker and their recordings; returns how many recordings went.

        Raises ``UnknownSpeakerError`` if the speaker is not enrolled.
        """
        name = validate_name(name)
        with self._transaction() as conn:
            row = self._find(conn, name)
            if row is None:
                raise self._unknown(name)
            count = conn.execute(
                "SELECT n_recordings FROM speakers WHERE id = ?", (row[0],)
            ).fetchone()[0]
            conn.execute("DELETE FROM recordings WHERE speaker_id = ?", (row[0],))
            conn.execute("DELETE FROM speakers WHERE id = ?", (row[0],))
            conn.execute("INSERT INTO removed VALUES (?, ?)", (row[0], _next_seq(conn)))
        self._kept.maybe_fold()
        return int(count)

    # -- reads

    def _find(self, conn: sqlite3.Connection, name: str) -> tuple[int, str] | None:
        """``(id, name as enrolled)`` of the speaker whose name has ``name``'s key, or None.

        A store from before schema 4 that was only read so far has no keys: its names are
        compared in Python. Two old names sharing a key ("Alice", "alice") are told apart
        by the exact name; otherwise the lookup is refused (remove one of them).
        """
        key = name_key(name)
        if self._version(conn) >= 4:
            rows = conn.execute(
                "SELECT id, name FROM speakers WHERE name_key = ?", (key,)
            ).fetchall()
        else:
            rows = [
                r for r in conn.execute("SELECT id, name FROM speakers") if name_key(r[1]) == key
            ]
        if len(rows) > 1:
            exact = [r for r in rows if r[1] == name]
            if len(exact) != 1:
                both = " and ".join(repr(r[1]) for r in rows)
                raise StoreError(
                    f"{self.path}: {name!r} could be {both}, enrolled before names were "
                    "compared ignoring case; name one exactly, or remove one (speakerid remove)"
                )
            rows = exact
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def _taken(self, conn: sqlite3.Connection, keys: Sequence[str]) -> str:
        """Inside a write (schema 4): the first enrolled name with one of these keys, or ''."""
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = list(keys[start : start + 500])
            marks = ",".join("?" * len(part))
            row = conn.execute(
                f"SELECT name FROM speakers WHERE name_key IN ({marks}) LIMIT 1", part
            ).fetchone()
            if row is not None:
                return str(row[0])
        return ""

    def _unknown(self, name: str) -> UnknownSpeakerError:
        return UnknownSpeakerError(
            f"speaker {name!r} is not enrolled in {self.path} (see `speakerid list`)"
        )

    def __len__(self) -> int:
        with self._db_errors():
            return int(self._reader().execute("SELECT COUNT(*) FROM speakers").fetchone()[0])

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            name = validate_name(name)
        except InvalidNameError:
            return False
        with self._db_errors():
            return self._find(self._reader(), name) is not None

    def speakers(self) -> list[SpeakerSummary]:
        """All enrolled speakers, sorted by name, with their recordings' quality."""
        with self._db_errors():
            conn = self._reader()
            if self._version(conn) < 2:  # not migrated yet: no quality columns
                rows = conn.execute(
                    "SELECT name, n_recordings, created, updated FROM speakers ORDER BY name"
                ).fetchall()
                return [SpeakerSummary(*row) for row in rows]
            # SUM is NULL-tolerant, so unknown seconds are counted to report them as unknown.
            rows = conn.execute(
                "SELECT s.name, s.n_recordings, s.created, s.updated, SUM(r.speech_seconds), "
                "COUNT(r.speech_seconds), COUNT(r.id), MIN(r.agreement) FROM speakers s "
                "LEFT JOIN recordings r ON r.speaker_id = s.id GROUP BY s.id ORDER BY s.name"
            ).fetchall()
        return [
            SpeakerSummary(name, n, created, updated, total if known == count else None, weakest)
            for name, n, created, updated, total, known, count, weakest in rows
        ]

    def enrollment(self, name: str) -> tuple[int, float | None]:
        """What stands behind a speaker's voice: (recordings, seconds of speech or None).

        Seconds are None when any recording's speech was not measured (imported vectors).
        """
        with self._db_errors():
            conn = self._reader()
            found = self._find(conn, name)
            if found is None:
                raise self._unknown(name)
            if self._version(conn) < 2:  # not migrated yet: no speech column
                count = conn.execute(
                    "SELECT n_recordings FROM speakers WHERE id = ?", (found[0],)
                ).fetchone()[0]
                return int(count), None
            row = conn.execute(
                "SELECT COUNT(id), SUM(speech_seconds), COUNT(speech_seconds) FROM recordings "
                "WHERE speaker_id = ?",
                (found[0],),
            ).fetchone()
        if row is None or not row[0]:
            raise self._unknown(name)
        count, seconds, known = row
        return int(count), (float(seconds) if known == count else None)

    def recording_vectors(self, name: str) -> tuple[list[str], np.ndarray]:
        """A speaker's recordings: paths and ``(n, D)`` embeddings, in enrollment order."""
        with self._db_errors():
            conn = self._reader()
            row = self._find(conn, name)
            if row is None:
                raise self._unknown(name)
            rows = conn.execute(
                f"SELECT path, {EMBEDDING_OR_VECTOR} FROM recordings r WHERE speaker_id = ? "
                "ORDER BY id",
                (row[0],),
            ).fetchall()
        return [r[0] for r in rows], self._decode([r[1] for r in rows], self.embedding_dim)

    def recordings(self, name: str) -> list[str]:
        """The paths enrolled for one speaker, as given when enrolling."""
        name = validate_name(name)
        with self._db_errors():
            conn = self._reader()
            row = self._find(conn, name)
            if row is None:
                raise self._unknown(name)
            return [
                r[0]
                for r in conn.execute(
                    "SELECT path FROM recordings WHERE speaker_id = ? ORDER BY id", (row[0],)
                )
            ]

    def vector(self, name: str) -> np.ndarray:
        """A speaker's pooled ``(D,)`` unit vector; ``UnknownSpeakerError`` if absent."""
        name = validate_name(name)
        with self._db_errors():
            conn = self._reader()
            found = self._find(conn, name)
            if found is None:
                raise self._unknown(name)
            row = conn.execute("SELECT vector FROM speakers WHERE id = ?", (found[0],)).fetchone()
        if row is None:  # removed by another process in between
            raise self._unknown(name)
        return self._decode([row[0]], self.embedding_dim)[0]

    @property
    def embedding_dim(self) -> int:
        """Size of the stored vectors (0 while no model is bound)."""
        return int(self.meta().get("embedding_dim", "0"))

    def summary(self) -> StoreSummary:
        """Counts and model identity, for ``info``."""
        meta = self.meta()
        with self._db_errors():
            conn = self._reader()
            n_speakers = conn.execute("SELECT COUNT(*) FROM speakers").fetchone()[0]
            n_recordings = conn.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
        dim = int(meta.get("embedding_dim", "0"))
        return StoreSummary(
            path=str(self.path),
            exists=self.exists,
            schema_version=int(meta["schema_version"]),
            model_fingerprint=meta.get("model_fingerprint") or None,
            model_source=meta.get("model_source") or None,
            embedding_dim=dim or None,
            speakers=int(n_speakers),
            recordings=int(n_recordings),
        )

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """All pooled vectors as ``(names, (N, D) float32 C-contiguous matrix)``.

        Loaded once and cached; reloaded only after this or another process changed the
        database (SQLite's ``data_version``).
        """
        names, mat, _ = self._search_state()
        return names, mat

    def _search_state(self) -> tuple[list[str], np.ndarray, Any]:
        with self._db_errors():
            conn = self._reader()
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if self._cache is not None and self._cache[0] == version:
                return self._cache[1], self._cache[2], self._cache[3]
            dim = int(
                conn.execute("SELECT value FROM meta WHERE key = 'embedding_dim'").fetchone()[0]
            )
            rows = conn.execute("SELECT name, vector FROM speakers ORDER BY id").fetchall()
        names = [r[0] for r in rows]
        if rows:
            mat = self._decode([r[1] for r in rows], dim)
        else:
            mat = np.zeros((0, max(dim, 1)), np.float32)
        del rows
        index = None
        if self._faiss is _LAZY:
            self._faiss = import_faiss()
        if self._faiss is not None and len(names):
            index = exact_index(self._faiss, mat)
        self._cache = (version, names, mat, index)
        return names, mat, index

    def search(self, queries: np.ndarray, top_k: int = 5) -> list[list[Candidate]]:
        """Rank enrolled speakers by cosine score for each query (``speakerid.store.search.rank``).

        The store hands the ranking its cached matrix, or the search index it keeps beside
        the file (rebuilt first if the vectors changed since).

        Parameters
        ----------
        queries: ``(Q, D)`` or ``(D,)`` unit vectors.
        top_k: candidates per query (fewer when fewer speakers are enrolled).

        Returns
        -------
        list of Q lists of ``Candidate``, best first.
        """
        if top_k < 1:
            raise SpeakerIDError(f"top must be at least 1, not {top_k}")
        kept = self._kept.search(queries, top_k)
        if kept is not None:
            return kept
        names, mat, index = self._search_state()
        return rank(names, mat, queries, top_k, index, where=str(self.path))

    # -- the search index kept beside the file (speakerid/store/search.py, speakerid/store/index.py)

    def build_index(self, kind: str = "auto", rebuild: bool = False) -> IndexInfo:
        """Keep a search index beside the store (see ``speakerid.store.search``).

        ``rebuild``: train it afresh from every vector; else fold the store's changes into
        the kept one (``KeptIndex.refresh``; built when none is kept or ``kind`` differs).
        Once kept, writes leave it as it is and searches catch up with the store.
        """
        if not self.exists:
            raise StoreError(f"{self.path}: no store yet; enroll speakers first")
        if self._version(self._reader()) < 4:
            with self._transaction():  # an older schema: migrated by this (empty) write
                pass
        self._kept.refresh(rebuild=rebuild, kind=kind)
        info = self._kept.info()
        assert info is not None
        return info

    def drop_index(self) -> bool:
        """Stop keeping a search index (delete its files); True if there was one."""
        return self._kept.drop()

    def index_info(self) -> IndexInfo | None:
        """The kept search index, None when the store keeps none."""
        return self._kept.info()


_LAZY = object()  # SpeakerStore._faiss before the first search decides it


def _pools_and_agreement(
    unit: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pools of new speakers owning consecutive rows of ``(M, D)`` unit embeddings.

    Returns the ``(S, D)`` pooled unit vectors, each row's owner index ``(M,)``, and each
    row's agreement ``(M,)``: its cosine to the pool of the speaker's other recordings (NaN
    for a speaker's only recording).
    """
    if (counts == 1).all():  # one recording each (imports): the pool is the vector
        sums = unit
    else:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        sums = np.add.reduceat(unit.astype(np.float64), starts, axis=0)
    pooled = l2_normalize(sums / counts[:, None])
    owner = np.repeat(np.arange(len(counts)), counts)
    agreement = np.full(len(unit), np.nan)
    multi = counts[owner] >= 2
    if multi.any():
        others = (sums[owner] - unit)[multi] / (counts[owner][multi] - 1)[:, None]
        others /= np.maximum(np.linalg.norm(others, axis=1, keepdims=True), 1e-12)
        agreement[multi] = np.sum(unit[multi].astype(np.float64) * others, axis=1)
    return pooled, owner, agreement


def _insert_batched(
    conn: sqlite3.Connection, sql: str, n: int, row: Callable[[int], tuple[Any, ...]]
) -> None:
    """``executemany`` of rows ``row(0) .. row(n - 1)``, ``INSERT_BATCH`` at a time, so that
    only one batch of rows (and their blobs) is held at once."""
    for lo in range(0, n, INSERT_BATCH):
        conn.executemany(sql, [row(i) for i in range(lo, min(lo + INSERT_BATCH, n))])
