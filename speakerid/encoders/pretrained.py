"""Pretrained speech networks used as front-ends or teachers.

GE2E is Resemblyzer's speaker encoder (Wan et al. 2018; Apache-2.0 weights shipped in the
``resemblyzer`` wheel), reimplemented here in batched torch so that it runs on GPU and inside
training loops. Only its weight file is read from the installed package
(``torch.load(weights_only=True)``); Resemblyzer's own code is not imported.

VGGish is Google's AudioSet audio embedding network (Hershey et al. 2017; Apache-2.0, from
tensorflow/models ``research/audioset/vggish``) with its exact input pipeline, in the state-dict
layout of the torchvggish port. Its weights are never bundled or downloaded: the user supplies
the port's ``vggish-10086976.pth`` (see ``vggish_weights_path``).

``GE2EFrontend`` and ``VGGishFrontend`` feed these frozen networks' outputs to the encoder body.
The frozen network is held in a plain attribute, not registered as a submodule, so its weights
never enter ``Encoder.state_dict()`` (and so never a speakerid checkpoint, which is loaded with
``strict=True``), nor ``parameters()``; ``Encoder.to(device)`` does not move it either, so each
front-end moves it to the input's device in ``forward``. A checkpoint trained on a pretrained
front-end therefore needs the same pretrained weights at load time.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speakerid.audio import SAMPLE_RATE
from speakerid.errors import CheckpointError, DataError
from speakerid.features.torch import POWERMEL_HOP, POWERMEL_N_MELS, PowerMel, equal_windows

if TYPE_CHECKING:
    from speakerid.encoders.config import ModelConfig

GE2E_N_MELS = POWERMEL_N_MELS  # Resemblyzer's input: 40-band power mel, 25 ms / 10 ms
GE2E_HOP = POWERMEL_HOP
GE2E_HIDDEN = 256
GE2E_LAYERS = 3
GE2E_DIM = 256
GE2E_PARTIAL_FRAMES = 160  # 1.6 s partial utterances
GE2E_PARTIAL_STEP = 77  # frames between partials at Resemblyzer's default rate of 1.3/s
GE2E_WEIGHTS_ENV = "SPEAKERID_GE2E_WEIGHTS"


def ge2e_weights_path() -> Path:
    """Resemblyzer's ``pretrained.pt``: ``$SPEAKERID_GE2E_WEIGHTS`` or the installed wheel's."""
    env = os.environ.get(GE2E_WEIGHTS_ENV)
    if env:
        return Path(env)
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise CheckpointError(
            "the GE2E front-end needs Resemblyzer's weights: pip install resemblyzer (in a "
            f"speakerid checkout: pip install -e '.[ge2e]'), or set {GE2E_WEIGHTS_ENV} to a "
            "pretrained.pt"
        )
    return Path(spec.origin).parent / "pretrained.pt"


class GE2E(nn.Module):
    """Resemblyzer's encoder: mel(40) -> 3-layer LSTM(256) -> linear -> ReLU -> unit vector.

    ``forward`` takes ``(B, samples)`` 16 kHz audio and returns ``(B, P, 256)`` unit
    embeddings of 1.6-s partial windows every ``step`` frames (10 ms each), as Resemblyzer
    reads an utterance; or, with ``windows``, of that many equal consecutive windows (the
    frames' tail under one window is dropped), as ``ModelConfig.windows`` reads a fragment.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        step: int = GE2E_PARTIAL_STEP,
        windows: int = 0,
    ) -> None:
        super().__init__()
        self.step = step
        self.windows = windows
        self.power_mel = PowerMel()
        self.lstm = nn.LSTM(GE2E_N_MELS, GE2E_HIDDEN, GE2E_LAYERS, batch_first=True)
        self.linear = nn.Linear(GE2E_HIDDEN, GE2E_DIM)
        self.load_weights(weights if weights is not None else ge2e_weights_path())
        self.requires_grad_(False)
        self.eval()

    def load_weights(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: GE2E weights not found")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            state = {
                k: v for k, v in blob["model_state"].items() if k.startswith(("lstm.", "linear."))
            }
            self.load_state_dict(state, strict=False)
            missing = {k for k in self.state_dict() if k.startswith(("lstm.", "linear."))}
            if missing != set(state):
                raise KeyError(sorted(missing ^ set(state))[:3])
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not Resemblyzer GE2E weights ({_one_line(exc)})"
            ) from None

    def train(self, mode: bool = True) -> GE2E:
        return super().train(False)  # frozen: always in inference behaviour

    def mels(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, samples)`` -> ``(B, frames, 40)`` power mel, after Resemblyzer's gain rule."""
        return self.power_mel(wav)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mels = self.mels(wav)
        batch, frames, _ = mels.shape
        if self.windows:
            _, (hidden, _) = self.lstm(equal_windows(mels, self.windows))
            emb = F.relu(self.linear(hidden[-1]))
            return F.normalize(emb, dim=-1).reshape(batch, self.windows, GE2E_DIM)
        need = max(frames, GE2E_PARTIAL_FRAMES)
        n_partials = 1 + (need - GE2E_PARTIAL_FRAMES + self.step - 1) // self.step
        total = (n_partials - 1) * self.step + GE2E_PARTIAL_FRAMES
        mels = F.pad(mels, (0, 0, 0, total - frames))
        windows = mels.unfold(1, GE2E_PARTIAL_FRAMES, self.step)  # (B, P, 40, 160)
        windows = windows.permute(0, 1, 3, 2).reshape(-1, GE2E_PARTIAL_FRAMES, GE2E_N_MELS)
        _, (hidden, _) = self.lstm(windows)
        emb = F.relu(self.linear(hidden[-1]))
        return F.normalize(emb, dim=-1).reshape(batch, n_partials, GE2E_DIM)

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, samples)`` -> ``(B, 256)``: normalised mean of the partial embeddings."""
        return F.normalize(self(wav).mean(dim=1), dim=-1)


def init_from_ge2e(body: nn.Module, ge2e: GE2E) -> None:
    """Start an ``lstm`` body from GE2E's weights (the student of a distillation).

    The body keeps GE2E's first ``lstm_layers`` layers and its output layer. With ``stack``
    frames per step, the first layer's input weights are GE2E's repeated ``stack`` times and
    divided by ``stack``: at the start the body sees the mean of the stacked frames.
    """
    lstm, linear = getattr(body, "lstm", None), getattr(body, "linear", None)
    if not isinstance(lstm, nn.LSTM) or not isinstance(linear, nn.Linear):
        raise DataError("only an lstm body can start from the GE2E teacher")
    stack, rest = divmod(lstm.input_size, GE2E_N_MELS)
    if (
        rest
        or lstm.hidden_size != GE2E_HIDDEN
        or lstm.num_layers > GE2E_LAYERS
        or linear.out_features != GE2E_DIM
    ):
        raise DataError(
            f"the lstm body must have {GE2E_HIDDEN} channels, at most {GE2E_LAYERS} layers, "
            f"a {GE2E_DIM}-d embedding and 40 x stack input features to start from GE2E"
        )
    teacher = ge2e.lstm.state_dict()
    state = {}
    for name in lstm.state_dict():
        value = teacher[name].detach().clone()
        if name == "weight_ih_l0":
            value = torch.cat([value / stack] * stack, dim=1)
        state[name] = value
    with torch.no_grad():
        lstm.load_state_dict(state, strict=True)
        linear.load_state_dict(ge2e.linear.state_dict(), strict=True)


# ---------------------------------------------------------------- VGGish

VGGISH_WIN_SECONDS = 0.025  # STFT window (vggish_params.STFT_WINDOW_LENGTH_SECONDS)
VGGISH_HOP_SECONDS = 0.010  # STFT hop (vggish_params.STFT_HOP_LENGTH_SECONDS)
VGGISH_WIN = round(VGGISH_WIN_SECONDS * SAMPLE_RATE)  # 400 samples
VGGISH_HOP = round(VGGISH_HOP_SECONDS * SAMPLE_RATE)  # 160 samples
VGGISH_N_FFT = 1 << (VGGISH_WIN - 1).bit_length()  # 512: next power of two, as mel_features
VGGISH_N_BINS = VGGISH_N_FFT // 2 + 1  # 257 spectrogram bins
VGGISH_N_MELS = 64  # mel bands
VGGISH_F_MIN = 125.0  # Hz, lower edge of the lowest band
VGGISH_F_MAX = 7_500.0  # Hz, upper edge of the highest band
VGGISH_MEL_BREAK_HZ = 700.0  # HTK mel scale: mel = 1127 ln(1 + f / 700)
VGGISH_MEL_HIGH_Q = 1127.0
VGGISH_LOG_OFFSET = 0.01  # log(mel + 0.01), vggish_params.LOG_OFFSET
VGGISH_PATCH_SECONDS = 0.96  # one example patch
VGGISH_PATCH_FRAMES = round(VGGISH_PATCH_SECONDS / VGGISH_HOP_SECONDS)  # 96 frames
VGGISH_PATCH_HOP_SECONDS = 0.1  # the case study's patch hop (VGGish's own is 0.96 s)
VGGISH_PATCH_HOP = round(VGGISH_PATCH_HOP_SECONDS / VGGISH_HOP_SECONDS)  # 10 frames
VGGISH_PATCH_SAMPLES = VGGISH_WIN + (VGGISH_PATCH_FRAMES - 1) * VGGISH_HOP  # 15600: one patch
VGGISH_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
VGGISH_FLAT = 512 * 6 * 4  # 12288: (time 96 / 16) x (mel 64 / 16) x 512 channels
VGGISH_HIDDEN = 4096
VGGISH_DIM = 128  # embedding size
VGGISH_QUANTIZE_MIN = -2.0  # PCA output is clipped to [-2, 2] and mapped onto 0..255
VGGISH_QUANTIZE_MAX = 2.0
VGGISH_WEIGHTS_ENV = "SPEAKERID_VGGISH_WEIGHTS"
VGGISH_WEIGHTS_URL = (
    "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
)
VGGISH_PCA_URL = (
    "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
    "vggish_pca_params-970ea276.pth"
)

# numpy's float-array reconstruction, allowed for ``weights_only`` loads: the published PCA
# file holds numpy arrays. Both module paths, so files pickled under numpy 1.x and 2.x load.
_NP_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_NUMPY_ARRAY_GLOBALS: list = [
    _NP_RECONSTRUCT,
    (_NP_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    (_NP_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    *(type(np.dtype(t)) for t in ("float32", "float64")),  # numpy.dtypes.Float*DType
]


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``{name: tensor}`` file read with ``weights_only=True``; numpy arrays become tensors."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict):
        raise TypeError(f"a {type(blob).__name__}, not a state dict")
    return {k: torch.as_tensor(v).float() for k, v in blob.items()}


def _one_line(exc: Exception) -> str:
    """An exception as one informative line: torch.load's messages are paragraphs."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    hits = [line for line in lines if "error" in line.lower() or "unsupported" in line.lower()]
    return f"{type(exc).__name__}: {(hits or lines or [''])[-1][:200]}"


