"""The store's SQLite file: schema, migrations, connections and transactions.

One SQLite file (stdlib ``sqlite3``, WAL mode) holds three tables:

- ``meta``: format name, schema version, the fingerprint (sha256) and embedding size of the
  model that made every vector in the store, where that model was loaded from, and how
  speech was found before embedding (``vad``: ``audio.VADS``; schema 5);
- ``speakers``: name (as given, NFC), its key (``name_key``: what two names must differ in
  to be two speakers), pooled vector (float32 little-endian blob of ``embedding_dim``),
  number of recordings, created/updated times (UTC, ISO 8601), and ``changed``: the store's
  ``vectors_seq`` when the vector was last written;
- ``recordings``: speaker, the file's resolved path and sha256 (its identity: the same file
  enrolled from anywhere is one recording, another file of the same name is another), its
  embedding, its seconds
  of speech (after trimming silence) and its agreement (cosine to the pool of the speaker's
  other recordings), both NULL where unknown (imported vectors, stores from schema 1). An
  empty embedding blob means "the speaker's own vector": an imported speaker's one
  recording, kept once instead of twice (``IMPORTED_EMBEDDING``);
- ``removed``: which speaker row ids were deleted at which ``vectors_seq``.

``vectors_seq`` (meta) counts the write transactions that changed a vector, and
``store_token`` (meta, random, set once) tells this store from any other. Together they let
the search index beside the store (``speakerid.store.search``) name the state it reflects and catch
up from it: the speakers changed since, and the rows removed since, are two indexed reads.

``StoreDB`` opens a file only after checking it is a store of a schema this speakerid reads,
creates a new one atomically, holds each write in one ``BEGIN IMMEDIATE`` transaction and
upgrades an older schema inside the first one. ``speakerid.store.speakers.SpeakerStore`` builds the
speakers' reads and writes on it.
"""

from __future__ import annotations

import fcntl
import glob
import os
import secrets
import sqlite3
import tempfile
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import numpy as np

from speakerid.audio import LEGACY_VAD
from speakerid.decision.calibration import agreements
from speakerid.encoders.registry import shipped_flags
from speakerid.errors import StoreError
from speakerid.vectors import l2_normalize

STORE_FORMAT = "speakerid-store"  # meta 'format': what kind of file this is
SCHEMA_VERSION = 5  # meta 'schema_version': bump on any change to the tables below
MIGRATES_FROM = 1  # oldest schema this speakerid reads, and upgrades at its first write
BUSY_TIMEOUT_SECONDS = 30.0  # how long a writer waits for another process's write lock
INSERT_BATCH = 10_000  # rows per executemany in bulk inserts
SEQ_KEY = "vectors_seq"  # meta: counts the write transactions that changed a vector
TOKEN_KEY = "store_token"  # meta: random, set when the store is made: which store this is
VAD_KEY = "vad"  # meta: how speech was found before embedding (``audio.VADS``), with the model
IMPORTED_EMBEDDING = b""  # a recording's embedding that is its speaker's vector (imports)

