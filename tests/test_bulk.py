"""Sharded bulk embedding: shard rule, embeddings files with a model header, merge, import."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.embedding.bulk import embed_batched
from speakerid.embedding.shards import Shard, parse_shard
from speakerid.errors import AudioError, SpeakerIDError
from speakerid.store.npz import load_embeddings, merge_embeddings, save_embeddings
from speakerid.store.speakers import SpeakerStore


def test_shards_split_the_sorted_list_evenly_and_completely() -> None:
    items = [f"f{i:02d}" for i in range(10)][::-1]
    parts = [Shard(i, 3).take(items) for i in range(3)]
    assert sorted(x for p in parts for x in p) == sorted(items)  # every item once
    assert [len(p) for p in parts] == [4, 3, 3]
    assert parts[0] == ["f00", "f03", "f06", "f09"]
    assert Shard(1, 3).take(list(reversed(items))) == parts[1]  # order given does not matter


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1/0", "a/b", "1", "1/2/3"])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(SpeakerIDError, match="0 <= I < N"):
        parse_shard(text)


def test_parse_shard() -> None:
    assert parse_shard(None) == Shard(0, 1)
    assert parse_shard(" 2/4") == Shard(2, 4)


def test_batching_across_files_equals_one_file_at_a_time(
    model_path: Path, voices_dir: Path
) -> None:
    embedder = Embedder(load_model(model_path), device="cpu", precision="fp32")
    from speakerid.audio import load_audio, prepare

    paths = [str(voices_dir / f"{n}_{k}.wav") for n in ("alice", "bob") for k in (1, 2)]
    paths.insert(2, str(voices_dir / "missing.wav"))
    calls = []

    def counted(frags: np.ndarray) -> np.ndarray:
        calls.append(len(frags))
        return embedder.embed_fragments(frags)

    load = lambda p: prepare(load_audio(p), name=p)  # noqa: E731
    got = list(embed_batched(counted, load, paths, batch_fragments=3))
    assert [p for p, _ in got] == paths
    assert isinstance(got[2][1], AudioError)  # the bad file is reported in place ...
    for path, vector in got[:2] + got[3:]:  # ... and costs the good ones nothing
        np.testing.assert_allclose(vector, embedder.embed_file(path), atol=1e-5)
    assert len(calls) < 4 and max(calls) > 1  # fragments of several files per call


def _speakers_dir(voices_dir: Path, root: Path) -> Path:
    for name in ("alice", "bob", "carol"):
        for k in (1, 2):
            (root / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(voices_dir / f"{name}_{k}.wav", root / name / f"{k}.wav")
    return root


def test_sharded_enroll_dir_merge_and_import_equal_a_direct_enrollment(
    cli, voices_dir: Path, tmp_path: Path
) -> None:
    root = _speakers_dir(voices_dir, tmp_path / "speakers")
    parts = []
    for i in range(2):
        part = tmp_path / f"part{i}.npz"
        r = cli("enroll-dir", root, "--shard", f"{i}/2", "--out", part, "--json")
        assert r.exit_code == 0, r.output
        parts.append(part)
    assert len(load_embeddings(parts[0]).vectors) == 4  # alice, carol
    assert len(load_embeddings(parts[1]).vectors) == 2  # bob
    merged = tmp_path / "all.npz"
    r = cli("embed", *parts, "--merge", "--out", merged, model=False)
    assert r.exit_code == 0, r.output
    imported = tmp_path / "imported.sqlite"
    r = cli("enroll", "--from-npz", merged, "--json", store=imported, model=False)
    assert r.exit_code == 0, r.output
    assert {e["speaker"] for e in json.loads(r.stdout)["enrolled"]} == {"alice", "bob", "carol"}

    direct = tmp_path / "direct.sqlite"
    assert cli("enroll-dir", root, store=direct).exit_code == 0
    with SpeakerStore(imported) as a, SpeakerStore(direct) as b:
        assert a.meta()["model_fingerprint"] == b.meta()["model_fingerprint"]
        for name in ("alice", "bob", "carol"):
            assert sorted(a.recordings(name)) == sorted(b.recordings(name))
            np.testing.assert_allclose(a.vector(name), b.vector(name), atol=1e-5)


@pytest.mark.slow
def test_sharded_enroll_dir_into_one_store(cli, voices_dir: Path, tmp_path: Path) -> None:
    root = _speakers_dir(voices_dir, tmp_path / "speakers")
    store = tmp_path / "s.sqlite"
    for i in range(3):
        assert cli("enroll-dir", root, "--shard", f"{i}/3", store=store).exit_code == 0
    with SpeakerStore(store) as db:
        assert [s.speaker for s in db.speakers()] == ["alice", "bob", "carol"]


@pytest.mark.slow
def test_sharded_embed_and_merge_keep_keys_and_model(
    cli, voices_dir: Path, tmp_path: Path, model_path: Path
) -> None:
    files = [str(p) for p in sorted(voices_dir.glob("*.wav"))]
    parts = [tmp_path / f"e{i}.npz" for i in range(2)]
    for i, part in enumerate(parts):
        assert cli("embed", *files, "--shard", f"{i}/2", "--out", part).exit_code == 0
    merged = tmp_path / "all.npz"
    assert cli("embed", *parts, "--merge", "--out", merged, model=False).exit_code == 0
    with np.load(merged) as z:
        assert sorted(z.files) == sorted(files)  # the header is not a member
    emb = load_embeddings(merged)
    assert emb.model_fingerprint == load_model(model_path).fingerprint
    assert emb.embedding_dim == 16 and emb.root is None


def test_merge_refuses_other_models_overlaps_and_headerless_files(
    tmp_path: Path,
) -> None:
    vec = np.ones(4, np.float32) / 2
    head = {
        "format": "speakerid-embeddings",
        "model_fingerprint": "a" * 64,
        "embedding_dim": 4,
        "model_source": "",
    }
    save_embeddings(tmp_path / "a.npz", {"x.wav": vec}, head)
    save_embeddings(tmp_path / "b.npz", {"y.wav": vec}, {**head, "model_fingerprint": "b" * 64})
    save_embeddings(tmp_path / "c.npz", {"x.wav": vec}, head)
    save_embeddings(tmp_path / "old.npz", {"z.wav": vec})
    with pytest.raises(SpeakerIDError, match="different models"):
        merge_embeddings([tmp_path / "a.npz", tmp_path / "b.npz"])
    with pytest.raises(SpeakerIDError, match="in both"):
        merge_embeddings([tmp_path / "a.npz", tmp_path / "c.npz"])
    with pytest.raises(SpeakerIDError, match="no model header"):
        merge_embeddings([tmp_path / "a.npz", tmp_path / "old.npz"])
    with pytest.raises(SpeakerIDError, match="not a readable"):
        (tmp_path / "bad.npz").write_bytes(b"not a zip")
        load_embeddings(tmp_path / "bad.npz")


def test_from_npz_refuses_another_model_and_leaves_the_store(
    cli, voices_dir: Path, tmp_path: Path, enrolled_store: Path, other_model_path: Path
) -> None:
    root = _speakers_dir(voices_dir, tmp_path / "speakers")
    part = tmp_path / "b.npz"
    r = cli("enroll-dir", root, "--out", part, model=other_model_path)
    assert r.exit_code == 0, r.output
    before = enrolled_store.read_bytes()
    r = cli("enroll", "--from-npz", part, store=enrolled_store, model=False)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.startswith("error: ") and "model" in r.stderr
    assert enrolled_store.read_bytes() == before


def test_from_npz_needs_speaker_folders_and_no_name(
    cli, voices_dir: Path, tmp_path: Path, store_path: Path
) -> None:
    plain = tmp_path / "plain.npz"
    assert cli("embed", str(voices_dir / "alice_1.wav"), "--out", plain).exit_code == 0
    r = cli("enroll", "--from-npz", plain, store=store_path, model=False)
    assert r.exit_code == 2 and "enroll-dir" in r.stderr
    r = cli("enroll", "alice", "--from-npz", plain, store=store_path, model=False)
    assert r.exit_code == 2 and "not both" in r.stderr
    r = cli("enroll", "alice", store=store_path)
    assert r.exit_code == 2 and "at least one FILE" in r.stderr
    assert not store_path.exists()


def test_save_embeddings_keys_exactly_as_given(tmp_path: Path) -> None:
    keys = ["./a.wav", "/abs/b.flac", "../c.wav", "file", "d e [1].wav"]
    vecs = {k: np.full(16, i, np.float32) for i, k in enumerate(keys)}
    out = tmp_path / "e.npz"
    save_embeddings(out, vecs)
    with np.load(out) as z:
        assert sorted(z.files) == sorted(keys)
        for i, k in enumerate(keys):
            assert z[k][0] == i
    with pytest.raises(SpeakerIDError):
        save_embeddings(tmp_path / "no" / "such" / "dir" / "e.npz", vecs)


# ---------------------------------------------------------------- hostile embeddings files

_HEAD = {
    "format": "speakerid-embeddings",
    "model_fingerprint": "a" * 64,
    "embedding_dim": 4,
    "model_source": "",
    "root": "r",
}


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=array.dtype.hasobject)
    return buf.getvalue()


def _npz(path: Path, members: dict[str, bytes], head: object = _HEAD) -> Path:
    """An .npz written member by member (any bytes), with ``head`` as the zip comment."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.comment = head if isinstance(head, bytes) else json.dumps(head).encode()
        for key, data in members.items():
            zf.writestr(f"{key}.npy", data)
    return path


