"""The torch-free backend: the encoder body (+ whitening) as an ONNX graph run by onnxruntime.

The graph maps front-end features ``(batch, features, frames)`` to embeddings
``(batch, embedding_dim)``; the front-end runs in numpy (``npfeatures.py``, tested equal to
the torch one), so both backends share the audio path up to the body. The graph's metadata
carries the checkpoint's config and threshold and, as its fingerprint, the sha256 of the
checkpoint it was exported from: its embeddings match the torch backend's (cosine >= 0.9999,
tested), so one store serves both backends.

Exporting needs torch (``export_onnx``); running does not. For a checkpoint given to the
onnx backend, the graph is exported once into the user cache (``onnx_cache_dir``) and
checked against a recorded sha256 on every later load (rebuilt if it differs).
onnxruntime comes with the ``speakerid[onnx]`` extra.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.audio import FRAGMENT_SAMPLES, MIN_SPEECH_SECONDS
from speakerid.embed import BaseEmbedder
from speakerid.errors import CheckpointError, SpeakerIDError
from speakerid.modelinfo import ModelHeader, file_sha256, read_header
from speakerid.npfeatures import numpy_frontend
from speakerid.registry import resolve_model
from speakerid.vectors import l2_normalize

ONNX_FORMAT = "speakerid-onnx/1"  # metadata 'format' of an exported graph
ONNX_OPSET = 17  # LSTM, convolutions and reductions all export at this opset
CACHE_ENV = "SPEAKERID_CACHE"  # overrides the cache folder (default: the user cache dir)
INPUT_NAME = "features"
OUTPUT_NAME = "embedding"
INSTALL_HINT = "the onnx backend needs onnxruntime: pip install 'speakerid[onnx]'"


def onnx_cache_dir() -> Path:
    """Where graphs exported from checkpoints are kept: ``$SPEAKERID_CACHE`` or the user cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "onnx"
    from platformdirs import user_cache_path

    return user_cache_path("speakerid") / "onnx"


def export_onnx(
    checkpoint: str | Path, out: str | Path, expected_sha256: str | None = None
) -> Path:
    """Export a checkpoint's body (+ whitening) to ONNX at ``out`` (written atomically).

    Needs torch and the ``onnx`` package. Raises ``CheckpointError`` for a model whose
    front-end has no numpy version or whose body does not export.
    """
    import torch

    from speakerid.model import load_encoder

    loaded = load_encoder(checkpoint, expected_sha256=expected_sha256)
    cfg = loaded.encoder.config
    config = asdict(cfg)
    numpy_frontend(config)  # refuse before the slow part
    try:
        import onnx
    except ImportError:
        raise SpeakerIDError(
            "exporting to ONNX needs onnx: pip install 'speakerid[onnx]'"
        ) from None

    class Body(torch.nn.Module):
        """The encoder after its front-end: what the graph holds."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            emb = self.encoder.body(features)
            if self.encoder.whitening is None:
                return emb
            return self.encoder.whitening(emb.float())

    body = Body(loaded.encoder).eval()
    with torch.no_grad():  # not inference_mode: the tracer refuses inference tensors
        # batch 1: the exporter's advice for LSTMs whose batch varies at run time
        example = loaded.encoder.frontend(torch.zeros(1, cfg.fragment_samples))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    metadata = {
        "format": ONNX_FORMAT,
        "config": json.dumps(config),
        "source_sha256": loaded.fingerprint,
        "source": str(Path(checkpoint).resolve()),
        "threshold": "" if loaded.threshold is None else repr(float(loaded.threshold)),
    }
    try:
        # The TorchScript exporter (dynamo=False): it handles the LSTM and needs no onnxscript.
        # Its deprecation and LSTM-batch warnings are about the exporter, not the user's model.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                body,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=ONNX_OPSET,
            )
        graph = onnx.load(str(tmp))
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(tmp))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SpeakerIDError(f"{out}: cannot write ({exc.strerror or exc})") from None
    except Exception as exc:  # the exporter raises many kinds; one line says which model failed
        tmp.unlink(missing_ok=True)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{checkpoint}: cannot be exported to ONNX ({first})") from None
    return out


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX session with what its metadata says about the checkpoint it came from."""

    session: Any  # onnxruntime.InferenceSession
    config: dict[str, Any]
    threshold: float | None
    fingerprint: str  # the source checkpoint's sha256, so stores match the torch backend's
    path: Path  # the source checkpoint (as recorded), or the .onnx file given directly
    onnx_path: Path


