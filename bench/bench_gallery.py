"""A growing gallery: bulk import, writes with a kept index, queries during writes, recovery.

For each size N, random unit vectors (no audio) of dimension ``--dim``:

- *import*: ``enroll --from-npz``'s work on an ``enroll-dir --out`` style file of N speakers
  (one recording each): ``npz.load_embeddings`` then ``bulk.enroll_embeddings`` (wall and
  CPU seconds of each), for sizes up to ``--npz-max``; above it ``SpeakerStore.add_vectors``
  in one call; the store's bytes per speaker;
- *index*: ``build_index()`` (auto kind: pq from 50,000 speakers), its files' sizes, and the
  open + first search of a new ``SpeakerStore`` (what ``identify`` pays before its answer);
- *one enroll*: a new ``SpeakerStore`` adding one speaker (``add_recordings``, one
  transaction, the index left as it is) and the first search after it, each in a fresh
  store object (the cost ``speakerid enroll`` / ``identify`` add to the model's);
- *1,000 removals*: one ``remove`` (transaction) each, then ``build_index()`` folding them in;
- *queries during writes*: single-query searches (``--queries``) in this process while a
  child process enrolls one speaker per transaction as fast as it can, against the same
  searches with no writer (p50 / p99);
- *recovery*: a child enrolling in a loop is killed (SIGKILL) mid-fold; then the open +
  first search of a new store object, and the fold that catches the index up.

Usage::

    python bench/bench_gallery.py --sizes 100000 1000000 --workdir /tmp/gal
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import time
from pathlib import Path

import numpy as np

from speakerid.embedding import bulk
from speakerid.store import npz, search
from speakerid.store.speakers import SpeakerStore

FINGERPRINT = "bench" + "0" * 59  # a stand-in model identity


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        x = rng.standard_normal((min(100_000, n - s), dim), dtype=np.float32)
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _writer(path: Path, dim: int, stop: multiprocessing.Event, done: multiprocessing.Value) -> None:
    rng = np.random.default_rng(os.getpid())
    with SpeakerStore(path) as store:
        i = 0
        while not stop.is_set():
            store.add_recordings(
                f"w{os.getpid()}-{i}", [f"w{i}.wav"], unit(rng, 1, dim), fingerprint=FINGERPRINT
            )
            i += 1
            done.value = i


def _kill_mid_fold(path: Path, dim: int, fold_at: int) -> None:
    """Enroll until a fold starts, and die (SIGKILL) as it publishes its pointer."""
    search.FOLD_MIN = search.FOLD_MAX = fold_at
    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith(".index.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)

    os.replace = replace  # type: ignore[assignment]
    rng = np.random.default_rng(7)
    with SpeakerStore(path) as store:
        for i in range(10**9):
            store.add_recordings(f"k{i}", [f"k{i}.wav"], unit(rng, 1, dim), fingerprint=FINGERPRINT)


def timed_queries(store: SpeakerStore, queries: np.ndarray, top: int) -> list[float]:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        store.search(q, top)
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def bench(n: int, args: argparse.Namespace) -> dict[str, object]:
    rng = np.random.default_rng(n)
    work = Path(args.workdir) / f"g{n}"
    work.mkdir(parents=True, exist_ok=True)
    for f in work.iterdir():
        f.unlink()
    path = work / "store.sqlite"
    vectors = unit(rng, n, args.dim)
    row: dict[str, object] = {"n": n}
    if n <= args.npz_max:
        npz_file = work / "import.npz"
        keys = {f"root/spk{i:07d}/a.wav": vectors[i] for i in range(n)}
        npz.save_embeddings(npz_file, keys, npz.header(FINGERPRINT, args.dim, "bench", "root"))
        del keys
        t = clock()
        emb = npz.load_embeddings(npz_file)
        row["npz_read"] = since(t)
        t = clock()
        with SpeakerStore(path) as store:
            bulk.enroll_embeddings(store, emb)
        row["import"] = since(t)
        row["import_how"] = "enroll_embeddings"
        del emb
        npz.unlink()
    else:
        names = [f"spk{i:07d}" for i in range(n)]
        t = clock()
        with SpeakerStore(path) as store:
            store.add_vectors(names, vectors, fingerprint=FINGERPRINT, validate=False)
        row["import"] = since(t)
        row["import_how"] = "add_vectors"
    row["bytes_per_speaker"] = path.stat().st_size / n
    t = clock()
    with SpeakerStore(path) as store:
        info = store.build_index()
    row["build"], row["kind"] = since(t), info.kind
    tag = search.read_pointer(path)["tag"]
    row["index_mb"] = {
        k: p.stat().st_size / 1e6 for k, p in search.paths(path, tag).items() if p.exists()
    }
    queries = vectors[rng.choice(n, args.queries)] + rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32
    ) / np.sqrt(args.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    t0 = time.perf_counter()
    with SpeakerStore(path) as store:
        store.search(queries[0], 5)
    row["open_first"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with SpeakerStore(path) as store:
        store.add_recordings("newcomer", ["x.wav"], unit(rng, 1, args.dim), fingerprint=FINGERPRINT)
    row["enroll_one"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with SpeakerStore(path) as store:
        store.search(queries[1], 5)
    row["first_after_enroll"] = time.perf_counter() - t0

    victims = rng.choice(n, 1000, replace=False)
    t0 = time.perf_counter()
    with SpeakerStore(path) as store:
        for v in victims:
            store.remove(f"spk{v:07d}")
        row["removals"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.build_index()
        row["fold"] = time.perf_counter() - t0
        row["quiet"] = timed_queries(store, queries, 5)

        ctx = multiprocessing.get_context("spawn")  # faiss's OpenMP threads do not fork
        stop, done = ctx.Event(), ctx.Value("l", 0)
        child = ctx.Process(target=_writer, args=(path, args.dim, stop, done))
        child.start()
        while done.value < 3:
            time.sleep(0.01)
        start_writes = done.value
        row["during"] = timed_queries(store, queries, 5)
        stop.set()
        child.join()
        row["writes_during"] = done.value - start_writes

    # the child folds after 50 writes, and is killed
    child = multiprocessing.get_context("spawn").Process(
        target=_kill_mid_fold, args=(path, args.dim, 50)
    )
    child.start()
    child.join()
    row["killed"] = child.exitcode == -signal.SIGKILL
    t0 = time.perf_counter()
    with SpeakerStore(path) as store:
        store.search(queries[2], 5)
        row["recover_first"] = time.perf_counter() - t0
        row["pending_after_kill"] = store.index_info().pending
        t0 = time.perf_counter()
        store.build_index()
        row["recover_fold"] = time.perf_counter() - t0
    for f in work.iterdir():
        f.unlink()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--npz-max", type=int, default=100_000)
    parser.add_argument("--workdir", default="/tmp/bench_gallery")
    args = parser.parse_args()
    for n in args.sizes:
        row = bench(n, args)
        for key in ("quiet", "during"):
            values = row.pop(key)
            row[key] = (round(statistics.median(values), 2), round(pct(values, 99), 2))
        print(row, flush=True)


if __name__ == "__main__":
    main()