def _refused(path: Path, *needles: str) -> str:
    with pytest.raises(SpeakerIDError) as exc:
        load_embeddings(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


GOOD = np.array([0.5, -0.5, 0.5, 0.5], np.float32)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("embedding_dim", "abc", "embedding_dim 'abc'"),
        ("embedding_dim", [192], "embedding_dim [192]"),
        ("embedding_dim", True, "embedding_dim True"),
        ("embedding_dim", 0, "from 1 to 8192"),
        ("embedding_dim", 10**9, "from 1 to 8192"),
        ("model_fingerprint", 12345, "model_fingerprint 12345"),
        ("model_fingerprint", ["a" * 64], "not a sha256"),
        ("model_fingerprint", "xyz", "not a sha256"),
        ("root", 5, "root 5 is not a string"),
        ("model_source", {"a": 1}, "model_source"),
    ],
)
def test_header_fields_are_type_checked(tmp_path: Path, field: str, value: object, needle: str):
    path = _npz(tmp_path / "h.npz", {"r/a/1.wav": _npy(GOOD)}, {**_HEAD, field: value})
    _refused(path, needle)


def test_a_comment_that_is_no_header_is_ignored_even_deeply_nested(tmp_path: Path) -> None:
    nested = _npz(tmp_path / "deep.npz", {"x.wav": _npy(GOOD)}, b"[" * 30_000 + b"]" * 30_000)
    emb = load_embeddings(nested)  # was a RecursionError
    assert emb.model_fingerprint is None and emb.embedding_dim == 4
    with pytest.raises(SpeakerIDError, match="no model header"):
        merge_embeddings([nested])


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.array([1j, 1, 2, 3]), "complex128 values"),
        (np.array([1, 2, 3, 4], np.int32), "int32 values"),
        (np.array([True, False, True, True]), "bool values"),
        (np.array(["a", "b", "c", "d"]), "<U1 values"),
        (np.zeros(4, [("x", "<f4")]), "values; embeddings are real floats"),
        (np.array([1.0, 2, 3, 4], np.float128), "float128 values"),
        (np.array([np.nan, 1, 2, 3], np.float32), "NaN or infinite"),
        (np.array([1e300, 1, 2, 3]), "NaN or infinite"),  # overflows float32
        (np.zeros(4, np.float32), "zero vector"),
        (np.full(4, 1e-300), "zero vector"),  # underflows to zero in float32
        (np.full(4, 1e-30, np.float32), "zero vector"),  # too small to scale
        (np.ones(5, np.float32), "shape (5,)"),
        (np.ones((2, 4), np.float32), "shape (2, 4)"),
    ],
)
def test_only_finite_real_nonzero_vectors_of_the_header_size(
    tmp_path: Path, array: np.ndarray, needle: str
) -> None:
    members = {"r/a/1.wav": _npy(GOOD), "r/b/1.wav": _npy(array)}
    _refused(_npz(tmp_path / "v.npz", members), "'r/b/1.wav'", needle)


