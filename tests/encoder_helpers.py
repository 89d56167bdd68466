"""Small encoders and checkpoints the encoder, registry and embedding tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speakerid.audio import FRAGMENT_SAMPLES
from speakerid.encoders.twin import Encoder, ModelConfig, save_encoder
from speakerid.errors import CheckpointError

SMALL = {"channels": 32, "embedding_dim": 16}


def waves(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, FRAGMENT_SAMPLES, generator=gen)


def small_encoder(seed: int = 0, **overrides: object) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(ModelConfig(**{**SMALL, **overrides})).eval()


def small_checkpoint(path: Path) -> Path:
    """A small encoder saved with a threshold and info, as the round-trip tests expect."""
    save_encoder(small_encoder(seed=3), path, threshold=0.625, info={"note": "x", "step": 7})
    return path


def assert_one_line(exc: pytest.ExceptionInfo[CheckpointError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message