def vggish_weights_path(weights: str | Path | None = None) -> Path:
    """The torchvggish ``vggish-10086976.pth``: ``weights``, else ``$SPEAKERID_VGGISH_WEIGHTS``.

    Raises
    ------
    CheckpointError
        If neither is given: the weights are not bundled and never downloaded at run time.
    """
    if weights is not None:
        return Path(weights)
    env = os.environ.get(VGGISH_WEIGHTS_ENV)
    if env:
        return Path(env)
    raise CheckpointError(
        "the VGGish front-end needs weights that speakerid does not ship: download "
        f"{VGGISH_WEIGHTS_URL} (Apache-2.0) on a machine with internet access and set "
        f"{VGGISH_WEIGHTS_ENV} to the file's path (or pass weights=...)"
    )


def vggish_mel_matrix() -> torch.Tensor:
    """VGGish's HTK mel matrix, ``(257, 64)`` float64 (bins x bands).

    As ``mel_features.spectrogram_to_mel_matrix``: triangles on the HTK mel scale with edges
    evenly spaced from 125 to 7500 Hz, peak 1, no area normalisation; the DC bin is zeroed.
    """

    def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
        return VGGISH_MEL_HIGH_Q * torch.log1p(hz / VGGISH_MEL_BREAK_HZ)

    bins_mel = hz_to_mel(torch.linspace(0.0, SAMPLE_RATE / 2, VGGISH_N_BINS, dtype=torch.float64))
    edges = torch.tensor([VGGISH_F_MIN, VGGISH_F_MAX], dtype=torch.float64)
    lo, hi = hz_to_mel(edges).tolist()
    edges_mel = torch.linspace(lo, hi, VGGISH_N_MELS + 2, dtype=torch.float64)
    lower, center, upper = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    matrix = torch.minimum(rising, falling).clamp_min(0.0)
    matrix[0] = 0.0
    return matrix


