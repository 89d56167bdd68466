"""1:N search over many speakers: an exact scan, or an approximate (faiss) index, on disk.

A store of a million speakers should open in well under a second and answer in a few
milliseconds. Reading a million vectors out of SQLite takes seconds, so the store can keep a
*search index* beside its file (``speakerid index build``):

- ``<store>.index.json``: the commit point, written last and atomically: format, kind, size,
  and the store's ``vectors_generation`` the files were built from;
- ``<store>.<generation>.ids.npy``: ``(N,)`` int64 speaker row ids, position -> speaker;
- ``<store>.<generation>.vectors.npy``: ``(N, D)`` float32 unit vectors, memory-mapped, so
  opening costs nothing until pages are touched;
- ``<store>.<generation>.faiss``: the approximate index over the same rows, for the kinds
  ``pq`` (an exhaustive scan of 4-bit product-quantised codes, the default from
  ``ANN_MIN_SPEAKERS`` on), ``hnsw`` (a graph) or ``ivf`` (inverted lists), the last two
  over 8-bit scalar-quantised codes.

The store changes ``vectors_generation`` (a random token) in every write transaction that
changes a speaker's vector. An index whose generation differs from the store's, or whose
files are missing or the wrong size, is never used: the store rebuilds it (see
``SpeakerStore.search``), so a crash between a store write and an index rebuild is always
detected. Candidates the approximate index proposes are re-scored exactly against the
memory-mapped vectors, so every reported score is the true cosine.

faiss is optional (``pip install 'speakerid[ann]'``); without it the kind is ``flat``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.errors import StoreError
from speakerid.vectors import score

INDEX_FORMAT = "speakerid-index"
INDEX_VERSION = 1
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


def rank_index(
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    names_of: Callable[[Sequence[int]], dict[int, str]],
    where: str = "store",
) -> list[list[Candidate]]:
    """``rank`` with a search index kept beside the store; ``names_of(ids)`` names the
    speaker row ids it returns (a speaker removed meanwhile is left out)."""
    if len(index) == 0:
        return [[] for _ in range(len(np.atleast_2d(np.asarray(queries, dtype=np.float32))))]
    q = _queries(queries, index.dim, where)
    scores, ids = index.search(q, k)
    names = names_of(sorted({int(i) for i in ids.ravel() if i >= 0}))
    return [
        [Candidate(names[int(i)], float(s)) for s, i in zip(srow, irow, strict=True) if i in names]
        for srow, irow in zip(scores, ids, strict=True)
    ]


def paths(store_path: Path, generation: str) -> dict[str, Path]:
    """The index files of a store at one generation (the pointer first)."""
    stem = store_path.name
    return {
        "pointer": store_path.with_name(f"{stem}.index.json"),
        "ids": store_path.with_name(f"{stem}.{generation}.ids.npy"),
        "vectors": store_path.with_name(f"{stem}.{generation}.vectors.npy"),
        "faiss": store_path.with_name(f"{stem}.{generation}.faiss"),
    }


def pointer_path(store_path: Path) -> Path:
    """``<store>.index.json``: present exactly when the store keeps a search index."""
    return paths(store_path, "")["pointer"]


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds, as ``speakerid index`` reports it."""

    path: str  # the pointer file
    kind: str  # flat | hnsw | ivf
    speakers: int
    dim: int
    generation: str  # the store's vectors_generation it was built from
    build_seconds: float


