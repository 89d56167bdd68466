"""Pretrained front-ends: VGGish's input pipeline and network, GE2E partials, checkpoints.

VGGish weights are not available offline, so a randomly initialised network in torchvggish's
own layout (written out below as the port writes it) stands in for ``vggish-10086976.pth``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from speakerid.audio import FRAGMENT_SAMPLES, SAMPLE_RATE
from speakerid.encoders.pretrained import (
    GE2E,
    GE2E_WEIGHTS_ENV,
    VGGISH_WEIGHTS_ENV,
    VGGISH_WEIGHTS_URL,
    GE2EFrontend,
    VGGish,
    VGGishFrontend,
    VGGishPatches,
    ge2e_partials,
    init_from_ge2e,
    vggish_mel_matrix,
)
from speakerid.encoders.twin import Encoder, ModelConfig, load_encoder, save_encoder
from speakerid.errors import CheckpointError, DataError

# Slow integration tests: CI runs them (README, "Install, test, run").
pytestmark = pytest.mark.slow

PATCHES_3S = 21  # 0.96-s patches every 0.1 s in a 3-s fragment
GE2E_PARTIALS_3S = 16  # 1.6-s windows every 0.1 s, the last zero-padded, as Resemblyzer


class PortVGG(nn.Module):
    """torchvggish's ``VGG(make_layers())``, as in the port's ``vggish.py``."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1), nn.ReLU()]
                in_channels = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(True),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Linear(4096, 128),
            nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.transpose(x, 1, 3)
        x = torch.transpose(x, 1, 2)
        x = x.contiguous().view(x.size(0), -1)
        return self.embeddings(x)


@pytest.fixture(scope="module")
def port() -> PortVGG:
    torch.manual_seed(0)
    return PortVGG().eval()