class VGGishPatches(nn.Module):
    """VGGish's input pipeline (``vggish_input.waveform_to_examples``), batched, with a patch hop.

    25-ms periodic-Hann frames every 10 ms (no centring or padding), magnitude of a 512-point
    FFT, 64 HTK mel bands 125-7500 Hz, ``log(mel + 0.01)``, then 96-frame (0.96 s) patches
    every ``patch_hop`` frames (10 here, 96 in VGGish). Audio shorter than one patch
    (15600 samples) is zero-padded to one patch, where VGGish would return none.
    """

    def __init__(self, patch_hop: int = VGGISH_PATCH_HOP) -> None:
        super().__init__()
        self.patch_hop = patch_hop
        window = torch.hann_window(VGGISH_WIN, periodic=True, dtype=torch.float64)
        # Derived constants, not weights: kept out of the state dict.
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("mel_matrix", vggish_mel_matrix().float(), persistent=False)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, samples)`` 16 kHz audio -> ``(B, frames, 64)``; frames = 1 + (samples-400)//160."""
        wav = wav.float()
        if wav.shape[-1] < VGGISH_PATCH_SAMPLES:
            wav = F.pad(wav, (0, VGGISH_PATCH_SAMPLES - wav.shape[-1]))
        frames = wav.unfold(-1, VGGISH_WIN, VGGISH_HOP) * self.window
        magnitude = torch.fft.rfft(frames, n=VGGISH_N_FFT).abs()
        return torch.log(magnitude @ self.mel_matrix + VGGISH_LOG_OFFSET)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, samples)`` -> ``(B, P, 96, 64)`` patches (time x mel); P = 21 for 3 s."""
        return self.log_mel(wav).unfold(1, VGGISH_PATCH_FRAMES, self.patch_hop).transpose(2, 3)

    def patches(self, samples: int) -> int:
        """Number of patches ``forward`` yields for ``samples`` of audio."""
        frames = 1 + (max(samples, VGGISH_PATCH_SAMPLES) - VGGISH_WIN) // VGGISH_HOP
        return 1 + (frames - VGGISH_PATCH_FRAMES) // self.patch_hop


class VGGish(nn.Module):
    """VGGish: ``(N, 1, 96, 64)`` log-mel patches -> ``(N, 128)`` embeddings, frozen.

    The network and state-dict layout of torchvggish (harritaylor/torchvggish, release v0.1,
    file ``vggish-10086976.pth``, loaded strictly)::

        features    nn.Sequential from [64, M, 128, M, 256, 256, M, 512, 512, M]: each number is
                    Conv2d(cin, c, 3, padding=1) + ReLU, each M MaxPool2d(2, 2). Keys
                    features.{0,3,6,8,11,13}.{weight,bias}: (64,1,3,3), (128,64,3,3),
                    (256,128,3,3), (256,256,3,3), (512,256,3,3), (512,512,3,3).
        embeddings  Linear(12288, 4096), ReLU, Linear(4096, 4096), ReLU, Linear(4096, 128), ReLU.
                    Keys embeddings.{0,2,4}.{weight,bias}.

    The ``(N, 512, 6, 4)`` conv output is flattened in TensorFlow's (time, mel, channel) order,
    as the port does, to match the original checkpoint. ``pca`` optionally names the port's
    ``vggish_pca_params-970ea276.pth`` (keys ``pca_eigen_vectors`` (128, 128) and
    ``pca_means`` (128,) or (128, 1)); with it, ``forward`` applies the AudioSet release's PCA,
    and with ``quantize`` also its clipping to [-2, 2] and 8-bit quantisation (0..255, as float).

    Raises
    ------
    CheckpointError
        No weights given (see ``vggish_weights_path``), or a file that is not these weights.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        pca: str | Path | None = None,
        quantize: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for v in VGGISH_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(VGGISH_FLAT, VGGISH_HIDDEN),
            nn.ReLU(),
            nn.Linear(VGGISH_HIDDEN, VGGISH_HIDDEN),
            nn.ReLU(),
            nn.Linear(VGGISH_HIDDEN, VGGISH_DIM),
            nn.ReLU(),
        )
        self.load_weights(vggish_weights_path(weights))
        self.quantize = quantize
        self.pca_eigen_vectors: torch.Tensor | None = None
        self.pca_means: torch.Tensor | None = None
        if pca is not None:
            self.load_pca(pca)
        elif quantize:
            raise CheckpointError("VGGish quantisation needs the PCA parameters (pca=...)")
        self.requires_grad_(False)
        self.eval()

    def load_weights(self, path: str | Path) -> None:
        """Load ``vggish-10086976.pth`` strictly: the same keys and shapes, nothing else."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: VGGish weights not found (set {VGGISH_WEIGHTS_ENV})")
        try:
            state = _load_tensors(path)
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not a readable VGGish weight file ({_one_line(exc)})"
            ) from None
        expected = {k: v.shape for k, v in self.state_dict().items()}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k])
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"{path}: not torchvggish VGGish weights (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
            )
        self.load_state_dict(state, strict=True)

    def load_pca(self, path: str | Path) -> None:
        """Load the AudioSet PCA parameters (``vggish_pca_params-970ea276.pth``)."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: VGGish PCA parameters not found")
        try:
            state = _load_tensors(path)
            vectors = state["pca_eigen_vectors"]
            means = state["pca_means"].reshape(-1)
        except Exception as exc:
            raise CheckpointError(f"{path}: not VGGish PCA parameters ({_one_line(exc)})") from None
        if vectors.shape != (VGGISH_DIM, VGGISH_DIM) or means.shape != (VGGISH_DIM,):
            raise CheckpointError(
                f"{path}: VGGish PCA parameters of shape {tuple(vectors.shape)} and "
                f"{tuple(means.shape)}, expected (128, 128) and (128,)"
            )
        # Plain attributes: buffers would add keys to this module's state dict.
        self.pca_eigen_vectors, self.pca_means = vectors, means

    def postprocess(self, emb: torch.Tensor) -> torch.Tensor:
        """``(N, 128)`` -> ``(N, 128)``: PCA, then (``quantize``) clip and map onto 0..255."""
        if self.pca_eigen_vectors is None or self.pca_means is None:
            return emb
        vectors = self.pca_eigen_vectors.to(emb.device)
        out = (emb - self.pca_means.to(emb.device)) @ vectors.T
        if self.quantize:
            out = out.clamp(VGGISH_QUANTIZE_MIN, VGGISH_QUANTIZE_MAX)
            scale = 255.0 / (VGGISH_QUANTIZE_MAX - VGGISH_QUANTIZE_MIN)
            out = torch.round((out - VGGISH_QUANTIZE_MIN) * scale)
        return out

    def train(self, mode: bool = True) -> VGGish:
        return super().train(False)  # frozen: always in inference behaviour

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.features(patches)  # (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).flatten(1)  # (time, mel, channel) order, as TensorFlow's
        return self.postprocess(self.embeddings(x))


