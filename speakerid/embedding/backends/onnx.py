"""The torch-free backend: the encoder body (+ whitening) as an ONNX graph run by onnxruntime.

The graph maps front-end features ``(batch, features, frames)`` to embeddings
``(batch, embedding_dim)``; the front-end runs in numpy (``npfeatures.py``, tested equal to
the torch one), so both backends share the audio path up to the body. The graph's metadata
carries the checkpoint's config and threshold; its embeddings match the torch backend's
(cosine >= 0.9999, tested).

Identity (the fingerprint a store binds to) is the sha256 of the bytes that compute the
embedding, never what a file says of itself:

- a shipped model's graph (pinned by sha256 in ``registry``) has the identity the registry
  gives it: an fp32 graph its checkpoint's (``ShippedModel.identity``);
- a graph speakerid exported (``export_onnx``: ``speakerid export``, or the cache below)
  is noted at export time in the user cache (``exports/<graph sha256>.json``, naming the
  checkpoint's sha256). A graph whose sha256 is noted there has its checkpoint's identity,
  so one store serves both backends;
- any other graph's identity is its own sha256. The checkpoint hash in its metadata
  (``source_sha256``) is reported as what it claims to come from, and binds nothing: a
  crafted graph claiming a shipped model's hash cannot use that model's stores.

Exporting needs torch (``export_onnx``); running does not. For a checkpoint given to the
onnx backend, the graph is exported once into the user cache (``onnx_cache_dir``) and used
while its sha256 is noted as exported from that checkpoint (rebuilt else). Every graph's
metadata is checked at load, and a graph speakerid did not write is probed: one run whose
output must be ``(batch, embedding_dim)`` finite floats.

Shipped models ship their graphs (``registry.ShippedGraph``: exported and optimised by
``bench/export_onnx.py``, pinned by sha256), so the default path exports nothing and needs
no torch. onnxruntime is a dependency of every install.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.audio import FRAGMENT_SAMPLES, MIN_SPEECH_SECONDS, resolve_vad
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.encoders.checkpoint import ModelHeader, check_threshold, read_header
from speakerid.encoders.registry import (
    DEFAULT_MODEL,
    SHIPPED,
    ShippedGraph,
    ShippedModel,
    resolve_model,
    shipped_path,
)
from speakerid.errors import CheckpointError, SpeakerIDError, require_torch
from speakerid.features.numpy import Frontend, numpy_frontend
from speakerid.onnx_sessions import cache_root, open_pinned, plain_session
from speakerid.onnx_sessions import open_soon as _open_session_soon
from speakerid.outputs import replacing
from speakerid.pins import file_sha256
from speakerid.vectors import l2_normalize

log = logging.getLogger(__name__)  # notes of slow steps; the CLI prints them

ONNX_FORMAT = "speakerid-onnx/1"  # metadata 'format' of an exported graph
ONNX_OPSET = 17  # LSTM, convolutions and reductions all export at this opset
INPUT_NAME = "features"
OUTPUT_NAME = "embedding"
EXPORTS_DIR = "exports"  # under the cache: <graph sha256>.json for each graph speakerid wrote
PROBE_BATCH = 2  # fragments of a foreign graph's probe run (2: the batch axis must vary)
# Front-end sizes a graph's config may ask for: bounds the numpy front-end's tables.
FRONTEND_SIZE_FIELDS = ("n_mels", "n_mfcc", "stem_stride")
FRONTEND_SIZE_MAX = 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


def onnx_cache_dir() -> Path:
    """Where graphs exported from checkpoints are kept: ``$SPEAKERID_CACHE`` or the user cache."""
    return cache_root() / "onnx"


def _export_record(graph_sha256: str) -> Path:
    return onnx_cache_dir() / EXPORTS_DIR / f"{graph_sha256}.json"


def note_export(graph_sha256: str, source_sha256: str, source: Path) -> None:
    """Note in the user cache that speakerid wrote the graph ``graph_sha256`` from the
    checkpoint ``source_sha256``: that graph then has the checkpoint's identity."""
    record = _export_record(graph_sha256)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        with replacing(record) as tmp:
            tmp.write_text(json.dumps({"source_sha256": source_sha256, "source": str(source)}))
    except OSError as exc:
        raise SpeakerIDError(
            f"{record}: cannot note the export in the cache ({exc.strerror or exc})"
        ) from None


