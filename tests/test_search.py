"""The search index kept beside a store: exact and approximate search, staleness, damage."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from speakerid.errors import StoreError
from speakerid.store import search
from speakerid.store.search import VectorIndex, choose_kind, exact_search, pointer_path
from speakerid.store.speakers import SpeakerStore

FINGERPRINT = "f" * 64
DIM = 16


def _unit(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _store(path: Path, n: int = 600, dim: int = DIM) -> tuple[SpeakerStore, np.ndarray]:
    vectors = _unit(n, dim=dim)
    store = SpeakerStore(path)
    store.add_vectors([f"s{i}" for i in range(n)], vectors, fingerprint=FINGERPRINT)
    return store, vectors


def _noisy(vectors: np.ndarray, rows: np.ndarray, seed: int = 1) -> np.ndarray:
    """Queries near the given rows (cosine about 0.7), as a new recording of a speaker is."""
    dim = vectors.shape[1]
    noise = np.random.default_rng(seed).standard_normal((len(rows), dim)).astype(np.float32)
    q = vectors[rows] + noise / np.sqrt(dim)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _same(a: list[list], b: list[list]) -> bool:
    """The same speakers in the same order, with scores equal to float32 rounding."""
    return [[c.speaker for c in r] for r in a] == [[c.speaker for c in r] for r in b] and all(
        x.score == pytest.approx(y.score, abs=1e-5)
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    )


def _files(store_path: Path) -> set[str]:
    return {p.name for p in store_path.parent.iterdir() if ".index" in p.name or "." in p.stem}


def test_exact_search_in_chunks_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "SCAN_CHUNK", 7)
    vectors, queries = _unit(50), _unit(4, seed=2)
    scores, rows = exact_search(vectors, queries, 5)
    full = queries @ vectors.T
    want = np.argsort(-full, axis=1)[:, :5]
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), rtol=1e-6)
    assert exact_search(vectors, queries, 99)[1].shape == (4, 50)


def test_choose_kind_by_size_and_availability() -> None:
    faiss = object()
    assert choose_kind(10, "auto", faiss) == "flat"
    assert choose_kind(search.ANN_MIN_SPEAKERS, "auto", faiss) == "pq"
    assert choose_kind(10**8, "auto", faiss) == "pq"
    assert choose_kind(10**9, "auto", None) == "flat"
    assert choose_kind(10, "ivf", faiss) == "ivf"
    with pytest.raises(StoreError, match="needs faiss"):
        choose_kind(10, "hnsw", None)
    with pytest.raises(StoreError, match="unknown index kind"):
        choose_kind(10, "lsh", faiss)


def test_flat_index_gives_the_scan_s_answers_and_survives_reopening(store_path: Path) -> None:
    store, vectors = _store(store_path)
    queries = _noisy(vectors, np.arange(0, 600, 37))
    before = store.search(queries, 3)
    info = store.build_index("flat")
    assert (info.kind, info.speakers, info.dim) == ("flat", 600, DIM)
    assert _same(store.search(queries, 3), before)
    store.close()
    with SpeakerStore(store_path) as reopened:
        assert reopened.index_info() == info  # loaded, not rebuilt
        assert _same(reopened.search(queries, 3), before)


@pytest.mark.parametrize("kind", ["pq", "hnsw", "ivf"])
def test_approximate_index_finds_the_neighbours_with_exact_scores(
    store_path: Path, kind: str
) -> None:
    """64-d: in 16 dimensions random vectors come too close to a query for any index."""
    pytest.importorskip("faiss")
    store, vectors = _store(store_path, n=2000, dim=64)
    rows = np.arange(0, 2000, 41)
    queries = _noisy(vectors, rows)
    exact = store.search(queries, 3)
    assert store.build_index(kind).kind == kind
    approx = store.search(queries, 3)
    hits = [a[0].speaker == e[0].speaker for a, e in zip(approx, exact, strict=True)]
    assert np.mean(hits) >= 0.95
    for ranked, q in zip(approx, queries, strict=True):  # every score is the true cosine
        for cand in ranked:
            want = float(vectors[int(cand.speaker[1:])] @ q)
            assert cand.score == pytest.approx(want, abs=1e-5)
        assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)


def test_writes_leave_the_base_and_searches_catch_up(store_path: Path) -> None:
    store, vectors = _store(store_path)
    first = store.build_index("flat")
    tag = search.read_pointer(store_path)["tag"]
    store.remove("s5")
    store.add_vectors(["newcomer"], vectors[5:6], fingerprint=FINGERPRINT)
    found = store.search(vectors[5], 2)[0]
    assert found[0].speaker == "newcomer" and "s5" not in {c.speaker for c in found}
    second = store.index_info()
    # no rebuild and no fold: the base is the same, the two changes are read from the store
    assert search.read_pointer(store_path)["tag"] == tag
    assert (second.generation, second.speakers, second.pending) == (first.generation, 600, 2)
    with SpeakerStore(store_path) as reopened:  # another process sees the same
        assert _same(reopened.search(vectors[[5, 9]], 3), store.search(vectors[[5, 9]], 3))


def test_a_write_by_another_process_is_seen(store_path: Path) -> None:
    """A store changed behind the index's back (here: by another connection) is caught up,
    even though this process holds the base in memory."""
    store, vectors = _store(store_path)
    store.build_index("flat")
    assert store.search(vectors[3], 1)[0][0].speaker == "s3"
    with SpeakerStore(store_path) as other:
        other.remove("s3")
        other.add_recordings("s4", ["x.wav"], vectors[3:4], fingerprint=FINGERPRINT, replace=True)
    ranked = store.search(vectors[3], 2)[0]
    assert ranked[0].speaker == "s4" and "s3" not in {c.speaker for c in ranked}


def _changes(store: SpeakerStore, vectors: np.ndarray, rng: np.random.Generator) -> None:
    """Enrollments, re-enrollments (replace and add) and removals, mixed."""
    dim = vectors.shape[1]
    for i in range(40):
        store.add_vectors([f"new{i}"], _unit(1, seed=100 + i, dim=dim), fingerprint=FINGERPRINT)
    for i in rng.choice(len(vectors), 30, replace=False):
        emb = _unit(1, seed=500 + int(i), dim=dim)
        store.add_recordings(
            f"s{i}", [f"r{i}.wav"], emb, fingerprint=FINGERPRINT, replace=i % 2 == 0
        )
    for i in rng.choice(len(vectors), 50, replace=False):
        if f"s{i}" in store:
            store.remove(f"s{i}")
    store.remove("new3")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flat", "pq"])
def test_a_fold_equals_a_rebuild(store_path: Path, kind: str) -> None:
    """Writes, then the changes folded into the base (no retraining), give the index a
    rebuild from the store gives: the same rows, and the same answers."""
    if kind != "flat":
        pytest.importorskip("faiss")
    store, vectors = _store(store_path, n=2000, dim=64)
    store.build_index(kind)
    _changes(store, vectors, np.random.default_rng(3))
    queries = _noisy(vectors, np.arange(0, 2000, 23))
    caught_up = store.search(queries, 3)
    store.build_index(kind, rebuild=False)  # fold
    folded = store._kept.base
    assert store.index_info().pending == 0 and folded.seq == int(store.meta()["vectors_seq"])
    _, _, ids, want = store._snapshot()
    order = np.argsort(folded.ids)
    np.testing.assert_array_equal(folded.ids[order], ids)
    np.testing.assert_array_equal(np.asarray(folded.vectors)[order], want)
    assert folded.ann is None or folded.ann.ntotal == len(ids)
    after_fold = store.search(queries, 3)
    # (pq: the changed rows were scanned exactly before the fold, approximately after)
    assert _same([r[:1] for r in after_fold], [r[:1] for r in caught_up])
    if folded.ann is not None:  # the same rows coded afresh with the same codebooks
        ann = search._build_ann(search.import_faiss(), want, kind, trained=folded.ann)[0]
        fresh = VectorIndex(ids, want, ann, kind, folded.token, folded.seq)
        for got, exp in zip(folded.search(queries, 3), fresh.search(queries, 3), strict=True):
            np.testing.assert_array_equal(got, exp)
    store.build_index(kind, rebuild=True)  # codebooks retrained: the same best speakers
    rebuilt = store.search(queries, 3)
    assert _same([r[:1] for r in rebuilt], [r[:1] for r in after_fold])
    if kind == "flat":
        assert _same(after_fold, rebuilt) and _same(caught_up, rebuilt)


def test_writes_fold_past_the_threshold_without_a_rebuild(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, vectors = _store(store_path)
    store.build_index("flat")
    monkeypatch.setattr(search, "FOLD_MIN", 5)
    monkeypatch.setattr(search, "FOLD_MAX", 5)
    monkeypatch.setattr(VectorIndex, "build", None)  # a rebuild would fail
    tag = search.read_pointer(store_path)["tag"]
    for i in range(4):
        store.remove(f"s{i}")
    assert search.read_pointer(store_path)["tag"] == tag  # 4 changes: below the threshold
    store.add_vectors(["late"], vectors[:1], fingerprint=FINGERPRINT)
    pointer = search.read_pointer(store_path)
    assert pointer["tag"] != tag and pointer["speakers"] == 597
    assert store.index_info().pending == 0
    assert store.search(vectors[0], 1)[0][0].speaker == "late"
    assert not any(tag in name for name in _files(store_path))  # the old base is gone
    conn = sqlite3.connect(store_path)
    assert conn.execute("SELECT COUNT(*) FROM removed").fetchone()[0] == 0  # log pruned
    conn.close()


@pytest.mark.slow
def test_drift_retrains_the_codebooks(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New speakers unlike the ones the pq codebooks were trained on are not folded in:
    the fold measures their quantisation error and the index is rebuilt."""
    pytest.importorskip("faiss")
    x = _unit(2000, dim=64)
    x[:, 32:] *= 0.05  # trained on vectors living mostly in the first half
    store = SpeakerStore(store_path)
    store.add_vectors([f"s{i}" for i in range(2000)], x, fingerprint=FINGERPRINT)
    store.build_index("pq")
    drift_base = search.read_pointer(store_path)["drift_base"]
    moved = _unit(400, seed=9, dim=64)
    moved[:, :32] *= 0.05  # newcomers in the other half
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    store.add_vectors([f"m{i}" for i in range(400)], moved, fingerprint=FINGERPRINT)
    builds = []
    real = VectorIndex.build.__func__

    def counted(cls, *args):
        builds.append(args)
        return real(cls, *args)

    monkeypatch.setattr(VectorIndex, "build", classmethod(counted))
    store.build_index("pq", rebuild=False)
    assert builds and search.read_pointer(store_path)["drift_base"] != drift_base
    assert store.search(moved[7], 1)[0][0].speaker == "m7"


