"""The per-machine cache of optimised graphs: hit, miss, damage, mismatch, and parity."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
from conftest import VOICES, synth_voice

from speakerid.audio import FRAGMENT_SAMPLES
from speakerid.audio.vad import SEQUENCE_FILE, SEQUENCE_SHA256, _probe, shipped_path
from speakerid.embedding.backends.onnx import _feature_probe
from speakerid.encoders.registry import DEFAULT_MODEL, SHIPPED
from speakerid.encoders.registry import shipped_path as shipped_model_path
from speakerid.errors import CheckpointError
from speakerid.features.numpy import numpy_frontend
from speakerid.onnx_sessions import (
    _cached,
    cache_key,
    cache_stem,
    file_sha256,
    open_pinned,
    open_soon,
    plain_session,
)

WHAT = "shipped Silero VAD"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache of this test's own: a fresh machine."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SPEAKERID_CACHE", str(root))
    return root


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    """A copy of the small Silero sequence graph, so that tests may touch or replace it."""
    copy = tmp_path / "models" / SEQUENCE_FILE
    copy.parent.mkdir()
    shutil.copyfile(shipped_path(SEQUENCE_FILE), copy)
    return copy


def _open(graph: Path) -> Any:
    return open_pinned(graph, SEQUENCE_SHA256, WHAT, threads=1, probe=lambda s: _probe(graph))


def _files(cache: Path) -> list[str]:
    return sorted(p.suffix for p in (cache / "sessions").iterdir())


def _same(a: Any, b: Any, feed: dict[str, np.ndarray]) -> None:
    for x, y in zip(a.run(None, feed), b.run(None, feed), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_miss_builds_the_cache_and_a_hit_uses_it(cache: Path, graph: Path) -> None:
    first = _open(graph)
    assert _files(cache) == [".json", ".onnx", ".weights"]
    stem = cache_stem(cache_key(SEQUENCE_SHA256, graph))
    record = json.loads(stem.with_suffix(".json").read_text())
    assert record["source_sha256"] == SEQUENCE_SHA256
    assert record["graph_sha256"] == file_sha256(stem.with_suffix(".onnx"))
    hit = _cached(graph, cache_key(SEQUENCE_SHA256, graph), 1)
    assert hit is not None  # every check passed: loaded without optimising
    _same(first, hit, _probe(graph))
    _same(plain_session(graph, threads=1), _open(graph), _probe(graph))


@pytest.mark.parametrize("damage", ["weights", "graph", "truncated", "record"])
def test_a_damaged_cache_is_rebuilt(cache: Path, graph: Path, damage: str) -> None:
    _open(graph)
    stem = cache_stem(cache_key(SEQUENCE_SHA256, graph))
    target = {
        "weights": stem.with_suffix(".weights"),
        "graph": stem.with_suffix(".onnx"),
        "truncated": stem.with_suffix(".onnx"),
        "record": stem.with_suffix(".json"),
    }[damage]
    data = bytearray(target.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2 :]
    elif damage == "record":
        data = bytearray(b"{not json")
    else:
        data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert _cached(graph, cache_key(SEQUENCE_SHA256, graph), 1) is None  # never trusted
    session = _open(graph)  # rebuilt
    assert _cached(graph, cache_key(SEQUENCE_SHA256, graph), 1) is not None
    _same(plain_session(graph, threads=1), session, _probe(graph))


@pytest.mark.parametrize(
    "field, value",
    [
        ("onnxruntime", "0.0.1"),  # made by another onnxruntime
        ("source_sha256", "0" * 64),  # made from other bytes
        ("cpu", "another-cpu"),  # layouts for another CPU
        ("level", "extended"),
        ("format", 0),
        ("source", "/elsewhere/silero.onnx"),
    ],
)
def test_a_mismatching_record_is_ignored(cache: Path, graph: Path, field: str, value: Any) -> None:
    _open(graph)
    stem = cache_stem(cache_key(SEQUENCE_SHA256, graph))
    record = json.loads(stem.with_suffix(".json").read_text())
    record[field] = value
    stem.with_suffix(".json").write_text(json.dumps(record))
    assert _cached(graph, cache_key(SEQUENCE_SHA256, graph), 1) is None
    _open(graph)
    assert json.loads(stem.with_suffix(".json").read_text())[field] != value  # rebuilt


def test_the_key_names_the_runtime_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    before = cache_stem(cache_key(SEQUENCE_SHA256, Path("x.onnx")))
    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")
    after = cache_stem(cache_key(SEQUENCE_SHA256, Path("x.onnx")))
    assert after != before  # versions keep their own files


def test_two_installs_sharing_a_cache_keep_a_file_each(cache: Path, graph: Path) -> None:
    other = graph.parent / "other" / SEQUENCE_FILE
    other.parent.mkdir()
    shutil.copyfile(graph, other)
    _open(graph)
    _open(other)
    assert _cached(graph, cache_key(SEQUENCE_SHA256, graph), 1) is not None
    assert _cached(other, cache_key(SEQUENCE_SHA256, other), 1) is not None


def test_a_changed_source_is_checked_against_its_pin_again(cache: Path, graph: Path) -> None:
    _open(graph)
    data = bytearray(graph.read_bytes())
    data[-1] ^= 1
    graph.write_bytes(bytes(data))  # new size or mtime: the cached graph is not used
    with pytest.raises(CheckpointError, match="does not match the shipped Silero VAD"):
        _open(graph)
    moved = graph.with_name("elsewhere.onnx")
    shutil.copyfile(shipped_path(SEQUENCE_FILE), moved)  # the right bytes at another path
    assert _cached(moved, cache_key(SEQUENCE_SHA256, moved), 1) is None
    _open(moved)


def test_an_unwritable_cache_still_gives_a_session(
    tmp_path: Path, graph: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("SPEAKERID_CACHE", str(blocker))  # cannot hold a folder
    session = _open(graph)
    _same(plain_session(graph, threads=1), session, _probe(graph))


def test_the_cached_campp_graph_gives_the_same_embeddings(cache: Path) -> None:
    """Parity of the default model: the cached optimised graph against onnxruntime's
    optimisation at load, on the features of a synthetic voice."""
    model = SHIPPED[DEFAULT_MODEL]
    graph = model.graphs[0]
    path = shipped_model_path(graph)
    built = open_pinned(path, graph.sha256, "pin", probe=_feature_probe)  # a miss
    cached = open_pinned(path, graph.sha256, "pin", probe=_feature_probe)  # a hit
    assert _cached(path, cache_key(graph.sha256, path), None) is not None
    reference = plain_session(path)
    config = json.loads(reference.get_modelmeta().custom_metadata_map["config"])
    wav = synth_voice(VOICES["alice"], seconds=4 * FRAGMENT_SAMPLES / 16_000)
    fragments = wav[: 4 * FRAGMENT_SAMPLES].reshape(4, FRAGMENT_SAMPLES).astype(np.float32)
    feed = {"features": numpy_frontend(config)(fragments)}
    want = reference.run(None, feed)[0]
    for session in (built, cached):
        got = session.run(None, feed)[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        cosine = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cosine.min() > 0.99999


def test_a_failed_write_still_gives_a_session(
    cache: Path, graph: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speakerid.onnx_sessions as sessions

    def full_disk(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sessions.os, "replace", full_disk)
    session = _open(graph)
    _same(plain_session(graph, threads=1), session, _probe(graph))
    assert not list((cache / "sessions").glob("*.json"))  # nothing half-written is kept


def _soon_slot(graph: Path) -> tuple[str, str, int]:
    return (str(graph), SEQUENCE_SHA256, 1)


def _early_loads(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[Any]:
    """The sessions ``_cached`` gives the early thread (recorded), or, with ``fail``, an
    error raised there instead."""
    import speakerid.onnx_sessions as sessions

    real, loaded = sessions._cached, []

    def cached(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name != "speakerid-open-soon":
            return real(*args, **kwargs)
        if fail:
            raise RuntimeError("must not reach the user")
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(sessions, "_cached", cached)
    return loaded


def test_a_session_started_early_is_the_one_opened(
    cache: Path, graph: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speakerid.onnx_sessions as sessions

    _open(graph)  # the cache exists, as on any start after a machine's first
    loaded = _early_loads(monkeypatch)
    open_soon(graph, SEQUENCE_SHA256, threads=1)
    open_soon(graph, SEQUENCE_SHA256, threads=1)  # asked twice: one load
    early = sessions._soon[_soon_slot(graph)].wait()
    assert early is not None and loaded == [early]
    assert _open(graph) is early  # taken, not loaded again
    assert _soon_slot(graph) not in sessions._soon
    _same(plain_session(graph, threads=1), early, _probe(graph))


def test_an_early_load_never_builds_nor_trusts_a_damaged_cache(cache: Path, graph: Path) -> None:
    import speakerid.onnx_sessions as sessions

    open_soon(graph, SEQUENCE_SHA256, threads=1)  # a fresh machine: no cache yet
    assert sessions._soon[_soon_slot(graph)].wait() is None
    assert not (cache / "sessions").exists()  # nothing written behind the command's back
    first = _open(graph)  # the foreground builds it, as without the early start
    assert _files(cache) == [".json", ".onnx", ".weights"]
    weights = cache_stem(cache_key(SEQUENCE_SHA256, graph)).with_suffix(".weights")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    open_soon(graph, SEQUENCE_SHA256, threads=1)
    assert sessions._soon[_soon_slot(graph)].wait() is None  # the damaged file is not run
    _same(first, _open(graph), _probe(graph))  # rebuilt in the foreground


def test_a_failing_early_load_leaves_the_error_to_the_foreground(
    cache: Path, graph: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _open(graph)
    graph.write_bytes(b"not the pinned graph")  # replaced after the cache was made
    _early_loads(monkeypatch, fail=True)  # and the early thread's load raises
    open_soon(graph, SEQUENCE_SHA256, threads=1)
    with pytest.raises(CheckpointError, match="does not match the shipped Silero VAD"):
        _open(graph)
