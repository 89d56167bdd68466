"""The search index kept beside one store: opened, caught up, folded, rebuilt.

``speakerid.store.search`` holds the index itself (its files, faiss, the ranking); this module
ties it to a store file (``speakerid.store.db``): which base is current, what the store
changed since (read in the same transaction as the rows it names), when the changes are
folded into a new base, and when the base is rebuilt from the store instead (missing,
another store's, failing its checksums, disagreeing with the store, or drifted).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from speakerid.errors import StoreError
from speakerid.store.db import StoreDB
from speakerid.store.search import (
    INDEX_VERSION,
    Candidate,
    Delta,
    IndexDamaged,
    IndexInfo,
    StoreRow,
    VectorIndex,
    choose_kind,
    fold_threshold,
    import_faiss,
    pointer_path,
    rank_kept,
    read_pointer,
    remove_index,
    requested_kind,
)


def choose(n: int, kind: str) -> str:
    """``choose_kind`` with faiss if installed."""
    return choose_kind(n, kind, import_faiss())


def lock_path(store_path: Path) -> Path:
    """``<store>.fold.lock``: held (flock) by whoever writes a new base."""
    return store_path.with_name(f"{store_path.name}.fold.lock")


class KeptIndex:
    """The index kept beside ``db``'s file, as one process uses it."""

    def __init__(self, db: StoreDB) -> None:
        self.db = db
        self.base: VectorIndex | None = None
        self._delta: tuple[int, str, Delta] | None = None  # data_version, base tag, delta
        self._holding = False  # this object holds the lock (``_locked``)
        self._pointer: tuple[int, int, int] | None = None  # the pointer file base was read from

    def forget(self) -> None:
        """Drop what was read from the store (this process wrote, or closed it)."""
        self._delta = None

    def kept(self) -> bool:
        """Whether the store keeps an index that this schema can catch up."""
        if not self.db.exists or not pointer_path(self.db.path).exists():
            return False
        with self.db._db_errors():
            return self.db._version(self.db._reader()) >= 4  # older: not migrated yet

    # -- searching

    def search(self, queries: np.ndarray, k: int) -> list[list[Candidate]] | None:
        """``rank_kept`` over the current base and the store's changes since; None when
        the store keeps no index. A base that disagrees with the store is rebuilt and the
        search run again."""
        for attempt in range(3):
            base = self._base()
            if base is None:
                return None
            try:
                with self.db._read() as conn:
                    delta = self._delta_for(conn, base)
                    if delta is None:  # another store, or one set back: load afresh
                        self.base, self._delta = None, None
                        continue
                    return rank_kept(
                        base, delta, queries, k, lambda ids: _rows(conn, ids), str(self.db.path)
                    )
            except IndexDamaged:
                if attempt:
                    raise
                self.rebuild(requested_kind(self.db.path))
        raise StoreError(f"{self.db.path}: the store keeps changing under its search index")

    def _delta_for(self, conn: sqlite3.Connection, base: VectorIndex) -> Delta | None:
        """The store's changes since ``base``: kept while the store does not change, else
        brought forward with the changes since the kept one (a search after each write
        reads that write, not all since the base); None when the store is not the one the
        base was made from (token, or a seq behind it)."""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        kept = self._delta if self._delta is not None and self._delta[1] == base.tag else None
        if kept is not None and kept[0] == version:
            return kept[2]
        since = kept[2].seq if kept is not None else base.seq
        token, seq, ids, vectors, removed = self.db._changes(conn, since)
        if token != base.token or seq < since:
            return None
        if kept is not None:
            delta = base.advance(kept[2], seq, ids, vectors, removed)
        else:
            delta = base.delta(seq, ids, vectors, removed)
        self._delta = (version, base.tag, delta)
        return delta

    def _base(self) -> VectorIndex | None:
        """The current base: the one in memory if the pointer is still the file it was
        read from, else loaded, else (unusable) rebuilt from the store."""
        try:
            st = pointer_path(self.db.path).stat()
        except OSError:
            self.base = None
            return None
        if self.base is not None and _signature(st) == self._pointer:
            return self.base
        if not self.kept():
            self.base = None
            return None
        meta = self.db.meta()
        token, seq = meta.get("store_token", ""), int(meta.get("vectors_seq", "0"))
        self.base = VectorIndex.load(self.db.path, token, seq)
        if self.base is None:
            self.rebuild(requested_kind(self.db.path))
        else:
            self._pointer = _signature(st)
        return self.base

    # -- writing a new base

    def rebuild(self, kind: str = "auto") -> VectorIndex:
        """A new base from all of the store's vectors, quantisers trained afresh; kept
        beside the store (in a read-only folder, for this process only)."""
        with self._locked(wait=True):
            token, seq, ids, vectors = self.db._snapshot()
            self.base = VectorIndex.build(ids, vectors, token, seq, kind)
            with suppress(StoreError):
                self.base.save(self.db.path, requested=kind)
                self._prune(seq)
            # the pointer now names this base, or (a read-only folder) this base serves this
            # process until the pointer changes
            with suppress(OSError):
                self._pointer = _signature(pointer_path(self.db.path).stat())
        self._delta = None
        return self.base

    def refresh(self, *, rebuild: bool = False, kind: str | None = None, wait: bool = True) -> None:
        """Fold the store's changes into a new base (``VectorIndex.fold``), or rebuild it
        when asked, when another ``kind`` is asked for, when the changes outnumber the
        base or when the fold finds drift. ``wait``: wait for another process writing a
        base, else leave it to them."""
        with self._locked(wait) as held:
            if not held:
                return
            kind = kind or requested_kind(self.db.path)
            base = None if rebuild or not pointer_path(self.db.path).exists() else self._base()
            if base is None or kind not in ("auto", base.kind):
                self.rebuild(kind)
                return
            with self.db._read() as conn:
                delta = self._delta_for(conn, base)
            live = len(base) - len(delta.dead) + len(delta) if delta is not None else 0
            if delta is None or len(delta) > len(base) or choose(live, kind) != base.kind:
                self.rebuild(kind)  # another store, mostly new rows, or auto's kind changes
                return
            if not len(delta) and not len(delta.dead):
                return
            folded = base.fold(delta, self.db.path)
            if folded is None:  # drift: retrain
                self.rebuild(kind)
                return
            self.base, self._delta = folded, None
            self._pointer = _signature(pointer_path(self.db.path).stat())
            self._prune(folded.seq)

    def maybe_fold(self) -> None:
        """After a write: fold when the changes since the base pass ``fold_threshold``
        (skipped while another process writes a base; readers are never blocked)."""
        pointer = read_pointer(self.db.path)
        if not pointer or pointer.get("version") != INDEX_VERSION or not self.kept():
            return
        try:
            since, n = int(pointer["seq"]), int(pointer["speakers"])
        except (KeyError, TypeError, ValueError):
            return
        if self.pending(since) >= fold_threshold(n):
            with suppress(StoreError):  # a read-only folder: searches read the changes
                self.refresh(wait=False)

    def pending(self, since: int) -> int:
        """Speakers changed or removed after ``vectors_seq`` ``since`` (two indexed counts)."""
        with self.db._read() as conn:
            changed = conn.execute(
                "SELECT COUNT(*) FROM speakers WHERE changed > ?", (since,)
            ).fetchone()[0]
            removed = conn.execute(
                "SELECT COUNT(*) FROM removed WHERE seq > ?", (since,)
            ).fetchone()
        return int(changed) + int(removed[0])

    def info(self) -> IndexInfo | None:
        base = self._base()
        return None if base is None else base.info(self.db.path, self.pending(base.seq))

    def drop(self) -> bool:
        self.base, self._delta = None, None
        return remove_index(self.db.path)

    def _prune(self, seq: int) -> None:
        """Forget removals a base at ``seq`` holds (best effort: read-only stores keep them;
        a reader of an older base then drops such rows by not finding them)."""
        with suppress(StoreError), self.db._transaction() as conn:
            conn.execute("DELETE FROM removed WHERE seq <= ?", (seq,))

    @contextmanager
    def _locked(self, wait: bool) -> Iterator[bool]:
        """Hold ``lock_path`` (True), or yield False when busy and not ``wait``. Re-entrant
        within this object; where the lock cannot be made (a read-only folder) nothing can
        be written beside the store either, so it is not needed."""
        if self._holding:
            yield True
            return
        try:
            fd = os.open(lock_path(self.db.path), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield True
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            self._holding = True
            try:
                yield True
            finally:
                self._holding = False
        finally:
            os.close(fd)


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    """What changes when the pointer file is replaced."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _rows(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, StoreRow]:
    """The store's rows of speaker ``ids``: name, ``changed`` seq, vector bytes."""
    rows: dict[int, StoreRow] = {}
    for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        part = list(ids[start : start + 500])
        marks = ",".join("?" * len(part))
        for i, name, changed, vector in conn.execute(
            f"SELECT id, name, changed, vector FROM speakers WHERE id IN ({marks})", part
        ):
            rows[i] = (name, changed, vector)
    return rows
