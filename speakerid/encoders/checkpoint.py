"""What a checkpoint says about itself, read from its safetensors header without torch.

A safetensors file starts with an 8-byte little-endian header length and a JSON header
whose ``__metadata__`` holds speakerid's format name, config, threshold and info. Reading
that (and hashing the file) is all ``info`` and the ONNX backend need, so neither imports
torch.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speakerid.errors import CheckpointError
from speakerid.pins import file_sha256

CHECKPOINT_FORMAT = "speakerid-encoder/1"  # metadata 'format' of every speakerid checkpoint
HEADER_MAX_BYTES = 100_000_000  # safetensors' own limit on the JSON header
EMBEDDING_MAX_DIM = 8192  # the largest embedding read from a model or a file (shipped: 192, 256)
SCORE_RANGE = (-1.0, 1.0)  # cosine: every score, and so every useful threshold, lies here


def check_threshold(value: float, what: str = "threshold") -> float:
    """``value`` as a float if it is a cosine threshold (finite, in ``SCORE_RANGE``).

    A threshold outside the score range silently accepts or rejects everything, so it is
    refused (``ValueError``; callers turn it into their own error).
    """
    low, high = SCORE_RANGE
    value = float(value)
    if not low <= value <= high:  # also False for NaN
        raise ValueError(f"{what} must be a cosine score in [{low:g}, {high:g}], not {value}")
    return value


@dataclass(frozen=True)
class ModelHeader:
    """A checkpoint's identity and settings, as its header states them."""

    path: Path
    fingerprint: str  # sha256 of the file: the store's model identity
    config: dict[str, Any]  # ``ModelConfig`` fields as saved (not validated beyond the below)
    threshold: float | None  # calibrated cosine threshold, None if never calibrated
    info: dict[str, Any]

    @property
    def embedding_dim(self) -> int:
        return int(self.config["embedding_dim"])


def refuse_onnx(path: str | Path) -> None:
    """Raise ``CheckpointError`` saying what to pass when ``path`` is an ONNX graph."""
    if Path(path).suffix.lower() == ".onnx":
        raise CheckpointError(
            f"{path}: an ONNX graph, not a checkpoint; run it with --backend onnx"
        )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file. Raises ``CheckpointError`` if unreadable."""
    metadata = read_raw_header(path).get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


def read_raw_header(path: str | Path) -> dict[str, Any]:
    """A safetensors file's JSON header: ``__metadata__`` and each tensor's dtype and shape.

    The format: an 8-byte little-endian header length, then that many bytes of JSON.
    Raises ``CheckpointError`` if unreadable.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: not a readable speakerid model (file too short)")
            (size,) = struct.unpack("<Q", raw)
            if size > HEADER_MAX_BYTES:
                raise CheckpointError(f"{path}: not a readable speakerid model (bad header size)")
            header = json.loads(fh.read(size))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: JSON nested thousands deep, which no safetensors writer makes
        raise CheckpointError(f"{path}: not a readable speakerid model (bad header)") from None
    return header if isinstance(header, dict) else {}


def read_header(path: str | Path, expected_sha256: str | None = None) -> ModelHeader:
    """Fingerprint and metadata of a speakerid checkpoint, checked as ``load_encoder`` does.

    Raises ``CheckpointError`` for a missing, tampered (``expected_sha256``), foreign or
    damaged file. The weights themselves are not read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    refuse_onnx(path)
    fingerprint = file_sha256(path)
    if expected_sha256 is not None and fingerprint != expected_sha256:
        raise CheckpointError(
            f"{path}: sha256 {fingerprint[:12]}... does not match the shipped model; "
            "the file is damaged or was replaced (reinstall speakerid)"
        )
    metadata = read_metadata(path)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a speakerid encoder checkpoint")
    try:
        config = json.loads(metadata["config"])
        info = json.loads(metadata.get("info", "{}"))
        threshold = float(metadata["threshold"]) if "threshold" in metadata else None
        dim = config["embedding_dim"]
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({exc})") from None
    if type(dim) is not int or not 1 <= dim <= EMBEDDING_MAX_DIM or not isinstance(info, dict):
        raise CheckpointError(f"{path}: damaged checkpoint metadata (embedding_dim {dim!r})")
    return ModelHeader(path, fingerprint, config, threshold, info)
