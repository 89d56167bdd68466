"""Sharded bulk embedding: shard rule, embeddings files with a model header, merge, import."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from speakerid.bulk import (
    Shard,
    embed_batched,
    load_embeddings,
    merge_embeddings,
    parse_shard,
    save_embeddings,
)
from speakerid.embed import Embedder, load_model
from speakerid.errors import AudioError, SpeakerIDError
from speakerid.store import SpeakerStore


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


def test_sharded_enroll_dir_into_one_store(cli, voices_dir: Path, tmp_path: Path) -> None:
    root = _speakers_dir(voices_dir, tmp_path / "speakers")
    store = tmp_path / "s.sqlite"
    for i in range(3):
        assert cli("enroll-dir", root, "--shard", f"{i}/3", store=store).exit_code == 0
    with SpeakerStore(store) as db:
        assert [s.speaker for s in db.speakers()] == ["alice", "bob", "carol"]


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
