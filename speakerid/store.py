"""The enrollment store: enrolled speakers, their recordings' embeddings, and 1:N search.

One SQLite file (stdlib ``sqlite3``, WAL mode) holds three tables:

- ``meta``: format name, schema version, the fingerprint (sha256) and embedding size of the
  model that made every vector in the store, and where that model was loaded from;
- ``speakers``: name, pooled vector (float32 little-endian blob of ``embedding_dim``),
  number of recordings, created/updated times (UTC, ISO 8601);
- ``recordings``: speaker, the file's resolved path and sha256 (its identity: the same file
  enrolled from anywhere is one recording, another file of the same name is another), its
  embedding, its seconds
  of speech (after trimming silence) and its agreement (cosine to the pool of the speaker's
  other recordings), both NULL where unknown (imported vectors, stores from schema 1).

The meta table also holds the store's calibration (``speakerid calibrate``) as JSON under
``calibration``: thresholds for this store's domain and where they came from.

A speaker's vector is always the pool (normalised mean) of their recordings' embeddings and
is rewritten in the same transaction as the recordings, so a crash never leaves the two out
of step. Embeddings are computed *before* a write transaction opens (``BEGIN IMMEDIATE``),
which keeps the write lock short and lets several processes enroll at once.

Search keeps all pooled vectors in one contiguous ``(N, D)`` float32 matrix, loaded once and
reloaded only when the database changes; many queries are scored with one matrix product
(or with faiss when it is importable). The functions at the bottom (``enroll``, ``verify``,
``identify``, ...) are what the CLI calls: each takes arrays or paths and returns a result
dataclass, raising only ``SpeakerIDError`` subclasses.
"""

from __future__ import annotations

import fcntl
import glob
import importlib
import json
import os
import re
import secrets
import sqlite3
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from platformdirs import user_data_path

from speakerid.audio import (
    FRAGMENT_SECONDS,
    SAMPLE_RATE,
    Clip,
    is_long,
    load_audio,
    trim_silence,
)
from speakerid.calibration import (
    ASNORM_TOP_K,
    Calibration,
    agreements,
    as_norm_scores,
    expected_fpir,
)
from speakerid.embed import BaseEmbedder
from speakerid.errors import (
    AudioError,
    CheckpointError,
    DataError,
    EnrollmentQualityError,
    InvalidNameError,
    SpeakerIDError,
    StoreError,
    UnknownSpeakerError,
)
from speakerid.modelinfo import check_threshold, file_sha256
from speakerid.registry import DEFAULT_MODEL, resolve_model, shipped_name
from speakerid.search import IndexInfo, VectorIndex, pointer_path, remove_index, requested_kind
from speakerid.search import top_k as _top_k
from speakerid.vectors import l2_normalize, pool

STORE_FORMAT = "speakerid-store"  # meta 'format': what kind of file this is
SCHEMA_VERSION = 3  # meta 'schema_version': bump on any change to the tables below
MIGRATES_FROM = 1  # oldest schema this speakerid reads, and upgrades at its first write
CALIBRATION_KEY = "calibration"  # meta key of the store's calibration (JSON)
# Less speech than this is warned about: over half of its one fragment is repeated audio.
GOOD_SPEECH_SECONDS = FRAGMENT_SECONDS / 2  # 1.5
STORE_ENV = "SPEAKERID_STORE"  # environment variable naming the store file
STORE_FILENAME = "store.sqlite"  # inside the platform's user data directory
DEFAULT_THRESHOLD = 0.5  # cosine; used only when the model carries no calibrated threshold
BUSY_TIMEOUT_SECONDS = 30.0  # how long a writer waits for another process's write lock
NAME_MAX_CHARS = 64
IMPORTED_SOURCE = "(imported)"  # recording path for vectors added through ``add_vectors``
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3"})
SEARCH_CHUNK = 256  # queries per matrix product: bounds the (queries, speakers) score block
INSERT_BATCH = 10_000  # rows per executemany in bulk inserts
GENERATION_KEY = "vectors_generation"  # meta: random token renewed by each vector change

_VECTOR_DTYPE = np.dtype("<f4")
_NAME_CHARS = re.compile(r"[\w .\-]+")  # \w: Unicode letters, digits and underscore

