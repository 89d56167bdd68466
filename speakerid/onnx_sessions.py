"""onnxruntime sessions on the shipped graphs, their optimised form cached on this machine.

Every start of a command used to hand onnxruntime the shipped graph to optimise at its
``all`` level (fusions, and layouts chosen for this CPU), which costs about as much as
loading it: for CAM++ 126 ms of CPU to create the session, against 68 ms for the same
graph already optimised and saved with its weights in a file of their own (external
initialisers: the graph's protobuf stays small; ``bench/bench_onnx.py sessions --cached``,
docs/benchmarks.md). So the first session on a machine optimises as before and saves the
result under the user cache (``cache_root() / "sessions"``); later ones load it with
optimisation off. The embeddings are the same (``tests/test_onnx_sessions.py``).

A cached graph is trusted only when all of these hold, else it is rebuilt:

- its record (``<key>.json``) names the same source sha256 (the shipped pin), the same
  source file (path, size, modification time: a reinstalled or edited graph is hashed and
  checked against its pin again), the same onnxruntime version, optimisation level and CPU
  (the ``all`` level's layouts depend on the CPU's vector width);
- the sha256 of the cached graph and of its weights file match the record (a truncated,
  damaged or swapped file is caught here);
- onnxruntime loads it.

The cached files are hashed while onnxruntime parses them and the session is discarded
unless both digests match: a damaged file is never run, though onnxruntime does read it
(the cache lives in the user's own folder, as writable to an attacker as the install).

Files are written to a private folder and moved into place, the record last, so that a
reader never sees half a file and two processes building at once only race to write the
same bytes. No pickle: the record is JSON, the graph ONNX. A cache that cannot be written
(read-only home, full disk) only costs the optimisation at each start.

A command may start loading a cached session early, on a second thread (``open_soon``),
while it still imports and parses; ``open_pinned`` then takes that session instead of
loading its own. Only a valid cache entry is loaded that way, through the same checks:
a miss, a damaged file or any failure leaves the work (and its error message) to
``open_pinned``, in the foreground, so nothing is written behind the command's back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.errors import CheckpointError, SpeakerIDError
from speakerid.pins import file_sha256

log = logging.getLogger(__name__)

CACHE_ENV = "SPEAKERID_CACHE"  # overrides the cache folder (default: the user cache dir)
SESSIONS_DIR = "sessions"  # under the cache root: <key>.json, <key>.onnx, <key>.weights
CACHE_FORMAT = 1  # bump when the record or the files change meaning
LEVEL = "all"  # the optimisation level the cached graphs are saved at
EXTERNAL_MIN_BYTES = 1024  # initialisers this large go to the weights file
INSTALL_HINT = "the onnx runtime is missing: pip install onnxruntime (a speakerid dependency)"
# A cached graph must reproduce the fresh one on the caller's probe this closely (the saved
# graph is the one the fresh session runs, so they should agree to the bit).
PROBE_ATOL = 1e-5

# Inputs for one run of a graph, given the session built on it (whose metadata may say more).
Probe = Callable[[Any], dict[str, np.ndarray]]


class _Soon:
    """A cached session being loaded on a daemon thread (``open_soon``): None once done
    means a miss or a failure, for ``open_pinned`` to handle."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.session: Any = None

    def wait(self) -> Any:
        self.done.wait()
        return self.session


# Sessions started early (``open_soon``), by (source path, source sha256, threads);
# ``open_pinned`` takes the one of its arguments.
_soon: dict[tuple[str, str, int | None], _Soon] = {}


