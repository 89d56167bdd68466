"""CAM++ port (campp.py, the kaldi_fbank front-end) against the original implementation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from speakerid.embedding.backends.torch import load_model
from speakerid.encoders.campp import CAMPPBody, mean_std_pool, segment_means
from speakerid.encoders.twin import Encoder, ModelConfig
from speakerid.features.torch import KaldiFbankFrontend

# The embedding of ``reference_input()`` by the original CAM++ implementation: modelscope
# 1.40.2's ``models/audio/sv/DTDNN.py`` (``CAMPPlus(80, 192)``, the 3D-Speaker code) with
# campplus_cn_en_common.pt loaded strictly, fed ``torchaudio.compliance.kaldi.fbank(wav,
# num_mel_bins=80)`` minus its mean over frames, as modelscope's pipeline does. Computed once,
# outside this repository (it does not ship modelscope), and pasted here.
# fmt: off
REFERENCE = np.array(
    [
    -1.045013, 0.108888, 0.824859, -0.880739, -0.776390, 0.408331, -0.435447, 0.305364,
    -0.650632, 0.140095, -0.175941, 0.950800, 1.243834, -0.166810, 0.483145, 0.280958,
    -0.337258, -0.626405, -0.025646, -0.444488, 1.428023, -0.283191, -1.742334, 1.829008,
    0.434623, -1.298396, 0.329107, 0.474868, 0.223626, 0.350026, 0.218559, -0.245273,
    0.860188, -0.526326, -0.820417, -1.910816, -1.024780, 0.650326, 0.871697, 0.056080,
    1.330608, 0.862281, -0.063832, 0.067529, 0.543317, 0.216767, -0.713573, -0.150771,
    -0.049069, 0.455032, 0.423216, 0.174793, 0.883273, -0.211992, 1.159887, -0.475275,
    0.781647, -0.717696, -0.929549, -1.189577, -0.435063, 1.240888, 0.597641, 0.004355,
    -0.044803, 0.501577, 0.092822, 1.511231, 0.112908, -1.535811, 0.010717, 1.598429,
    0.224781, -0.085835, -1.236228, -0.506755, 1.117147, 0.592283, -0.268023, -0.048185,
    0.958346, -0.196725, 0.047233, 0.494946, 0.296350, 0.959016, 1.500021, 0.378259,
    -0.782911, -0.632248, -0.650180, 0.557991, -1.274163, 1.097384, -0.157693, 0.275486,
    0.051608, -0.185210, -0.839881, -0.392300, 1.330508, -0.685159, 1.069235, -1.355399,
    0.414139, -0.056067, -0.506498, -0.117549, 1.403608, -0.274359, 0.116793, -1.060017,
    0.781839, 0.337890, 1.042695, 0.668498, 0.674686, 1.656731, 0.464911, 0.505020,
    0.421112, 0.375377, -0.836240, 0.342279, -1.211810, 0.951157, 0.880760, 1.057908,
    0.241759, 0.644810, 0.780059, 0.131490, 0.717799, 0.386352, -0.159647, 0.506602,
    -0.705044, 0.649487, -0.327441, 0.516666, 0.992404, -1.135359, 0.187069, 0.117731,
    0.026019, -0.284308, 1.059020, 1.507254, -0.404794, -0.172587, -0.377792, 0.640143,
    0.647288, 0.475213, -0.709908, -0.335689, 0.533273, -0.032418, 0.243051, 0.635191,
    0.001678, -0.275265, 0.834778, -0.300328, 0.738268, -1.751937, 0.588201, 0.611418,
    -0.876190, -1.653092, -0.781562, -0.630242, 1.253243, 0.716030, -1.154096, 0.542407,
    0.020434, 0.160684, 0.889002, -0.117679, -0.568181, -0.731475, 0.528279, -0.118741,
    -0.970969, -1.151653, 0.403663, -0.635904, -0.636282, 0.757825, -0.505118, 0.271393,
    ],
    dtype=np.float32,
)
# fmt: on


def reference_input() -> np.ndarray:
    """A fixed 3-s voiced signal (a gliding 20-harmonic vowel with noise), float32 in [-1, 1]."""
    t = np.arange(48_000) / 16_000
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16_000
    voice = sum(np.sin(k * phase) / k for k in range(1, 21)) * (0.6 + 0.4 * np.sin(6 * np.pi * t))
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.1 * voice + 0.005 * noise).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_port_reproduces_the_original_embedding() -> None:
    model = load_model("accurate")
    assert model.encoder.config.arch == "campp"
    with torch.inference_mode():
        emb = model.encoder(torch.from_numpy(reference_input())[None])[0].numpy()
    assert emb.shape == REFERENCE.shape == (192,)
    assert cosine(emb, REFERENCE) >= 0.9999
    # fp16 storage rounds each weight; the embedding moves by far less than that bound
    assert np.abs(emb - REFERENCE).max() < 0.05


@pytest.mark.parametrize("samples", [400, 16_000, 48_000, 100_001])
def test_kaldi_fbank_matches_torchaudio_per_fragment(samples: int) -> None:
    gen = torch.Generator().manual_seed(samples)
    wav = 0.1 * torch.randn(3, samples, generator=gen)
    wav[1] *= 1e-3  # a quiet fragment: the log floor must match too
    ours = KaldiFbankFrontend(80)(wav)
    assert ours.shape == (3, 80, KaldiFbankFrontend(80).frames(samples))
    for i in range(3):
        ref = kaldi.fbank(wav[i : i + 1], num_mel_bins=80)
        ref = ref - ref.mean(dim=0, keepdim=True)
        torch.testing.assert_close(ours[i].T, ref, atol=5e-4, rtol=1e-4)


def test_segment_means_averages_each_block_including_a_short_tail() -> None:
    x = torch.arange(2 * 3 * 250, dtype=torch.float32).reshape(2, 3, 250)
    out = segment_means(x, 100)
    assert out.shape == x.shape
    for start, end in ((0, 100), (100, 200), (200, 250)):
        want = x[..., start:end].mean(dim=-1, keepdim=True).expand(-1, -1, end - start)
        torch.testing.assert_close(out[..., start:end], want)


def test_stats_pool_is_mean_and_unbiased_std() -> None:
    x = torch.randn(2, 4, 7)
    torch.testing.assert_close(mean_std_pool(x), torch.cat([x.mean(-1), x.std(-1)], dim=-1))
    assert torch.isfinite(mean_std_pool(x[..., :1])).all()  # one step: no NaN


@pytest.mark.slow
def test_body_takes_any_length_and_has_the_published_shape() -> None:
    body = CAMPPBody(80, ModelConfig(embedding_dim=192)).eval()
    params = sum(p.numel() for p in body.parameters())
    assert 6.5e6 < params < 7.3e6  # the paper's 7.2 M, this release's 6.93 M
    with torch.inference_mode():
        for frames in (50, 298, 1001):
            assert body(torch.randn(2, 80, frames)).shape == (2, 192)


@pytest.mark.slow
def test_encoder_reads_fragments_and_batches_do_not_mix() -> None:
    torch.manual_seed(0)
    encoder = Encoder(ModelConfig(frontend="kaldi_fbank", arch="campp", embedding_dim=192))
    encoder.eval()
    wav = 0.1 * torch.randn(3, 48_000)
    with torch.inference_mode():
        together = encoder(wav)
        alone = encoder(wav[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-4, rtol=1e-4)


def test_conversion_script_names_every_original_key(tmp_path: Path) -> None:
    """The key map covers a state dict of the original's layout (built from our own model)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "convert_campp", Path(__file__).parent.parent / "bench" / "convert_campp.py"
    )
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    ours = load_model("accurate").encoder.state_dict()
    original_names = {
        "head.layer1.0.shortcut.0.weight": "body.front.blocks.0.shortcut.0.weight",
        "head.layer2.1.bn2.running_var": "body.front.blocks.3.bn2.running_var",
        "xvector.block2.tdnnd24.cam_layer.linear2.bias": "body.blocks.2.layers.23.mask_out.bias",
        "xvector.block3.tdnnd1.nonlinear1.batchnorm.weight": "body.blocks.4.layers.0.bn_in.weight",
        "xvector.transit3.linear.weight": "body.blocks.5.conv.weight",
        "xvector.dense.nonlinear.batchnorm.running_mean": "body.embed_bn.running_mean",
        "xvector.tdnn.linear.weight": "body.tdnn.weight",
    }
    for original, mine in original_names.items():
        assert convert.rename(original) == mine
        assert mine in ours


def test_channel_equalisation_keeps_the_embedding() -> None:
    """bench/export_onnx.py's ``equalise_campp`` rescales the dense blocks' channels to one
    range (an exact reparametrisation for int8): the shipped model's embeddings stay put,
    and the concatenations' channels end up with comparable peaks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "export_onnx", Path(__file__).parent.parent / "bench" / "export_onnx.py"
    )
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    encoder = load_model("accurate").encoder.eval()
    body = encoder.body
    wav = torch.from_numpy(reference_input())
    with torch.no_grad():
        x = encoder.frontend(wav[None])  # (1, 80, frames)
        features = [encoder.frontend(torch.roll(wav, k)[None]).numpy() for k in (0, 8000)]
    with torch.no_grad():
        before = body(x)
    spreads = export.equalise_campp(body, features, "peak", floor=0.5)
    with torch.no_grad():
        after = body(x)
    torch.testing.assert_close(after, before, atol=1e-3, rtol=1e-3)
    assert torch.nn.functional.cosine_similarity(after, before).item() > 0.99999
    assert max(spreads.values()) > 10  # the spread it removed was there to remove
