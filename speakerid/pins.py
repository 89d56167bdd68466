"""The one hash of a pinned file: shipped weights, graphs, decision files and stores' models.

It sits below every stage (stdlib only) so that ``audio`` (Silero's graphs, through
``onnx_sessions``) and ``encoders`` (checkpoints) check pins the same way without one stage
importing the other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (hashlib releases the GIL on each)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
