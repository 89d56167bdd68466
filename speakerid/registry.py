"""The shipped models by name: ``accurate`` (CAM++, the default), ``fast``, ``ecapa``.

``--model`` takes one of these names or a path to a checkpoint. Shipped files are pinned by
sha256 and refuse to load when they differ. This module imports no torch, so that commands
that only describe models (``speakerid models``, ``info``) start fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speakerid.errors import CheckpointError
from speakerid.modelinfo import read_raw_header

PACKAGE_DIR = Path(__file__).parent / "_models"  # in an installed wheel
REPO_DIR = Path(__file__).parent.parent / "models"  # in a source checkout
MEASURED_FILE = "measured.json"  # benchmark summary per shipped model, beside the weights


@dataclass(frozen=True)
class ShippedModel:
    """One model that ships with speakerid."""

    name: str  # what ``--model`` accepts
    filename: str  # under models/ (a checkout) or speakerid/_models/ (a wheel)
    sha256: str  # the file's pinned digest
    summary: str  # one line for ``speakerid models``


SHIPPED: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel(
            "accurate",
            "campp_zh_en.safetensors",
            "c6f21446772f7cfac72fb48851be8e55a7147ae96b8e2092d71a74ef672fe82e",
            "CAM++ from 3D-Speaker (200k zh/en speakers)",
        ),
        ShippedModel(
            "fast",
            "lstm_s3.safetensors",
            "f9699bbb79eadabd27a4ed652d35e47c0b2b9ec98916557a16f8fa2b450e26e7",
            "LSTM student of Resemblyzer's GE2E",
        ),
        ShippedModel(
            "ecapa",
            "ecapa_voxceleb.safetensors",
            "5675deeb6a7eaa2f97993fe8385bf145ffa047c7f63dfeb20918fa9eb727cc99",
            "ECAPA-TDNN from SpeechBrain (VoxCeleb 1+2, 7205 speakers)",
        ),
    )
}
DEFAULT_MODEL = "accurate"  # chosen by measurement: docs/benchmarks.md


def shipped_path(model: ShippedModel) -> Path:
    """Where a shipped model's file lies: inside the installed package, else the checkout."""
    packaged = PACKAGE_DIR / model.filename
    return packaged if packaged.is_file() else REPO_DIR / model.filename


def shipped_name(fingerprint: str) -> str | None:
    """The shipped model's name whose pinned sha256 is ``fingerprint``, else None."""
    return next((m.name for m in SHIPPED.values() if m.sha256 == fingerprint), None)


def resolve_model(spec: str | Path | None) -> tuple[Path, str | None]:
    """``None`` (the default), a shipped name or a path -> (file, pinned sha256 or None).

    A shipped name wins over a file of the same name in the working directory; write
    ``./fast`` for such a file.
    """
    name = DEFAULT_MODEL if spec is None else str(spec)
    if name in SHIPPED:
        model = SHIPPED[name]
        path = shipped_path(model)
        if not path.is_file():
            raise CheckpointError(
                f"the shipped model {name!r} is missing ({path}); reinstall speakerid "
                "or pass --model PATH"
            )
        return path, model.sha256
    return Path(spec), None  # type: ignore[arg-type]


def measured() -> dict[str, Any]:
    """The benchmark summary shipped beside the weights (``bench/bench_models.py`` writes it)."""
    for folder in (PACKAGE_DIR, REPO_DIR):
        path = folder / MEASURED_FILE
        if path.is_file():
            return json.loads(path.read_text())
    return {}


@dataclass(frozen=True)
class ModelListing:
    """One row of ``speakerid models``."""

    name: str
    default: bool
    summary: str
    path: str
    megabytes: float
    parameters: int
    embedding_dim: int
    threshold: float | None
    sha256: str
    measured: dict[str, Any]  # e.g. {"eer": {"ravdess": 0.12, ...}, "audio_s_per_s": {...}}
    error: str | None = None


def list_models() -> list[ModelListing]:
    """Every shipped model with its size, settings and measured accuracy and speed."""
    numbers = measured()
    rows = []
    for model in SHIPPED.values():
        path = shipped_path(model)
        error, params, dim, threshold = None, 0, 0, None
        try:
            header = read_raw_header(path)
            metadata = header.get("__metadata__") or {}
            shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
            config = json.loads(metadata.get("config", "{}"))
            dim = int(config.get("embedding_dim", 0))
            threshold = float(metadata["threshold"]) if "threshold" in metadata else None
            params = sum(_numel(s) for k, s in shapes.items() if _is_weight(k))
        except (CheckpointError, ValueError, TypeError) as exc:
            error = str(exc)
        size = path.stat().st_size / 1e6 if path.is_file() else 0.0
        rows.append(
            ModelListing(
                model.name,
                model.name == DEFAULT_MODEL,
                model.summary,
                str(path),
                round(size, 1),
                params,
                dim,
                threshold,
                model.sha256,
                numbers.get(model.name, {}),
                error,
            )
        )
    return rows


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _is_weight(key: str) -> bool:
    """Trainable weights: not batch-norm statistics, buffers or the AS-norm cohort."""
    buffers = ("running_mean", "running_var", "num_batches_tracked", "whitening.")
    return key != "cohort" and not any(b in key for b in buffers)
