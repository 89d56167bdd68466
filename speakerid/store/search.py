"""1:N search over many speakers: an exact scan, or an approximate (faiss) index, on disk.

A store of a million speakers should open in well under a second and answer in a few
milliseconds. Reading a million vectors out of SQLite takes seconds, so the store can keep a
*search index* beside its file (``speakerid index build``):

- ``<store>.index.json``: the commit point, written last and atomically: format, kind, size,
  the store state the files reflect (the store's ``store_token`` and ``vectors_seq``), and
  each file's sha256 and signature (size, inode, times);
- ``<store>.<tag>.ids.npy``: ``(N,)`` int64 speaker row ids, position -> speaker;
- ``<store>.<tag>.vectors.npy``: ``(N, D)`` float32 unit vectors, memory-mapped, so
  opening costs nothing until pages are touched;
- ``<store>.<tag>.faiss``: the approximate index over the same rows, for the kinds
  ``pq`` (an exhaustive scan of 4-bit product-quantised codes, the default from
  ``ANN_MIN_SPEAKERS`` on), ``hnsw`` (a graph) or ``ivf`` (inverted lists), the last two
  over 8-bit scalar-quantised codes.

These files are a *base*, never modified once written. Writes to the store do not touch
them: each write transaction that changes a vector bumps the store's ``vectors_seq`` and
stamps the rows it writes (``speakerid.store.db``), so a search reads, in one transaction,
the speakers changed and removed since the base (``Delta``), leaves the base's stale rows
out, scans the changed ones exactly, and checks the best candidates against the store's own
rows (``rank_kept``). A crash between a store write and anything on the index side leaves
nothing to repair: the next search reads the gap from the store. Once the changes pass
``fold_threshold``, a writer folds them into a new base (``VectorIndex.fold``: pq drops and
adds codes, no retraining), written beside the old one and published by replacing the
pointer, so readers are never blocked; codebooks are retrained only when the new rows'
quantisation error shows drift (``DRIFT_RATIO``) or by hand (``speakerid index --rebuild``).

The ids' checksum is verified at every open, the vectors' and faiss's whenever their file
changed since it was written; a base that fails, or whose vector for a candidate differs
from the store's, is rebuilt from the store, never trusted. Candidates are re-scored
exactly, so every reported score is the true cosine.

faiss is optional (``pip install faiss-cpu``); without it the kind is ``flat``.

At about 760 lines this module is past the style's ~600: the ranking and the index's files
are one job (a fold writes what ``rank_kept`` reads, and both follow one row layout); the
store-facing side already lives in ``speakerid.store.index``.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.errors import StoreError
from speakerid.vectors import score

INDEX_FORMAT = "speakerid-index"
INDEX_VERSION = 2  # 2: a store token and vectors_seq, checksums, folds
INDEX_KINDS = ("auto", "flat", "pq", "hnsw", "ivf")
ANN_MIN_SPEAKERS = 50_000  # below: the exact scan answers in a few ms, no index needed
PQ_DIMS_PER_CODE = 8  # pq kind: one 4-bit code per 8 dimensions: 12 bytes for 192-d
HNSW_M = 32  # graph neighbours per node (faiss's usual value for ~200-d vectors)
HNSW_EF_CONSTRUCTION = 40  # build-time beam: faster builds, recall recovered at search
HNSW_EF_SEARCH = 64  # search-time beam; measured in bench/bench_ann.py
IVF_LISTS_PER_SQRT_N = 4  # inverted lists: 4 * sqrt(N), the faiss guidelines' range
IVF_TRAIN_PER_LIST = 40  # training points per list for k-means (faiss warns below 39)
IVF_NPROBE = 64  # lists scanned per query; measured in bench/bench_ann.py
RERANK = 100  # candidates the approximate index proposes, re-scored exactly
SCAN_CHUNK = 262_144  # rows per matrix product in the exact scan (bounds temporaries)
SEARCH_CHUNK = 256  # queries per matrix product: bounds the (queries, speakers) score block
ADD_CHUNK = 100_000  # rows per faiss add (bounds the float32 copies faiss makes)
FOLD_MIN = 1_000  # see fold_threshold
FOLD_MAX = 20_000  # see fold_threshold
DRIFT_RATIO = 1.25  # quantisation error of new rows over the trained one that retrains
DRIFT_MIN_ROWS = 200  # fewer new rows than this say too little about drift
DRIFT_SAMPLE = 20_000  # rows the quantisation error is measured on


def import_faiss() -> Any | None:
    """The faiss module, or None when it is not installed."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


