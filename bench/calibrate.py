"""Calibrate a checkpoint's verification threshold at the recording level.

``verify`` compares whole recordings (pooled fragment embeddings), whose cosine scores run
higher than single fragments'. This takes the checkpoint's validation speakers (never its
test speakers), cuts each trimmed recording into pieces of ``--piece-seconds`` (at most
``--max-pieces``), embeds each piece as a recording, and sets the threshold at the EER point
of all same-speaker vs different-speaker piece pairs (when the pairs are fully separable,
the middle of the gap between the lowest same-speaker and highest other score): the maths is
``speakerid.decision.calibration.pair_trials`` and ``gap_threshold``. The
checkpoint is rewritten with the new threshold and the calibration recorded in its info.

    python bench/calibrate.py models/default.safetensors \
        --data ../shared/data/LibriSpeech/train-clean-100
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from speakerid.audio import SAMPLE_RATE
from speakerid.decision.calibration import gap_threshold, pair_trials
from speakerid.embedding.backends.torch import Embedder
from speakerid.encoders.twin import load_encoder, resave
from speakerid.lab.data import AudioBank, scan_corpora
from speakerid.lab.evaluate import match_speakers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--piece-seconds", type=float, default=4.0)
    ap.add_argument("--max-pieces", type=int, default=4)
    ap.add_argument("--dry-run", action="store_true", help="print, do not rewrite")
    args = ap.parse_args()

    model = load_encoder(args.checkpoint)
    recordings = scan_corpora(args.data)
    speakers = match_speakers(model.info["split"]["val"], sorted({r.speaker for r in recordings}))
    bank = AudioBank.load(recordings, speakers)
    embedder = Embedder(model, device="cpu")
    piece = int(args.piece_seconds * SAMPLE_RATE)
    emb, owner = [], []
    for spk, waves in zip(bank.speakers, bank.waves, strict=True):
        for wav in waves:
            for i in range(min(len(wav) // piece, args.max_pieces)):
                emb.append(embedder.embed_waveform(wav[i * piece : (i + 1) * piece], trim=False))
                owner.append(spk)
    score_arr, label_arr = pair_trials(np.stack(emb), np.asarray(owner))
    rate, threshold, separable = gap_threshold(score_arr, label_arr)
    calibration = {
        "level": "recording",
        "speakers": "validation",
        "n_speakers": len(bank.speakers),
        "piece_seconds": args.piece_seconds,
        "n_target": int(np.sum(label_arr)),
        "n_nontarget": int(len(label_arr) - np.sum(label_arr)),
        "eer": round(float(rate), 4),
        "threshold": round(float(threshold), 4),
        "rule": "middle of the gap (pairs separable)" if separable else "EER point",
        "previous_threshold": model.threshold,
    }
    print(json.dumps(calibration, indent=1))
    if not args.dry_run:
        info = {**model.info, "calibration": calibration}
        resave(model, args.checkpoint, threshold=float(threshold), info=info)


if __name__ == "__main__":
    main()
