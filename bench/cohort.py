"""Store an AS-norm cohort inside a checkpoint: one embedding per training-split speaker.

Adaptive symmetric normalisation (AS-norm) rescales a trial's score by how each side scores
against the speakers of a cohort most like it. The cohort here is the checkpoint's training
split (``info["split"]["train"]``; never its validation or test speakers) restricted to
``--corpus`` (LibriSpeech by default, the corpus the split was drawn from): each speaker's
fragments (3-s, hop 3 s, at most ``--max-fragments``) pooled into one unit vector.

    python bench/cohort.py models/campp_zh_en.safetensors \
        --data ../shared/data/LibriSpeech/train-clean-100
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from speakerid.embedding.backends.torch import Embedder
from speakerid.encoders.twin import load_encoder, resave
from speakerid.lab.data import AudioBank, fragment_set, scan_corpus
from speakerid.vectors import pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True, help="the corpus folder (<speaker>/...)")
    ap.add_argument("--corpus", default="train-clean-100", help="split prefix of --data")
    ap.add_argument("--max-fragments", type=int, default=8)
    args = ap.parse_args()

    model = load_encoder(args.checkpoint)
    prefix = f"{args.corpus}:"
    speakers = sorted(
        s[len(prefix) :] for s in model.info["split"]["train"] if s.startswith(prefix)
    )
    bank = AudioBank.load(scan_corpus(args.data), speakers)
    frags = fragment_set(bank, hop_seconds=3.0, max_per_speaker=args.max_fragments)
    emb = Embedder(model, device="cpu").embed_fragments(frags.waves)
    cohort = np.stack([pool(emb[frags.speakers == s]) for s in bank.speakers])
    summary = {
        "speakers": len(bank.speakers),
        "source": f"{prefix}* training split",
        "fragments": len(frags),
    }
    print(json.dumps(summary))
    info = {**model.info, "cohort": summary}
    resave(model, args.checkpoint, info=info, cohort=cohort)


if __name__ == "__main__":
    main()
