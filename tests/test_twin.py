"""The twin encoder and its checkpoints (speakerid.encoders.twin).

Covers every front-end/body pairing, and strict safetensors checkpoints and their refusals.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from encoder_helpers import SMALL, assert_one_line, small_checkpoint, small_encoder, waves
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from speakerid.audio import FRAGMENT_SAMPLES
from speakerid.encoders.twin import (
    CHECKPOINT_FORMAT,
    Encoder,
    ModelConfig,
    file_sha256,
    load_encoder,
    resave,
    save_encoder,
)
from speakerid.errors import CheckpointError
from speakerid.lab.losses import DISTANCES
from speakerid.vectors import l2_normalize

# ----------------------------------------------------------------------------- encoder


@pytest.mark.parametrize(
    ("frontend", "arch"),
    [
        ("raw", "cnn1d"),  # the case study's raw-audio model
        ("mfcc", "cnn2d"),  # the case study's MFCC model
        ("fbank", "ecapa_lite"),  # the default
        ("mfcc", "ecapa_lite"),
        ("fbank", "cnn2d"),
        ("powermel", "lstm"),  # GE2E's shape, the distilled student's
        ("fbank", "lstm"),
    ],
)
def test_every_pairing_outputs_batch_by_embedding_dim(frontend: str, arch: str) -> None:
    encoder = small_encoder(frontend=frontend, arch=arch)
    x = waves(3)
    with torch.no_grad():
        out = encoder(x)
        single = encoder(x[1:2])
    assert out.shape == (3, SMALL["embedding_dim"])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # In eval mode a fragment's embedding does not depend on its batch neighbours.
    torch.testing.assert_close(single[0], out[1], rtol=1e-4, atol=1e-5)


def test_twin_one_network_for_both_sides() -> None:
    """Identical inputs on the two sides of a pair give identical embeddings."""
    encoder = small_encoder()
    x = waves(2, seed=1)
    with torch.no_grad():
        left = encoder(x)
        right = encoder(x.clone())
        both = encoder(torch.cat([x, x]))
    assert torch.equal(left, right)
    torch.testing.assert_close(both[:2], both[2:], rtol=0, atol=1e-6)
    for dist in DISTANCES.values():
        assert (dist(left, right) < 1e-5).all()
    # Different inputs do get different embeddings (the encoder is not constant).
    assert not torch.allclose(left[0], left[1])


def test_encoder_holds_no_training_heads() -> None:
    names = {name.split(".")[0] for name, _ in small_encoder().named_parameters()}
    assert names == {"body"}  # front-end weightless, no distance/margin head


@pytest.mark.parametrize(
    ("field", "value"), [("frontend", "spectrogram"), ("arch", "resnet"), ("frontend", "")]
)
def test_unknown_frontend_or_arch_is_refused(field: str, value: str) -> None:
    with pytest.raises(CheckpointError) as exc:
        Encoder(ModelConfig(**{**SMALL, field: value}))
    assert repr(value) in assert_one_line(exc)


@pytest.mark.slow
def test_lstm_windows_average_the_unit_embeddings_of_equal_slices() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        frontend="powermel", arch="lstm", channels=32, embedding_dim=16, stem_stride=1
    )
    whole = Encoder(cfg).eval()
    split = Encoder(ModelConfig(**{**cfg.__dict__, "windows": 2})).eval()
    split.load_state_dict(whole.state_dict(), strict=True)  # same weights, no new ones
    x = torch.randn(3, 40, 101)  # (B, F, T) powermel features; the odd last step is dropped
    with torch.no_grad():
        halves = [whole.body(x[..., :50]), whole.body(x[..., 50:100])]
        expected = torch.stack([F.normalize(h, dim=-1) for h in halves]).mean(0)
        torch.testing.assert_close(split.body(x), expected)
        assert split(torch.randn(2, FRAGMENT_SAMPLES)).shape == (2, 16)


def test_windows_need_the_lstm_body() -> None:
    with pytest.raises(CheckpointError) as exc:
        Encoder(ModelConfig(**SMALL, windows=2))
    assert "lstm" in assert_one_line(exc)


def test_checkpoint_config_without_windows_reads_one_window() -> None:
    old = {k: v for k, v in ModelConfig(arch="lstm").__dict__.items() if k != "windows"}
    assert ModelConfig.from_dict(old).windows == 1  # checkpoints from before the field


def test_model_config_from_dict() -> None:
    cfg = ModelConfig(frontend="mfcc", arch="cnn2d", channels=48)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.__dict__))) == cfg
    with pytest.raises(CheckpointError, match="unknown fields"):
        ModelConfig.from_dict({**cfg.__dict__, "depth": 3})


def test_whitening_is_an_affine_map_of_the_unit_embedding() -> None:
    plain = small_encoder()
    whitened = small_encoder(whiten=True)
    whitened.load_state_dict(
        {**plain.state_dict(), **whitened.whitening.state_dict(prefix="whitening.")}
    )
    wav = waves(3)
    with torch.no_grad():
        unit = F.normalize(plain(wav), dim=-1)
        assert torch.allclose(whitened(wav), unit, atol=1e-6)  # identity until fitted
        mean = torch.randn(SMALL["embedding_dim"]) * 0.1
        matrix = torch.randn(SMALL["embedding_dim"], SMALL["embedding_dim"])
        whitened.whitening.mean.copy_(mean)
        whitened.whitening.matrix.copy_(matrix)
        assert torch.allclose(whitened(wav), (unit - mean) @ matrix, atol=1e-5)
    # The fitted map is part of the encoder's state: it is saved and strictly loaded.
    assert {"whitening.mean", "whitening.matrix"} <= set(whitened.state_dict())
    with pytest.raises(RuntimeError, match="whitening"):
        plain.load_state_dict(whitened.state_dict(), strict=True)


def test_whitened_checkpoint_round_trip(tmp_path: Path) -> None:
    encoder = small_encoder(whiten=True)
    encoder.whitening.matrix.mul_(2.0)
    save_encoder(encoder, tmp_path / "w.safetensors")
    loaded = load_encoder(tmp_path / "w.safetensors").encoder
    assert loaded.config.whiten
    assert torch.equal(loaded.whitening.matrix, encoder.whitening.matrix)
    with torch.no_grad():
        assert torch.allclose(loaded(waves(2)), encoder(waves(2)), atol=1e-6)


# ----------------------------------------------------------------------------- checkpoints


def test_round_trip_gives_identical_outputs(ckpt: Path) -> None:
    original = small_encoder(seed=3)
    loaded = load_encoder(ckpt)
    x = waves(2, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded.encoder(x), original(x))
    assert not loaded.encoder.training  # ready to embed
    assert loaded.encoder.config == original.config
    assert loaded.threshold == 0.625
    assert loaded.info == {"note": "x", "step": 7}
    assert loaded.path == ckpt


def test_fingerprint_is_the_file_sha256(ckpt: Path) -> None:
    expected = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert file_sha256(ckpt) == expected
    assert load_encoder(ckpt).fingerprint == expected
    assert load_encoder(ckpt, expected_sha256=expected).fingerprint == expected


def test_metadata_is_json_config_and_format(ckpt: Path) -> None:
    with safe_open(str(ckpt), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == CHECKPOINT_FORMAT
    assert json.loads(meta["config"]) == {**ModelConfig().__dict__, **SMALL}


def test_threshold_and_info_optional(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "plain.safetensors"  # parents are created
    save_encoder(small_encoder(), path)
    loaded = load_encoder(path)
    assert loaded.threshold is None and loaded.info == {}


def test_half_precision_checkpoint_loads_close(ckpt: Path, tmp_path: Path) -> None:
    full = load_encoder(ckpt)
    half_path = tmp_path / "half.safetensors"
    save_encoder(full.encoder, half_path, threshold=full.threshold, half=True)

    assert half_path.stat().st_size < 0.6 * ckpt.stat().st_size
    with safe_open(str(half_path), framework="pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys()}  # noqa: SIM118
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    half = load_encoder(half_path)
    x = waves(4, seed=5)
    with torch.no_grad():
        a, b = full.encoder(x), half.encoder(x)
    assert all(p.dtype == torch.float32 for p in half.encoder.parameters())
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert (cos > 0.999).all()
    assert half.threshold == full.threshold


def _rewrite(src: Path, dst: Path, **changes: str | None) -> Path:
    """Copy a checkpoint with some metadata keys changed (None deletes the key)."""
    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def _config(ckpt: Path, **changes: object) -> str:
    with safe_open(str(ckpt), framework="pt") as fh:
        cfg = json.loads(fh.metadata()["config"])
    return json.dumps({**cfg, **changes})


def _refused(path: Path, *expected: str, **kwargs: str) -> str:
    with pytest.raises(CheckpointError) as exc:
        load_encoder(path, **kwargs)
    message = assert_one_line(exc)
    assert str(path) in message
    for text in expected:
        assert text in message
    return message


def test_config_that_does_not_match_the_weights(ckpt: Path, tmp_path: Path) -> None:
    for i, change in enumerate(({"channels": 48}, {"embedding_dim": 8}, {"arch": "cnn2d"})):
        path = _rewrite(ckpt, tmp_path / f"m{i}.safetensors", config=_config(ckpt, **change))
        _refused(path, "weights do not match the config")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"depth": 3}, "unknown fields"),
        ({"frontend": "spectrogram"}, "unknown front-end"),
        ({"arch": "resnet"}, "unknown architecture"),
    ],
)
def test_config_the_code_does_not_know(
    ckpt: Path, tmp_path: Path, change: dict[str, object], expected: str
) -> None:
    path = _rewrite(ckpt, tmp_path / "u.safetensors", config=_config(ckpt, **change))
    with pytest.raises(CheckpointError) as exc:
        load_encoder(path)
    # These messages do not name the file (reported; the other refusals do).
    assert expected in assert_one_line(exc)


@pytest.mark.parametrize(
    "change",
    [
        {"config": "{not json"},
        {"config": None},
        {"threshold": "high"},
        {"config": "3"},
        {"config": "null"},
        {"info": "[1"},
    ],
)
def test_damaged_metadata(ckpt: Path, tmp_path: Path, change: dict[str, str | None]) -> None:
    path = _rewrite(ckpt, tmp_path / "d.safetensors", **change)
    with pytest.raises(CheckpointError) as exc:
        load_encoder(path)
    assert_one_line(exc)


@pytest.mark.parametrize(
    "change",
    [
        {"channels": "wide"},
        {"embedding_dim": 1.5},
        {"channels": -1},
        {"whiten": 1},
        {"stem_stride": True},
    ],
)
def test_config_values_of_the_wrong_type(
    ckpt: Path, tmp_path: Path, change: dict[str, object]
) -> None:
    path = _rewrite(ckpt, tmp_path / "t.safetensors", config=_config(ckpt, **change))
    with pytest.raises(CheckpointError) as exc:
        load_encoder(path)
    assert_one_line(exc)


@pytest.mark.parametrize("fmt", [None, "speakerid-encoder/0", "something-else"])
def test_foreign_format(ckpt: Path, tmp_path: Path, fmt: str | None) -> None:
    path = _rewrite(ckpt, tmp_path / "f.safetensors", format=fmt)
    _refused(path, "not a speakerid encoder checkpoint")


def test_foreign_safetensors_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    _refused(path, "not a speakerid encoder checkpoint")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _refused(path, "not a readable speakerid model")


@pytest.mark.parametrize("keep", [0, 4, 100, 0.5, 0.99])
def test_truncated_file(ckpt: Path, tmp_path: Path, keep: float) -> None:
    data = ckpt.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    _refused(path)


def test_flipped_byte_fails_the_pinned_sha256(ckpt: Path, tmp_path: Path) -> None:
    data = bytearray(ckpt.read_bytes())
    data[-10] ^= 0x01  # inside the last tensor: still a well-formed file
    path = tmp_path / "tampered.safetensors"
    path.write_bytes(bytes(data))
    assert load_encoder(path).fingerprint != file_sha256(ckpt)  # loads without a pin
    message = _refused(path, "sha256", "does not match", expected_sha256=file_sha256(ckpt))
    assert file_sha256(path)[:12] in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _refused(tmp_path / "none.safetensors", "no such model file")
    _refused(tmp_path, "no such model file")


# ----------------------------------------------------------------------------- shipped model


def test_cohort_is_stored_beside_the_weights_and_checked(tmp_path: Path) -> None:
    encoder = small_encoder()
    cohort = l2_normalize(np.random.default_rng(0).standard_normal((5, 16)))
    save_encoder(encoder, tmp_path / "c.safetensors", cohort=cohort)
    loaded = load_encoder(tmp_path / "c.safetensors")
    np.testing.assert_array_equal(loaded.cohort, cohort)
    assert load_encoder(_save_plain(tmp_path)).cohort is None
    with pytest.raises(ValueError, match="cohort must be"):
        save_encoder(encoder, tmp_path / "bad.safetensors", cohort=cohort[:, :4])
    state = load_file(str(tmp_path / "c.safetensors"))
    state["cohort"] = torch.zeros(5, 4)
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as fh:
        metadata = fh.metadata()
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="cohort"):
        load_encoder(tmp_path / "bad.safetensors")


def _save_plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.safetensors"
    save_encoder(small_encoder(), path)
    return path


# ----------------------------------------------------------------------------- Embedder


# ----------------------------------------------------------------------------- precision


def test_resave_keeps_cohort_storage_and_threshold(tmp_path: Path) -> None:
    cohort = l2_normalize(np.random.default_rng(1).standard_normal((4, 16)))
    first = tmp_path / "a.safetensors"
    save_encoder(small_encoder(), first, threshold=0.5, info={"x": 1}, half=True, cohort=cohort)
    model = load_encoder(first)
    assert model.stored_half
    second = tmp_path / "b.safetensors"
    resave(model, second, info={**model.info, "y": 2})
    again = load_encoder(second)
    assert again.stored_half and again.threshold == 0.5 and again.info == {"x": 1, "y": 2}
    np.testing.assert_array_equal(again.cohort, cohort)
    stored = load_file(str(second))
    assert stored["body.embed.weight"].dtype == torch.float16  # the storage precision kept


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "5.0", "-1.5"])
def test_metadata_threshold_out_of_range_is_refused(ckpt: Path, tmp_path: Path, value: str) -> None:
    path = _rewrite(ckpt, tmp_path / "th.safetensors", threshold=value)
    _refused(path, "threshold")


def test_wrong_shape_names_the_tensor_and_both_shapes(ckpt: Path, tmp_path: Path) -> None:
    path = _rewrite(ckpt, tmp_path / "w.safetensors", config=_config(ckpt, embedding_dim=8))
    message = _refused(path, "weights do not match the config")
    assert "Error(s)" not in message and "state_dict" not in message
    assert "shape" in message and "(8," in message


def _load_message(path: str) -> str:
    try:
        load_encoder(path)
    except CheckpointError as exc:
        return str(exc)
    return "loaded"


def test_unreadable_checkpoint_is_one_line(ckpt: Path, open_tmp: Path) -> None:
    from conftest import run_unprivileged

    path = open_tmp / "secret.safetensors"
    path.write_bytes(ckpt.read_bytes())
    path.chmod(0)
    message = str(run_unprivileged(_load_message, str(path)))
    assert "cannot be read" in message and "secret.safetensors" in message


# ---------------------------------------------------------------- crafted checkpoints


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"windows": 1_000_000}, "windows=1000000 must be from 1 to 16"),
        ({"channels": 10**7}, "channels=10000000 must be from 1 to 4096"),
        ({"embedding_dim": 100_000}, "embedding_dim=100000 must be from 1 to 8192"),
        ({"fragment_samples": 10**9}, "fragment_samples=1000000000 must be from 1 to 960000"),
        ({"lstm_layers": 0}, "lstm_layers=0 must be positive"),
    ],
)
def test_config_beyond_its_limits_is_refused_before_building(
    ckpt: Path, tmp_path: Path, change: dict, expected: str
) -> None:
    path = _rewrite(ckpt, tmp_path / "c.safetensors", config=_config(ckpt, **change))
    _refused(path, expected)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.uint8, torch.int64])
def test_weights_that_are_not_floats_are_refused(
    ckpt: Path, tmp_path: Path, dtype: torch.dtype
) -> None:
    state = load_file(str(ckpt))
    with safe_open(str(ckpt), framework="pt") as fh:
        meta = dict(fh.metadata())
    key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
    state[key] = state[key].to(dtype)
    path = tmp_path / "int.safetensors"
    save_file(state, str(path), metadata=meta)
    _refused(path, "weights of the wrong type", key, str(dtype).removeprefix("torch."))


def test_an_integer_buffer_stored_as_float_is_refused(ckpt: Path, tmp_path: Path) -> None:
    state = load_file(str(ckpt))
    with safe_open(str(ckpt), framework="pt") as fh:
        meta = dict(fh.metadata())
    key = next(k for k in state if k.endswith("num_batches_tracked"))
    state[key] = state[key].float()
    path = tmp_path / "count.safetensors"
    save_file(state, str(path), metadata=meta)
    _refused(path, "weights of the wrong type", key, "float32")


def test_deeply_nested_header_json_is_one_line(tmp_path: Path) -> None:
    import struct

    from speakerid.encoders.checkpoint import read_header

    body = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(CheckpointError) as exc:
        read_header(path)
    assert "bad header" in assert_one_line(exc)
    nested = {"format": "speakerid-encoder/1", "config": "[" * 50_000 + "]" * 50_000}
    deep = tmp_path / "meta.safetensors"
    save_file({"w": torch.zeros(1)}, str(deep), metadata=nested)
    with pytest.raises(CheckpointError) as exc:
        read_header(deep)
    assert "damaged checkpoint metadata" in assert_one_line(exc)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.safetensors")