def _kill_mid_fold(store_path: Path, vectors: np.ndarray) -> None:
    """Child: enroll one speaker (committed), then die by SIGKILL while the fold that
    write starts is about to publish the new base."""
    search.FOLD_MIN = search.FOLD_MAX = 1
    real = search.os.replace

    def replace(src, dst):
        if str(dst).endswith(".index.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    search.os.replace = replace
    with SpeakerStore(store_path) as store:
        store.add_vectors(["late"], -vectors[:1], fingerprint=FINGERPRINT)


def test_kill_between_store_write_and_index_write_is_caught_up(store_path: Path) -> None:
    store, vectors = _store(store_path)
    built = store.build_index("flat")
    store.close()
    child = multiprocessing.get_context("spawn").Process(
        target=_kill_mid_fold, args=(store_path, vectors)
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with SpeakerStore(store_path) as reopened:
        assert reopened.index_info().generation == built.generation  # the old base ...
        assert reopened.index_info().pending == 1  # ... and the write it lacks
        assert reopened.search(-vectors[0], 1)[0][0].speaker == "late"  # never stale
        reopened.build_index("flat", rebuild=False)
        assert reopened.index_info().pending == 0
        assert reopened.search(-vectors[0], 1)[0][0].speaker == "late"
    assert not [n for n in _files(store_path) if n.endswith(".tmp")]  # leftovers cleaned


def _pointer_matches_files(store_path: Path) -> None:
    """What a tamperer who also rewrites the pointer's checksums leaves."""
    pointer = search.read_pointer(store_path)
    files = search.paths(store_path, pointer["tag"])
    for key in pointer["files"]:
        pointer["files"][key] = [search.file_checksum(files[key]), search._signature(files[key])]
    pointer_path(store_path).write_text(json.dumps(pointer))


@pytest.mark.parametrize("fix_checksums", [False, True])
def test_a_tampered_index_is_never_trusted(store_path: Path, fix_checksums: bool) -> None:
    """#25 finding 6: the ids array reversed named the wrong speaker with the right score.
    The checksum catches it at open; with the checksums rewritten too, the store's own
    rows catch it at the first search. Either way the index is rebuilt from the store."""
    store, vectors = _store(store_path)
    queries = _noisy(vectors, np.arange(0, 600, 50))
    exact = store.search(queries, 2)  # no index yet
    store.build_index("flat")
    store.close()
    ids_file = search.paths(store_path, search.read_pointer(store_path)["tag"])["ids"]
    np.save(ids_file, np.load(ids_file)[::-1].copy())
    if fix_checksums:
        _pointer_matches_files(store_path)
    with SpeakerStore(store_path) as reopened:
        assert _same(reopened.search(queries, 2), exact)
    ids = np.load(search.paths(store_path, search.read_pointer(store_path)["tag"])["ids"])
    np.testing.assert_array_equal(np.sort(ids), ids)  # rebuilt: in the store's order again


def test_a_changed_vectors_file_is_verified_and_rebuilt(store_path: Path) -> None:
    store, vectors = _store(store_path)
    store.build_index("flat")
    tag = search.read_pointer(store_path)["tag"]
    store.close()
    vec_file = search.paths(store_path, tag)["vectors"]
    swapped = np.load(vec_file)
    swapped[[0, 1]] = swapped[[1, 0]]
    np.save(vec_file, swapped)
    with SpeakerStore(store_path) as reopened:
        assert reopened.search(vectors[0], 1)[0][0].speaker == "s0"
        assert reopened.search(vectors[1], 1)[0][0].speaker == "s1"
    assert search.read_pointer(store_path)["tag"] != tag  # rebuilt


def test_another_store_s_index_is_not_used(tmp_path: Path) -> None:
    a, vectors = _store(tmp_path / "a.sqlite")
    a.build_index("flat")
    a.close()
    b = SpeakerStore(tmp_path / "b.sqlite")
    b.add_vectors([f"t{i}" for i in range(600)], vectors[::-1], fingerprint=FINGERPRINT)
    for path in tmp_path.glob("a.sqlite.*"):  # a's index files, renamed to b's
        path.rename(tmp_path / path.name.replace("a.sqlite", "b.sqlite", 1))
    assert b.search(vectors[4], 1)[0][0].speaker == "t595"


def _writer(store_path: Path, prefix: str, count: int, queue: multiprocessing.Queue) -> None:
    search.FOLD_MIN = search.FOLD_MAX = 7  # several folds while the reader reads
    with SpeakerStore(store_path) as store:
        for i in range(count):
            vec = _unit(1, seed=1000 * ord(prefix) + i)
            store.add_vectors([f"{prefix}{i}"], vec, fingerprint=FINGERPRINT)
            queue.put((f"{prefix}{i}", vec[0]))  # acknowledged


def _reader(
    store_path: Path, vectors: np.ndarray, rounds: int, queue: multiprocessing.Queue
) -> None:
    bad = 0
    with SpeakerStore(store_path) as store:
        for r in range(rounds):
            rows = np.arange(r % 7, 600, 97)
            for ranked, row in zip(store.search(vectors[rows], 1), rows, strict=True):
                bad += ranked[0].speaker != f"s{row}"
    queue.put(bad)


def test_readers_during_writes_and_concurrent_writers(store_path: Path) -> None:
    """Two enrolling processes (folding as they go) and one searching: every
    acknowledged write is found afterwards, and the reader never answered wrongly."""
    store, vectors = _store(store_path)
    store.build_index("flat")
    store.close()
    ctx = multiprocessing.get_context("spawn")
    acks, answers = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(store_path, "a", 30, acks)),
        ctx.Process(target=_writer, args=(store_path, "b", 30, acks)),
        ctx.Process(target=_reader, args=(store_path, vectors, 40, answers)),
    ]
    for p in procs:
        p.start()
    written = [acks.get(timeout=120) for _ in range(60)]
    bad = answers.get(timeout=120)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert bad == 0
    with SpeakerStore(store_path) as reopened:
        found = reopened.search(np.stack([v for _, v in written]), 1)
        assert [r[0].speaker for r in found] == [n for n, _ in written]
        assert len(reopened) == 660