# The recordings table's columns: the schema and the 2 -> 3 migration build it from this.
_RECORDINGS_COLUMNS = """
    id         INTEGER PRIMARY KEY,
    speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    embedding  BLOB NOT NULL,
    added      TEXT NOT NULL,
    speech_seconds REAL,
    agreement  REAL,
    sha256     TEXT,
    UNIQUE (speaker_id, sha256)
"""
_RECORDINGS_INDEX = "CREATE INDEX recordings_by_path ON recordings (speaker_id, path)"
_SCHEMA = f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE speakers (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    vector       BLOB NOT NULL,
    n_recordings INTEGER NOT NULL,
    created      TEXT NOT NULL,
    updated      TEXT NOT NULL
);
CREATE TABLE recordings ({_RECORDINGS_COLUMNS});
{_RECORDINGS_INDEX};
"""
# Schema 2 keyed recordings by the path as typed, so `take.wav` enrolled from two folders was
# one recording. Schema 3 keys them by content (sha256; NULL for rows it cannot hash: older
# rows and paths that are not files) and stores the resolved path. SQLite cannot change a
# table's constraints in place, so the table is rebuilt.
_MIGRATE_2_TO_3 = [
    f"CREATE TABLE recordings_v3 ({_RECORDINGS_COLUMNS})",
    "INSERT INTO recordings_v3 (id, speaker_id, path, embedding, added, speech_seconds, "
    "agreement, sha256) SELECT id, speaker_id, path, embedding, added, speech_seconds, "
    "agreement, NULL FROM recordings",
    "DROP TABLE recordings",
    "ALTER TABLE recordings_v3 RENAME TO recordings",
    _RECORDINGS_INDEX,
]
_TABLES = frozenset({"meta", "speakers", "recordings"})


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Candidate:
    """One enrolled speaker and the cosine score of a query against their vector."""

    speaker: str
    score: float


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
    """A 1:1 decision: ``accepted`` is ``score >= threshold``."""

    speaker: str
    file: str
    score: float  # raw cosine in [-1, 1]
    threshold: float
    accepted: bool
    threshold_source: str = "model"  # see ``resolve_threshold``
    normalized_score: float | None = None  # AS-norm score the decision used, if calibrated so


@dataclass(frozen=True)
class Identification:
    """A 1:N answer for one file: ranked candidates, ``best`` None when below threshold."""

    file: str
    candidates: list[Candidate]
    best: str | None
    threshold: float
    threshold_source: str = "model"  # see ``resolve_threshold``
    normalized_score: float | None = None  # AS-norm score of the top candidate, if in use


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


# ---------------------------------------------------------------- helpers


def validate_name(name: str) -> str:
    """Check a speaker name and return it NFC-normalised.

    Rules: 1-64 characters; letters, digits, space, ``.``, ``_`` and ``-``; no leading or
    trailing space; not only dots. Names are keys in the database, never file paths.
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