def test_pickled_members_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = _npz(tmp_path / "p.npz", {"r/a/1.wav": _npy(np.array([object()] * 4, dtype=object))})
    _refused(path, "object values")


def test_a_member_is_judged_by_its_npy_header_before_its_data_is_read(tmp_path: Path) -> None:
    """A header claiming 200 million values is refused from the header: no allocation."""
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (200000000,), }"
    header = text.ljust(117) + "\n"
    fake = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    _refused(_npz(tmp_path / "big.npz", {"r/a/1.wav": fake + b"\0" * 64}), "(200000000,)")
    garbage = _npz(tmp_path / "g.npz", {"r/a/1.wav": b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 70000})
    _refused(garbage, "not a readable embeddings .npz")
    stray = _npz(tmp_path / "s.npz", {"r/a/1.wav": _npy(GOOD)})
    import zipfile

    with zipfile.ZipFile(stray, "a") as zf:
        zf.writestr("notes.txt", "hello")
    _refused(stray, "'notes.txt' is not a .npy array")


def test_member_count_is_checked_from_the_zip_directory(tmp_path: Path, monkeypatch) -> None:
    import speakerid.store.npz as bulk

    monkeypatch.setattr(bulk, "EMBEDDINGS_MAX_KEYS", 3)
    members = {f"r/a/{i}.wav": _npy(GOOD) for i in range(4)}
    read: list[str] = []
    with monkeypatch.context() as m:
        m.setattr(bulk, "_npy_header", lambda *a: read.append("x"))
        _refused(_npz(tmp_path / "many.npz", members), "holds 4 members", "at most 3 keys")
    assert read == []  # refused before any member was opened
    with pytest.raises(SpeakerIDError, match="more than 3 keys"):
        merge_embeddings(
            [
                _npz(tmp_path / "p1.npz", dict(list(members.items())[:2])),
                _npz(tmp_path / "p2.npz", dict(list(members.items())[2:])),
            ]
        )