def exported_from(graph_sha256: str) -> str | None:
    """The sha256 of the checkpoint speakerid exported the graph ``graph_sha256`` from, as
    noted at export time (``note_export``); None for a graph speakerid did not write here."""
    try:
        record = json.loads(_export_record(graph_sha256).read_text())
    except (OSError, ValueError):
        return None
    source = record.get("source_sha256") if isinstance(record, dict) else None
    return source if isinstance(source, str) and _SHA256.fullmatch(source) else None


def _graph_body(encoder: Any) -> tuple[Any, Any]:
    """The encoder after its front-end (what the graph holds) and an example input for it."""
    import torch

    class Body(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            emb = self.encoder.body(features)
            if self.encoder.whitening is None:
                return emb
            return self.encoder.whitening(emb.float())

    with torch.no_grad():  # not inference_mode: the tracer refuses inference tensors
        # batch 1: the exporter's advice for LSTMs whose batch varies at run time
        example = encoder.frontend(torch.zeros(1, encoder.config.fragment_samples))
    return Body(encoder).eval(), example


def _trace_graph(body: Any, example: Any, path: Path) -> None:
    """Write ``body`` (``_graph_body``'s) as an ONNX graph at ``path``: the TorchScript
    exporter (``dynamo=False``: it handles the LSTM, needs no onnxscript), the batch axis
    dynamic. Its deprecation and LSTM-batch warnings are about the exporter, not the model.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            body,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
        )


def export_onnx(
    checkpoint: str | Path, out: str | Path, expected_sha256: str | None = None
) -> Path:
    """Export a checkpoint's body (+ whitening) to ONNX at ``out``, and note the export.

    ``out`` is written atomically and through links (``outputs.replacing``: a directory,
    FIFO or device there is refused); the graph's sha256 is noted in the cache as exported
    from the checkpoint (``note_export``). Needs torch and the ``onnx`` package. Raises
    ``CheckpointError`` for a model whose front-end has no numpy version or whose body does
    not export.
    """
    from speakerid.encoders.twin import load_encoder

    loaded = load_encoder(checkpoint, expected_sha256=expected_sha256)
    config = asdict(loaded.encoder.config)
    numpy_frontend(config)  # refuse before the slow part
    try:
        import onnx
    except ImportError:
        raise SpeakerIDError(
            "exporting to ONNX needs onnx: pip install onnx "
            "(in a speakerid checkout: pip install -e '.[train]')"
        ) from None

    body, example = _graph_body(loaded.encoder)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpeakerIDError(f"{out}: cannot write ({exc.strerror or exc})") from None
    source = Path(checkpoint).resolve()
    metadata = {
        "format": ONNX_FORMAT,
        "config": json.dumps(config),
        "source_sha256": loaded.fingerprint,  # what it came from; identity is noted apart
        "source": str(source),
        "threshold": "" if loaded.threshold is None else repr(float(loaded.threshold)),
    }
    with replacing(out) as tmp:
        try:
            _trace_graph(body, example, tmp)
            graph = onnx.load(str(tmp))
            for key, value in metadata.items():
                graph.metadata_props.add(key=key, value=value)
            onnx.save(graph, str(tmp))
        except OSError:
            raise  # a write error: ``replacing`` words it
        except Exception as exc:  # the exporter raises many kinds; one line says which failed
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{checkpoint}: cannot be exported to ONNX ({first})") from None
        note_export(file_sha256(tmp), loaded.fingerprint, source)
    return out


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX session, what its metadata says, and the identity of the graph."""

    session: Any  # onnxruntime.InferenceSession
    config: dict[str, Any]
    threshold: float | None
    fingerprint: str  # the store identity: the graph's sha256, or its noted checkpoint's
    path: Path  # what a message names: the checkpoint for a cached graph, else the .onnx
    onnx_path: Path
    graph_sha256: str = ""  # sha256 of the .onnx file's bytes
    claimed_source: str | None = None  # the metadata's source_sha256: said, not verified


def _config(meta: dict[str, str]) -> tuple[dict[str, Any], float | None, Frontend]:
    """The metadata's config, threshold and numpy front-end, checked; ``ValueError`` else."""
    if "config" not in meta:
        raise ValueError("no config")
    config = json.loads(meta["config"])
    if not isinstance(config, dict):
        raise ValueError(f"config is {type(config).__name__}, not an object")
    dim = config.get("embedding_dim")
    if type(dim) is not int or dim <= 0:
        raise ValueError(f"embedding_dim {dim!r} is not a positive integer")
    if config.get("fragment_samples", FRAGMENT_SAMPLES) != FRAGMENT_SAMPLES:
        raise ValueError(f"fragment_samples {config['fragment_samples']!r}, not {FRAGMENT_SAMPLES}")
    for field in FRONTEND_SIZE_FIELDS:
        value = config.get(field, 1)
        if type(value) is not int or not 1 <= value <= FRONTEND_SIZE_MAX:
            raise ValueError(f"{field} {value!r} is not an integer in [1, {FRONTEND_SIZE_MAX}]")
    threshold = meta.get("threshold")
    threshold_value = check_threshold(float(threshold), "its threshold") if threshold else None
    return config, threshold_value, numpy_frontend(config)


def _probe(session: Any, frontend: Frontend, dim: int, path: Path) -> None:
    """Run the graph once on noise: ``(PROBE_BATCH, dim)`` finite floats, or refused."""
    noise = np.random.default_rng(0).standard_normal((PROBE_BATCH, FRAGMENT_SAMPLES))
    try:
        features = frontend((0.1 * noise).astype(np.float32))
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: features})
    except Exception as exc:  # onnxruntime's own types; a bad front-end config's ValueError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: the graph does not run ({first[:200]})") from None
    shape = tuple(getattr(out, "shape", ()))
    if shape != (PROBE_BATCH, dim) or not np.issubdtype(out.dtype, np.floating):
        raise CheckpointError(
            f"{path}: the graph's output has shape {shape}, not (batch, {dim}) floats as its "
            "metadata says"
        )
    if not np.isfinite(out).all():
        raise CheckpointError(f"{path}: the graph produced NaN or infinite values on a probe")