# ---------------------------------------------------------------- front-ends

GE2E_FRONTEND_STEP = 10  # frames (0.1 s) between the GE2E front-end's 1.6-s partials


def ge2e_partials(samples: int, step: int = GE2E_PARTIAL_STEP) -> int:
    """Partial windows ``GE2E(step=step)`` yields for ``samples`` of audio (16 for 3 s, step 10).

    As Resemblyzer: ``1 + samples // 160`` mel frames, windows of 160 frames every ``step``,
    the last one zero-padded at the end (for 3 s at step 10: frames 150-309 of 301).
    """
    frames = max(1 + samples // GE2E_HOP, GE2E_PARTIAL_FRAMES)
    return 1 + (frames - GE2E_PARTIAL_FRAMES + step - 1) // step


def _frozen_on(net: nn.Module, device: torch.device) -> nn.Module:
    """Move a hidden frozen network to ``device`` (``Encoder.to`` does not reach it)."""
    if next(net.parameters()).device != device:
        net.to(device)
    return net


class GE2EFrontend(nn.Module):
    """Frozen GE2E partial embeddings every 0.1 s: ``(B, samples)`` -> ``(B, 256, P)``.

    1.6-s windows every 10 frames, each a unit 256-d vector; P = 16 for a 3-s fragment
    (``ge2e_partials``). Weights from ``ge2e_weights_path()``; the network is held outside the
    state dict (see the module docstring).
    """

    def __init__(self, cfg: ModelConfig | None = None, weights: str | Path | None = None) -> None:
        super().__init__()
        self.n_features = GE2E_DIM
        self.__dict__["ge2e"] = GE2E(weights, step=GE2E_FRONTEND_STEP)  # unregistered: frozen

    ge2e: GE2E

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        net = _frozen_on(self.ge2e, wav.device)
        with torch.no_grad():
            return net(wav).transpose(1, 2).contiguous()

    def frames(self, samples: int) -> int:
        return ge2e_partials(samples, GE2E_FRONTEND_STEP)


class VGGishFrontend(nn.Module):
    """Frozen VGGish embeddings of 0.96-s patches every 0.1 s: ``(B, samples)`` -> ``(B, 128, P)``.

    The case study's representation: a 3-s fragment gives 21 patches, so ``(B, 128, 21)``.
    The embeddings are the network's 128-d ReLU outputs, before the AudioSet PCA (an affine map
    the body can learn; clipping and quantisation would only lose information). Weights from
    ``weights`` or ``$SPEAKERID_VGGISH_WEIGHTS``; the network is held outside the state dict
    (see the module docstring), the log-mel pipeline is a registered submodule without weights.
    """

    def __init__(self, cfg: ModelConfig | None = None, weights: str | Path | None = None) -> None:
        super().__init__()
        self.n_features = VGGISH_DIM
        self.patcher = VGGishPatches(VGGISH_PATCH_HOP)
        self.__dict__["vggish"] = VGGish(weights)  # unregistered: frozen, not checkpointed

    vggish: VGGish

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        net = _frozen_on(self.vggish, wav.device)
        with torch.no_grad():
            patches = self.patcher(wav)  # (B, P, 96, 64)
            batch, n_patches = patches.shape[:2]
            emb = net(patches.reshape(batch * n_patches, 1, VGGISH_PATCH_FRAMES, VGGISH_N_MELS))
        return emb.reshape(batch, n_patches, VGGISH_DIM).transpose(1, 2).contiguous()

    def frames(self, samples: int) -> int:
        return self.patcher.patches(samples)
