"""The enrollment store: names, model binding, transactions, damage, concurrency, search."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from speakerid.errors import (
    InvalidNameError,
    StoreError,
    UnknownSpeakerError,
)
from speakerid.store.db import SCHEMA_VERSION
from speakerid.store.speakers import (
    IMPORTED_SOURCE,
    SpeakerStore,
    default_store_path,
    validate_name,
)
from speakerid.vectors import pool

FP_A = "a" * 64  # fake model fingerprints for tests that bypass audio
FP_B = "b" * 64
DIM = 16


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def add(store: SpeakerStore, name: str, n: int = 2, seed: int = 0, fp: str = FP_A, **kw):
    vecs = unit(np.random.default_rng(seed), n)
    paths = [f"{name}/{seed}-{i}.wav" for i in range(n)]
    return store.add_recordings(name, paths, vecs, fingerprint=fp, **kw)


def contents(path: Path) -> tuple:
    """Everything a store holds, for before/after comparisons."""
    conn = sqlite3.connect(path)
    try:
        return tuple(
            tuple(conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())
            for table in ("meta", "speakers", "recordings")
        )
    finally:
        conn.close()


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name", ["alice", "Bob Smith", "o.neil", "x_y-z", "19", "José", "a" * 64, "..a"]
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        " alice",
        "alice ",
        ".",
        "..",
        "a/b",
        "../etc",
        "a\\b",
        "a\nb",
        "a\tb",
        "nul\x00",
        "semi;colon",
        "star*",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_name(name)


# ---------------------------------------------------------------- basic operations


def test_missing_store_reads_empty_and_is_not_created(store_path: Path) -> None:
    with SpeakerStore(store_path) as store:
        assert len(store) == 0
        assert store.speakers() == []
        assert not store.exists
        with pytest.raises(UnknownSpeakerError):
            store.vector("alice")
        assert store.search(unit(np.random.default_rng(0), 1)) == [[]]
    assert not store_path.exists()


def test_add_pool_replace_upsert_remove(store_path: Path) -> None:
    with SpeakerStore(store_path) as store:
        r = add(store, "alice", n=2, seed=1)
        assert (r.created, r.added, r.updated, r.recordings) == (True, 2, 0, 2)
        assert store_path.exists()
        meta = store.meta()
        assert meta["schema_version"] == str(SCHEMA_VERSION)
        assert meta["model_fingerprint"] == FP_A
        assert meta["embedding_dim"] == str(DIM)
        assert sqlite3.connect(store_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

        first = unit(np.random.default_rng(1), 2)
        np.testing.assert_allclose(store.vector("alice"), pool(first), atol=1e-6)

        r = add(store, "alice", n=1, seed=2)  # more recordings for the same speaker
        assert (r.created, r.added, r.recordings) == (False, 1, 3)
        both = np.concatenate([first, unit(np.random.default_rng(2), 1)])
        np.testing.assert_allclose(store.vector("alice"), pool(both), atol=1e-6)

        r = add(store, "alice", n=1, seed=2)  # the same path again is re-embedded, not doubled
        assert (r.added, r.updated, r.recordings) == (0, 1, 3)

        r = add(store, "alice", n=1, seed=3, replace=True)
        assert (r.replaced, r.recordings) == (True, 1)
        assert store.recordings("alice") == ["alice/3-0.wav"]

        add(store, "bob", seed=4)
        assert [s.speaker for s in store.speakers()] == ["alice", "bob"]
        assert "bob" in store and "carol" not in store
        assert store.remove("bob") == 2
        assert "bob" not in store
        with pytest.raises(UnknownSpeakerError):
            store.remove("bob")
        with pytest.raises(InvalidNameError):
            add(store, "../bob")
        assert store.summary().speakers == 1


def test_nonfinite_embeddings_refused(store_path: Path) -> None:
    with SpeakerStore(store_path) as store, pytest.raises(StoreError, match="NaN"):
        store.add_recordings("a", ["x"], np.full((1, DIM), np.nan), fingerprint=FP_A)


def test_default_store_path_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_store_path() == tmp_path / "xdg-data" / "speakerid" / "store.sqlite"
    monkeypatch.setenv("SPEAKERID_STORE", str(tmp_path / "elsewhere.sqlite"))
    assert default_store_path() == tmp_path / "elsewhere.sqlite"


# ---------------------------------------------------------------- model binding


def test_other_model_refused_until_empty(store_path: Path) -> None:
    with SpeakerStore(store_path) as store:
        add(store, "alice", fp=FP_A, source="/models/a.safetensors")
        before = contents(store_path)
        with pytest.raises(StoreError) as info:
            add(store, "bob", fp=FP_B, source="/models/b.safetensors")
        message = str(info.value)
        assert FP_A[:12] in message and FP_B[:12] in message
        assert "a.safetensors" in message and "b.safetensors" in message
        assert "--store" in message and "\n" not in message
        with pytest.raises(StoreError):
            store.check_model(FP_B, DIM)
        assert contents(store_path) == before
        store.remove("alice")
        add(store, "bob", fp=FP_B)  # an empty store takes the new model
        assert store.meta()["model_fingerprint"] == FP_B


# ---------------------------------------------------------------- transactions


def test_failure_between_writes_rolls_back(store_path: Path, monkeypatch) -> None:
    with SpeakerStore(store_path) as store:
        add(store, "alice", seed=1)
        before = contents(store_path)

        def boom(*args, **kwargs):
            raise RuntimeError("injected between the recordings and the speaker vector")

        monkeypatch.setattr(SpeakerStore, "_pool_speaker", boom)
        with pytest.raises(RuntimeError):
            add(store, "alice", seed=2)  # recordings inserted, then the failure
        with pytest.raises(RuntimeError):
            add(store, "bob", seed=3)  # speaker row and recordings inserted, then the failure
        assert contents(store_path) == before
        monkeypatch.undo()
        add(store, "bob", seed=3)  # the write lock was released
        assert "bob" in store


def _killed_mid_enroll(path: str) -> None:
    """Child: die by SIGKILL inside the write transaction, after the recordings INSERT."""

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    SpeakerStore._pool_speaker = die  # type: ignore[method-assign]
    with SpeakerStore(path) as store:
        add(store, "alice", n=3, seed=7)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_process_killed_mid_enroll_leaves_store_consistent(store_path: Path) -> None:
    with SpeakerStore(store_path) as store:
        add(store, "alice", seed=1)
    before = contents(store_path)
    child = multiprocessing.get_context("spawn").Process(
        target=_killed_mid_enroll, args=(str(store_path),)
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert contents(store_path) == before
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with SpeakerStore(store_path) as store:
        assert store.recordings("alice") == ["alice/1-0.wav", "alice/1-1.wav"]
        add(store, "alice", n=1, seed=8)  # no lock was left behind
        assert len(store.recordings("alice")) == 3


def _enroll_many(path: str, worker: int, rounds: int) -> None:
    with SpeakerStore(path) as store:
        for k in range(rounds):
            add(store, f"w{worker}-{k}", n=1, seed=1000 * worker + k)
            add(store, "shared", n=1, seed=1000 * worker + k)  # same speaker, both workers


def test_concurrent_enrollment_loses_nothing(store_path: Path) -> None:
    rounds = 15
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_enroll_many, args=(str(store_path), w, rounds)) for w in (1, 2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
    assert [p.exitcode for p in workers] == [0, 0]
    with SpeakerStore(store_path) as store:
        names = {s.speaker for s in store.speakers()}
        assert names == {"shared"} | {f"w{w}-{k}" for w in (1, 2) for k in range(rounds)}
        shared = store.recordings("shared")
        assert len(shared) == 2 * rounds
        conn = sqlite3.connect(store_path)
        blobs = conn.execute(
            "SELECT r.embedding FROM recordings r JOIN speakers s ON s.id = r.speaker_id "
            "WHERE s.name = 'shared'"
        ).fetchall()
        conn.close()
        expected = pool(np.stack([np.frombuffer(b[0], np.float32) for b in blobs]))
        np.testing.assert_allclose(store.vector("shared"), expected, atol=1e-6)


def test_concurrent_creation(store_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_enroll_many, args=(str(store_path), w, 1)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    assert [p.exitcode for p in workers] == [0] * 4
    with SpeakerStore(store_path) as store:
        assert len(store) == 5
    assert not list(store_path.parent.glob(".store.sqlite.*"))  # no temporary files left


# ---------------------------------------------------------------- damaged stores


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO notes (text) VALUES ('hello')")
    conn.commit()
    conn.close()


def _meta_edit(key: str, value: str):
    def damage(path: Path) -> None:
        with SpeakerStore(path) as store:
            add(store, "alice")
        conn = sqlite3.connect(path)
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
        conn.commit()
        conn.close()

    return damage


def _garbage_after_header(path: Path) -> None:
    with SpeakerStore(path) as store:
        add(store, "alice")
    data = bytearray(path.read_bytes())
    data[100:] = np.random.default_rng(0).integers(0, 256, len(data) - 100, np.uint8).tobytes()
    path.write_bytes(bytes(data))


def _truncated(path: Path) -> None:
    with SpeakerStore(path) as store:
        for i in range(20):
            add(store, f"s{i}", n=20, seed=i)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


DAMAGE = {
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("this is not a database\n"),
    "random": lambda p: p.write_bytes(np.random.default_rng(1).bytes(8192)),
    "foreign-sqlite": _foreign_sqlite,
    "garbage-after-header": _garbage_after_header,
    "truncated": _truncated,
    "newer-schema": _meta_edit("schema_version", "99"),
    "other-format": _meta_edit("format", "something-else"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_store_refused_and_untouched(store_path: Path, kind: str) -> None:
    DAMAGE[kind](store_path)
    before = store_path.read_bytes()
    with pytest.raises(StoreError) as info, SpeakerStore(store_path) as store:
        store.speakers()
        add(store, "bob")
    assert "\n" not in str(info.value)
    assert store_path.read_bytes() == before


def test_store_path_is_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory"):
        SpeakerStore(tmp_path)


# ---------------------------------------------------------------- search


def test_search_matches_brute_force_and_cache(store_path: Path) -> None:
    rng = np.random.default_rng(5)
    vecs = unit(rng, 300)
    with SpeakerStore(store_path) as store:
        assert store.add_vectors([f"s{i}" for i in range(300)], vecs, fingerprint=FP_A) == 300
        assert store.recordings("s7") == [IMPORTED_SOURCE]
        _, mat = store.matrix()
        assert mat.dtype == np.float32 and mat.flags["C_CONTIGUOUS"] and mat.shape == (300, DIM)
        assert store.matrix()[1] is mat  # cached
        queries = unit(rng, 40)
        ranked = store.search(queries, top_k=7)
        brute = np.argsort(-(queries @ vecs.T), axis=1)[:, :7]
        for cands, expect in zip(ranked, brute, strict=True):
            assert [c.speaker for c in cands] == [f"s{j}" for j in expect]
            scores = [c.score for c in cands]
            assert scores == sorted(scores, reverse=True)
        assert len(store.search(queries[0], top_k=1000)[0]) == 300
        with pytest.raises(StoreError, match="already enrolled"):
            store.add_vectors(["new", "s3"], unit(rng, 2), fingerprint=FP_A)
        assert "new" not in store  # the whole bulk insert was rolled back

        # another process's write is seen: the cache follows the database
        with SpeakerStore(store_path) as other:
            add(other, "late", seed=9)
        names2, mat2 = store.matrix()
        assert mat2 is not mat and names2[-1] == "late" and len(names2) == 301


def test_faiss_backend_used_when_available(store_path: Path, monkeypatch) -> None:
    """A stand-in faiss module checks the optional code path without the dependency."""

    class IndexFlatIP:
        def __init__(self, dim: int) -> None:
            self.mat = np.zeros((0, dim), np.float32)

        def add(self, mat: np.ndarray) -> None:
            self.mat = np.concatenate([self.mat, mat])

        def search(self, q: np.ndarray, k: int):
            scores = q @ self.mat.T
            idx = np.argsort(-scores, axis=1)[:, :k]
            return np.take_along_axis(scores, idx, axis=1), idx

    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(IndexFlatIP=IndexFlatIP))
    vecs = unit(np.random.default_rng(6), 50)
    with SpeakerStore(store_path) as store:
        store.add_vectors([f"s{i}" for i in range(50)], vecs, fingerprint=FP_A)
        got = store.search(vecs[:3], top_k=2)
    with SpeakerStore(store_path, use_faiss=False) as store:
        assert store.search(vecs[:3], top_k=2) == got
    assert [c[0].speaker for c in got] == ["s0", "s1", "s2"]


# ---------------------------------------------------------------- files, folders, audio


def test_store_of_a_shipped_model_names_it_in_the_refusal(store_path: Path) -> None:
    from speakerid.encoders.registry import SHIPPED

    fast = SHIPPED["fast"].sha256
    with SpeakerStore(store_path) as store:
        add(store, "alice", fp=fast)
        with pytest.raises(StoreError) as info:
            store.check_model(FP_B, DIM)
    message = str(info.value)
    assert "--model fast" in message and "re-enroll" in message and "\n" not in message
    assert "--model" not in str(_refusal(store_path.with_name("other.sqlite")))


def _refusal(path: Path) -> StoreError:
    with SpeakerStore(path) as store:
        add(store, "alice", fp=FP_A)
        with pytest.raises(StoreError) as info:
            store.check_model(FP_B, DIM)
    return info.value


# ---------------------------------------------------------------- one process, two stores


def _open_close_until(path: str, stop: str) -> None:
    while not os.path.exists(stop):
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("SELECT COUNT(*) FROM speakers").fetchone()
        conn.close()


def test_two_stores_in_one_process_lose_nothing(store_path: Path) -> None:
    """A second ``SpeakerStore`` on the same file must not drop the first one's locks.

    Closing *any* descriptor of a file releases the process's POSIX locks on it, so the
    store must never open the database file with plain ``open()`` while SQLite uses it.
    """
    import threading

    with SpeakerStore(store_path) as store:
        add(store, "seed")
    acknowledged: list[str] = []
    errors: list[str] = []
    done = threading.Event()

    def writer() -> None:
        try:
            with SpeakerStore(store_path) as store:
                for k in range(60):
                    add(store, f"w{k}", n=1, seed=k)
                    acknowledged.append(f"w{k}")
        except Exception as exc:
            errors.append(f"writer: {exc}")
        finally:
            done.set()

    def reader() -> None:
        while not done.is_set():
            try:
                with SpeakerStore(store_path) as other:  # a fresh open each time
                    other.speakers()
            except Exception as exc:
                errors.append(f"reader: {exc}")

    # Another process opening and closing the store, as `speakerid list` would: with no
    # lock left on the file it takes itself for the last user and checkpoints the log away.
    other = multiprocessing.get_context("spawn").Process(
        target=_open_close_until, args=(str(store_path), str(store_path) + ".stop")
    )
    other.start()
    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    Path(str(store_path) + ".stop").touch()
    other.join(60)
    with SpeakerStore(store_path) as store:
        present = {s.speaker for s in store.speakers()}
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert errors == []
    assert set(acknowledged) <= present
    assert len(acknowledged) == 60


# ---------------------------------------------------------------- names are one name everywhere


def test_decomposed_name_finds_the_composed_speaker(store_path: Path) -> None:
    composed, decomposed = "Jos\u00e9", "Jose\u0301"
    with SpeakerStore(store_path) as store:
        add(store, composed)
        assert decomposed in store
        assert store.recordings(decomposed) == store.recordings(composed)
        np.testing.assert_array_equal(store.vector(decomposed), store.vector(composed))
        assert store.remove(decomposed) == 2
        assert composed not in store


# ---------------------------------------------------------------- read-only stays read-only


def _read_then_write(path: str) -> tuple:
    folder = Path(path).parent
    with SpeakerStore(path) as store:
        count = len(store)
        side_after_read = sorted(p.name for p in folder.iterdir())
        try:
            add(store, "bob")
            wrote = "wrote"
        except StoreError as exc:
            wrote = str(exc)
    return count, side_after_read, wrote, sorted(p.name for p in folder.iterdir())


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_read_only_store_stays_read_only(open_tmp: Path) -> None:
    from conftest import run_unprivileged

    path = open_tmp / "s.sqlite"
    with SpeakerStore(path) as store:
        add(store, "alice")
    os.chown(path, 65534, 65534) if os.geteuid() == 0 else None
    path.chmod(0o444)
    count, after_read, wrote, after_write = run_unprivileged(_read_then_write, str(path))
    assert count == 1
    assert after_read == after_write == ["s.sqlite"]  # no -wal / -shm left behind
    assert "read-only" in wrote
    path.chmod(0o644)  # writable again: the store must be writable again
    count, _, wrote, _ = run_unprivileged(_read_then_write, str(path))
    assert (count, wrote) == (1, "wrote")


# ---------------------------------------------------------------- recordings are files


def test_recordings_are_keyed_by_content_and_resolved_path(
    store_path: Path, tmp_path: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d1, d2, d3 = (tmp_path / d for d in ("d1", "d2", "d3"))
    for d, k in ((d1, 1), (d2, 2)):
        d.mkdir()
        (d / "take.wav").write_bytes((voices_dir / f"alice_{k}.wav").read_bytes())
    d3.mkdir()
    (d3 / "copy.wav").write_bytes((d1 / "take.wav").read_bytes())
    rng = np.random.default_rng(0)
    with SpeakerStore(store_path) as store:

        def enroll_one(path: str):
            return store.add_recordings("bob", [path], unit(rng, 1), fingerprint=FP_A)

        monkeypatch.chdir(d1)
        r = enroll_one("take.wav")
        assert (r.added, r.updated, r.recordings) == (1, 0, 1)
        monkeypatch.chdir(d2)  # another file of the same name: a new recording
        r = enroll_one("take.wav")
        assert (r.added, r.updated, r.recordings) == (1, 0, 2)
        # the first file again, copied elsewhere: recognised by its content
        r = enroll_one(str(d3 / "copy.wav"))
        assert (r.added, r.updated, r.recordings) == (0, 1, 2)
        assert sorted(store.recordings("bob")) == sorted(
            [str((d2 / "take.wav").resolve()), str((d3 / "copy.wav").resolve())]
        )


_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE speakers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, vector BLOB NOT NULL,
    n_recordings INTEGER NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL
);
CREATE TABLE recordings (
    id INTEGER PRIMARY KEY,
    speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    path TEXT NOT NULL, embedding BLOB NOT NULL, added TEXT NOT NULL,
    UNIQUE (speaker_id, path)
);
"""