def choose_kind(n: int, kind: str = "auto", faiss: Any | None = None) -> str:
    """The index kind for ``n`` vectors: ``kind`` itself unless ``"auto"``.

    auto: ``flat`` below ``ANN_MIN_SPEAKERS`` or without faiss, else ``pq``: a scan of
    4-bit product-quantised codes (faiss's SIMD "fast scan") whose best ``RERANK`` are
    re-scored exactly. On the benchmark's vectors it kept recall@1 at 1.0 where ``hnsw``
    and ``ivf`` (kept for explicit use) lost 7-15% at their usable settings
    (docs/store-benchmark.md). Raises ``StoreError`` for an unknown kind or an approximate
    kind without faiss.
    """
    if kind not in INDEX_KINDS:
        raise StoreError(f"unknown index kind {kind!r}; one of {', '.join(INDEX_KINDS)}")
    if kind == "auto":
        return "flat" if faiss is None or n < ANN_MIN_SPEAKERS else "pq"
    if kind != "flat" and faiss is None:
        raise StoreError(
            f"index kind {kind} needs faiss, which is not installed (pip install faiss-cpu)"
        )
    return kind


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of ``(Q, N)`` scores, sorted: ``(Q, k)`` scores, indices."""
    if k < scores.shape[1]:
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        idx = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    part = np.take_along_axis(scores, idx, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(idx, order, axis=1)


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Exact top-``k`` rows of ``(N, D)`` ``vectors`` by inner product with ``(Q, D)`` queries.

    Scans in chunks of ``SCAN_CHUNK`` rows, so a memory-mapped matrix is never copied whole.
    Returns ``(Q, k)`` scores and row positions, best first.
    """
    k = min(k, len(vectors))
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), SCAN_CHUNK):
        scores, idx = top_k(score(queries, vectors[start : start + SCAN_CHUNK]), k)
        best_s, pick = top_k(np.concatenate([best_s, scores], axis=1), k)
        best_i = np.take_along_axis(np.concatenate([best_i, idx + start], axis=1), pick, axis=1)
    return best_s, best_i


@dataclass(frozen=True)
class Candidate:
    """One enrolled speaker and the cosine score of a query against their vector."""

    speaker: str
    score: float


def exact_index(faiss: Any, matrix: np.ndarray) -> Any:
    """faiss's exact inner-product index (``IndexFlatIP``) over ``(N, D)`` unit rows: the
    same cosines as ``score``, faster on many speakers."""
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    return index