def cache_root() -> Path:
    """speakerid's cache folder: ``$SPEAKERID_CACHE``, else the user cache dir's speakerid."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from platformdirs import user_cache_path

    return user_cache_path("speakerid")


def cpu_id() -> str:
    """What of this CPU an optimised graph may depend on: its model name and feature flags
    where the OS says (Linux), else what ``platform`` knows."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:  # the first processor's block is enough: all cores are alike
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "flags", "Features", "CPU part"):
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    text = json.dumps([platform.machine(), platform.processor(), sorted(fields.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SpeakerIDError(INSTALL_HINT) from None
    return ort


def session_options(threads: int | None = None, optimise: bool = True) -> Any:
    """The options every speakerid session runs with.

    ``threads``: onnxruntime's intra-op threads (None: its default, one per core).
    ``optimise``: onnxruntime's ``all`` level, else none (a graph optimised already).
    """
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's
    # One fragment batch after another: the graphs have no branches to run side by side.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No arena: it keeps the largest batch's activations for the process's life (CAM++, 64
    # fragments of 8: peak 296 MB with it, 258 MB without, the same speed within noise).
    options.enable_cpu_mem_arena = False
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    # Pool threads sleep between operators instead of spinning: a spinning pool burns a core
    # it does not use (a cold verify: 80 ms of CPU) and slows whatever shares the machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimise else level.ORT_DISABLE_ALL
    return options


def plain_session(path: Path, threads: int | None = None, optimise: bool = True) -> Any:
    """A session on ``path`` as given, no cache; ``CheckpointError`` if onnxruntime refuses."""
    ort = _ort()
    options = session_options(threads, optimise)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types, not importable here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable ONNX model ({first})") from None


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def cache_key(sha256: str, path: Path) -> dict[str, Any]:
    """What a cached graph of the source ``sha256`` at ``path`` was made under: it is used
    only under the same (the source's size and mtime are checked apart, see ``_cached``).
    The path is part of it so that two installs sharing one cache keep a file each."""
    return {
        "format": CACHE_FORMAT,
        "source_sha256": sha256,
        "source": str(path),
        "onnxruntime": _ort().__version__,
        "level": LEVEL,
        "cpu": cpu_id(),
    }


def cache_stem(key: dict[str, Any]) -> Path:
    """``<cache>/sessions/<32 hex>``: one name per key, so versions and CPUs coexist."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_root() / SESSIONS_DIR / name


def _cached(path: Path, key: dict[str, Any], threads: int | None) -> Any | None:
    """The session on the cached optimised graph of ``path`` if it passes every check of
    the module's list, else None (a miss, or a file to rebuild)."""
    stem = cache_stem(key)
    try:
        record = json.loads(stem.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in key.items()):
        return None
    try:
        if record.get("source_stat") != _stat(path):
            return None
    except OSError:
        return None
    graph, weights = stem.with_suffix(".onnx"), stem.with_suffix(".weights")
    # The files are hashed on another thread while onnxruntime loads them (hashlib and the
    # session's creation both let go of the GIL): a cold start waits for the longer of the
    # two, not their sum. The session is returned, and so first run, only if both match.
    digests: dict[str, str | None] = {}

    def hash_files() -> None:
        for name, file in (("graph_sha256", graph), ("weights_sha256", weights)):
            try:
                digests[name] = file_sha256(file)
            except OSError:
                digests[name] = None

    hasher = threading.Thread(target=hash_files, name="speakerid-cache-hash", daemon=True)
    hasher.start()
    ort = _ort()
    try:
        options = session_options(threads, optimise=False)
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's own types: a file it cannot load is rebuilt
        session = None
    hasher.join()
    if any(digests.get(name) != record.get(name) for name in ("graph_sha256", "weights_sha256")):
        return None  # damaged or swapped: never run
    return session


def _same_outputs(a: Any, b: Any, probe: Probe) -> bool:
    feed = probe(a)
    outs_a, outs_b = a.run(None, feed), b.run(None, feed)
    return all(
        np.shape(x) == np.shape(y) and np.allclose(x, y, rtol=0, atol=PROBE_ATOL)
        for x, y in zip(outs_a, outs_b, strict=True)
    )


def _build(path: Path, key: dict[str, Any], threads: int | None, probe: Probe | None) -> Any:
    """Optimise ``path`` (already checked against its pin) in a session, save the result in
    the cache and return the session. The saved graph is loaded back and, given a
    ``probe``, must give the same outputs; else it is not kept."""
    ort = _ort()
    stem = cache_stem(key)
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=stem.parent))
    except OSError as exc:
        log.debug("session cache not writable (%s): optimising at each start", exc)
        return plain_session(path, threads)
    session = None
    try:
        graph, weights = work / f"{stem.name}.onnx", work / f"{stem.name}.weights"
        options = session_options(threads)
        options.optimized_model_filepath = str(graph)
        # The weights file's name is written into the graph, relative to it: the final name.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", weights.name
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes",
            str(EXTERNAL_MIN_BYTES),
        )
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception:  # onnxruntime's own types: an unreadable graph, or an unwritable copy
            return plain_session(path, threads)  # which says which (CheckpointError)
        if not weights.exists():  # a graph without large initialisers: an empty weights file
            weights.write_bytes(b"")
        try:
            saved = ort.InferenceSession(
                str(graph), session_options(threads, optimise=False), ["CPUExecutionProvider"]
            )
            if probe is not None and not _same_outputs(session, saved, probe):
                log.warning("%s: the saved optimised graph differs; not cached", path)
                return session
        except Exception as exc:  # it does not load back: keep optimising at each start
            log.warning("%s: the saved optimised graph does not load (%s); not cached", path, exc)
            return session
        record = {
            **key,
            "source_stat": _stat(path),
            "graph_sha256": file_sha256(graph),
            "weights_sha256": file_sha256(weights),
        }
        record_tmp = work / "record.json"
        record_tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(weights, stem.with_suffix(".weights"))
        os.replace(graph, stem.with_suffix(".onnx"))
        os.replace(record_tmp, stem.with_suffix(".json"))  # last: the files it names are there
        return session
    except OSError as exc:  # a full disk, a folder made read-only meanwhile
        log.debug("session cache not written (%s)", exc)
        return session if session is not None else plain_session(path, threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def open_pinned(
    path: Path,
    sha256: str,
    what: str,
    threads: int | None = None,
    probe: Probe | None = None,
) -> Any:
    """A session on the shipped graph ``path`` pinned at ``sha256``, through the cache.

    A valid cached graph (see the module's list) is loaded with optimisation off; it was
    made from bytes that matched the pin, and ``path`` has not changed since. Otherwise
    ``path`` is hashed: a mismatch raises ``CheckpointError`` ("does not match the
    ``what``"); a match is optimised, cached (checked with ``probe``: inputs for one run)
    and used.
    """
    path = Path(path)
    key = cache_key(sha256, path)
    soon = _soon.pop((str(path), sha256, threads), None)
    session = soon.wait() if soon is not None else None
    if session is None:
        session = _cached(path, key, threads)
    if session is not None:
        return session
    try:
        found = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if found != sha256:
        raise CheckpointError(
            f"{path}: sha256 {found[:12]}... does not match the {what} ({sha256[:12]}...); "
            "reinstall speakerid"
        )
    return _build(path, key, threads, probe)


def open_soon(path: Path, sha256: str, threads: int | None = None) -> None:
    """Start loading the cached session ``open_pinned(path, sha256, ..., threads)`` would
    load, on a daemon thread; ``open_pinned`` then waits for it instead of loading again.

    onnxruntime lets go of the GIL while it creates a session, so on a second core this
    overlaps the command's own imports and parsing (a cold ``verify``: the model's 40-50
    ms; docs/benchmarks.md). Only a valid cache entry is loaded, through ``_cached``'s
    checks; anything else is left to ``open_pinned`` (see the module's docstring). Asking
    twice starts one thread.
    """
    path = Path(path)
    slot = (str(path), sha256, threads)
    if slot in _soon:
        return
    soon = _soon[slot] = _Soon()

    def load() -> None:
        try:
            soon.session = _cached(path, cache_key(sha256, path), threads)
        # Whatever failed here fails again in open_pinned, in the foreground, worded there.
        except Exception as exc:
            log.debug("%s: early load failed (%s); loading in the foreground", path, exc)
        finally:
            soon.done.set()

    threading.Thread(target=load, name="speakerid-open-soon", daemon=True).start()
