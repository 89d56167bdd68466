"""``ModelConfig``: everything needed to rebuild an encoder, saved inside every checkpoint.

A leaf module (no torch): the encoder bodies (``campp``, ``ecapa``, ``pretrained``) name it in
their signatures and ``model`` builds from it, so it lives below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from speakerid.audio import FRAGMENT_SAMPLES, SAMPLE_RATE
from speakerid.encoders.checkpoint import EMBEDDING_MAX_DIM
from speakerid.errors import CheckpointError

# The largest value of each whole-number config field, checked before anything is built:
# far above any useful model, far below what exhausts memory or leaves a layer empty
# (``windows=1000000`` cut a fragment into windows of no frames at forward time).
CONFIG_MAX = {
    "embedding_dim": EMBEDDING_MAX_DIM,
    "channels": 4096,
    "n_mels": 256,
    "n_mfcc": 128,  # at most the MFCC front-end's 128 mel bands
    "stem_stride": 8,
    "lstm_layers": 16,
    "windows": 16,  # 3-s fragments: windows of 190 ms and more
    "fragment_samples": 60 * SAMPLE_RATE,
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an encoder; saved inside every checkpoint."""

    frontend: str = "fbank"  # input: raw | mfcc | fbank | kaldi_fbank | sb_fbank | powermel
    # | ge2e | vggish
    arch: str = "ecapa_lite"  # encoder body: cnn1d | cnn2d | ecapa_lite | lstm | campp | ecapa
    embedding_dim: int = 192  # size of the embedding the encoder outputs
    channels: int = 192  # width of the body (ecapa_lite, ecapa) or of its last conv block (cnn*)
    n_mels: int = 80  # fbank mel bands
    n_mfcc: int = 32  # MFCC coefficients
    stem_stride: int = 2  # ecapa_lite: frames the stem skips (2: 20 ms, 3: 30 ms resolution);
    # powermel: frames stacked into one step
    lstm_layers: int = 3  # lstm: recurrent layers
    windows: int = 1  # lstm: read the fragment as this many equal consecutive windows, batched,
    # and average their unit embeddings (GE2E learnt on 1.6-s windows; 2: 1.5 s each)
    whiten: bool = False  # end with a fitted ``Whitening`` (see ``whiten.fit_whitening``)
    fragment_samples: int = FRAGMENT_SAMPLES  # input length the encoder is built for

    @classmethod
    def from_dict(cls, data: object) -> ModelConfig:
        """Rebuild from a checkpoint's JSON, checking every field's type and range."""
        if not isinstance(data, dict):
            raise CheckpointError("checkpoint config is not a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise CheckpointError(f"checkpoint config has unknown fields: {sorted(unknown)}")
        for name, value in data.items():
            default = known[name].default
            if type(value) is not type(default):
                raise CheckpointError(
                    f"checkpoint config field {name}={value!r} is not a {type(default).__name__}"
                )
            if type(value) is int and not 1 <= value <= CONFIG_MAX.get(name, value):
                limit = CONFIG_MAX.get(name)
                must = f"must be from 1 to {limit}" if limit and value > 0 else "must be positive"
                raise CheckpointError(f"checkpoint config field {name}={value!r} {must}")
        return cls(**data)