def _queries(queries: np.ndarray, dim: int, where: str) -> np.ndarray:
    """``(Q, D)`` float32 queries of the store's size; a wrong size is a ``StoreError``."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if q.ndim != 2 or q.shape[1] != dim:
        raise StoreError(
            f"{where}: query vectors have size {q.shape[-1]}, the store holds size {dim}"
        )
    return q


def rank(
    names: Sequence[str],
    matrix: np.ndarray,
    queries: np.ndarray,
    k: int,
    index: Any | None = None,
    where: str = "store",
) -> list[list[Candidate]]:
    """Rank speakers by cosine score for each query, over the store's whole matrix.

    Parameters
    ----------
    names: the ``N`` speakers, row by row of ``matrix`` ``(N, D)`` (unit rows).
    queries: ``(Q, D)`` or ``(D,)`` unit vectors.
    k: candidates per query (fewer when fewer speakers are enrolled).
    index: ``exact_index`` over ``matrix`` to score with faiss, None for numpy.
    where: the store's path, for errors.

    Returns
    -------
    list of Q lists of ``Candidate``, best first.
    """
    if len(names) == 0:
        return [[] for _ in range(len(np.atleast_2d(np.asarray(queries, dtype=np.float32))))]
    q = _queries(queries, matrix.shape[1], where)
    k = min(k, len(names))
    results: list[list[Candidate]] = []
    for start in range(0, len(q), SEARCH_CHUNK):
        chunk = np.ascontiguousarray(q[start : start + SEARCH_CHUNK])
        if index is not None:
            scores, idx = index.search(chunk, k)
        else:
            scores, idx = top_k(score(chunk, matrix), k)
        results.extend(
            [Candidate(names[j], float(s)) for s, j in zip(srow, irow, strict=True) if j >= 0]
            for srow, irow in zip(scores, idx, strict=True)
        )
    return results


@dataclass(frozen=True)
class Delta:
    """What the store changed after the index's base state, read in one transaction.

    ``seq`` is the store's ``vectors_seq`` this brings the index to; ``ids`` ``(M,)`` and
    ``vectors`` ``(M, D)`` are the speakers whose vectors were written since the base;
    ``dead`` holds the base's positions whose rows are stale (changed or removed since).
    """

    seq: int
    ids: np.ndarray
    vectors: np.ndarray
    dead: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class IndexDamaged(StoreError):
    """The kept index disagrees with the store (a row's vector differs): never trusted."""


# A speaker's row as the store holds it now: name, ``changed`` seq, vector bytes.
StoreRow = tuple[str, int, bytes]


def rank_kept(
    index: VectorIndex,
    delta: Delta,
    queries: np.ndarray,
    k: int,
    rows_of: Callable[[Sequence[int]], dict[int, StoreRow]],
    where: str = "store",
) -> list[list[Candidate]]:
    """``rank`` with the index kept beside the store, brought up to date by ``delta``.

    The base index proposes its best live rows (its stale ones, ``delta.dead``, left out),
    the changed speakers are scanned exactly, and the best ``k`` of both are checked against
    the store: ``rows_of(ids)`` gives each speaker's row, read in the same transaction as
    ``delta``. A base row whose store vector differs from the index's raises
    ``IndexDamaged``: a damaged or tampered index never names a speaker.
    """
    n_total = len(index) - len(delta.dead) + len(delta)
    q = _queries(queries, index.dim, where)
    if n_total <= 0:
        return [[] for _ in range(len(q))]
    k = min(k, n_total)
    base_s, base_i, base_p = index.search_live(q, k, delta.dead)
    if len(delta):
        delta_s, delta_pos = exact_search(delta.vectors, q, k)
        delta_i = delta.ids[delta_pos]
    else:
        delta_s = np.zeros((len(q), 0), np.float32)
        delta_i = np.zeros((len(q), 0), np.int64)
    all_s = np.concatenate([base_s, delta_s], axis=1)
    all_i = np.concatenate([base_i, delta_i], axis=1)
    all_p = np.concatenate([base_p, np.full(delta_i.shape, -1, np.int64)], axis=1)
    best_s, pick = top_k(all_s, min(k, all_s.shape[1]))
    best_i = np.take_along_axis(all_i, pick, axis=1)
    best_p = np.take_along_axis(all_p, pick, axis=1)
    rows = rows_of(sorted({int(i) for i in best_i.ravel() if i >= 0}))
    results: list[list[Candidate]] = []
    for srow, irow, prow in zip(best_s, best_i, best_p, strict=True):
        ranked = []
        for s, i, pos in zip(srow, irow, prow, strict=True):
            row = rows.get(int(i))
            if i < 0 or row is None:
                continue  # removed since (a pruned log): never named
            name, changed, blob = row
            if pos >= 0 and (
                changed > index.seq or blob != np.asarray(index.vectors[pos]).tobytes()
            ):
                raise IndexDamaged(f"{where}: the search index disagrees with the store")
            ranked.append(Candidate(name, float(s)))
        results.append(ranked)
    return results


def paths(store_path: Path, tag: str) -> dict[str, Path]:
    """The index files of a store, one build or fold ``tag`` (the pointer first)."""
    stem = store_path.name
    return {
        "pointer": store_path.with_name(f"{stem}.index.json"),
        "ids": store_path.with_name(f"{stem}.{tag}.ids.npy"),
        "vectors": store_path.with_name(f"{stem}.{tag}.vectors.npy"),
        "faiss": store_path.with_name(f"{stem}.{tag}.faiss"),
    }


def pointer_path(store_path: Path) -> Path:
    """``<store>.index.json``: present exactly when the store keeps a search index."""
    return paths(store_path, "")["pointer"]


def read_pointer(store_path: Path) -> dict[str, Any] | None:
    """The pointer file's fields, None when absent or unreadable."""
    try:
        pointer = json.loads(pointer_path(store_path).read_text())
    except (OSError, ValueError):
        return None
    return pointer if isinstance(pointer, dict) else None


def fold_threshold(n: int) -> int:
    """Changed and removed speakers past which the kept index folds them in (``fold``):
    1% of the index, at least ``FOLD_MIN`` and at most ``FOLD_MAX`` (every search of a
    freshly opened store reads the changes since the base out of SQLite)."""
    return min(max(FOLD_MIN, n // 100), FOLD_MAX)


def file_checksum(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (the index files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _signature(path: Path) -> list[int]:
    """What changes when a file is rewritten: size, inode, modification and change times
    (the change time cannot be set back by the file's owner)."""
    st = path.stat()
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds, as ``speakerid index`` reports it."""

    path: str  # the pointer file
    kind: str  # flat | pq | hnsw | ivf
    speakers: int  # in the index's base files (the changes since are read from the store)
    dim: int
    generation: str  # the store state the base reflects: "<store token>:<vectors_seq>"
    build_seconds: float  # of the last build or fold
    pending: int = 0  # changed or removed speakers not folded in yet (read from the store)


class VectorIndex:
    """Speaker vectors ready for 1:N search, exact or approximate: the base of the kept
    index, immutable once saved (a fold writes a new one).

    Parameters
    ----------
    ids: ``(N,)`` int64 speaker row ids (what ``search`` returns).
    vectors: ``(N, D)`` float32 unit vectors (an array or a read-only memory map).
    ann: a faiss index over the same rows, or None for the exact scan.
    token, seq: the store (``store_token``) and its ``vectors_seq`` the rows reflect.
    """

    def __init__(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        ann: Any | None,
        kind: str,
        token: str,
        seq: int,
        build_seconds: float = 0.0,
        drift_base: float | None = None,
        tag: str = "",
        runs: Sequence[int] | None = None,
    ) -> None:
        self.ids, self.vectors, self.ann = ids, vectors, ann
        self.kind, self.token, self.seq = kind, token, seq
        self.build_seconds, self.drift_base, self.tag = build_seconds, drift_base, tag
        # Where the ids' ascending runs start: one after a build (the store's order), one
        # more per fold (its new rows go last), so that finding an id is a binary search.
        self.runs = list(runs) if runs is not None else _runs(np.asarray(ids))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def generation(self) -> str:
        return f"{self.token}:{self.seq}"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` speakers for ``(Q, D)`` unit queries: ``(Q, k')`` cosines and speaker
        ids, best first, ``k' = min(k, N)``. Approximate kinds may miss a true neighbour;
        the scores they report are exact."""
        scores, ids, _ = self.search_live(queries, k, np.zeros(0, np.int64))
        return scores, ids

    def search_live(
        self, queries: np.ndarray, k: int, dead: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``search`` leaving out the rows at positions ``dead`` (sorted): ``(Q, k')``
        cosines, speaker ids and positions, padded with ``-inf``, -1 and -1."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        live = len(self) - len(dead)
        k = max(0, min(k, live))
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_p = np.full((len(q), k), -1, np.int64)
        if k == 0:
            return out_s, out_p.copy(), out_p
        if self.ann is None:  # exact: the best k + |dead| hold k live ones, scores exact
            scores, cand = exact_search(self.vectors, q, min(len(self), k + len(dead)))
            for row, (srow, found) in enumerate(zip(scores, cand, strict=True)):
                live_at = np.flatnonzero(~np.isin(found, dead))[:k]
                out_s[row, : len(live_at)] = srow[live_at]
                out_p[row, : len(live_at)] = found[live_at]
        else:
            # Stale rows that matter are the query's neighbours (a re-enrolled speaker's old
            # vector), a few at most: widen by up to RERANK for them, not by all of them.
            wide = min(len(self), max(k, RERANK) + min(len(dead), RERANK))
            _, cand = self.ann.search(q, wide)
            for row, found in enumerate(cand):
                found = np.unique(found[found >= 0])  # sorted: the memory map read in order
                if len(dead):
                    found = found[~np.isin(found, dead, assume_unique=True)]
                exact = score(self.vectors[found], q[row])
                order = np.argsort(-exact, kind="stable")[:k]
                out_s[row, : len(order)] = exact[order]
                out_p[row, : len(order)] = found[order]
        out_i = np.where(out_p >= 0, self.ids[np.maximum(out_p, 0)], -1)
        return out_s, out_i, out_p

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Sorted positions of those of ``ids`` that this base holds (binary searches in
        each ascending run: no pass over all N ids)."""
        found = [np.zeros(0, np.int64)]
        ids = np.unique(np.asarray(ids, np.int64))
        if not len(ids):
            return found[0]
        for start, end in zip(self.runs, [*self.runs[1:], len(self)], strict=True):
            run = self.ids[start:end]
            at = np.minimum(np.searchsorted(run, ids), max(len(run) - 1, 0))
            if len(run):
                found.append(start + at[run[at] == ids])
        return np.unique(np.concatenate(found))

    def delta(self, seq: int, ids: np.ndarray, vectors: np.ndarray, removed: np.ndarray) -> Delta:
        """The store's changes since this base (``Delta``), with the stale rows' positions."""
        return Delta(seq, ids, vectors, self.positions(np.concatenate([ids, removed])))

    def advance(
        self, delta: Delta, seq: int, ids: np.ndarray, vectors: np.ndarray, removed: np.ndarray
    ) -> Delta:
        """``delta`` with the changes made after it (``seq``; ``ids``, ``vectors`` written,
        ``removed``) applied: what ``delta(seq, ...)`` since this base would read, without
        reading the earlier changes again."""
        gone = np.concatenate([ids, removed]).astype(np.int64)
        keep = ~np.isin(delta.ids, gone)
        dead = np.union1d(delta.dead, self.positions(gone)).astype(np.int64)
        return Delta(
            seq,
            np.concatenate([delta.ids[keep], ids]),
            np.concatenate([delta.vectors[keep], vectors]),
            dead,
        )

    def info(self, store_path: Path, pending: int = 0) -> IndexInfo:
        return IndexInfo(
            str(pointer_path(store_path)),
            self.kind,
            len(self),
            self.dim,
            self.generation,
            round(self.build_seconds, 2),
            pending,
        )

    # -- building, folding and files

    @classmethod
    def build(
        cls, ids: np.ndarray, vectors: np.ndarray, token: str, seq: int, kind: str = "auto"
    ) -> VectorIndex:
        """Index ``(N, D)`` unit ``vectors`` (kind: see ``choose_kind``), training any
        quantiser afresh."""
        faiss = import_faiss()
        kind = choose_kind(len(ids), kind, faiss)
        t0 = time.perf_counter()
        ann, drift = None, None
        if kind != "flat" and len(ids):
            ann, sample = _build_ann(faiss, vectors, kind)
            drift = _quantisation_error(ann, kind, sample)
        return cls(ids, vectors, ann, kind, token, seq, time.perf_counter() - t0, drift)

    def fold(self, delta: Delta, store_path: Path) -> VectorIndex | None:
        """A new base: this one without its stale rows, plus ``delta``'s rows, written
        beside ``store_path`` (the vectors streamed, never all in memory at once).

        pq folds in place (faiss ``remove_ids`` of the stale codes, ``add`` of the new
        ones); ivf re-adds every row to its kept lists; hnsw, whose graph cannot drop
        nodes, is rebuilt. Returns None, writing nothing, when the new rows' quantisation
        error exceeds ``DRIFT_RATIO`` times the trained one: the caller rebuilds.
        """
        t0 = time.perf_counter()
        if self.ann is not None and len(delta) >= DRIFT_MIN_ROWS and self.drift_base:
            now = _quantisation_error(self.ann, self.kind, delta.vectors)
            if now is not None and now > DRIFT_RATIO * self.drift_base:
                return None
        keep = np.ones(len(self), bool)
        keep[delta.dead] = False
        ids = np.concatenate([self.ids[keep], delta.ids])
        tag = secrets.token_hex(4)
        files = paths(store_path, tag)
        tmp = files["vectors"].with_name(f".{files['vectors'].name}.{os.getpid()}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, "w+", np.float32, (len(ids), self.dim))
            done = 0
            for start in range(0, len(self), ADD_CHUNK):
                part = self.vectors[start : start + ADD_CHUNK][keep[start : start + ADD_CHUNK]]
                out[done : done + len(part)] = part
                done += len(part)
            out[done:] = delta.vectors
            out.flush()
            del out
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{files['pointer']}: cannot fold the search index ({exc})") from None
        vectors = np.load(tmp, mmap_mode="r", allow_pickle=False)
        ann = self.ann
        if ann is not None and self.kind == "pq":
            ann = import_faiss().clone_index(ann)  # readers of this base keep theirs
            ann.remove_ids(np.flatnonzero(~keep).astype(np.int64))
            _add(ann, delta.vectors)
        elif ann is not None:
            ann = _build_ann(import_faiss(), vectors, self.kind, trained=ann)[0]
        folded = VectorIndex(
            ids, vectors, ann, self.kind, self.token, delta.seq, 0.0, self.drift_base, tag
        )
        folded.build_seconds = time.perf_counter() - t0
        folded.save(store_path, requested_kind(store_path), written_vectors=tmp)
        return folded

    def save(
        self, store_path: Path, requested: str = "auto", written_vectors: Path | None = None
    ) -> None:
        """Write the index files, then the pointer (atomically), then drop older files;
        called holding the store's fold lock (``speakerid.store.index``).

        ``requested`` is the kind asked for (``"auto"`` or one kind), which rebuilds reuse;
        ``written_vectors``: a temporary file already holding the vectors (a fold's).
        The pointer records each file's sha256 and signature (``_signature``).
        """
        if not self.tag:
            self.tag = secrets.token_hex(4)
        files = paths(store_path, self.tag)
        pid = os.getpid()
        written: list[Path] = [written_vectors] if written_vectors else []
        try:
            checks: dict[str, list[Any]] = {}
            for key in ("ids", "vectors", "faiss"):
                if key == "faiss" and self.ann is None:
                    continue
                tmp = files[key].with_name(f".{files[key].name}.{pid}.tmp")
                if key == "vectors" and written_vectors is not None:
                    tmp = written_vectors
                elif key == "faiss":
                    written.append(tmp)
                    import_faiss().write_index(self.ann, str(tmp))
                else:
                    written.append(tmp)
                    with open(tmp, "wb") as fh:
                        np.save(fh, np.asarray(getattr(self, key)), allow_pickle=False)
                _fsync(tmp)
                checksum = file_checksum(tmp)
                os.replace(tmp, files[key])
                checks[key] = [checksum, _signature(files[key])]
            pointer = {
                "format": INDEX_FORMAT,
                "version": INDEX_VERSION,
                "token": self.token,
                "seq": self.seq,
                "tag": self.tag,
                "kind": self.kind,
                "requested": requested,
                "speakers": len(self),
                "dim": self.dim,
                "build_seconds": round(self.build_seconds, 3),
                "drift_base": self.drift_base,
                "runs": [int(r) for r in self.runs],
                "files": checks,
            }
            tmp = files["pointer"].with_name(f".{files['pointer'].name}.{pid}.tmp")
            written.append(tmp)
            tmp.write_text(json.dumps(pointer, indent=1))
            _fsync(tmp)
            os.replace(tmp, files["pointer"])
        except OSError as exc:
            for leftover in written:
                leftover.unlink(missing_ok=True)
            raise StoreError(
                f"{files['pointer']}: cannot write the search index ({exc.strerror or exc})"
            ) from None
        _remove_files(store_path, keep=self.tag)

    @classmethod
    def load(cls, store_path: Path, token: str, seq: int) -> VectorIndex | None:
        """The index beside ``store_path`` if it is whole and is a past state of this
        store (its ``store_token``, a ``vectors_seq`` not past ``seq``); None when absent,
        another store's, ahead of the store, damaged, failing its checksums, or needing a
        missing faiss. The ids' checksum is verified at every load; the vectors' and
        faiss's when their file's signature differs from the one recorded."""
        pointer = read_pointer(store_path)
        try:
            if (
                pointer is None
                or pointer.get("format") != INDEX_FORMAT
                or pointer.get("version") != INDEX_VERSION
                or pointer.get("token") != token
                or not 0 <= int(pointer["seq"]) <= seq
            ):
                return None
            tag, checks = str(pointer["tag"]), pointer["files"]
            files = paths(store_path, tag)
            n, dim, kind = int(pointer["speakers"]), int(pointer["dim"]), str(pointer["kind"])
            if not {"ids", "vectors"} <= set(checks):
                return None
            for key, (checksum, signature) in checks.items():
                changed = key == "ids" or _signature(files[key]) != signature
                if changed and file_checksum(files[key]) != checksum:
                    return None
            ids = np.load(files["ids"], mmap_mode="r", allow_pickle=False)
            vectors = np.load(files["vectors"], mmap_mode="r", allow_pickle=False)
            if ids.shape != (n,) or vectors.shape != (n, dim) or vectors.dtype != np.float32:
                return None
            ann = None
            if kind != "flat" and n:
                faiss = import_faiss()
                if faiss is None or "faiss" not in checks:
                    return None
                ann = faiss.read_index(str(files["faiss"]))
                if ann.ntotal != n or ann.d != dim:
                    return None
                _set_search_params(ann, kind)
            drift = pointer.get("drift_base")
            return cls(
                np.asarray(ids, np.int64),
                vectors,
                ann,
                kind,
                token,
                int(pointer["seq"]),
                float(pointer["build_seconds"]),
                float(drift) if drift else None,
                tag,
                [int(r) for r in pointer["runs"]],
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError):
            return None  # missing, truncated or foreign files: rebuilt by the caller


def _runs(ids: np.ndarray) -> list[int]:
    """Start positions of the ascending runs of ``ids``."""
    if not len(ids):
        return [0]
    return [0, *(int(i) + 1 for i in np.flatnonzero(np.diff(ids) <= 0))]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def requested_kind(store_path: Path) -> str:
    """The kind the kept index was asked to be (``"auto"`` when unreadable)."""
    kind = (read_pointer(store_path) or {}).get("requested", "auto")
    return kind if kind in INDEX_KINDS else "auto"


def remove_index(store_path: Path) -> bool:
    """Delete the index files beside a store; True if there was an index."""
    pointer = pointer_path(store_path)
    existed = pointer.exists()
    pointer.unlink(missing_ok=True)
    _remove_files(store_path, keep=None)
    return existed


def _remove_files(store_path: Path, keep: str | None) -> None:
    """Drop index files of tags other than ``keep``, and temporary files a killed writer
    left (the caller holds the store's fold lock, so no live writer has any). Best effort:
    another process may still have older files mapped, which POSIX allows."""
    prefix = f"{store_path.name}."
    for path in store_path.parent.glob(f"{glob.escape(store_path.name)}.*"):
        rest = path.name[len(prefix) :]
        parts = rest.split(".", 1)
        ours = len(parts) == 2 and parts[1] in ("ids.npy", "vectors.npy", "faiss")
        if ours and parts[0] != keep:
            path.unlink(missing_ok=True)
    for path in store_path.parent.glob(f".{glob.escape(store_path.name)}.*.tmp"):
        path.unlink(missing_ok=True)


def _add(ann: Any, vectors: np.ndarray) -> None:
    for start in range(0, len(vectors), ADD_CHUNK):
        ann.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))


def _build_ann(
    faiss: Any, vectors: np.ndarray, kind: str, trained: Any | None = None
) -> tuple[Any, np.ndarray]:
    """A filled faiss index over ``vectors`` (inner product = cosine on unit rows) and the
    sample it was trained on: trained here, or an empty copy of ``trained``'s quantiser."""
    n, dim = vectors.shape
    if kind == "pq":
        factory = f"PQ{_pq_codes(dim)}x4fs"
        sample = vectors[:: max(1, n // 200_000)]  # k-means of each code's 16 centroids
    elif kind == "hnsw":
        factory = f"HNSW{HNSW_M},SQ8"
        sample = vectors[:: max(1, n // 100_000)]  # the quantiser's value ranges
    else:
        n_lists = max(1, int(IVF_LISTS_PER_SQRT_N * np.sqrt(n)))
        factory = f"IVF{n_lists},SQ8"
        sample = vectors[:: max(1, n // (IVF_TRAIN_PER_LIST * n_lists))]
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if trained is not None and kind != "hnsw":
        ann = faiss.clone_index(trained)
        ann.reset()  # the codebooks or lists' centroids stay
    else:
        ann = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        if kind == "hnsw":
            faiss.downcast_index(ann).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        ann.train(sample)
    _add(ann, vectors)
    _set_search_params(ann, kind)
    return ann, sample


def _quantisation_error(ann: Any, kind: str, x: np.ndarray) -> float | None:
    """How far ``(n, D)`` unit vectors lie from what the trained quantiser represents: the
    mean squared pq reconstruction error (pq), or the mean of 1 - the best inner product with
    a list centroid (ivf); None for hnsw (its scalar quantiser has nothing to drift)."""
    faiss = import_faiss()
    x = np.ascontiguousarray(x[:DRIFT_SAMPLE], dtype=np.float32)
    if not len(x) or kind not in ("pq", "ivf"):
        return None
    if kind == "pq":
        pq = faiss.downcast_index(ann).pq
        back = pq.decode(pq.compute_codes(x))
        return float(np.mean(np.sum((x - back) ** 2, axis=1)))
    best, _ = faiss.extract_index_ivf(ann).quantizer.search(x, 1)
    return float(np.mean(1.0 - best[:, 0]))


def _pq_codes(dim: int) -> int:
    """Sub-quantisers of the pq kind: about one per ``PQ_DIMS_PER_CODE`` dimensions, a
    divisor of ``dim`` and even (fast scan packs codes in pairs)."""
    want = max(2, dim // PQ_DIMS_PER_CODE)
    for m in range(want, 0, -1):
        if dim % m == 0 and m % 2 == 0:
            return m
    return dim if dim % 2 == 0 else 1  # odd sizes: no fast-scan layout fits well


def _set_search_params(ann: Any, kind: str) -> None:
    if kind == "pq":
        return  # an exhaustive scan of the codes: nothing to tune
    import_faiss().ParameterSpace().set_index_parameter(
        ann,
        "efSearch" if kind == "hnsw" else "nprobe",
        max(HNSW_EF_SEARCH, RERANK) if kind == "hnsw" else IVF_NPROBE,
    )