@pytest.mark.parametrize("damage", ["truncate", "{not json", "[1, 2]", '{"seq": "x"}'])
def test_a_damaged_index_is_rebuilt(store_path: Path, damage: str) -> None:
    store, vectors = _store(store_path)
    store.build_index("flat")
    store.close()
    if damage == "truncate":
        target = search.paths(store_path, search.read_pointer(store_path)["tag"])["vectors"]
        target.write_bytes(target.read_bytes()[:1000])
    else:
        pointer_path(store_path).write_text(damage)
    with SpeakerStore(store_path) as reopened:
        assert reopened.search(vectors[7], 1)[0][0].speaker == "s7"
        assert reopened.index_info().speakers == 600


def test_drop_index_removes_its_files_and_search_falls_back(store_path: Path) -> None:
    store, vectors = _store(store_path)
    store.build_index("flat")
    assert store.drop_index() is True
    assert store.index_info() is None
    assert not any(".index" in n or n.endswith((".npy", ".faiss")) for n in _files(store_path))
    assert store.search(vectors[2], 1)[0][0].speaker == "s2"
    assert store.drop_index() is False


def test_build_index_needs_a_store(store_path: Path) -> None:
    with pytest.raises(StoreError, match="no store yet"):
        SpeakerStore(store_path).build_index()
    assert not store_path.exists()


