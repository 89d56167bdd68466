"""The twin encoder: one network applied to both sides of a pair, input -> embedding.

Bodies: the case study's 1-D CNN (raw 4 kHz audio) and 2-D CNN (MFCC or any feature map),
each with global max pooling and a dense embedding; ``ecapa_lite``, a compact ECAPA-style
TDNN; ``lstm``, GE2E's shape (the fast student); ``campp``, CAM++ (``campp.py``), the
accurate default; and ``ecapa``, SpeechBrain's ECAPA-TDNN (``ecapa.py``). Distances, heads
and losses live in ``losses.py``; a checkpoint holds the encoder alone, in safetensors with
its ``ModelConfig`` in the metadata.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from speakerid.encoders.campp import CAMPPBody
from speakerid.encoders.checkpoint import CHECKPOINT_FORMAT, check_threshold
from speakerid.encoders.config import ModelConfig
from speakerid.encoders.ecapa import ECAPABody
from speakerid.errors import CheckpointError
from speakerid.features.torch import (
    FbankFrontend,
    KaldiFbankFrontend,
    MFCCFrontend,
    PowerMelFrontend,
    RawFrontend,
    SBFbankFrontend,
    equal_windows,
)
from speakerid.pins import file_sha256

COHORT_KEY = "cohort"  # optional (N, D) unit embeddings of training speakers, for AS-norm
# Tensor dtypes a checkpoint may hold: weights are floating point (stored fp32 or fp16), and
# only integer buffers (BatchNorm's step count) may be integers.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _ge2e(cfg: ModelConfig) -> nn.Module:
    # The pretrained front-ends (and their optional packages) load only when asked for.
    from speakerid.encoders.pretrained import GE2EFrontend

    return GE2EFrontend(cfg)


def _vggish(cfg: ModelConfig) -> nn.Module:
    from speakerid.encoders.pretrained import VGGishFrontend

    return VGGishFrontend(cfg)


FRONTENDS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "raw": lambda cfg: RawFrontend(),
    "mfcc": lambda cfg: MFCCFrontend(cfg.n_mfcc),
    "fbank": lambda cfg: FbankFrontend(cfg.n_mels),
    "kaldi_fbank": lambda cfg: KaldiFbankFrontend(cfg.n_mels),
    "sb_fbank": lambda cfg: SBFbankFrontend(cfg.n_mels),
    "powermel": lambda cfg: PowerMelFrontend(cfg.stem_stride),
    "ge2e": _ge2e,
    "vggish": _vggish,
}


class CNN1d(nn.Module):
    """Case study, raw audio: 4 x (Conv1d, BatchNorm, ReLU, MaxPool 4), global max, dense."""

    def __init__(self, n_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        widths = [n_features, 32, 64, 128, cfg.channels]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths):
            layers += [
                nn.Conv1d(cin, cout, kernel_size=9, padding=4),
                nn.BatchNorm1d(cout),
                nn.ReLU(),
                nn.MaxPool1d(4, ceil_mode=True),
            ]
        self.blocks = nn.Sequential(*layers)
        self.embed = nn.Linear(cfg.channels, cfg.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.blocks(x).amax(dim=-1))


class CNN2d(nn.Module):
    """Case study, MFCC / pretrained maps: 4 x (Conv2d 3x3, BN, ReLU, MaxPool 2), global max."""

    def __init__(self, n_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        widths = [1, 32, 64, 128, cfg.channels]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths):
            layers += [
                nn.Conv2d(cin, cout, kernel_size=3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        self.blocks = nn.Sequential(*layers)
        self.embed = nn.Linear(cfg.channels, cfg.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.blocks(x.unsqueeze(1)).amax(dim=(-2, -1)))


class SEBlock(nn.Module):
    """Squeeze-excitation over time: rescale channels by a gate from their mean."""

    def __init__(self, channels: int, bottleneck: int = 64) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Conv1d(channels, bottleneck, 1), nn.ReLU(), nn.Conv1d(bottleneck, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(x.mean(dim=-1, keepdim=True)))


class TDNNBlock(nn.Module):
    """Residual dilated conv -> ReLU -> BN -> SE."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation)
        self.bn = nn.BatchNorm1d(channels)
        self.se = SEBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.bn(F.relu(self.conv(x))))


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time: (B, C, T) -> (B, 2C)."""

    def __init__(self, channels: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.attn = nn.Sequential(
            nn.Conv1d(channels, bottleneck, 1), nn.Tanh(), nn.Conv1d(bottleneck, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.attn(x), dim=-1)
        mean = (w * x).sum(dim=-1)
        var = (w * x * x).sum(dim=-1) - mean * mean
        return torch.cat([mean, var.clamp_min(1e-6).sqrt()], dim=-1)


class EcapaLite(nn.Module):
    """Compact ECAPA-style encoder: strided stem, 3 dilated SE blocks, aggregation, ASP."""

    def __init__(self, n_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.stem = nn.Sequential(
            nn.Conv1d(n_features, c, 5, stride=cfg.stem_stride, padding=2),
            nn.ReLU(),
            nn.BatchNorm1d(c),
        )
        self.blocks = nn.ModuleList(TDNNBlock(c, d) for d in (2, 3, 4))
        self.aggregate = nn.Sequential(nn.Conv1d(3 * c, 2 * c, 1), nn.ReLU())
        self.pool = AttentiveStatsPool(2 * c)
        self.bn_pool = nn.BatchNorm1d(4 * c)
        self.embed = nn.Linear(4 * c, cfg.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.aggregate(torch.cat(outs, dim=1))
        return self.embed(self.bn_pool(self.pool(x)))


class LSTMBody(nn.Module):
    """GE2E's shape: an LSTM over the frames, its last hidden state, linear, ReLU.

    With ``windows > 1`` the frames are cut into that many equal consecutive windows, run as
    one batch, and the output is the mean of their unit embeddings (not re-normalised: the
    whitening or ``embed.py`` normalises). GE2E learnt on 1.6-s windows; read as two 1.5-s
    halves of a 3-s fragment its own weights score better than as one pass (docs/benchmarks.md),
    and the recurrent chain is half as long.

    The shape of Resemblyzer's encoder (3 x 256 channels, 256-d output), so that a distilled
    student can start from the teacher's weights (``pretrained.init_from_ge2e``).
    """

    def __init__(self, n_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, cfg.channels, cfg.lstm_layers, batch_first=True)
        self.linear = nn.Linear(cfg.channels, cfg.embedding_dim)
        self.windows = cfg.windows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.transpose(1, 2)  # (B, F, T) -> (B, T, F): steps along T
        if self.windows > 1:
            steps = equal_windows(steps, self.windows)
        _, (hidden, _) = self.lstm(steps)
        emb = F.relu(self.linear(hidden[-1]))
        if self.windows == 1:
            return emb
        # -1, not len(x): an ONNX trace would freeze len(x) to the example batch
        unit = F.normalize(emb.float(), dim=-1)
        return unit.reshape(-1, self.windows, unit.shape[-1]).mean(dim=1)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "cnn1d": CNN1d,
    "cnn2d": CNN2d,
    "ecapa_lite": EcapaLite,
    "lstm": LSTMBody,
    "campp": CAMPPBody,
    "ecapa": ECAPABody,
}


class Whitening(nn.Module):
    """Within-speaker covariance normalisation (WCCN) of the body's embedding.

    ``(e / |e| - mean) @ matrix``: a fixed affine map, fitted on training speakers by
    ``whiten.fit_whitening`` (identity until then), that shrinks the directions in which one
    speaker's fragments vary (what is said, the room, the noise), so that cosine scores weigh
    the directions that tell speakers apart.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) - self.mean) @ self.matrix