def _session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SpeakerIDError(INSTALL_HINT) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types, not importable here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable ONNX model ({first})") from None


def open_onnx(path: str | Path) -> OnnxModel:
    """Load an exported graph and check that it is speakerid's."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    session = _session(path)
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != ONNX_FORMAT:
        raise CheckpointError(
            f"{path}: not a speakerid ONNX model (export one with speakerid export)"
        )
    try:
        config = json.loads(meta["config"])
        threshold = float(meta["threshold"]) if meta.get("threshold") else None
        fingerprint = meta["source_sha256"]
        source = Path(meta.get("source", str(path)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged ONNX model metadata ({exc})") from None
    return OnnxModel(session, config, threshold, fingerprint, source, path)


def cached_onnx_path(header: ModelHeader) -> Path:
    """The cache file for a checkpoint: named by its sha256, so a changed file gets a new one."""
    return onnx_cache_dir() / f"{header.fingerprint[:32]}.onnx"


def load_onnx_model(model: str | Path | None = None) -> OnnxModel:
    """The ONNX model for ``model``: an ``.onnx`` file as given, or a checkpoint's cached graph.

    A checkpoint (the shipped one when ``model`` is None) is exported once into the cache
    (this needs torch); later loads check the cached file's sha256 against the one recorded
    beside it and re-export if they differ.
    """
    if model is not None and Path(model).suffix == ".onnx":
        return open_onnx(model)
    checkpoint, expected = resolve_model(model)
    header = read_header(checkpoint, expected_sha256=expected)
    target = cached_onnx_path(header)
    digest_file = target.with_name(target.name + ".sha256")
    fresh = (
        target.is_file()
        and digest_file.is_file()
        and digest_file.read_text().strip() == file_sha256(target)
    )
    if not fresh:
        export_onnx(checkpoint, target, expected_sha256=expected)
        digest_file.write_text(file_sha256(target) + "\n")
    loaded = open_onnx(target)
    if loaded.fingerprint != header.fingerprint:
        raise CheckpointError(f"{target}: the cached graph is not {checkpoint}'s; delete it")
    # Report the checkpoint as the user named it, not the path recorded at export time.
    return OnnxModel(
        loaded.session, loaded.config, loaded.threshold, loaded.fingerprint, checkpoint, target
    )


class OnnxEmbedder(BaseEmbedder):
    """``embed.Embedder``'s twin on onnxruntime: numpy front-end, ONNX body, fp32 on CPU."""

    def __init__(
        self, model: OnnxModel, batch_size: int = 64, min_speech: float = MIN_SPEECH_SECONDS
    ):
        self.model = model
        self.batch_size = batch_size
        self.min_speech = min_speech
        self.frontend = numpy_frontend(model.config)
        if int(model.config.get("fragment_samples", FRAGMENT_SAMPLES)) != FRAGMENT_SAMPLES:
            raise CheckpointError(f"{model.onnx_path}: built for another fragment length")

    @property
    def dim(self) -> int:
        return int(self.model.config["embedding_dim"])

    def embed_fragments(self, fragments: np.ndarray) -> np.ndarray:
        """``(n, FRAGMENT_SAMPLES)`` float32 -> ``(n, D)`` unit-length embeddings."""
        out = []
        for start in range(0, len(fragments), self.batch_size):
            chunk = np.ascontiguousarray(fragments[start : start + self.batch_size], np.float32)
            features = self.frontend(chunk)
            out.append(self.model.session.run([OUTPUT_NAME], {INPUT_NAME: features})[0])
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))