@pytest.fixture(scope="module")
def weights(port: PortVGG, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(port.state_dict(), path)
    return path


@pytest.fixture
def with_weights(weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(VGGISH_WEIGHTS_ENV, str(weights))
    return weights


def speechlike(batch: int = 2, samples: int = FRAGMENT_SAMPLES, seed: int = 0) -> torch.Tensor:
    """Harmonics with a wandering pitch plus a little noise, ``(batch, samples)`` in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    rows = []
    for _ in range(batch):
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        wav = sum(np.sin(k * phase) / k for k in range(1, 12)) * 0.1
        rows.append(wav + 0.01 * rng.standard_normal(samples))
    return torch.tensor(np.stack(rows), dtype=torch.float32)


# ---------------------------------------------------------------- numpy reference


def ref_mel_matrix() -> np.ndarray:
    """vggish mel_features.spectrogram_to_mel_matrix(64, 257, 16000, 125, 7500)."""

    def hertz_to_mel(hz: np.ndarray) -> np.ndarray:
        return 1127.0 * np.log(1.0 + hz / 700.0)

    bins_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2.0, 257))
    edges = np.linspace(hertz_to_mel(np.array(125.0)), hertz_to_mel(np.array(7500.0)), 64 + 2)
    matrix = np.empty((257, 64))
    for i in range(64):
        lower, center, upper = edges[i : i + 3]
        lower_slope = (bins_mel - lower) / (center - lower)
        upper_slope = (upper - bins_mel) / (upper - center)
        matrix[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    matrix[0, :] = 0.0
    return matrix


def ref_log_mel(wav: np.ndarray) -> np.ndarray:
    """vggish mel_features.log_mel_spectrogram at 16 kHz, 25 ms / 10 ms: ``(frames, 64)``."""
    window, hop = 400, 160
    n_frames = 1 + (len(wav) - window) // hop
    frames = np.stack([wav[i * hop : i * hop + window] for i in range(n_frames)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi / window * np.arange(window))
    spectrogram = np.abs(np.fft.rfft(frames * hann, 512))
    return np.log(spectrogram @ ref_mel_matrix() + 0.01)


def test_mel_matrix_matches_vggish() -> None:
    np.testing.assert_allclose(vggish_mel_matrix().numpy(), ref_mel_matrix(), atol=1e-12)


def test_log_mel_patches_match_numpy_reference() -> None:
    wav = speechlike(batch=2)
    patcher = VGGishPatches()
    got_mel = patcher.log_mel(wav).numpy()
    got_patches = patcher(wav).numpy()
    assert got_patches.shape == (2, PATCHES_3S, 96, 64)
    for b in range(2):
        ref = ref_log_mel(wav[b].double().numpy())
        assert ref.shape == (298, 64)
        np.testing.assert_allclose(got_mel[b], ref, atol=2e-4, rtol=0)
        ref_patches = np.stack([ref[p * 10 : p * 10 + 96] for p in range(PATCHES_3S)])
        np.testing.assert_allclose(got_patches[b], ref_patches, atol=2e-4, rtol=0)


@pytest.mark.parametrize("samples", [8_000, 15_600, 16_000, 32_000, FRAGMENT_SAMPLES, 80_000])
def test_patch_count_matches_output(samples: int) -> None:
    patcher = VGGishPatches()
    assert patcher(torch.zeros(1, samples)).shape[1] == patcher.patches(samples)
    assert patcher.state_dict() == {}


# ---------------------------------------------------------------- VGGish network


def test_vggish_matches_port_layout_and_forward(port: PortVGG, weights: Path) -> None:
    net = VGGish(weights)
    assert net.state_dict().keys() == port.state_dict().keys()
    x = VGGishPatches()(speechlike(batch=1)).reshape(-1, 1, 96, 64)[:4]
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), port(x).numpy(), rtol=1e-5, atol=1e-6)


def test_vggish_pca_postprocessing(weights: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors, means = rng.standard_normal((128, 128)), rng.standard_normal(128)
    pca = tmp_path / "vggish_pca_params-970ea276.pth"
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means}, pca)  # numpy, as published
    net = VGGish(weights, pca=pca, quantize=True)
    raw = torch.tensor(rng.uniform(0, 1, (3, 128)), dtype=torch.float32)
    expected = np.round((np.clip((raw.numpy() - means) @ vectors.T, -2, 2) + 2) * 255 / 4)
    np.testing.assert_allclose(net.postprocess(raw).numpy(), expected, atol=1.0)
    assert net.state_dict().keys() == VGGish(weights).state_dict().keys()


def test_vggish_wrong_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError) as err:
        VGGish(bad)
    assert "\n" not in str(err.value) and "VGGish" in str(err.value)


# ---------------------------------------------------------------- VGGish front-end


def test_vggish_frontend_shape(with_weights: Path) -> None:
    frontend = VGGishFrontend(ModelConfig(frontend="vggish"))
    out = frontend(speechlike(batch=2))
    assert out.shape == (2, 128, PATCHES_3S)
    assert frontend.n_features == 128 and frontend.frames(FRAGMENT_SAMPLES) == PATCHES_3S
    assert frontend.state_dict() == {} and list(frontend.parameters()) == []


def test_vggish_encoder_checkpoint_round_trip(with_weights: Path, tmp_path: Path) -> None:
    cfg = ModelConfig(frontend="vggish", arch="cnn2d", embedding_dim=32, channels=32)
    torch.manual_seed(0)
    encoder = Encoder(cfg).eval()
    wav = speechlike(batch=1)
    with torch.no_grad():
        emb = encoder(wav)
    assert emb.shape == (1, 32)
    path = tmp_path / "enc.safetensors"
    save_encoder(encoder, path)
    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())
    assert keys and all(k.startswith("body.") for k in keys)
    loaded = load_encoder(path).encoder
    with torch.no_grad():
        torch.testing.assert_close(loaded(wav), emb)


def test_missing_vggish_weights_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VGGISH_WEIGHTS_ENV, raising=False)
    with pytest.raises(CheckpointError) as err:
        Encoder(ModelConfig(frontend="vggish", arch="cnn2d"))
    message = str(err.value)
    assert "\n" not in message
    assert VGGISH_WEIGHTS_ENV in message and VGGISH_WEIGHTS_URL in message


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vggish_encoder_follows_input_device(with_weights: Path) -> None:
    encoder = Encoder(ModelConfig(frontend="vggish", arch="cnn2d")).eval().to("cuda")
    with torch.no_grad():
        out = encoder(speechlike(batch=2).to("cuda"))
    assert out.device.type == "cuda" and out.shape == (2, 192)


# ---------------------------------------------------------------- GE2E front-end


def test_ge2e_frontend_matches_teacher_partials() -> None:
    pytest.importorskip("resemblyzer")
    frontend = GE2EFrontend(ModelConfig(frontend="ge2e"))
    wav = speechlike(batch=2)
    out = frontend(wav)
    assert out.shape == (2, 256, GE2E_PARTIALS_3S)
    assert frontend.frames(FRAGMENT_SAMPLES) == GE2E_PARTIALS_3S == ge2e_partials(48_000, 10)
    assert frontend.state_dict() == {} and list(frontend.parameters()) == []
    with torch.no_grad():
        expected = GE2E(step=10)(wav).transpose(1, 2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, GE2E_PARTIALS_3S))


def test_ge2e_encoder_checkpoint_has_no_ge2e_weights(tmp_path: Path) -> None:
    pytest.importorskip("resemblyzer")
    encoder = Encoder(ModelConfig(frontend="ge2e", arch="cnn2d", embedding_dim=32, channels=32))
    assert encoder.eval()(speechlike(batch=1)).shape == (1, 32)
    path = tmp_path / "enc.safetensors"
    save_encoder(encoder, path)
    with safe_open(str(path), framework="pt") as fh:
        assert all(k.startswith("body.") for k in fh.keys())  # noqa: SIM118
    load_encoder(path)


def test_ge2e_without_resemblyzer_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.delenv(GE2E_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "resemblyzer" else find_spec(name, *args),
    )
    with pytest.raises(CheckpointError) as err:
        GE2EFrontend()
    assert "\n" not in str(err.value) and "resemblyzer" in str(err.value).lower()


@pytest.mark.parametrize("stack", [1, 3])
def test_student_initialised_from_ge2e_reads_stacked_frames_as_their_mean(stack: int) -> None:
    pytest.importorskip("resemblyzer")
    teacher = GE2E()
    cfg = ModelConfig(frontend="powermel", arch="lstm", channels=256, embedding_dim=256)
    student = Encoder(replace(cfg, stem_stride=stack)).eval()
    init_from_ge2e(student.body, teacher)
    mels = teacher.mels(speechlike(batch=2))[:, :120]  # (B, 120, 40)
    repeated = mels.repeat_interleave(stack, dim=1)  # each frame `stack` times
    stacked = repeated.reshape(2, 120, 40 * stack).mT  # what the front-end would give
    with torch.no_grad():
        _, (hidden, _) = teacher.lstm(mels)
        expected = F.relu(teacher.linear(hidden[-1]))
        torch.testing.assert_close(student.body(stacked), expected, rtol=1e-4, atol=1e-5)


def test_ge2e_read_in_windows_embeds_equal_consecutive_slices() -> None:
    pytest.importorskip("resemblyzer")
    teacher = GE2E(windows=2)
    wav = speechlike(batch=2)
    mels = teacher.mels(wav)
    size = mels.shape[1] // 2
    with torch.no_grad():
        got = teacher(wav)  # (B, 2, 256)
        for i in range(2):
            _, (hidden, _) = teacher.lstm(mels[:, i * size : (i + 1) * size])
            expected = F.normalize(F.relu(teacher.linear(hidden[-1])), dim=-1)
            torch.testing.assert_close(got[:, i], expected, rtol=1e-4, atol=1e-5)
    assert teacher.embed(wav).shape == (2, 256)


def test_student_in_windows_from_ge2e_matches_the_teacher_in_windows() -> None:
    pytest.importorskip("resemblyzer")
    teacher = GE2E(windows=2)
    cfg = ModelConfig(
        frontend="powermel", arch="lstm", channels=256, embedding_dim=256, stem_stride=1, windows=2
    )
    student = Encoder(cfg).eval()
    init_from_ge2e(student.body, teacher)
    wav = speechlike(batch=2)
    with torch.no_grad():
        got = F.normalize(student(wav), dim=-1)
        torch.testing.assert_close(got, teacher.embed(wav), rtol=1e-3, atol=1e-4)


def test_student_of_another_shape_cannot_start_from_ge2e() -> None:
    pytest.importorskip("resemblyzer")
    teacher = GE2E()
    for cfg in (
        ModelConfig(frontend="powermel", arch="lstm", channels=128, embedding_dim=256),
        ModelConfig(
            frontend="powermel", arch="lstm", channels=256, embedding_dim=256, lstm_layers=4
        ),
        ModelConfig(frontend="fbank", arch="lstm", channels=256, embedding_dim=256, n_mels=50),
        ModelConfig(frontend="powermel", arch="ecapa_lite", embedding_dim=256),
    ):
        with pytest.raises(DataError) as err:
            init_from_ge2e(Encoder(cfg).body, teacher)
        assert "\n" not in str(err.value)