def open_onnx(path: str | Path) -> OnnxModel:
    """Load a graph, check that it is speakerid's and runs, and give it its identity.

    The identity is the checkpoint's sha256 when speakerid noted exporting this very file
    (``exported_from``), else the file's own sha256 (see the module's docstring). Any
    other graph is probed (``_probe``) before use; a noted one is what speakerid wrote.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        graph_sha256 = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    session = plain_session(path)  # not pinned (exported or given): optimised at each load
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != ONNX_FORMAT:
        raise CheckpointError(
            f"{path}: not a speakerid ONNX model (export one with speakerid export)"
        )
    try:
        config, threshold, frontend = _config(meta)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged ONNX model metadata ({exc})") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    source = exported_from(graph_sha256)
    if source is None:  # not the bytes speakerid wrote: check that it computes what it says
        _probe(session, frontend, config["embedding_dim"], path)
    claimed = meta.get("source_sha256") or None
    fingerprint = source or graph_sha256
    return OnnxModel(session, config, threshold, fingerprint, path, path, graph_sha256, claimed)


def cached_onnx_path(header: ModelHeader) -> Path:
    """The cache file for a checkpoint: named by its sha256, so a changed file gets a new one."""
    return onnx_cache_dir() / f"{header.fingerprint[:32]}.onnx"


def open_shipped_graph(model: ShippedModel, graph: ShippedGraph) -> OnnxModel:
    """A shipped model's graph, checked against its pinned sha256; identity as the registry
    gives it (``ShippedModel.identity``). Pinned bytes need no probe."""
    path = shipped_path(graph)
    if not path.is_file():
        raise CheckpointError(f"{path}: the shipped {graph.variant} graph is missing; reinstall")
    # Hashed against the pin, or its optimised form loaded from the per-machine cache that
    # was made after that check (``onnx_sessions``): the bytes that run are the pinned ones.
    session = open_pinned(path, graph.sha256, "sha256 pinned for it", probe=_feature_probe)
    meta = session.get_modelmeta().custom_metadata_map
    try:
        config, threshold, _ = _config(meta)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged ONNX model metadata ({exc})") from None
    fingerprint = model.identity(graph)
    return OnnxModel(
        session, config, threshold, fingerprint, path, path, graph.sha256, model.sha256
    )


def _feature_probe(session: Any) -> dict[str, np.ndarray]:
    """Inputs for one run of a shipped graph, to check its cached optimised form: the
    features of two fragments of noise by the front-end its metadata names."""
    _, _, frontend = _config(session.get_modelmeta().custom_metadata_map)
    noise = 0.1 * np.random.default_rng(0).standard_normal((PROBE_BATCH, FRAGMENT_SAMPLES))
    return {INPUT_NAME: frontend(noise.astype(np.float32))}


def open_soon(model: str | Path | None = None, precision: str = "auto") -> None:
    """Start loading, on a second thread, the session ``load_onnx_model(model, precision)``
    will open (``onnx_sessions.open_soon``). Only a shipped model's graph is started early;
    for anything else, or a ``precision`` it lacks, nothing is done and ``load_onnx_model``
    does it all (and words any error)."""
    shipped = SHIPPED.get(DEFAULT_MODEL if model is None else str(model))
    if shipped is None or not shipped.graphs:
        return
    try:
        graph = pick_graph(shipped, precision)
    except SpeakerIDError:
        return
    _open_session_soon(shipped_path(graph), graph.sha256)


def pick_graph(model: ShippedModel, precision: str) -> ShippedGraph:
    """The graph ``precision`` names; ``auto``: the model's first."""
    if precision == "auto":
        return model.graphs[0]
    graph = model.graph(precision)
    if graph is None:
        have = " | ".join(["auto", *(g.variant for g in model.graphs)])
        raise SpeakerIDError(
            f"the onnx backend runs {model.name!r} as --precision {have}, not {precision}"
        )
    return graph


