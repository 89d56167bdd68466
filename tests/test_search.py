"""The search index kept beside a store: exact and approximate search, staleness, damage."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from speakerid import search
from speakerid.errors import StoreError
from speakerid.search import VectorIndex, choose_kind, exact_search, pointer_path
from speakerid.store import SpeakerStore

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


def test_writes_make_the_index_stale_and_searches_rebuild_it(store_path: Path) -> None:
    store, vectors = _store(store_path)
    first = store.build_index("flat")
    store.remove("s5")
    store.add_vectors(["newcomer"], vectors[5:6], fingerprint=FINGERPRINT)
    found = store.search(vectors[5], 2)[0]
    assert found[0].speaker == "newcomer" and "s5" not in {c.speaker for c in found}
    second = store.index_info()
    assert second.generation != first.generation and second.speakers == 600
    # only the current generation's files remain beside the store
    assert not any(first.generation in name for name in _files(store_path))


def test_a_write_by_another_process_is_detected(store_path: Path) -> None:
    """A store changed behind the index's back (here: by another connection) is caught by
    the generation, even though this process holds the older index in memory."""
    store, vectors = _store(store_path)
    store.build_index("flat")
    assert store.search(vectors[3], 1)[0][0].speaker == "s3"
    with SpeakerStore(store_path) as other:
        other.remove("s3")
    assert store.search(vectors[3], 1)[0][0].speaker != "s3"


def test_crash_between_store_write_and_index_rebuild_is_detected(store_path: Path) -> None:
    store, vectors = _store(store_path)
    built = store.build_index("flat")
    store.close()
    # What a crash leaves: the store committed a change, the index still says the old one.
    conn = sqlite3.connect(store_path)
    with conn:
        conn.execute("DELETE FROM recordings WHERE speaker_id = 1")
        conn.execute("DELETE FROM speakers WHERE id = 1")
        conn.execute("UPDATE meta SET value = 'after-crash' WHERE key = 'vectors_generation'")
    conn.close()
    with SpeakerStore(store_path) as reopened:
        assert reopened.search(vectors[0], 1)[0][0].speaker != "s0"
        assert reopened.index_info().generation == "after-crash" != built.generation


@pytest.mark.parametrize("damage", ["truncate", "pointer"])
def test_a_damaged_index_is_rebuilt(store_path: Path, damage: str) -> None:
    store, vectors = _store(store_path)
    info = store.build_index("flat")
    store.close()
    if damage == "truncate":
        target = search.paths(store_path, info.generation)["vectors"]
        target.write_bytes(target.read_bytes()[:1000])
    else:
        pointer_path(store_path).write_text("{not json")
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


def test_vector_index_load_refuses_another_generation(tmp_path: Path) -> None:
    store_path = tmp_path / "x.sqlite"
    index = VectorIndex.build(np.arange(5), _unit(5), "gen-a", "flat")
    index.save(store_path)
    assert VectorIndex.load(store_path, "gen-b") is None
    loaded = VectorIndex.load(store_path, "gen-a")
    assert loaded is not None and isinstance(loaded.vectors, np.memmap)


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
    r = cli("index", "--drop", store=enrolled_store, model=False)
    assert r.exit_code == 0 and "index dropped" in r.stdout
    assert not pointer_path(enrolled_store).exists()


def test_index_command_refuses_bad_kind_and_missing_store(cli, store_path: Path) -> None:
    for args in (("--kind", "lsh"), ()):
        r = cli("index", *args, store=store_path, model=False)
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not store_path.exists()
