"""SpeechBrain's own ECAPA-TDNN embeddings of some files: the reference of ``convert_ecapa.py``.

Needs SpeechBrain, which speakerid does not depend on: run it in a throwaway environment,
never in speakerid's. ``MODEL_DIR`` holds the wheel's ``hyperparams.yaml``,
``embedding_model.ckpt``, ``mean_var_norm_emb.ckpt``, ``classifier.ckpt`` and
``label_encoder.ckpt`` (copied as ``label_encoder.txt``, the name the yaml asks for):

    python -m venv /tmp/sbvenv && /tmp/sbvenv/bin/pip install speechbrain
    /tmp/sbvenv/bin/python bench/ecapa_reference.py MODEL_DIR FILE... --out /tmp/ecapa_ref.npz

Each file is read by speakerid's ``load_audio`` (16 kHz mono float32) and embedded whole by
``EncoderClassifier.encode_batch`` (fbank, sentence mean normalisation, ECAPA-TDNN; no
embedding normalisation, as SpeechBrain's ``verify_batch`` does).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from speechbrain.inference.speaker import EncoderClassifier

from speakerid.audio import load_audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ecapa_ref.npz"))
    args = ap.parse_args()
    model_dir = str(args.model_dir.resolve())
    classifier = EncoderClassifier.from_hparams(
        source=model_dir,
        savedir=model_dir,
        overrides={"pretrained_path": model_dir},  # the yaml names the Hugging Face repo
        run_opts={"device": "cpu"},
    )
    classifier.eval()
    embeddings = []
    with torch.inference_mode():
        for path in args.files:
            wav = torch.from_numpy(load_audio(path))[None]
            embeddings.append(classifier.encode_batch(wav)[0, 0].numpy())
    np.savez(
        args.out, paths=np.array([str(p) for p in args.files]), embeddings=np.stack(embeddings)
    )
    print(f"wrote {args.out}: {len(embeddings)} embeddings")


if __name__ == "__main__":
    main()
