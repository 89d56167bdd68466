"""Approximate 1:N search (``speakerid.store.search``) on synthetic unit vectors: build time,
memory, open time, query latency and recall@1 against the exact scan.

The N vectors are random unit vectors of dimension D (192 by default: CAM++'s size),
written in chunks to a memory-mapped ``.npy`` in a scratch folder, so the benchmark itself
holds little beyond what the index needs. Queries are noisy copies of random enrolled
vectors at cosine ``--query-cos`` to their source (0.7: a typical same-speaker score), as a
new recording of an enrolled speaker is; the ground truth is the exact scan's top 1.

Each index is built by ``VectorIndex.build`` (the code ``speakerid index`` runs), saved,
reopened by ``VectorIndex.load`` (timed: the open time a store with a kept index adds), and
queried one query at a time through ``VectorIndex.search`` (approximate candidates re-scored
exactly against the memory-mapped vectors). Usage::

    python bench/bench_ann.py --n 1000000 --kinds flat ivf hnsw     # table on stdout
    python bench/bench_ann.py --n 10000000 --kinds ivf --nprobe 64 128 256
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from speakerid.store import search
from speakerid.store.search import VectorIndex, exact_search

CHUNK = 250_000  # rows generated (and scanned for the ground truth) at a time


def rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_vectors(path: Path, n: int, dim: int, seed: int) -> np.memmap:
    """``(n, dim)`` random unit float32 vectors in a ``.npy`` memory map."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        x = rng.standard_normal((min(CHUNK, n - start), dim), dtype=np.float32)
        out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def make_queries(vectors: np.ndarray, count: int, cos: float, seed: int) -> np.ndarray:
    """Unit queries at cosine ``cos`` (in expectation) to random rows of ``vectors``."""
    rng = np.random.default_rng(seed + 1)
    rows = np.sort(rng.choice(len(vectors), size=count, replace=False))
    dim = vectors.shape[1]
    noise = rng.standard_normal((count, dim)).astype(np.float32)
    noise -= (noise * vectors[rows]).sum(1, keepdims=True) * vectors[rows]  # orthogonal part
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = cos * vectors[rows] + np.sqrt(1 - cos**2) * noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def time_queries(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, list]:
    """Top-1 ids of each query searched alone, and each query's seconds."""
    index.search(queries[:5], k)  # warm-up
    top, seconds = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, ids = index.search(q[None], k)
        seconds.append(time.perf_counter() - t0)
        top.append(ids[0, 0])
    return np.asarray(top), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--query-cos", type=float, default=0.7)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--flat-queries", type=int, default=100, help="the exact scan is slow")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the vectors")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench_ann.", dir=args.scratch))
    try:
        t0 = time.perf_counter()
        vectors = make_vectors(scratch / "vectors.npy", args.n, args.dim, args.seed)
        queries = make_queries(vectors, args.queries, args.query_cos, args.seed)
        print(f"# {args.n:,} x {args.dim} vectors made in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        truth = np.concatenate(
            [
                exact_search(vectors, queries[i : i + 100], 1)[1][:, 0]
                for i in range(0, len(queries), 100)
            ]
        )
        exact_s = (time.perf_counter() - t0) / len(queries)
        print(f"# exact ground truth: {1000 * exact_s:.1f} ms per query in batches of 100")
        ids = np.arange(args.n, dtype=np.int64)
        print(
            "| N | kind | parameter | build (s) | RSS after build (MB) | files (MB) | open (s) "
            "| p50 (ms) | p99 (ms) | recall@1 |"
        )
        print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
        for kind in args.kinds:
            store_path = scratch / f"{kind}.sqlite"  # only names the index files
            rss0 = rss_mb()
            t0 = time.perf_counter()
            built = VectorIndex.build(ids, vectors, "bench", 1, kind)
            build_s = time.perf_counter() - t0
            rss = rss_mb()
            built.save(store_path)
            del built
            size = sum(p.stat().st_size for p in scratch.glob(f"{kind}.sqlite.*")) / 2**20
            t0 = time.perf_counter()
            index = VectorIndex.load(store_path, "bench", 1)
            open_s = time.perf_counter() - t0
            assert index is not None
            if kind == "flat":
                settings = [("exact", None)]
            elif kind == "pq":
                settings = [(f"all codes, best {search.RERANK} re-scored", None)]
            elif kind == "hnsw":
                settings = [(f"efSearch {ef}", ("efSearch", ef)) for ef in args.ef]
            else:
                settings = [(f"nprobe {p}", ("nprobe", p)) for p in args.nprobe]
            for label, param in settings:
                if param is not None:
                    search.import_faiss().ParameterSpace().set_index_parameter(index.ann, *param)
                count = args.flat_queries if kind == "flat" else len(queries)
                top, secs = time_queries(index, queries[:count], args.top)
                ms = np.asarray(secs) * 1000
                recall = float(np.mean(top == truth[:count]))
                print(
                    f"| {args.n:,} | {kind} | {label} | {build_s:.0f} | {rss - rss0:.0f} | "
                    f"{size:.0f} | {open_s:.2f} | {statistics.median(ms):.2f} | "
                    f"{np.percentile(ms, 99):.2f} | {recall:.3f} |",
                    flush=True,
                )
            del index
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"# peak RSS of the benchmark process: {peak:.0f} MB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
