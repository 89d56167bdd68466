"""1:N search latency and load time of the enrollment store for 10^3 ... 10^6 speakers.

Random unit vectors (no audio) are inserted through ``SpeakerStore.add_vectors`` into a
fresh SQLite store per size; the store is then reopened and timed:

- load: the first ``matrix()`` call of a new ``SpeakerStore`` (SQLite -> (N, D) float32);
- search: ``store.search(query, top_k)`` for one query (median over ``--repeats``), which is
  what ``speakerid identify`` does after embedding; and per query in a batch of
  ``--batch`` queries (one matrix product, as ``identify`` does for many files);
- matmul: the bare ``matrix @ query`` + top-k, for comparison.

Sizes above ``--sqlite-max`` skip SQLite and time the in-memory search only (said so in
the table). Usage::

    python bench/bench_store.py                       # 1e3 1e4 1e5 1e6, writes docs/
                                                      # (D: the shipped model's, 256)
    python bench/bench_store.py --sizes 1000 10000 --out -   # print the table only
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import machine_line

from speakerid.store.search import top_k
from speakerid.store.speakers import SpeakerStore
from speakerid.vectors import score

FINGERPRINT = "bench" + "0" * 59  # a stand-in model identity
ANN_SECTION = "## Approximate search"  # the part of the report that bench_ann.py's tables fill


def shipped_dim() -> int:
    """Embedding size of the shipped model (``models/default.safetensors``)."""
    # torch only when the size is not given
    from speakerid.embedding.backends.torch import load_model

    return load_model().encoder.config.embedding_dim


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unit_vectors(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        out[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def bench_size(
    n: int, args: argparse.Namespace, workdir: Path, rng: np.random.Generator
) -> dict[str, float | str | None]:
    vectors = unit_vectors(rng, n, args.dim)
    queries = unit_vectors(rng, args.batch, args.dim)
    row: dict[str, float | str | None] = {"n": n, "insert": None, "db_mb": None, "load": None}
    row.update(index_kind=None, index_build=None, index_open=None, index_ms=None)
    if n <= args.sqlite_max:
        path = workdir / f"store-{n}.sqlite"
        names = [f"spk{i:07d}" for i in range(n)]
        start = time.perf_counter()
        with SpeakerStore(path) as store:
            store.add_vectors(names, vectors, fingerprint=FINGERPRINT, validate=False)
        row["insert"] = time.perf_counter() - start
        row["db_mb"] = path.stat().st_size / 1e6
        del names
        store = SpeakerStore(path, use_faiss=False if args.numpy_only else None)
        start = time.perf_counter()
        store.matrix()
        row["load"] = time.perf_counter() - start
        search = store.search
    else:
        store = None
        matrix = np.ascontiguousarray(vectors)
        names = [f"spk{i:07d}" for i in range(n)]

        def search(q: np.ndarray, k: int) -> list:  # the same ranking code, no SQLite
            scores, idx = top_k(score(np.atleast_2d(q), matrix), k)
            return [
                [(names[j], s) for s, j in zip(sr, ir, strict=True)]
                for sr, ir in zip(scores, idx, strict=True)
            ]

    row["search_ms"] = 1e3 * median_seconds(lambda: search(queries[0], args.top), args.repeats)
    batch_repeats = max(3, args.repeats // 5)
    row["batch_ms"] = (
        1e3 * median_seconds(lambda: search(queries, args.top), batch_repeats) / len(queries)
    )
    mat = vectors
    row["matmul_ms"] = 1e3 * median_seconds(
        lambda: top_k(score(mat, queries[0])[None], args.top), args.repeats
    )
    row["path"] = "SQLite store" if store is not None else "in-memory matrix only"
    if store is not None and args.index:
        store.close()
        store = SpeakerStore(path)
        start = time.perf_counter()
        info = store.build_index(args.index)
        row["index_build"] = time.perf_counter() - start
        row["index_kind"] = info.kind
        store.close()
        start = time.perf_counter()  # what identify pays before its first answer
        store = SpeakerStore(path)
        store.search(queries[0], args.top)
        row["index_open"] = time.perf_counter() - start
        row["index_ms"] = 1e3 * median_seconds(
            lambda: store.search(queries[0], args.top), args.repeats
        )
    if store is not None:
        store.close()
        for f in workdir.glob(f"store-{n}.sqlite*"):
            f.unlink()
    return row


def fmt(value: float | str | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = [
        "| speakers | path | insert (s) | store size (MB) | load (s) | search, 1 query (ms) "
        "| search, per query in a batch (ms) | bare matmul + top-k (ms) "
        "| kept index | index build (s) | open + first search, with index (s) "
        "| search, 1 query, with index (ms) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['path']} | {fmt(r['insert'], '.2f')} | {fmt(r['db_mb'], '.0f')} "
            f"| {fmt(r['load'], '.3f')} | {fmt(r['search_ms'], '.3f')} "
            f"| {fmt(r['batch_ms'], '.4f')} | {fmt(r['matmul_ms'], '.3f')} "
            f"| {r['index_kind'] or '-'} | {fmt(r['index_build'], '.1f')} "
            f"| {fmt(r['index_open'], '.3f')} | {fmt(r['index_ms'], '.3f')} |"
        )
    return "\n".join(lines)


def write_up(args: argparse.Namespace, rows: list[dict], backend: str) -> str:
    """The markdown report: the machine, the command line, the table and its notes."""
    command = "python bench/bench_store.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    return "\n".join(
        [
            "# Enrollment store benchmark",
            "",
            f"Machine: {machine_line()}; numpy {np.__version__}.",
            f"Command: `{command}` (D = {args.dim}, top {args.top}, median of {args.repeats} "
            f"single searches; batch of {args.batch} queries).",
            "",
            table(rows),
            "",
            "Notes:",
            "",
            "- *insert*: `SpeakerStore.add_vectors` in one transaction (each speaker also gets "
            "one `(imported)` recording row, whose embedding is the speaker's vector, stored "
            "once); *load*: the first `matrix()` of a freshly opened store, SQLite rows -> "
            "one contiguous float32 "
            f"matrix ({args.dim * 4} bytes per speaker, "
            f"{max(args.sizes) * args.dim * 4 / 1e6:.0f} MB for {max(args.sizes):,}).",
            "- *search, 1 query*: `SpeakerStore.search(q, top_k)` on the loaded store, the cost "
            "`speakerid identify` adds after embedding the file: one data-version check, one "
            "matrix-vector product, `argpartition` top-k. *per query in a batch*: the same with "
            f"{args.batch} queries at once (one matrix product), divided by {args.batch}.",
            f"- search backend: {backend}. With faiss installed, `SpeakerStore` uses "
            "`IndexFlatIP` (exact) automatically; `--numpy-only` forces numpy.",
            "- *kept index* (`--index`, `speakerid index`): the search index beside the store "
            "(speakerid/store/search.py); *open + first search*: a new `SpeakerStore` answering "
            "its first query, which with an index reads no vectors out of SQLite (they are "
            "memory-mapped); *search with index*: later queries.",
            "- The machine's cores are shared with other jobs, so the numbers are indicative "
            "(a few tens of percent run to run).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument(
        "--dim", type=int, default=None, help="embedding size (default: the shipped model's)"
    )
    parser.add_argument("--top", type=int, default=5, help="candidates per query")
    parser.add_argument("--repeats", type=int, default=30, help="timed single searches")
    parser.add_argument("--batch", type=int, default=100, help="queries in the batch search")
    parser.add_argument(
        "--sqlite-max",
        type=int,
        default=10**6,
        help="larger sizes skip SQLite and time the in-memory search only",
    )
    parser.add_argument("--numpy-only", action="store_true", help="do not use faiss")
    parser.add_argument(
        "--index",
        default=None,
        help="also build a kept search index of this kind (auto | flat | pq | hnsw | ivf) "
        "and time opening the store with it",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the stores go")
    parser.add_argument("--out", default="docs/store-benchmark.md", help="markdown file or -")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dim is None:
        args.dim = shipped_dim()

    rng = np.random.default_rng(args.seed)
    has_faiss = importlib.util.find_spec("faiss") is not None
    backend = "faiss" if has_faiss and not args.numpy_only else "numpy (faiss not installed)"
    if has_faiss and args.numpy_only:
        backend = "numpy (--numpy-only)"
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            row = bench_size(n, args, Path(tmp), rng)
            rows.append(row)
            print(
                f"{n:>9,}: insert {fmt(row['insert'], '.2f')} s, load {fmt(row['load'], '.3f')} s,"
                f" search {row['search_ms']:.3f} ms, batch {row['batch_ms']:.4f} ms/query",
                file=sys.stderr,
                flush=True,
            )
    report = write_up(args, rows, backend)
    previous = Path(args.out).read_text() if args.out != "-" and Path(args.out).exists() else ""
    if ANN_SECTION in previous:  # bench_ann.py's results, pasted below, are kept
        report += "\n" + previous[previous.index(ANN_SECTION) :]
    if args.out == "-":
        print(report)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
        print(report)


if __name__ == "__main__":
    main()