def test_schema_1_store_is_read_as_is_and_migrated_on_write(
    store_path: Path, tmp_path: Path
) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF-not-really-audio-but-a-file")
    vec = unit(np.random.default_rng(0), 1)[0]
    conn = sqlite3.connect(store_path)
    conn.executescript(_SCHEMA_V1)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [
            ("format", "speakerid-store"),
            ("schema_version", "1"),
            ("model_fingerprint", FP_A),
            ("model_source", ""),
            ("embedding_dim", str(DIM)),
            ("created", "2026-01-01T00:00:00+00:00"),
        ],
    )
    conn.execute("INSERT INTO speakers VALUES (1, 'alice', ?, 1, 't', 't')", (vec.tobytes(),))
    conn.execute(
        "INSERT INTO recordings VALUES (1, 1, ?, ?, 't')", (str(audio.resolve()), vec.tobytes())
    )
    conn.execute("INSERT INTO recordings VALUES (2, 1, 'rel/b.wav', ?, 't')", (vec.tobytes(),))
    conn.commit()
    conn.close()
    with SpeakerStore(store_path) as store:
        assert store.recordings("alice") == [str(audio.resolve()), "rel/b.wav"]
        assert store.meta()["schema_version"] == "1"  # reading changes nothing
        r = store.add_recordings(
            "alice", [str(audio)], unit(np.random.default_rng(1), 1), fingerprint=FP_A
        )
        assert (r.added, r.updated, r.recordings) == (0, 1, 2)  # the old row is the same file
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
    conn = sqlite3.connect(store_path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(recordings)")]
    assert "sha256" in columns
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# ---------------------------------------------------------------- names as keys

# "José" precomposed (NFC) and with a combining accent (NFD); full-width letters; a ligature
NFC, NFD = "Jos\u00e9", "Jose\u0301"


@pytest.mark.parametrize(
    ("a", "b"),
    [(NFC, NFD), ("Alice", "alice"), ("Alice", "\uff21lice"), ("\ufb01", "fi"), (NFC, "JOS\u00c9")],
)
def test_names_equal_after_nfkc_and_case_folding_share_a_key(a: str, b: str) -> None:
    from speakerid.store.db import name_key

    assert name_key(a) == name_key(b)
    assert name_key("Alice") != name_key("Alicia")


def test_a_name_variant_is_the_same_speaker_and_keeps_its_first_spelling(store_path: Path):
    with SpeakerStore(store_path) as store:
        add(store, "Alice", seed=1)
        again = add(store, "\uff21LICE", seed=2)  # full-width A, upper case
        assert (again.speaker, again.created, again.recordings) == ("Alice", False, 4)
        assert [s.speaker for s in store.speakers()] == ["Alice"]
        assert "alice" in store and "\uff41lice" in store
        np.testing.assert_array_equal(store.vector("ALICE"), store.vector("Alice"))
        add(store, NFD, seed=3)
        assert add(store, NFC, seed=4).speaker == NFC  # NFD was stored as NFC
        with pytest.raises(StoreError, match="already enrolled"):
            store.add_vectors(["alice"], unit(np.random.default_rng(5), 1), fingerprint=FP_A)
        with pytest.raises(StoreError, match="share a key"):
            store.add_vectors(["bob", "BOB"], unit(np.random.default_rng(6), 2), fingerprint=FP_A)
        assert store.remove("aLiCe") == 4
        assert [s.speaker for s in store.speakers()] == [NFC]


def test_one_import_may_not_name_a_speaker_twice() -> None:
    from speakerid.store.speakers import refuse_collisions

    refuse_collisions([("alice", "d/alice"), ("bob", "d/bob"), ("bad/name", "d/x")])
    with pytest.raises(InvalidNameError) as exc:
        refuse_collisions([(NFC, f"d/{NFC}"), ("bob", "d/bob"), (NFD, f"d/{NFD}")])
    message = str(exc.value)
    assert f"'d/{NFC}'" in message and f"'d/{NFD}'" in message and "\n" not in message


def test_a_schema_3_store_gets_keys_at_its_first_write(store_path: Path) -> None:
    """Old stores may hold "Alice" and "alice": reads tell them apart by the exact name and
    refuse to guess; the first write migrates, computing every name's key."""
    with SpeakerStore(store_path) as store:
        add(store, "Alice", seed=1)
    conn = sqlite3.connect(store_path)
    conn.executescript(
        "DROP INDEX speakers_by_key; ALTER TABLE speakers DROP COLUMN name_key;"
        "UPDATE meta SET value = '3' WHERE key = 'schema_version';"
        "INSERT INTO speakers (name, vector, n_recordings, created, updated) "
        "SELECT 'alice', vector, 0, created, updated FROM speakers;"
    )
    conn.commit()
    conn.close()
    with SpeakerStore(store_path) as store:
        assert store.meta()["schema_version"] == "3"
        assert "Alice" in store and "alice" in store
        with pytest.raises(StoreError, match="'ALICE' could be 'Alice' and 'alice'"):
            store.vector("ALICE")
        add(store, "carol", seed=2)  # the first write migrates
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
        assert store.remove("alice") == 0 and "ALICE" in store  # now only "Alice" is left
        assert add(store, "ALICE", seed=3).speaker == "Alice"
    conn = sqlite3.connect(store_path)
    keys = dict(conn.execute("SELECT name, name_key FROM speakers").fetchall())
    conn.close()
    assert keys == {"Alice": "alice", "carol": "carol"}


# ---------------------------------------------------------------- leftovers


def test_leftovers_of_a_killed_creation_are_cleaned_on_open(store_path: Path) -> None:
    import fcntl

    with SpeakerStore(store_path) as store:
        add(store, "alice")
    folder = store_path.parent
    dead = [folder / f".store.sqlite.dead1.new{s}" for s in ("", "-wal", "-shm")]
    for p in dead:
        p.write_bytes(b"x")
    live = folder / ".store.sqlite.live1.new"  # a creation in progress holds its lock
    other = folder / ".other.sqlite.x1.new"
    other.write_bytes(b"x")
    with open(live, "wb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with SpeakerStore(store_path) as store:
            assert len(store) == 1
        assert live.exists()
    assert not any(p.exists() for p in dead)
    assert other.exists()


# ---------------------------------------------------------------- bulk writes


def test_add_many_equals_one_add_recordings_per_speaker(tmp_path: Path) -> None:
    """Batched bulk enrollment (new speakers written by whole batches) stores what one
    ``add_recordings`` per speaker stores: vectors, recordings, agreements."""
    rng = np.random.default_rng(11)
    items = [(f"s{i}", [f"s{i}/{j}.wav" for j in range(1 + i % 3)]) for i in range(25)]
    items.insert(7, ("s3", ["s3/extra.wav"]))  # named twice: the second adds to the first
    items.append(("old", ["old/new.wav"]))  # already enrolled
    batch = [(name, paths, unit(rng, len(paths))) for name, paths in items]
    stores = [SpeakerStore(tmp_path / "many.sqlite"), SpeakerStore(tmp_path / "one.sqlite")]
    for store in stores:
        add(store, "old", n=2, seed=4)
    results = stores[0].add_many(batch, fingerprint=FP_A, batch=10)
    singles = [stores[1].add_recordings(n, p, e, fingerprint=FP_A) for n, p, e in batch]
    assert results == singles
    assert stores[0].written_speakers[-len(batch) :] == [n for n, _, _ in batch]
    many, one = stores[0].speakers(), stores[1].speakers()
    assert [(s.speaker, s.recordings) for s in many] == [(s.speaker, s.recordings) for s in one]
    for a, b in zip(many, one, strict=True):
        assert (a.weakest_agreement is None) == (b.weakest_agreement is None)
        if a.weakest_agreement is not None:
            assert a.weakest_agreement == pytest.approx(b.weakest_agreement, abs=1e-5)
        np.testing.assert_allclose(
            stores[0].vector(a.speaker), stores[1].vector(b.speaker), atol=1e-6
        )
        paths_a, emb_a = stores[0].recording_vectors(a.speaker)
        paths_b, emb_b = stores[1].recording_vectors(b.speaker)
        assert paths_a == paths_b
        np.testing.assert_allclose(emb_a, emb_b, atol=1e-6)


def test_an_imported_vector_is_stored_once(store_path: Path) -> None:
    """A speaker's only imported recording is kept as the speaker's vector, not a copy;
    adding a recording later spells it out first, so the pool stays right."""
    rng = np.random.default_rng(12)
    first, later = unit(rng, 1), unit(rng, 1)
    with SpeakerStore(store_path) as store:
        store.add_vectors(["imp"], first, fingerprint=FP_A)
        conn = sqlite3.connect(store_path)
        assert conn.execute("SELECT length(embedding) FROM recordings").fetchall() == [(0,)]
        conn.close()
        paths, emb = store.recording_vectors("imp")
        assert paths == [IMPORTED_SOURCE]
        np.testing.assert_allclose(emb, first, atol=1e-6)
        store.add_recordings("imp", ["b.wav"], later, fingerprint=FP_A)
        np.testing.assert_allclose(
            store.vector("imp"), pool(np.concatenate([first, later])), atol=1e-6
        )
        _, emb = store.recording_vectors("imp")
        np.testing.assert_allclose(emb, np.concatenate([first, later]), atol=1e-6)
        assert store.speakers()[0].weakest_agreement == pytest.approx(float(first[0] @ later[0]))


def test_schema_3_store_is_read_then_stamped_on_its_first_write(store_path: Path) -> None:
    """Schema 4 adds what lets a search index catch up (``changed``, ``removed``, the seq
    and token); a schema-3 store is searched as it is and upgraded by its first write."""
    rng = np.random.default_rng(13)
    vecs = unit(rng, 20)
    with SpeakerStore(store_path) as store:
        store.add_vectors([f"s{i}" for i in range(20)], vecs, fingerprint=FP_A)
    conn = sqlite3.connect(store_path)
    conn.executescript(
        "DROP INDEX speakers_by_change; ALTER TABLE speakers DROP COLUMN changed; "
        "DROP TABLE removed; DELETE FROM meta WHERE key IN ('vectors_seq', 'store_token'); "
        "INSERT INTO meta VALUES ('vectors_generation', 'abc'); "
        "UPDATE meta SET value = '3' WHERE key = 'schema_version';"
    )
    conn.close()
    with SpeakerStore(store_path) as store:
        assert store.search(vecs[4], 1)[0][0].speaker == "s4"
        assert store.meta()["schema_version"] == "3"  # reading wrote nothing
        store.build_index("flat")  # migrates first
        meta = store.meta()
        assert meta["schema_version"] == str(SCHEMA_VERSION) and "vectors_generation" not in meta
        assert meta["vectors_seq"] == "1" and len(meta["store_token"]) == 16
        add(store, "late", n=1, seed=14)
        assert store.index_info().pending == 1
        assert store.search(unit(np.random.default_rng(14), 1)[0], 1)[0][0].speaker == "late"


# ---------------------------------------------------------------- the VAD mode


def test_a_store_keeps_the_vad_it_was_enrolled_with(store_path: Path) -> None:
    with SpeakerStore(store_path) as store:
        assert store.meta()["vad"] == ""  # an empty store is bound to nothing
        store.check_model(FP_A, DIM, vad="silero")
        add(store, "alice", vad="silero")
        assert store.meta()["vad"] == "silero"
        store.check_model(FP_A, DIM, vad="silero")
        add(store, "bob", seed=1, vad="silero")
        with pytest.raises(StoreError, match="--vad silero, but --vad energy") as exc:
            store.check_model(FP_A, DIM, vad="energy")
        assert "pass --vad silero" in str(exc.value) and "\n" not in str(exc.value)
        with pytest.raises(StoreError, match="--vad silero"):
            add(store, "carol", seed=2, vad="energy")
        assert "carol" not in store
        store.remove("alice")
        store.remove("bob")
        add(store, "dave", seed=3, vad="energy")  # emptied: the next write binds again
        assert store.meta()["vad"] == "energy"


def test_a_schema_4_store_was_made_with_the_energy_rule(store_path: Path) -> None:
    """Stores from before the VAD choice hold energy-trimmed embeddings: read as such, and
    the first write records it (an empty one stays unbound)."""
    with SpeakerStore(store_path) as store:
        add(store, "alice", vad="energy")
    conn = sqlite3.connect(store_path)
    conn.executescript(
        "DELETE FROM meta WHERE key = 'vad';"
        "UPDATE meta SET value = '4' WHERE key = 'schema_version';"
    )
    conn.commit()
    conn.close()
    with SpeakerStore(store_path) as store:
        assert "vad" not in store.meta()
        with pytest.raises(StoreError, match="--vad energy, but --vad silero"):
            store.check_model(FP_A, DIM, vad="silero")
        add(store, "bob", seed=1, vad="energy")  # the first write migrates
        meta = store.meta()
        assert meta["schema_version"] == str(SCHEMA_VERSION) == "5" and meta["vad"] == "energy"