class VectorIndex:
    """Speaker vectors ready for 1:N search, exact or approximate.

    Parameters
    ----------
    ids: ``(N,)`` int64 speaker row ids (what ``search`` returns).
    vectors: ``(N, D)`` float32 unit vectors (an array or a read-only memory map).
    ann: a faiss index over the same rows, or None for the exact scan.
    """

    def __init__(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        ann: Any | None,
        kind: str,
        generation: str,
        build_seconds: float = 0.0,
    ) -> None:
        self.ids, self.vectors, self.ann = ids, vectors, ann
        self.kind, self.generation, self.build_seconds = kind, generation, build_seconds

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` speakers for ``(Q, D)`` unit queries: ``(Q, k')`` cosines and speaker
        ids, best first, ``k' = min(k, N)``. Approximate kinds may miss a true neighbour;
        the scores they report are exact."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if self.ann is None:
            scores, pos = exact_search(self.vectors, q, k)
            return scores, self.ids[pos]
        wide = min(max(k, RERANK), len(self))
        _, cand = self.ann.search(q, wide)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for row, found in enumerate(cand):
            found = np.unique(found[found >= 0])  # sorted rows read the memory map in order
            exact = score(self.vectors[found], q[row])
            order = np.argsort(-exact, kind="stable")[:k]
            out_s[row, : len(order)] = exact[order]
            out_i[row, : len(order)] = self.ids[found[order]]
        return out_s, out_i

    def info(self, store_path: Path) -> IndexInfo:
        return IndexInfo(
            str(pointer_path(store_path)),
            self.kind,
            len(self),
            self.dim,
            self.generation,
            round(self.build_seconds, 2),
        )

    # -- building and files

    @classmethod
    def build(
        cls, ids: np.ndarray, vectors: np.ndarray, generation: str, kind: str = "auto"
    ) -> VectorIndex:
        """Index ``(N, D)`` unit ``vectors`` (kind: see ``choose_kind``)."""
        faiss = import_faiss()
        kind = choose_kind(len(ids), kind, faiss)
        t0 = time.perf_counter()
        ann = None
        if kind != "flat" and len(ids):
            ann = _build_ann(faiss, vectors, kind)
        return cls(ids, vectors, ann, kind, generation, time.perf_counter() - t0)

    def save(self, store_path: Path, requested: str = "auto") -> None:
        """Write the index files, then the pointer (atomically), then drop older files.

        ``requested`` is the kind asked for (``"auto"`` or one kind), which rebuilds reuse.
        """
        files = paths(store_path, self.generation)
        pid = os.getpid()
        written: list[Path] = []
        try:
            for key in ("ids", "vectors", "faiss"):
                if key == "faiss" and self.ann is None:
                    continue
                tmp = files[key].with_name(f".{files[key].name}.{pid}.tmp")
                written.append(tmp)
                if key == "faiss":
                    import_faiss().write_index(self.ann, str(tmp))
                else:
                    with open(tmp, "wb") as fh:
                        np.save(fh, getattr(self, key), allow_pickle=False)
                        fh.flush()
                        os.fsync(fh.fileno())
                os.replace(tmp, files[key])
            pointer = {
                "format": INDEX_FORMAT,
                "version": INDEX_VERSION,
                "generation": self.generation,
                "kind": self.kind,
                "requested": requested,
                "speakers": len(self),
                "dim": self.dim,
                "build_seconds": round(self.build_seconds, 3),
            }
            tmp = files["pointer"].with_name(f".{files['pointer'].name}.{pid}.tmp")
            written.append(tmp)
            tmp.write_text(json.dumps(pointer, indent=1))
            os.replace(tmp, files["pointer"])
        except OSError as exc:
            for leftover in written:
                leftover.unlink(missing_ok=True)
            raise StoreError(
                f"{files['pointer']}: cannot write the search index ({exc.strerror or exc})"
            ) from None
        _remove_files(store_path, keep=self.generation)

    @classmethod
    def load(cls, store_path: Path, generation: str) -> VectorIndex | None:
        """The index beside ``store_path`` if it was built from ``generation`` and is whole;
        None when absent, stale (another generation), damaged, or needing a missing faiss."""
        try:
            pointer = json.loads(pointer_path(store_path).read_text())
            if (
                pointer.get("format") != INDEX_FORMAT
                or pointer.get("version") != INDEX_VERSION
                or pointer.get("generation") != generation
            ):
                return None
            files = paths(store_path, generation)
            n, dim, kind = int(pointer["speakers"]), int(pointer["dim"]), str(pointer["kind"])
            ids = np.load(files["ids"], mmap_mode="r", allow_pickle=False)
            vectors = np.load(files["vectors"], mmap_mode="r", allow_pickle=False)
            if ids.shape != (n,) or vectors.shape != (n, dim) or vectors.dtype != np.float32:
                return None
            ann = None
            if kind != "flat" and n:
                faiss = import_faiss()
                if faiss is None:
                    return None
                ann = faiss.read_index(str(files["faiss"]))
                if ann.ntotal != n or ann.d != dim:
                    return None
                _set_search_params(ann, kind)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError):
            return None  # missing, truncated or foreign files: rebuilt by the caller
        return cls(np.asarray(ids), vectors, ann, kind, generation, pointer["build_seconds"])


def requested_kind(store_path: Path) -> str:
    """The kind the kept index was asked to be (``"auto"`` when unreadable)."""
    try:
        kind = json.loads(pointer_path(store_path).read_text()).get("requested", "auto")
    except (OSError, ValueError, AttributeError):
        return "auto"
    return kind if kind in INDEX_KINDS else "auto"


def remove_index(store_path: Path) -> bool:
    """Delete the index files beside a store; True if there was an index."""
    pointer = pointer_path(store_path)
    existed = pointer.exists()
    pointer.unlink(missing_ok=True)
    _remove_files(store_path, keep=None)
    return existed


def _remove_files(store_path: Path, keep: str | None) -> None:
    """Drop index files of generations other than ``keep`` (best effort: another process
    may still have older ones mapped, which POSIX allows)."""
    prefix = f"{store_path.name}."
    for path in store_path.parent.glob(f"{store_path.name}.*"):
        rest = path.name[len(prefix) :]
        parts = rest.split(".", 1)
        ours = len(parts) == 2 and parts[1] in ("ids.npy", "vectors.npy", "faiss")
        if ours and parts[0] != keep:
            path.unlink(missing_ok=True)


def _build_ann(faiss: Any, vectors: np.ndarray, kind: str) -> Any:
    """A trained, filled faiss index over ``vectors`` (inner product = cosine on unit rows)."""
    n, dim = vectors.shape
    if kind == "pq":
        ann = faiss.index_factory(dim, f"PQ{_pq_codes(dim)}x4fs", faiss.METRIC_INNER_PRODUCT)
        sample = vectors[:: max(1, n // 200_000)]  # k-means of each code's 16 centroids
    elif kind == "hnsw":
        ann = faiss.index_factory(dim, f"HNSW{HNSW_M},SQ8", faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(ann).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        sample = vectors[:: max(1, n // 100_000)]  # the quantiser's value ranges
    else:
        n_lists = max(1, int(IVF_LISTS_PER_SQRT_N * np.sqrt(n)))
        ann = faiss.index_factory(dim, f"IVF{n_lists},SQ8", faiss.METRIC_INNER_PRODUCT)
        sample = vectors[:: max(1, n // (IVF_TRAIN_PER_LIST * n_lists))]
    ann.train(np.ascontiguousarray(sample, dtype=np.float32))
    for start in range(0, n, ADD_CHUNK):
        ann.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    _set_search_params(ann, kind)
    return ann


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
