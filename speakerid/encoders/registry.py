"""The shipped models by name: ``accurate`` (CAM++, the default), ``fast``, ``ecapa``, and
``best``, a fusion of two of them (``ShippedFusion``).

``--model`` takes one of these names or a path to a checkpoint. Shipped files are pinned by
sha256 and refuse to load when they differ. This module imports no torch, so that commands
that only describe models (``speakerid models``, ``info``) start fast.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.decision.model import DecisionModel
from speakerid.encoders.checkpoint import read_raw_header
from speakerid.errors import CheckpointError, DataError

PACKAGE_DIR = Path(__file__).parents[1] / "_models"  # in an installed wheel
REPO_DIR = Path(__file__).parents[2] / "models"  # in a source checkout
MEASURED_FILE = "measured.json"  # benchmark summary per shipped model, beside the weights


@dataclass(frozen=True)
class ShippedGraph:
    """An ONNX graph of a shipped model, made by ``bench/export_onnx.py``, run by onnxruntime.

    ``fp32`` computes the checkpoint's embeddings (measured in docs/benchmarks.md), so it
    has the checkpoint's identity and serves its stores. Any other variant (``accurate``'s
    ``int8``: docs/benchmarks.md has its accuracy and speed) computes different embeddings,
    so its identity is its own sha256: a store made with one variant refuses another.
    """

    variant: str  # what ``--precision`` names
    filename: str  # beside the checkpoint
    sha256: str  # the file's pinned digest


@dataclass(frozen=True)
class ShippedModel:
    """One model that ships with speakerid."""

    name: str  # what ``--model`` accepts
    filename: str  # under models/ (a checkout) or speakerid/_models/ (a wheel)
    sha256: str  # the file's pinned digest
    summary: str  # one line for ``speakerid models``
    decision_file: str = ""  # its decision calibration (``decision.DecisionModel`` JSON)
    decision_sha256: str = ""  # that file's pinned digest
    graphs: tuple[ShippedGraph, ...] = ()  # its ONNX graphs; the first is the onnx default

    def graph(self, variant: str) -> ShippedGraph | None:
        return next((g for g in self.graphs if g.variant == variant), None)

    def identity(self, graph: ShippedGraph) -> str:
        """The store identity of embeddings from ``graph`` (see ``ShippedGraph``)."""
        return self.sha256 if graph.variant == "fp32" else graph.sha256


SHIPPED: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel(
            "accurate",
            "campp_zh_en.safetensors",
            "c6f21446772f7cfac72fb48851be8e55a7147ae96b8e2092d71a74ef672fe82e",
            "CAM++ from 3D-Speaker (200k zh/en speakers)",
            "campp_zh_en.decision.json",
            "ebffc7125b1eea9fd7a01a366ed1c10d077e11638267fd0dbf519d6d809f9662",
            (
                ShippedGraph(
                    "fp32",
                    "campp_zh_en.onnx",
                    "73d694b1976c1f839c73b4056e5eab6b43f4a2308c1e317b88ab1bd8ab3f0b58",
                ),
                # convolutions int8, the rest float (bench/export_onnx.py --int8 conv): EER
                # within 0.1 points of fp32 on every set, 1.1-1.2x its speed; not the default
                ShippedGraph(
                    "int8",
                    "campp_zh_en.int8.onnx",
                    "3b84739b395ce523a4ae618cdf421e256a1fb225939a0cd0207a21d6a7423911",
                ),
            ),
        ),
        ShippedModel(
            "fast",
            "lstm_s3.safetensors",
            "f9699bbb79eadabd27a4ed652d35e47c0b2b9ec98916557a16f8fa2b450e26e7",
            # kept for its speed alone: the one shipped model faster than Resemblyzer on one
            # CPU thread (4.3x; accurate 0.4x), and less accurate than it on every held-out set
            "LSTM student of Resemblyzer's GE2E: 4x its CPU speed, below it in accuracy",
            "lstm_s3.decision.json",
            "885c2605d813f341a4cf9c8d6459f6d4a4849708a6b3cf2dfc6774b478e91aff",
            (
                ShippedGraph(
                    "fp32",
                    "lstm_s3.onnx",
                    "980c4275f410e2f2b15b77fdb6278e1b2bf473ec0357aa7cc569a2fcdb891fd6",
                ),
            ),
        ),
        ShippedModel(
            "ecapa",
            "ecapa_voxceleb.safetensors",
            "5675deeb6a7eaa2f97993fe8385bf145ffa047c7f63dfeb20918fa9eb727cc99",
            "ECAPA-TDNN from SpeechBrain (VoxCeleb 1+2, 7205 speakers)",
            "ecapa_voxceleb.decision.json",
            "038534112213f08e1e257decbc5677e702e0980803df10ffa046a7ed97eafde5",
            graphs=(
                # weights stored fp16 (as in the checkpoint) and cast to fp32 in the graph:
                # the checkpoint's very weights, computed fp32 (bench/export_onnx.py)
                ShippedGraph(
                    "fp32",
                    "ecapa_voxceleb.onnx",
                    "70ffb81443cc739b41e87333bdaa8f624bf97406341c748422abac935cefbccb",
                ),
            ),
        ),
    )
}
DEFAULT_MODEL = "accurate"  # chosen by measurement: docs/benchmarks.md

FUSION_FORMAT = "speakerid-fusion/1"  # hashed into every fusion's fingerprint


def fusion_fingerprint(members: tuple[str, ...], weight: float) -> str:
    """The store identity of a fusion: sha256 over its members' identities (in order) and
    the first member's weight, so another member or weight is another model."""
    text = "\n".join((FUSION_FORMAT, *members, repr(float(weight))))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ShippedFusion:
    """Shipped models run over the same fragments, their vectors fused block-wise
    (``embedding.fused``): cosine = weight * first member's + (1 - weight) * second's."""

    name: str  # what ``--model`` accepts
    members: tuple[str, str]  # ``SHIPPED`` names, in the order of the fused vector's blocks
    weight: float  # the first member's share of the cosine, in (0, 1)
    threshold: float  # its fixed cosine threshold, as a checkpoint's (``bench/bench_fusion.py``)
    summary: str  # one line for ``speakerid models``
    decision_file: str = ""  # its decision calibration (``decision.DecisionModel`` JSON)
    decision_sha256: str = ""  # that file's pinned digest

    @property
    def sha256(self) -> str:
        """The fingerprint of the fusion of the members' checkpoints (and fp32 graphs)."""
        return fusion_fingerprint(tuple(SHIPPED[m].sha256 for m in self.members), self.weight)