def test_vector_index_load_refuses_another_store_or_a_later_state(tmp_path: Path) -> None:
    store_path = tmp_path / "x.sqlite"
    index = VectorIndex.build(np.arange(5), _unit(5), "token-a", 7, "flat")
    index.save(store_path)
    assert VectorIndex.load(store_path, "token-b", 7) is None  # another store
    assert VectorIndex.load(store_path, "token-a", 6) is None  # ahead of the store
    loaded = VectorIndex.load(store_path, "token-a", 9)  # behind it: caught up by searches
    assert loaded is not None and isinstance(loaded.vectors, np.memmap) and loaded.seq == 7


def test_index_command_builds_keeps_and_drops(cli, enrolled_store: Path, voices_dir: Path) -> None:
    r = cli("index", "--json", store=enrolled_store, model=False)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert (info["kind"], info["speakers"], info["dim"]) == ("flat", 2, 16)
    assert pointer_path(enrolled_store).exists()
    r = cli("identify", str(voices_dir / "alice_3.wav"), "--json", store=enrolled_store)
    assert r.exit_code == 0, r.output
    assert [c["speaker"] for c in json.loads(r.stdout)[0]["candidates"]] != []
    r = cli("enroll", "carol", str(voices_dir / "carol_1.wav"), store=enrolled_store)
    assert r.exit_code == 0, r.output
    r = cli("identify", str(voices_dir / "carol_2.wav"), "--json", store=enrolled_store)
    names = {c["speaker"] for c in json.loads(r.stdout)[0]["candidates"]}
    assert names == {"alice", "bob", "carol"}  # the index followed the enrollment
    assert search.read_pointer(enrolled_store)["speakers"] == 2  # ... without a rebuild
    for args in ((), ("--rebuild",)):  # fold the change in; retrain
        r = cli("index", *args, "--json", store=enrolled_store, model=False)
        assert r.exit_code == 0, r.output
        assert (json.loads(r.stdout)["speakers"], json.loads(r.stdout)["pending"]) == (3, 0)
    r = cli("index", "--drop", store=enrolled_store, model=False)
    assert r.exit_code == 0 and "index dropped" in r.stdout
    assert not pointer_path(enrolled_store).exists()