# A recording's embedding as SQL, the speaker's vector where it is ``IMPORTED_EMBEDDING``
# (``r`` is the recordings table).
EMBEDDING_OR_VECTOR = (
    "CASE WHEN length(r.embedding) = 0 THEN "
    "(SELECT vector FROM speakers WHERE id = r.speaker_id) ELSE r.embedding END"
)
_VECTOR_DTYPE = np.dtype("<f4")
_Db = TypeVar("_Db", bound="StoreDB")

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
# Not UNIQUE: a store from schema 3 may hold two names that now share a key ("Alice" and
# "alice"); writes keep keys unique and reads resolve such a pair by the exact name.
_SPEAKERS_KEY_INDEX = "CREATE INDEX speakers_by_key ON speakers (name_key)"
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
    updated      TEXT NOT NULL,
    changed      INTEGER NOT NULL DEFAULT 0,
    name_key     TEXT
);
{_SPEAKERS_KEY_INDEX};
CREATE TABLE recordings ({_RECORDINGS_COLUMNS});
{_RECORDINGS_INDEX};
CREATE INDEX speakers_by_change ON speakers (changed);
CREATE TABLE removed (speaker_id INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX removed_by_seq ON removed (seq);
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
# Schema 4 records, per speaker, when its vector last changed, and which rows were removed
# when, so that a search index can catch up with the store instead of being rebuilt.
# (Written to tolerate parts already there: a store whose version number was set back.)
_ADD_CHANGED = "ALTER TABLE speakers ADD COLUMN changed INTEGER NOT NULL DEFAULT 0"
_MIGRATE_3_TO_4 = [
    "CREATE INDEX IF NOT EXISTS speakers_by_change ON speakers (changed)",
    "CREATE TABLE IF NOT EXISTS removed (speaker_id INTEGER NOT NULL, seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS removed_by_seq ON removed (seq)",
    "DELETE FROM meta WHERE key = 'vectors_generation'",  # schema 3's random token
]
_TABLES = frozenset({"meta", "speakers", "recordings"})


def name_key(name: str) -> str:
    """The key two speaker names are compared by: NFKC, then case folded (Unicode's
    NFKC_Casefold). "José" precomposed or with a combining accent, "JOSÉ" and full-width
    "Ｊｏｓé" share one key, as do the ligature "ﬁ" and "fi". The store shows names as given.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


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


class StoreDB:
    """One store file: opened, created, upgraded and written through here.

    Opening never writes: a missing file reads as an empty store and is created (atomically)
    by the first write; an existing file must be a speakerid store of this schema, else
    ``StoreError`` and the file is left untouched. Usable as a context manager.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._empty: sqlite3.Connection | None = None
        self._read_only = False  # the file exists and this user may not write it
        if self.path.exists():
            self._open()

    def _invalidate(self) -> None:
        """Drop what was read from the file: it was (re)opened, written or closed."""

    # -- connections

    def __enter__(self: _Db) -> _Db:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection (the store can be reopened by a new instance)."""
        for conn in (self._conn, self._empty):
            if conn is not None:
                conn.close()
        self._conn = self._empty = None
        self._invalidate()

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
        self._invalidate()

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
            (VAD_KEY, ""),
            ("created", _now()),
            (SEQ_KEY, "0"),
            (TOKEN_KEY, secrets.token_hex(8)),
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
        self._invalidate()

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: bring an older store up to this version.

        Opening never writes, so an old store is read as it is and upgraded by its first
        write. Schema 2 adds each recording's speech seconds (unknown for old recordings:
        the files may be gone) and agreement (recomputed from the stored embeddings);
        schema 3 keys recordings by content (``_MIGRATE_2_TO_3``); schema 4 records when
        vectors changed (``_MIGRATE_3_TO_4``) and adds each speaker's ``name_key``, computed
        from the names already there; schema 5 records the VAD mode (``LEGACY_VAD`` for a
        store that holds vectors, unbound for an empty one).
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
        if version < 3:
            for statement in _MIGRATE_2_TO_3:
                conn.execute(statement)
        if version < 5:
            bound = conn.execute("SELECT EXISTS (SELECT 1 FROM speakers)").fetchone()[0]
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                (VAD_KEY, LEGACY_VAD if bound else ""),
            )
        if version >= 4:
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
            return
        if "changed" not in {r[1] for r in conn.execute("PRAGMA table_info(speakers)")}:
            conn.execute(_ADD_CHANGED)
        for statement in _MIGRATE_3_TO_4:
            conn.execute(statement)
        conn.executemany(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
            [(SEQ_KEY, "1"), (TOKEN_KEY, secrets.token_hex(8))],
        )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(speakers)")}
        if "name_key" not in columns:  # (a store edited by hand may have it already)
            conn.execute("ALTER TABLE speakers ADD COLUMN name_key TEXT")
        names = conn.execute("SELECT id, name FROM speakers").fetchall()
        conn.executemany(
            "UPDATE speakers SET name_key = ? WHERE id = ?",
            [(name_key(name), speaker_id) for speaker_id, name in names],
        )
        conn.execute(_SPEAKERS_KEY_INDEX.replace("INDEX", "INDEX IF NOT EXISTS", 1))
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )

    def _store_agreement(self, conn: sqlite3.Connection, speaker_id: int, dim: int) -> None:
        """Recompute the agreement of each of a speaker's recordings (others changed)."""
        rows = conn.execute(
            f"SELECT id, {EMBEDDING_OR_VECTOR} FROM recordings r WHERE speaker_id = ? ORDER BY id",
            (speaker_id,),
        ).fetchall()
        if not rows:
            return
        values = agreements(self._decode([r[1] for r in rows], dim))
        conn.executemany(
            "UPDATE recordings SET agreement = ? WHERE id = ?",
            [(None if np.isnan(v) else float(v), r[0]) for v, r in zip(values, rows, strict=True)],
        )

    # -- the meta table: the model that made the vectors, their generation

    def meta(self) -> dict[str, str]:
        """The meta table as a dict (format, schema version, model fingerprint, ...)."""
        with self._db_errors():
            return dict(self._reader().execute("SELECT key, value FROM meta").fetchall())

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside it sees one state of the store, even
        while other processes write."""
        with self._db_errors():
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _snapshot(self) -> tuple[str, int, np.ndarray, np.ndarray]:
        """``(store token, vectors_seq, (N,) ids, (N, D) vectors)`` of one state."""
        with self._read() as conn:
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
        return meta.get(TOKEN_KEY, ""), int(meta.get(SEQ_KEY, "0")), ids, vectors

    def _changes(
        self, conn: sqlite3.Connection, since: int
    ) -> tuple[str, int, np.ndarray, np.ndarray, np.ndarray]:
        """Inside a read transaction, what changed after ``vectors_seq`` ``since``:
        ``(store token, seq now, (M,) changed ids, (M, D) their vectors, removed ids)``.

        A removed id may also be a changed one (the row id was reused by a new speaker).
        """
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        dim = int(meta.get("embedding_dim", "0"))
        # (no ORDER BY: SQLite would then walk the whole table in id order, not the index)
        rows = conn.execute(
            "SELECT id, vector FROM speakers WHERE changed > ?", (since,)
        ).fetchall()
        removed = conn.execute(
            "SELECT DISTINCT speaker_id FROM removed WHERE seq > ?", (since,)
        ).fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        if rows:
            vectors = self._decode([r[1] for r in rows], dim)
        else:
            vectors = np.zeros((0, max(dim, 1)), np.float32)
        gone = np.array([r[0] for r in removed], np.int64)
        return meta.get(TOKEN_KEY, ""), int(meta.get(SEQ_KEY, "0")), ids, vectors, gone

    def _model_error(self, meta: Mapping[str, str], fingerprint: str, source: str) -> StoreError:
        bound = meta.get("model_fingerprint", "")
        made_by = f"model {bound[:12]}"
        if meta.get("model_source"):
            made_by += f" ({meta['model_source']})"
        using = f"model {fingerprint[:12]}" + (f" ({source})" if source else "")
        shipped = shipped_flags(bound)
        use_it = f"pass {shipped} to keep using this store, or " if shipped else ""
        return StoreError(
            f"{self.path} holds embeddings made by {made_by}, but the model in use is {using}; "
            f"embeddings of different models cannot be compared: {use_it}re-enroll with "
            "this model into a new store (--store NEW.sqlite; enroll-dir re-enrolls a folder), "
            "or remove the enrolled speakers here and enroll them again"
        )

    def _vad_error(self, bound: str, vad: str) -> StoreError:
        return StoreError(
            f"{self.path} holds embeddings of speech found by --vad {bound}, but --vad {vad} is "
            f"in use; recordings trimmed two ways do not compare alike: pass --vad {bound} to "
            "keep using this store, or re-enroll into a new store (--store NEW.sqlite)"
        )

    def _model_ok(
        self, conn: sqlite3.Connection, fingerprint: str, dim: int, source: str, vad: str
    ) -> bool:
        """Raise if a *non-empty* store was made by another model or VAD; True if bound."""
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        bound = meta.get("model_fingerprint", "")
        bound_vad = meta.get(VAD_KEY) or LEGACY_VAD  # unset: a store from before schema 5
        same_model = bound == fingerprint and int(meta.get("embedding_dim", "0")) == dim
        if same_model and bound_vad == vad:
            return True
        if conn.execute("SELECT EXISTS (SELECT 1 FROM speakers)").fetchone()[0]:
            if same_model:
                raise self._vad_error(bound_vad, vad)
            raise self._model_error(meta, fingerprint, source)
        return False

    def check_model(self, fingerprint: str, dim: int, source: str = "", vad: str = "") -> None:
        """Refuse (``StoreError``) a model or a VAD mode other than the ones that made the
        stored vectors (``vad`` empty: the store's own, or ``LEGACY_VAD`` when unbound).

        An empty store accepts any model and VAD; its first write binds them.
        """
        with self._db_errors():
            conn = self._reader()
            self._model_ok(conn, fingerprint, dim, source, vad or self._bound_vad(conn))

    def bound_vad(self) -> str | None:
        """The VAD mode the stored vectors were made with (``audio.VADS``); None while the
        store holds no speaker."""
        with self._db_errors():
            conn = self._reader()
            if not conn.execute("SELECT EXISTS (SELECT 1 FROM speakers)").fetchone()[0]:
                return None
            return self._bound_vad(conn)

    @staticmethod
    def _bound_vad(conn: sqlite3.Connection) -> str:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (VAD_KEY,)).fetchone()
        return (row[0] if row else "") or LEGACY_VAD

    def _bind(
        self, conn: sqlite3.Connection, fingerprint: str, dim: int, source: str, vad: str = ""
    ) -> None:
        """Inside a write transaction: check the model and VAD again and record them if
        unbound (``vad`` empty: the store's own, else ``LEGACY_VAD``)."""
        vad = vad or self._bound_vad(conn)
        if not self._model_ok(conn, fingerprint, dim, source, vad):
            conn.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [
                    (fingerprint, "model_fingerprint"),
                    (source, "model_source"),
                    (str(dim), "embedding_dim"),
                ],
            )
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (VAD_KEY, vad))

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


def _next_seq(conn: sqlite3.Connection) -> int:
    """Inside a write transaction that changes speaker vectors: the next ``vectors_seq``,
    recorded in meta; the caller stamps the rows it writes with it (``changed``, ``removed``),
    so that a search index built before it can tell what it misses (``speakerid.store.search``)."""
    row = conn.execute(
        "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ? RETURNING value",
        (SEQ_KEY,),
    ).fetchone()
    return int(row[0])