# CAM++'s share of best's cosine, and best's fixed cosine threshold (the EER point of the
# fit speakers' whole-recording pairs): both chosen by bench/bench_fusion.py on the fit-half
# speakers of libri, studio and ami (docs/results/fusion.json; the held-out halves and RAVDESS
# took no part). The decision calibration below was fitted on the same speakers after them
# (bench/bench_decisions.py --model best). A new weight changes best's identity and voids
# the calibration.
BEST_WEIGHT = 0.75
BEST_THRESHOLD = 0.3973
FUSIONS: dict[str, ShippedFusion] = {
    f.name: f
    for f in (
        ShippedFusion(
            "best",
            ("accurate", "ecapa"),
            BEST_WEIGHT,
            BEST_THRESHOLD,
            "CAM++ and ECAPA-TDNN fused over the same fragments: the fewest errors, the slowest",
            "best.decision.json",
            "583329c3960ba6a3b7c35fcec30d03fd21b6f659bf174c2d27a8d54d0785aa41",
        ),
    )
}


def shipped_path(model: ShippedModel | ShippedGraph) -> Path:
    """Where a shipped file lies: inside the installed package, else the checkout."""
    packaged = PACKAGE_DIR / model.filename
    return packaged if packaged.is_file() else REPO_DIR / model.filename


def shipped_name(fingerprint: str) -> str | None:
    """The shipped model's name whose embeddings have the identity ``fingerprint`` (its
    checkpoint's pinned sha256, one of its graphs' identities, or a fusion's), else None."""
    for model in SHIPPED.values():
        if fingerprint in (model.sha256, *(model.identity(g) for g in model.graphs)):
            return model.name
    for fusion in FUSIONS.values():
        if fingerprint == fusion.sha256:
            return fusion.name
    return None