def test_index_command_refuses_bad_kind_and_missing_store(cli, store_path: Path) -> None:
    for args in (("--kind", "lsh"), ()):
        r = cli("index", *args, store=store_path, model=False)
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not store_path.exists()


def test_positions_and_advance_follow_the_ids_runs() -> None:
    """A folded base holds ascending runs of ids (the rows kept, then each fold's new ones):
    stale rows are found by binary search in each run, and a delta brought forward equals
    one read since the base."""
    ids = np.array([1, 3, 5, 9, 2, 4, 7, 6], np.int64)
    base = VectorIndex(ids, _unit(8), None, "flat", "t", 3)
    assert base.runs == [0, 4, 7]
    np.testing.assert_array_equal(base.positions(np.array([4, 9, 7, 8, 4, 6])), [3, 5, 6, 7])
    v = _unit(3, seed=5)
    first = base.delta(4, np.array([3, 10]), v[:2], np.array([7]))
    np.testing.assert_array_equal(first.dead, [1, 6])
    later = base.advance(first, 6, np.array([10, 2]), v[2:], np.array([3]))
    direct = base.delta(6, np.array([2, 10]), v[[2, 2]], np.array([3, 7]))
    np.testing.assert_array_equal(later.dead, direct.dead)
    assert sorted(later.ids.tolist()) == [2, 10] and later.seq == 6


def test_an_index_ahead_of_a_restored_store_is_rebuilt(store_path: Path) -> None:
    """A store copied back from before the index was written (same store token, an older
    vectors_seq) is not read through an index of a state it never reached."""
    store, vectors = _store(store_path)
    store.close()
    backup = store_path.with_name("backup.sqlite")
    backup.write_bytes(store_path.read_bytes())
    with SpeakerStore(store_path) as store:
        store.add_vectors(["later"], -vectors[2:3], fingerprint=FINGERPRINT)
        store.build_index("flat")
        assert store.search(-vectors[2], 1)[0][0].speaker == "later"
    store_path.write_bytes(backup.read_bytes())  # restored
    with SpeakerStore(store_path) as restored:
        assert restored.search(-vectors[2], 1)[0][0].speaker != "later"
        assert restored.index_info().speakers == 600