def resolve_threshold(
    model_threshold: float | None, override: float | None, calibrated: float | None = None
) -> tuple[float, str]:
    """The decision threshold and where it came from, in this order of precedence.

    Returns ``(threshold, source)``, source one of ``"--threshold"``, ``"store"`` (the
    store's ``calibrate``d value), ``"model"`` (the checkpoint's calibrated value) or
    ``"default"`` (``DEFAULT_THRESHOLD``, uncalibrated).
    """
    try:
        if override is not None:
            return check_threshold(override, "--threshold"), "--threshold"
        if calibrated is not None:
            # A store's calibration may be on AS-normalised scores, which are not cosines
            # and not bounded; it must still be a number.
            if not np.isfinite(calibrated):
                raise ValueError(f"the store's calibrated threshold is {calibrated}")
            return float(calibrated), "store"
        if model_threshold is not None:
            return check_threshold(model_threshold, "the model's threshold"), "model"
    except ValueError as exc:
        raise SpeakerIDError(str(exc)) from None
    return DEFAULT_THRESHOLD, "default"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _unit_rows(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """Check ``(n, dim)`` finite vectors and return them L2-normalised, float32 contiguous."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise StoreError(f"{what}: expected vectors of size {dim}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise StoreError(f"{what}: the model produced NaN or infinite values")
    return np.ascontiguousarray(l2_normalize(arr), dtype=np.float32)


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=_VECTOR_DTYPE).tobytes()


_LAZY = object()  # SpeakerStore._faiss before the first search decides it


def _import_faiss() -> Any | None:
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


def _clean_leftovers(store: Path) -> None:
    """Delete what a creator killed mid-way left: ``.NAME.*.new`` and its -wal / -shm.

    A creator holds an flock on its ``.new`` file while it builds it, so a file that can
    be locked here belongs to a dead process. Errors are ignored: a leftover that cannot
    be deleted harms nothing but the folder's tidiness.
    """
    try:
        candidates = sorted(store.parent.glob(f".{glob.escape(store.name)}.*.new"))
        orphans = {
            Path(str(p)[: -len(side)])
            for side in ("-wal", "-shm")
            for p in store.parent.glob(f".{glob.escape(store.name)}.*.new{side}")
        }
    except OSError:
        return
    for main in sorted(set(candidates) | orphans):
        try:
            fd = os.open(main, os.O_RDONLY)
        except FileNotFoundError:
            fd = None  # only side files are left
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live creator
            for path in (main, Path(f"{main}-wal"), Path(f"{main}-shm")):
                path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            if fd is not None:
                os.close(fd)


# ---------------------------------------------------------------- the store


class SpeakerStore:
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
        self.path = Path(path) if path is not None else default_store_path()
        self._conn: sqlite3.Connection | None = None
        self._empty: sqlite3.Connection | None = None
        self._read_only = False  # the file exists and this user may not write it
        # Speakers whose recordings this instance has committed, in order: what an
        # interrupted bulk enrollment kept.
        self.written_speakers: list[str] = []
        # faiss takes about 0.2 s to import: unless asked for, it is imported by the first
        # search, so that list, remove and info do not pay for it.
        self._faiss: Any = _import_faiss() if use_faiss else (_LAZY if use_faiss is None else None)
        if use_faiss and self._faiss is None:
            raise StoreError("faiss was asked for but is not installed (pip install faiss-cpu)")
        self._cache: tuple[int, list[str], np.ndarray, Any] | None = None
        self._index: VectorIndex | None = None  # the search index beside the file, if kept
        if self.path.exists():
            self._open()

    # -- connections

    def __enter__(self) -> SpeakerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection (the store can be reopened by a new instance)."""
        for conn in (self._conn, self._empty):
            if conn is not None:
                conn.close()
        self._conn = self._empty = None
        self._cache = None
        self._index = None

    @property
    def exists(self) -> bool:
        """Whether the store file exists (a new store is created by its first write)."""
        return self._conn is not None or self.path.exists()

    def _open(self) -> None:
        """Connect to an existing file after checking, read-only, that it is a store."""
        path = self.path
        if path.is_dir():
            raise StoreError(f"{path}: is a directory, not a speakerid store")
        # The file is never opened with Python's open(): closing any descriptor of a file
        # drops every POSIX lock this process holds on it, including the locks of SQLite
        # connections (another store on the same file), and then another process may
        # checkpoint the write-ahead log away under them. SQLite reads the header itself.
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise StoreError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        if size == 0:
            raise self._not_a_store("is empty")
        _clean_leftovers(path)
        self._read_only = not os.access(path, os.W_OK)
        query = "mode=rw"
        if self._read_only:
            # A read-only connection still creates the -wal/-shm side files, with the
            # store's own read-only mode, and they keep the store read-only after a
            # `chmod u+w`. With no log beside it the file holds every committed write, so
            # it is read as immutable: no side files, no locks. (A log, if there is one,
            # belongs to a writer that may write, and it is read through as usual.)
            query = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?{query}",
                uri=True,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot be opened as a store ({exc})") from None
        try:
            try:
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.DatabaseError as exc:
                if "not a database" in str(exc):
                    raise self._not_a_store("is not an SQLite database") from None
            with self._db_errors():
                tables = {
                    row[0]
                    for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
                if not tables >= _TABLES:
                    raise StoreError(
                        f"{path}: an SQLite database but not a speakerid store (no "
                        f"{', '.join(sorted(_TABLES - tables))} table); it was left as it is"
                    )
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            self._check_meta(meta)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._cache = None

    def _not_a_store(self, what: str) -> StoreError:
        return StoreError(
            f"{self.path}: {what}, so not a speakerid store; it was left as it is "
            "(pass --store to use another file)"
        )

    def _check_meta(self, meta: dict[str, str]) -> None:
        if meta.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.path}: not a speakerid store (format {meta.get('format')!r})")
        try:
            version = int(meta.get("schema_version", ""))
            int(meta.get("embedding_dim", ""))
        except ValueError:
            raise StoreError(f"{self.path}: damaged store (bad meta table)") from None
        if not MIGRATES_FROM <= version <= SCHEMA_VERSION:
            newer = " by a newer speakerid" if version > SCHEMA_VERSION else ""
            raise StoreError(
                f"{self.path}: store schema version {version} was written{newer}; this "
                f"speakerid reads version {SCHEMA_VERSION}"
            )

    @contextmanager
    def _db_errors(self) -> Iterator[None]:
        """Turn sqlite3 failures into one-line ``StoreError``s."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise StoreError(
                    f"{self.path}: the store is busy (another process held it for more "
                    f"than {BUSY_TIMEOUT_SECONDS:.0f} s); try again"
                ) from None
            if "readonly" in text or "read-only" in text:
                raise StoreError(f"{self.path}: the store is read-only") from None
            raise StoreError(f"{self.path}: store error ({text})") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: damaged store ({exc})") from None

    def _reader(self) -> sqlite3.Connection:
        """A connection to read from: the file, or an empty in-memory store if none yet."""
        if self._conn is None and self.path.exists():
            self._open()
        if self._conn is not None:
            return self._conn
        if self._empty is None:
            self._empty = sqlite3.connect(":memory:", isolation_level=None)
            self._empty.executescript(_SCHEMA)
            self._empty.executemany("INSERT INTO meta VALUES (?, ?)", self._initial_meta())
        return self._empty

    def _writer(self) -> sqlite3.Connection:
        """The file's connection, creating the store file first if needed.

        A store this user may not write is refused here, before SQLite touches it, so that
        no side file is made that a later writer could not write either.
        """
        if self._conn is None and not self.path.exists():
            self._create()
        if self._conn is None:
            self._open()
        assert self._conn is not None
        if self._read_only:
            raise StoreError(
                f"{self.path}: the store is read-only (this user may not write it); "
                "nothing was changed"
            )
        folder = self.path.parent
        if not os.access(folder, os.W_OK) and not Path(f"{self.path}-wal").exists():
            raise StoreError(
                f"{self.path}: the store's folder {folder} is read-only, and SQLite writes "
                "its log beside the store; nothing was changed"
            )
        return self._conn

    @staticmethod
    def _initial_meta() -> list[tuple[str, str]]:
        return [
            ("format", STORE_FORMAT),
            ("schema_version", str(SCHEMA_VERSION)),
            ("model_fingerprint", ""),
            ("model_source", ""),
            ("embedding_dim", "0"),
            ("created", _now()),
        ]

    def _create(self) -> None:
        """Build the store in a temporary file and hard-link it into place.

        The link fails if another process created the store meanwhile; theirs is then used.
        Either way no process ever sees a half-initialised store.
        """
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _clean_leftovers(self.path)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".new", dir=parent)
        except OSError as exc:
            reason = exc.strerror or exc
            raise StoreError(f"{self.path}: cannot create the store ({reason})") from None
        # Held while the file is built: ``_clean_leftovers`` takes only unlocked ones, i.e.
        # those of a creator that died. (flock, unlike POSIX locks, is not dropped when
        # SQLite closes its own descriptor of the file.)
        fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = Path(tmp_name)
        try:
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
                conn.executescript(_SCHEMA)
                conn.executemany("INSERT INTO meta VALUES (?, ?)", self._initial_meta())
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot create the store ({exc})") from None
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
            os.close(fd)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database's write lock (``BEGIN IMMEDIATE``)."""
        conn = self._writer()
        with self._db_errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._migrate(conn)
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._cache = None

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: bring an older store up to this version.

        Opening never writes, so an old store is read as it is and upgraded by its first
        write. Schema 2 adds each recording's speech seconds (unknown for old recordings:
        the files may be gone) and agreement (recomputed from the stored embeddings);
        schema 3 keys recordings by content (``_MIGRATE_2_TO_3``).
        """
        version = self._version(conn)
        if version >= SCHEMA_VERSION:
            return
        if version < 2:
            conn.execute("ALTER TABLE recordings ADD COLUMN speech_seconds REAL")
            conn.execute("ALTER TABLE recordings ADD COLUMN agreement REAL")
            dim = int(
                conn.execute("SELECT value FROM meta WHERE key = 'embedding_dim'").fetchone()[0]
            )
            for (speaker_id,) in conn.execute("SELECT id FROM speakers").fetchall():
                self._store_agreement(conn, speaker_id, dim)
        for statement in _MIGRATE_2_TO_3:
            conn.execute(statement)
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )

    def _store_agreement(self, conn: sqlite3.Connection, speaker_id: int, dim: int) -> None:
        """Recompute the agreement of each of a speaker's recordings (others changed)."""
        rows = conn.execute(
            "SELECT id, embedding FROM recordings WHERE speaker_id = ? ORDER BY id", (speaker_id,)
        ).fetchall()
        if not rows:
            return
        values = agreements(self._decode([r[1] for r in rows], dim))
        conn.executemany(
            "UPDATE recordings SET agreement = ? WHERE id = ?",
            [(None if np.isnan(v) else float(v), r[0]) for v, r in zip(values, rows, strict=True)],
        )

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

    # -- model identity

    def meta(self) -> dict[str, str]:
        """The meta table as a dict (format, schema version, model fingerprint, ...)."""
        with self._db_errors():
            return dict(self._reader().execute("SELECT key, value FROM meta").fetchall())

    def _model_error(self, meta: Mapping[str, str], fingerprint: str, source: str) -> StoreError:
        bound = meta.get("model_fingerprint", "")
        made_by = f"model {bound[:12]}"
        if meta.get("model_source"):
            made_by += f" ({meta['model_source']})"
        using = f"model {fingerprint[:12]}" + (f" ({source})" if source else "")
        shipped = shipped_name(bound)
        use_it = f"pass --model {shipped} to keep using this store, or " if shipped else ""
        return StoreError(
            f"{self.path} holds embeddings made by {made_by}, but the model in use is {using}; "
            f"embeddings of different models cannot be compared: {use_it}re-enroll with "
            "this model into a new store (--store NEW.sqlite; enroll-dir re-enrolls a folder), "
            "or remove the enrolled speakers here and enroll them again"
        )

    def _model_ok(self, conn: sqlite3.Connection, fingerprint: str, dim: int, source: str) -> bool:
        """Raise if a *non-empty* store was made by another model; True if already bound."""
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        bound = meta.get("model_fingerprint", "")
        if bound == fingerprint and int(meta.get("embedding_dim", "0")) == dim:
            return True
        if conn.execute("SELECT EXISTS (SELECT 1 FROM speakers)").fetchone()[0]:
            raise self._model_error(meta, fingerprint, source)
        return False

    def check_model(self, fingerprint: str, dim: int, source: str = "") -> None:
        """Refuse (``StoreError``) a model other than the one that made the stored vectors.

        An empty store accepts any model; its first write binds it.
        """
        with self._db_errors():
            self._model_ok(self._reader(), fingerprint, dim, source)

    def _bind(self, conn: sqlite3.Connection, fingerprint: str, dim: int, source: str) -> None:
        """Inside a write transaction: check the model again and record it if unbound."""
        if not self._model_ok(conn, fingerprint, dim, source):
            conn.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [
                    (fingerprint, "model_fingerprint"),
                    (source, "model_source"),
                    (str(dim), "embedding_dim"),
                ],
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
        now = _now()
        with self._transaction() as conn:
            self._bind(conn, fingerprint, dim, source)
            row = conn.execute("SELECT id FROM speakers WHERE name = ?", (name,)).fetchone()
            created = row is None
            if created:
                cur = conn.execute(
                    "INSERT INTO speakers (name, vector, n_recordings, created, updated) "
                    "VALUES (?, ?, 0, ?, ?)",
                    (name, _blob(pool(emb)), now, now),
                )
                speaker_id = cur.lastrowid
            else:
                speaker_id = row[0]
                if replace:
                    conn.execute("DELETE FROM recordings WHERE speaker_id = ?", (speaker_id,))
            seconds = list(speech_seconds) if speech_seconds is not None else [None] * len(paths)
            # One row per recording: by content where known, else by path; last one wins.
            rows = {
                (h or p): (p, h, _blob(e), sec)
                for (p, h), e, sec in zip(keys, emb, seconds, strict=True)
            }
            updated = 0
            for path, sha, blob, sec in rows.values():
                # The same bytes enrolled before; else a row that could not be hashed then
                # (from an older schema, or a path that was no file) with this very path.
                found = None
                if sha is not None:
                    found = conn.execute(
                        "SELECT id FROM recordings WHERE speaker_id = ? AND sha256 = ?",
                        (speaker_id, sha),
                    ).fetchone()
                if found is None:
                    found = conn.execute(
                        "SELECT id FROM recordings WHERE speaker_id = ? AND path = ? "
                        "AND sha256 IS NULL",
                        (speaker_id, path),
                    ).fetchone()
                if found is None:
                    conn.execute(
                        "INSERT INTO recordings (speaker_id, path, sha256, embedding, added, "
                        "speech_seconds) VALUES (?, ?, ?, ?, ?, ?)",
                        (speaker_id, path, sha, blob, now, sec),
                    )
                else:
                    updated += 1
                    conn.execute(
                        "UPDATE recordings SET path = ?, sha256 = ?, embedding = ?, added = ?, "
                        "speech_seconds = ? WHERE id = ?",
                        (path, sha, blob, now, sec, found[0]),
                    )
            self._store_agreement(conn, speaker_id, dim)
            vector, count = self._pool_speaker(conn, speaker_id, dim)
            conn.execute(
                "UPDATE speakers SET vector = ?, n_recordings = ?, updated = ? WHERE id = ?",
                (_blob(vector), count, now, speaker_id),
            )
            _new_generation(conn)
        self.written_speakers.append(name)
        return EnrollResult(
            speaker=name,
            added=len(rows) - updated,
            updated=updated,
            recordings=count,
            created=created,
            replaced=replace and not created,
        )

    def _pool_speaker(
        self, conn: sqlite3.Connection, speaker_id: int, dim: int
    ) -> tuple[np.ndarray, int]:
        """Pooled vector and count of a speaker's recordings, read inside the transaction."""
        blobs = [
            r[0]
            for r in conn.execute(
                "SELECT embedding FROM recordings WHERE speaker_id = ?", (speaker_id,)
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
        validate: bool = True,
    ) -> int:
        """Bulk-add new speakers from precomputed vectors, in one transaction.

        Each speaker gets one recording whose path is ``IMPORTED_SOURCE``, so that the
        pooled vector stays the pool of the recordings. Meant for imports and benchmarks.

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
        now = _now()
        with self._transaction() as conn:
            self._bind(conn, fingerprint, dim, source)
            first = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM speakers").fetchone()[0]
            for start in range(0, len(checked), INSERT_BATCH):
                part = range(start, min(start + INSERT_BATCH, len(checked)))
                blobs = [vecs[i].tobytes() for i in part]
                try:
                    conn.executemany(
                        "INSERT INTO speakers (id, name, vector, n_recordings, created, updated) "
                        "VALUES (?, ?, ?, 1, ?, ?)",
                        [(first + i, checked[i], blobs[i - start], now, now) for i in part],
                    )
                except sqlite3.IntegrityError:
                    raise StoreError(
                        f"{self.path}: add_vectors: a name in rows {start}-{part[-1]} is "
                        "already enrolled or repeated; nothing was added"
                    ) from None
                conn.executemany(
                    "INSERT INTO recordings (speaker_id, path, embedding, added) "
                    "VALUES (?, ?, ?, ?)",
                    [(first + i, IMPORTED_SOURCE, blobs[i - start], now) for i in part],
                )
            _new_generation(conn)
        return len(checked)

    def remove(self, name: str) -> int:
        """Delete a speaker and their recordings; returns how many recordings went.

        Raises ``UnknownSpeakerError`` if the speaker is not enrolled.
        """
        name = validate_name(name)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, n_recordings FROM speakers WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise self._unknown(name)
            conn.execute("DELETE FROM recordings WHERE speaker_id = ?", (row[0],))
            conn.execute("DELETE FROM speakers WHERE id = ?", (row[0],))
            _new_generation(conn)
        return int(row[1])

    # -- reads

    def _unknown(self, name: str) -> UnknownSpeakerError:
        return UnknownSpeakerError(
            f"speaker {name!r} is not enrolled in {self.path} (see `speakerid list`)"
        )

    def _decode(self, blobs: Sequence[bytes], dim: int) -> np.ndarray:
        """Concatenate float32 blobs into ``(len(blobs), dim)``; a wrong size is damage."""
        buf = b"".join(blobs)
        if dim <= 0 or len(buf) != len(blobs) * dim * _VECTOR_DTYPE.itemsize:
            raise StoreError(f"{self.path}: damaged store (a vector has the wrong size)")
        return (
            np.frombuffer(buf, dtype=_VECTOR_DTYPE)
            .reshape(len(blobs), dim)
            .astype(np.float32, copy=False)
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
            return (
                self._reader().execute("SELECT 1 FROM speakers WHERE name = ?", (name,)).fetchone()
                is not None
            )

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

    def recording_vectors(self, name: str) -> tuple[list[str], np.ndarray]:
        """A speaker's recordings: paths and ``(n, D)`` embeddings, in enrollment order."""
        with self._db_errors():
            conn = self._reader()
            row = conn.execute("SELECT id FROM speakers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._unknown(name)
            rows = conn.execute(
                "SELECT path, embedding FROM recordings WHERE speaker_id = ? ORDER BY id", (row[0],)
            ).fetchall()
        return [r[0] for r in rows], self._decode([r[1] for r in rows], self.embedding_dim)

    def recordings(self, name: str) -> list[str]:
        """The paths enrolled for one speaker, as given when enrolling."""
        name = validate_name(name)
        with self._db_errors():
            conn = self._reader()
            row = conn.execute("SELECT id FROM speakers WHERE name = ?", (name,)).fetchone()
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
            row = (
                self._reader()
                .execute("SELECT vector FROM speakers WHERE name = ?", (name,))
                .fetchone()
            )
        if row is None:
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
            self._faiss = _import_faiss()
        if self._faiss is not None and len(names):
            index = self._faiss.IndexFlatIP(mat.shape[1])
            index.add(mat)
        self._cache = (version, names, mat, index)
        return names, mat, index

    def search(self, queries: np.ndarray, top_k: int = 5) -> list[list[Candidate]]:
        """Rank enrolled speakers by cosine score for each query.

        Parameters
        ----------
        queries: ``(Q, D)`` or ``(D,)`` unit vectors.
        top_k: candidates per query (fewer when fewer speakers are enrolled).

        Returns
        -------
        list of Q lists of ``Candidate``, best first.
        """
        if top_k < 1:
            raise SpeakerIDError(f"--top must be at least 1, not {top_k}")
        kept = self._kept_index()
        if kept is not None:
            return self._search_index(kept, queries, top_k)
        names, mat, index = self._search_state()
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if len(names) == 0:
            return [[] for _ in range(len(q))]
        if q.ndim != 2 or q.shape[1] != mat.shape[1]:
            raise StoreError(
                f"{self.path}: query vectors have size {q.shape[-1]}, the store holds "
                f"size {mat.shape[1]}"
            )
        k = min(top_k, len(names))
        results: list[list[Candidate]] = []
        for start in range(0, len(q), SEARCH_CHUNK):
            chunk = np.ascontiguousarray(q[start : start + SEARCH_CHUNK])
            if index is not None:
                scores, idx = index.search(chunk, k)
            else:
                scores, idx = _top_k(chunk @ mat.T, k)
            results.extend(
                [Candidate(names[j], float(s)) for s, j in zip(srow, irow, strict=True) if j >= 0]
                for srow, irow in zip(scores, idx, strict=True)
            )
        return results

    # -- the search index kept beside the file (speakerid/search.py)

    def build_index(self, kind: str = "auto") -> IndexInfo:
        """Build and keep a search index beside the store (see ``speakerid.search``).

        Once kept, every search checks that the index was built from the store's current
        vectors and rebuilds it (same requested kind) when not.
        """
        if not self.exists:
            raise StoreError(f"{self.path}: no store yet; enroll speakers first")
        if not self.meta().get(GENERATION_KEY):
            with self._transaction() as conn:  # stores written before generations existed
                _new_generation(conn)
        generation, ids, vectors = self._snapshot()
        index = VectorIndex.build(ids, vectors, generation, kind)
        index.save(self.path, requested=kind)
        self._index = index
        return index.info(self.path)

    def drop_index(self) -> bool:
        """Stop keeping a search index (delete its files); True if there was one."""
        self._index = None
        return remove_index(self.path)

    def index_info(self) -> IndexInfo | None:
        """The kept search index, brought up to date; None when the store keeps none."""
        kept = self._kept_index()
        return kept.info(self.path) if kept is not None else None

    def _kept_index(self) -> VectorIndex | None:
        if self._conn is None or not pointer_path(self.path).exists():
            return None
        generation = self.meta().get(GENERATION_KEY, "")
        if self._index is not None and self._index.generation == generation:
            return self._index
        self._index = VectorIndex.load(self.path, generation)
        if self._index is None:  # stale (a write since, or a crash mid-rebuild) or damaged
            kind = requested_kind(self.path)
            generation, ids, vectors = self._snapshot()
            self._index = VectorIndex.build(ids, vectors, generation, kind)
            # A read-only folder: the rebuilt index serves this process only.
            with suppress(StoreError):
                self._index.save(self.path, requested=kind)
        return self._index

    def _snapshot(self) -> tuple[str, np.ndarray, np.ndarray]:
        """``(generation, (N,) ids, (N, D) vectors)`` read in one transaction, so the three
        agree even while another process writes."""
        with self._db_errors():
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                dim = int(meta.get("embedding_dim", "0"))
                n = conn.execute("SELECT COUNT(*) FROM speakers").fetchone()[0]
                ids = np.empty(n, np.int64)
                vectors = np.empty((n, max(dim, 1)), np.float32)
                cur = conn.execute("SELECT id, vector FROM speakers ORDER BY id")
                done = 0
                while rows := cur.fetchmany(INSERT_BATCH):
                    ids[done : done + len(rows)] = [r[0] for r in rows]
                    vectors[done : done + len(rows)] = self._decode([r[1] for r in rows], dim)
                    done += len(rows)
            finally:
                conn.execute("COMMIT")
        return meta.get(GENERATION_KEY, ""), ids, vectors

    def _search_index(
        self, index: VectorIndex, queries: np.ndarray, top_k: int
    ) -> list[list[Candidate]]:
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if len(index) == 0:
            return [[] for _ in range(len(q))]
        if q.ndim != 2 or q.shape[1] != index.dim:
            raise StoreError(
                f"{self.path}: query vectors have size {q.shape[-1]}, the store holds "
                f"size {index.dim}"
            )
        scores, ids = index.search(q, top_k)
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        names: dict[int, str] = {}
        with self._db_errors():
            conn = self._reader()
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                names.update(
                    conn.execute(f"SELECT id, name FROM speakers WHERE id IN ({marks})", part)
                )
        return [
            [
                Candidate(names[int(i)], float(s))
                for s, i in zip(srow, irow, strict=True)
                if i in names
            ]
            for srow, irow in zip(scores, ids, strict=True)
        ]


def _new_generation(conn: sqlite3.Connection) -> None:
    """Inside a write transaction that changes speaker vectors: a new random generation, so
    that a search index built before it is recognised as stale (``speakerid.search``)."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (GENERATION_KEY, secrets.token_hex(8)),
    )


# ---------------------------------------------------------------- operations


Source = str | Path | Clip  # a recording: a path as given, ``-`` (stdin) or audio in memory
OnFile = Callable[[int, int], None]  # progress: ``on_file(files_done, files_total)``


def _model_id(embedder: BaseEmbedder) -> tuple[str, int, str]:
    """(fingerprint, embedding size, absolute path) of the embedder's model."""
    model = embedder.model
    return model.fingerprint, embedder.dim, str(Path(model.path).resolve())


def _embed(embedder: BaseEmbedder, path: Source) -> np.ndarray:
    """``embedder.embed_file`` that refuses non-finite output (a damaged model's mark)."""
    vector = embedder.embed_file(path)
    if not np.isfinite(vector).all():
        raise CheckpointError(
            f"{embedder.model.path}: the model produced NaN or infinite values for {path}; "
            "the checkpoint is damaged"
        )
    return vector


def _embed_measured(embedder: BaseEmbedder, path: str | Path) -> tuple[np.ndarray, float]:
    """``_embed`` that also returns the recording's seconds of speech (after trimming).

    The same embedding as ``embed_file``: trimming here and not again in the embedder.
    """
    if is_long(path):  # streamed: memory stays flat whatever the length and the rate
        samples: list[int] = []
        vector = embedder.embed_stream(path, on_speech=samples.append)
        seconds = samples[0] / SAMPLE_RATE
    else:
        speech = trim_silence(load_audio(path), name=str(path))
        vector = embedder.embed_waveform(speech, name=str(path), trim=False)
        seconds = len(speech) / SAMPLE_RATE
    if not np.isfinite(vector).all():
        raise CheckpointError(
            f"{embedder.model.path}: the model produced NaN or infinite values for {path}; "
            "the checkpoint is damaged"
        )
    return vector, seconds


def calibration_for(store: SpeakerStore, fingerprint: str) -> Calibration | None:
    """The store's calibration if it was made with this model, else None (it does not apply)."""
    calibration = store.calibration()
    if calibration is None or calibration.model_fingerprint != fingerprint:
        return None
    return calibration


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
    fingerprint, dim, source = _model_id(embedder)
    store.check_model(fingerprint, dim, source)  # fail before the slow part
    measured = [_embed_measured(embedder, p) for p in paths]
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
        replace=replace,
        speech_seconds=seconds,
    )
    return replace_fields(result, quality=quality)


def speaker_folders(root: str | Path) -> list[tuple[str, list[Path]]]:
    """Speaker folders under ``root`` and their audio files, sorted.

    Layouts: ``root/<speaker>/*.wav|flac`` or LibriSpeech's
    ``root/<speaker>/<chapter>/*.flac`` (any depth below the speaker folder). Hidden
    files and folders are ignored. Raises ``DataError`` when none hold audio.
    """
    root = Path(root)
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "no such directory"
        raise DataError(f"{root}: {problem}")
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
    shard: ``(I, N)``: only every N-th speaker folder from the I-th (``speakerid.bulk``).
    """
    folders = speaker_folders(root)[shard[0] :: shard[1]]
    fingerprint, dim, source = _model_id(embedder)
    store.check_model(fingerprint, dim, source)
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
                vector, speech = _embed_measured(embedder, path)
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
                replace=replace,
                speech_seconds=seconds,
            )
            enrolled.append(replace_fields(result, quality=quality))
    if not enrolled:
        first = f"; first problem: {skipped[0].error}" if skipped else ""
        raise DataError(f"{root}: nothing could be enrolled ({len(skipped)} failed){first}")
    return BulkEnrollResult(str(root), enrolled, skipped)


def verify(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    name: str,
    path: Source,
    threshold: float | None = None,
) -> Verification:
    """1:1: does ``path`` sound like the enrolled speaker ``name``?

    ``threshold`` None means the store's calibrated one, else the model's (see
    ``resolve_threshold``). A store calibrated with AS-norm decides on the normalised score.
    """
    name = validate_name(name)
    fingerprint, dim, source = _model_id(embedder)
    calibration = calibration_for(store, fingerprint)
    threshold, origin = resolve_threshold(
        embedder.model.threshold, threshold, calibration.threshold if calibration else None
    )
    store.check_model(fingerprint, dim, source)
    reference = store.vector(name)
    query = _embed(embedder, path)
    score = float(reference @ query)
    normalized = None
    if origin == "store" and calibration is not None and calibration.norm == "asnorm":
        normalized = _normalized(store, embedder, calibration, query, name)
    decided = score if normalized is None else normalized
    return Verification(
        name, str(path), score, float(threshold), decided >= threshold, origin, normalized
    )


def _normalized(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    calibration: Calibration,
    query: np.ndarray,
    name: str,
) -> float:
    """AS-norm score of one query against one enrolled speaker, with the calibrated cohort."""
    if calibration.cohort == "model":
        cohort = getattr(embedder.model, "cohort", None)
        if cohort is None:
            raise StoreError(
                f"{store.path}: calibrated with the model's AS-norm cohort, but this model has "
                "none; run speakerid calibrate again"
            )
        names = None
        cohort = l2_normalize(np.asarray(cohort, dtype=np.float32))
    else:
        names, cohort = store.matrix()
    try:
        return float(
            as_norm_scores(
                query[None, :],
                store.vector(name)[None, :],
                np.asarray([name]),
                cohort,
                None if names is None else np.asarray(names),
                calibration.top_k or ASNORM_TOP_K,
            )[0, 0]
        )
    except DataError as exc:
        raise StoreError(f"{store.path}: {exc}; run speakerid calibrate again") from None


def identify_threshold(calibration: Calibration | None) -> float | None:
    """The calibrated 1:N threshold: the open-set one, else the 1:1 one (store was empty)."""
    if calibration is None:
        return None
    if calibration.identify_threshold is not None:
        return calibration.identify_threshold
    return calibration.threshold


def calibration_notes(store: SpeakerStore, fingerprint: str | None) -> list[str]:
    """Why the store's calibration does or does not apply, and whether it is due again."""
    calibration = store.calibration()
    if calibration is None:
        return ["not calibrated: run speakerid calibrate on recordings from your own domain"]
    if fingerprint is not None and calibration.model_fingerprint != fingerprint:
        return [
            f"the store was calibrated with model {calibration.model_fingerprint[:12]}, not "
            "the one in use, so its thresholds are ignored; run speakerid calibrate again"
        ]
    notes = []
    n_now = len(store)
    if calibration.identify_threshold is None:
        notes.append(
            "calibrated while no speakers were enrolled: identify uses the 1:1 threshold; run "
            "speakerid calibrate again to set the 1:N one"
        )
    elif calibration.regrow_due(n_now):
        fpir = calibration.identify_fpir or 0.0
        notes.append(
            f"the store has grown from {calibration.store_speakers} to {n_now} speakers since "
            f"calibration: strangers are now named about "
            f"{100 * expected_fpir(fpir, calibration.store_speakers, n_now):.1f}% of the time "
            f"instead of {100 * fpir:.1f}%; run speakerid calibrate again"
        )
    return notes


def identify(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    paths: Sequence[Source],
    threshold: float | None = None,
    top_k: int = 5,
    *,
    strict: bool = False,
    on_file: OnFile | None = None,
) -> list[Identification | FileError]:
    """1:N, open set: rank enrolled speakers for each file; ``best`` is None below threshold.

    All files are embedded first, then scored together with one matrix product. A file
    that cannot be used gets a ``FileError`` in its place (with ``strict`` it raises).
    ``threshold`` None means the store's calibrated 1:N threshold, else the model's (see
    ``resolve_threshold``). With AS-norm, candidates are ranked by raw cosine and the top
    one is named when its normalised score passes.
    """
    if top_k < 1:
        raise SpeakerIDError(f"--top must be at least 1, not {top_k}")
    fingerprint, dim, source = _model_id(embedder)
    calibration = calibration_for(store, fingerprint)
    threshold, origin = resolve_threshold(
        embedder.model.threshold, threshold, identify_threshold(calibration)
    )
    store.check_model(fingerprint, dim, source)
    if len(store) == 0:
        raise StoreError(f"{store.path}: no speakers are enrolled; enroll some first")
    if top_k < 1:
        raise SpeakerIDError(f"--top must be at least 1, not {top_k}")
    embedded = embed_files(embedder, paths, strict=strict, on_file=on_file)
    vectors = embedded.vectors
    ranked = store.search(np.stack(list(vectors.values())), top_k) if vectors else []
    found = dict(zip(vectors, zip(vectors.values(), ranked, strict=True), strict=True))
    failed = {e.file: e for e in embedded.errors}
    normalize = origin == "store" and calibration is not None and calibration.norm == "asnorm"
    results: list[Identification | FileError] = []
    for path in map(str, paths):
        if path in failed:
            results.append(failed[path])
            continue
        query, candidates = found[path]
        normalized = None
        decided = candidates[0].score if candidates else -np.inf
        if normalize and candidates:
            assert calibration is not None
            normalized = _normalized(store, embedder, calibration, query, candidates[0].speaker)
            decided = normalized
        best = candidates[0].speaker if candidates and decided >= threshold else None
        results.append(Identification(path, candidates, best, float(threshold), origin, normalized))
    return results


def embed_files(
    embedder: BaseEmbedder,
    paths: Sequence[Source],
    *,
    strict: bool = False,
    on_file: OnFile | None = None,
) -> EmbedResult:
    """One ``(D,)`` unit embedding per file, keyed by the path exactly as given.

    Every file is tried: one that cannot be used is listed in ``errors`` (with ``strict``,
    the first one raises instead). A damaged model still raises at once.
    """
    vectors: dict[str, np.ndarray] = {}
    errors: list[FileError] = []
    for done, path in enumerate(paths, 1):
        try:
            vectors[str(path)] = _embed(embedder, path)
        except AudioError as exc:
            if strict:
                raise
            errors.append(FileError(str(path), str(exc)))
        if on_file:
            on_file(done, len(paths))
    return EmbedResult(vectors, errors)


def save_embeddings(
    path: str | Path,
    embeddings: Mapping[str, np.ndarray],
    header: Mapping[str, Any] | None = None,
) -> None:
    """Write embeddings as ``.npz`` (``np.load(path)[key]``), atomically.

    Written member by member rather than with ``np.savez(**embeddings)``, so that any key
    (even ``"file"``, or one with slashes) survives unchanged. ``header`` (the model's
    identity, see ``speakerid.bulk.header``) goes into the zip comment as JSON, where
    ``np.load`` does not see it.
    """
    path = Path(path)
    if path.is_dir():
        raise SpeakerIDError(f"{path}: is a directory; give a file name for --out")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            if header is not None:
                zf.comment = json.dumps(dict(header)).encode()
            for key, vector in embeddings.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(
                        fh, np.asarray(vector, dtype=np.float32), allow_pickle=False
                    )
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SpeakerIDError(f"{path}: cannot write ({exc.strerror or exc})") from None


def describe(store: SpeakerStore, model_path: str | Path | None) -> Info:
    """``speakerid info``: the model (or why it does not load) and the store's contents.

    The model is described from its header (``modelinfo.read_header``), without loading
    the weights or importing torch.
    """
    from speakerid.modelinfo import read_header

    shown = str(model_path) if model_path is not None else f"{DEFAULT_MODEL} (shipped default)"
    try:
        model = read_header(*resolve_model(model_path))
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
    )
