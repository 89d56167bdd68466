"""What a checkpoint says about itself, read without torch (speakerid.encoders.checkpoint)."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from speakerid.encoders.checkpoint import (
    CHECKPOINT_FORMAT,
    HEADER_MAX_BYTES,
    check_threshold,
    file_sha256,
    read_header,
    read_metadata,
    read_raw_header,
    refuse_onnx,
)
from speakerid.errors import CheckpointError


def _safetensors(path: Path, header: object, tail: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + tail)
    return path


def test_header_of_a_saved_checkpoint(model_path: Path) -> None:
    header = read_header(model_path)
    assert header.fingerprint == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert header.fingerprint == file_sha256(model_path)
    assert header.embedding_dim == header.config["embedding_dim"] > 0
    assert read_metadata(model_path)["format"] == CHECKPOINT_FORMAT
    shapes = {k: v for k, v in read_raw_header(model_path).items() if k != "__metadata__"}
    assert shapes and all("shape" in v and "dtype" in v for v in shapes.values())


def test_a_pinned_sha256_that_does_not_match_is_refused(model_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not match the shipped model"):
        read_header(model_path, expected_sha256="0" * 64)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "too short"),
        (struct.pack("<Q", HEADER_MAX_BYTES + 1), "bad header size"),
        (struct.pack("<Q", 5) + b"\xff\xfe{[x", "bad header"),
        (struct.pack("<Q", 4000) + b"[" * 2000 + b"]" * 2000, "bad header"),
    ],
)
def test_unreadable_headers_are_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle) as exc:
        read_header(path)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({}, "not a speakerid encoder"),
        ({"format": CHECKPOINT_FORMAT}, "damaged checkpoint metadata"),
        ({"format": CHECKPOINT_FORMAT, "config": "{}"}, "damaged checkpoint metadata"),
        (
            {"format": CHECKPOINT_FORMAT, "config": json.dumps({"embedding_dim": 10**6})},
            "embedding_dim",
        ),
        (
            {
                "format": CHECKPOINT_FORMAT,
                "config": json.dumps({"embedding_dim": 8}),
                "threshold": "x",
            },
            "damaged checkpoint metadata",
        ),
    ],
)
def test_foreign_or_damaged_metadata_is_refused(
    tmp_path: Path, metadata: dict[str, str], needle: str
) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"__metadata__": metadata})
    with pytest.raises(CheckpointError, match=needle):
        read_header(path)


def test_missing_file_and_onnx_graph(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such model file"):
        read_header(tmp_path / "none.safetensors")
    graph = tmp_path / "m.onnx"
    graph.write_bytes(b"onnx")
    with pytest.raises(CheckpointError, match="--backend onnx"):
        refuse_onnx(graph)
    with pytest.raises(CheckpointError, match="--backend onnx"):
        read_header(graph)


@pytest.mark.parametrize("value", [-1.0, -0.25, 0.0, 0.5, 1.0])
def test_thresholds_in_the_score_range_pass(value: float) -> None:
    assert check_threshold(value) == value


@pytest.mark.parametrize("value", [-1.01, 1.5, float("nan"), float("inf")])
def test_thresholds_outside_the_score_range_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match=r"--threshold must be a cosine score in \[-1, 1\]"):
        check_threshold(value, "--threshold")


def test_reading_a_header_imports_no_torch(model_path: Path) -> None:
    code = (
        "import sys; from speakerid.encoders.checkpoint import read_header; "
        f"read_header({str(model_path)!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