class Encoder(nn.Module):
    """Front-end + body: ``(batch, fragment_samples)`` 16 kHz audio -> ``(batch, embedding_dim)``.

    With ``config.whiten`` the body's output goes through a ``Whitening``. The output is not
    normalised; ``embed.py`` L2-normalises for scoring. Under ``torch.autocast`` only the body
    runs in low precision: the front-end's power spectra and the whitening's matrix product
    stay fp32, where bf16's 8-bit mantissa would cost accuracy and save little time.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.frontend not in FRONTENDS:
            raise CheckpointError(f"unknown front-end {cfg.frontend!r}; one of {list(FRONTENDS)}")
        if cfg.arch not in ARCHITECTURES:
            raise CheckpointError(
                f"unknown architecture {cfg.arch!r}; one of {list(ARCHITECTURES)}"
            )
        if cfg.windows > 1 and cfg.arch != "lstm":
            raise CheckpointError(f"windows={cfg.windows} needs the lstm body, not {cfg.arch!r}")
        self.config = cfg
        self.frontend = FRONTENDS[cfg.frontend](cfg)
        self.body = ARCHITECTURES[cfg.arch](self.frontend.n_features, cfg)
        self.whitening = Whitening(cfg.embedding_dim) if cfg.whiten else None

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wav.device.type, enabled=False):
            features = self.frontend(wav.float())
        emb = self.body(features)
        if self.whitening is None:
            return emb
        with torch.autocast(wav.device.type, enabled=False):
            return self.whitening(emb.float())


# ---------------------------------------------------------------- checkpoints


def save_encoder(
    encoder: Encoder,
    path: str | Path,
    threshold: float | None = None,
    info: dict[str, Any] | None = None,
    half: bool = False,
    cohort: np.ndarray | None = None,
) -> None:
    """Write the encoder's weights and config as safetensors (fp16 with ``half``).

    ``cohort``: ``(N, D)`` embeddings of training speakers stored beside the weights, the
    cohort of adaptive score normalisation (kept fp32).
    """
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in encoder.state_dict().items()
    }
    if cohort is not None:
        cohort = np.asarray(cohort, dtype=np.float32)
        if cohort.ndim != 2 or cohort.shape[1] != encoder.config.embedding_dim:
            raise ValueError(
                f"cohort must be (N, {encoder.config.embedding_dim}), not {cohort.shape}"
            )
        state[COHORT_KEY] = torch.from_numpy(cohort.copy())
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(asdict(encoder.config)),
        "info": json.dumps(info or {}),
    }
    if threshold is not None:
        metadata["threshold"] = repr(check_threshold(threshold))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


@dataclass(frozen=True)
class LoadedModel:
    """An encoder in eval mode with what its checkpoint says about it."""

    encoder: Encoder
    threshold: float | None  # calibrated cosine threshold, None if never calibrated
    fingerprint: str  # sha256 of the checkpoint file: the store's model identity
    path: Path
    info: dict[str, Any]
    cohort: np.ndarray | None = None  # (N, D) unit vectors of training speakers, or None
    stored_half: bool = False  # the file stores its weights in fp16


def _state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """The first difference between two state dicts in words ('' when they fit).

    torch's own message starts with "Error(s) in loading state_dict", which says nothing
    to someone holding a checkpoint; this names the tensor and both shapes.
    """
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"the file lacks the tensor {missing[0]}{more}"
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        return f"the file holds the tensor {extra[0]}{more}, which the config has no place for"
    for key, want in expected.items():
        got = found[key]
        if tuple(got.shape) != tuple(want.shape):
            return (
                f"{key} has shape {tuple(got.shape)} in the file, the config needs "
                f"{tuple(want.shape)}"
            )
    return ""


def _dtype_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """The first tensor whose dtype does not fit its place, in words ('' when all fit).

    A floating weight must be stored as a float (``WEIGHT_DTYPES``): ``load_state_dict``
    would silently cast int32 or bool values into it. Integer buffers must stay integers.
    """
    for key, got in found.items():
        want = expected.get(key)
        if want is None and key != COHORT_KEY:
            continue  # a tensor the config has no place for: ``_state_mismatch`` says so
        floating = want is None or want.is_floating_point()  # the cohort is floating too
        if floating and got.dtype not in WEIGHT_DTYPES:
            return f"{key} is {str(got.dtype).removeprefix('torch.')}; weights are floating point"
        if not floating and (got.is_floating_point() or got.dtype == torch.bool):
            return f"{key} is {str(got.dtype).removeprefix('torch.')}; it counts, so integers"
    return ""


def load_encoder(path: str | Path, expected_sha256: str | None = None) -> LoadedModel:
    """Rebuild an encoder from a safetensors checkpoint, strictly.

    Raises ``CheckpointError`` for a missing, damaged, foreign or tampered file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        fingerprint = file_sha256(path)
    except OSError as exc:  # e.g. a file this user may not read: is_file() does not tell
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if expected_sha256 is not None and fingerprint != expected_sha256:
        raise CheckpointError(
            f"{path}: sha256 {fingerprint[:12]}... does not match the shipped model; "
            "the file is damaged or was replaced (reinstall speakerid)"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable speakerid model ({exc})") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a speakerid encoder checkpoint")
    try:
        cfg = ModelConfig.from_dict(json.loads(metadata["config"]))
        info = json.loads(metadata.get("info", "{}"))
        threshold = (
            check_threshold(float(metadata["threshold"]), "its threshold")
            if "threshold" in metadata
            else None
        )
        encoder = Encoder(cfg)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({exc})") from None
    wrong = _dtype_mismatch(encoder.state_dict(), state)
    if wrong:
        raise CheckpointError(f"{path}: weights of the wrong type ({wrong})")
    stored_half = any(v.dtype == torch.float16 for v in state.values())
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    cohort = state.pop(COHORT_KEY, None)
    if cohort is not None and (cohort.ndim != 2 or cohort.shape[1] != cfg.embedding_dim):
        raise CheckpointError(
            f"{path}: cohort of shape {tuple(cohort.shape)} does not fit the model"
        )
    mismatch = _state_mismatch(encoder.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{path}: weights do not match the config ({mismatch})")
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match the config ({first})") from None
    encoder.eval()
    cohort_np = None if cohort is None else cohort.numpy()
    return LoadedModel(encoder, threshold, fingerprint, path, info, cohort_np, stored_half)


def resave(
    model: LoadedModel,
    path: str | Path,
    threshold: float | None = None,
    info: dict[str, Any] | None = None,
    cohort: np.ndarray | None = None,
) -> None:
    """Write a loaded checkpoint again with a new threshold, info or cohort.

    What is not given is kept (threshold, info, cohort), and so is the storage precision, so
    that a calibration step never silently drops the cohort or doubles the file.
    """
    save_encoder(
        model.encoder,
        path,
        threshold=model.threshold if threshold is None else threshold,
        info=model.info if info is None else info,
        half=model.stored_half,
        cohort=model.cohort if cohort is None else cohort,
    )