def test_a_known_fingerprint_must_agree_with_the_size(tmp_path: Path) -> None:
    from speakerid.encoders.registry import SHIPPED

    accurate = SHIPPED["accurate"].sha256
    head = {**_HEAD, "model_fingerprint": accurate}
    path = _npz(tmp_path / "k.npz", {"r/a/1.wav": _npy(GOOD)}, head)
    _refused(path, "says size 4", "(accurate) makes vectors of size 192")


def test_from_npz_refuses_a_size_its_store_contradicts(tmp_path: Path) -> None:
    from speakerid.embedding.bulk import enroll_embeddings

    store_path = tmp_path / "s.sqlite"
    with SpeakerStore(store_path) as store:
        store.add_recordings("carol", ["c.wav"], np.ones((1, 8), np.float32), fingerprint="a" * 64)
    before = store_path.read_bytes()
    emb = load_embeddings(_npz(tmp_path / "e.npz", {"r/alice/1.wav": _npy(GOOD)}))
    with SpeakerStore(store_path) as store, pytest.raises(SpeakerIDError) as exc:
        enroll_embeddings(store, emb)
    assert "makes vectors of size 4" in str(exc.value) and "of size 8" in str(exc.value)
    assert "header is wrong" in str(exc.value)
    assert store_path.read_bytes() == before