def load_onnx_model(model: str | Path | None = None, precision: str = "auto") -> OnnxModel:
    """The ONNX model for ``model``: an ``.onnx`` file as given, a shipped model's graph
    (``pick_graph``), or a checkpoint's cached graph.

    A checkpoint without shipped graphs is exported once into the cache (this needs torch).
    The cached graph is used while its sha256 is noted as exported from that checkpoint
    (``exported_from``), and re-exported else (damaged, replaced, foreign). ``precision``:
    ``auto`` or a shipped graph's variant (``fp32``).
    """
    shipped = SHIPPED.get(DEFAULT_MODEL if model is None else str(model))
    if shipped is not None and shipped.graphs:
        return open_shipped_graph(shipped, pick_graph(shipped, precision))
    if precision not in ("auto", "fp32"):
        raise SpeakerIDError(f"--precision {precision} is the torch backend's; onnx runs fp32")
    if model is not None and Path(model).suffix == ".onnx":
        return open_onnx(model)
    checkpoint, expected = resolve_model(model)
    header = read_header(checkpoint, expected_sha256=expected)
    target = cached_onnx_path(header)
    if not (target.is_file() and exported_from(file_sha256(target)) == header.fingerprint):
        require_torch(f"{checkpoint}: exporting its graph for the onnx backend")
        log.info(
            "exporting %s to ONNX once, into %s (it takes about 30 s; later runs load it)",
            checkpoint.name,
            target.parent,
        )
        export_onnx(checkpoint, target, expected_sha256=expected)
    loaded = open_onnx(target)
    if loaded.fingerprint != header.fingerprint:  # replaced between export and load
        raise CheckpointError(f"{target}: the cached graph is not {checkpoint}'s; delete it")
    return replace(loaded, path=checkpoint)  # messages name the checkpoint as the user did


class OnnxEmbedder(BaseEmbedder):
    """``embed.Embedder``'s twin on onnxruntime: numpy front-end, ONNX body, fp32 on CPU."""

    def __init__(
        self,
        model: OnnxModel,
        batch_size: int = 8,
        min_speech: float = MIN_SPEECH_SECONDS,
        vad: str | None = None,
    ):
        # 8 fragments a run: CAM++'s activations grow with the batch (64 fragments at once:
        # 535 MB peak; by 8: 258 MB), and on one CPU thread batches of 4 and 16 ran at the
        # same speed per fragment (bench/bench_onnx.py profile), so larger buys nothing.
        self.model = model
        self.batch_size = batch_size
        self.min_speech = min_speech
        self.vad = resolve_vad(vad)
        self.frontend = numpy_frontend(model.config)  # checked by open_onnx

    @property
    def dim(self) -> int:
        return int(self.model.config["embedding_dim"])

    def embed_fragments(self, fragments: np.ndarray) -> np.ndarray:
        """``(n, FRAGMENT_SAMPLES)`` float32 -> ``(n, D)`` unit-length embeddings."""
        out = []
        for start in range(0, len(fragments), self.batch_size):
            chunk = np.ascontiguousarray(fragments[start : start + self.batch_size], np.float32)
            features = self.frontend(chunk)
            try:
                out.append(self.model.session.run([OUTPUT_NAME], {INPUT_NAME: features})[0])
            except Exception as exc:  # onnxruntime's own types, not importable here
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                path = self.model.onnx_path
                raise CheckpointError(f"{path}: the graph failed ({first})") from None
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))