def shipped_flags(fingerprint: str) -> str | None:
    """The options that embed like the shipped model of identity ``fingerprint`` again:
    ``--model NAME``, with ``--backend onnx --precision VARIANT`` for a graph whose
    embeddings are its own (not ``fp32``), and with ``--precision auto`` for the checkpoint
    of a model that has such a graph (else a store made at fp32 would send a user of
    ``--precision int8`` back to the same refusal); None if no shipped model has that
    identity."""
    for model in SHIPPED.values():
        for graph in model.graphs:
            if graph.variant != "fp32" and fingerprint == model.identity(graph):
                return f"--model {model.name} --backend onnx --precision {graph.variant}"
    name = shipped_name(fingerprint)
    if name is None:
        return None
    variants = SHIPPED[name].graphs if name in SHIPPED else ()
    own = any(graph.variant != "fp32" for graph in variants)
    return f"--model {name} --precision auto" if own else f"--model {name}"


def resolve_model(spec: str | Path | None) -> tuple[Path, str | None]:
    """``None`` (the default), a shipped name or a path -> (file, pinned sha256 or None).

    A shipped name wins over a file of the same name in the working directory; write
    ``./fast`` for such a file.
    """
    name = DEFAULT_MODEL if spec is None else str(spec)
    if name in FUSIONS:
        members = " and ".join(FUSIONS[name].members)
        raise CheckpointError(
            f"{name!r} fuses {members}, so it has no single checkpoint; this needs one: "
            f"pass one of {sorted(SHIPPED)} or a checkpoint"
        )
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
    by_name = {row.name: row for row in rows}
    for fusion in FUSIONS.values():
        parts = [by_name[m] for m in fusion.members]
        errors = [p.error for p in parts if p.error]
        rows.append(
            ModelListing(
                fusion.name,
                False,
                fusion.summary,
                " + ".join(p.path for p in parts),
                round(sum(p.megabytes for p in parts), 1),
                sum(p.parameters for p in parts),
                sum(p.embedding_dim for p in parts),
                fusion.threshold,
                fusion.sha256,
                numbers.get(fusion.name, {}),
                errors[0] if errors else None,
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


def decision_model(fingerprint: str) -> DecisionModel | None:
    """The shipped decision calibration of the shipped model ``fingerprint``, else None.

    The file is pinned by sha256 like the weights: a changed file refuses to load.
    """
    name = shipped_name(fingerprint)
    model: ShippedModel | ShippedFusion | None = SHIPPED.get(name or "") or FUSIONS.get(name or "")
    if model is None or not model.decision_file:
        return None
    packaged = PACKAGE_DIR / model.decision_file
    path = packaged if packaged.is_file() else REPO_DIR / model.decision_file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(
            f"{path}: the shipped decision calibration is unreadable ({exc})"
        ) from None
    if hashlib.sha256(data).hexdigest() != model.decision_sha256:
        raise CheckpointError(
            f"{path}: the shipped decision calibration does not match its pinned sha256; "
            "reinstall speakerid"
        )
    try:
        return DecisionModel.from_json(data.decode("utf-8", "replace"))
    except DataError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def read_cohort(path: str | Path, fingerprint: str) -> np.ndarray | None:
    """The AS-norm cohort stored in the checkpoint at ``path``, if that file is ``fingerprint``.

    Read with safetensors' numpy reader (no torch), so that every backend presents the same
    cohort for the same model; None when the file is not there, not that model or has none.
    """
    from safetensors import safe_open

    from speakerid.pins import file_sha256

    path = Path(path)
    if not path.is_file() or path.suffix != ".safetensors" or file_sha256(path) != fingerprint:
        return None
    with safe_open(str(path), framework="numpy") as fh:
        if "cohort" not in fh.keys():  # noqa: SIM118 (safe_open has no __contains__)
            return None
        return np.asarray(fh.get_tensor("cohort"), dtype=np.float32)


def model_cohort(fingerprint: str, path: str | Path) -> np.ndarray | None:
    """The AS-norm cohort of model ``fingerprint``: from the shipped file, else from ``path``."""
    name = shipped_name(fingerprint)
    if name in FUSIONS:
        return None  # a fused vector has no cohort (its members' would need fusing too)
    if name is not None:
        return read_cohort(shipped_path(SHIPPED[name]), fingerprint)
    return read_cohort(path, fingerprint)
