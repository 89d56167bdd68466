"""How short may a recording be? EER of short test crops against full enrollments.

For each of the 40 held-out LibriSpeech test speakers (the split in every shipped
checkpoint), the first half of each trimmed recording is the enrollment and ``--crops``
crops of each length are cut from the second half. Every crop is scored against every
enrollment (one target per crop, 39 non-targets). A crop is read two ways:

- ``tiled``: repeated end to end up to one 3-s fragment, the pipeline's rule below 3 s;
- ``as is``: one pass over the crop alone (CAM++ accepts any length; ``fast`` does not).

    python bench/bench_short.py --data ../shared/data --model accurate
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from common import held_out_speakers, libri_bank

from speakerid.audio import SAMPLE_RATE, fragment
from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.encoders.twin import LoadedModel
from speakerid.lab.data import AudioBank
from speakerid.lab.metrics import verification_summary
from speakerid.vectors import l2_normalize, score

LENGTHS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def enrollments(embedder: Embedder, bank: AudioBank) -> tuple[np.ndarray, np.ndarray]:
    """The first half of each trimmed recording, embedded as one recording, and its owner."""
    enroll, owner = [], []
    for spk, waves in zip(bank.speakers, bank.waves, strict=True):
        for wav in waves:
            mid = len(wav) // 2
            enroll.append(embedder.embed_waveform(wav[:mid], trim=False))
            owner.append(spk)
    return np.stack(enroll), np.asarray(owner)


def crops(
    bank: AudioBank, size: int, per_recording: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[str]]:
    """``per_recording`` crops of ``size`` samples from the second half of each recording
    long enough for them, at seeded offsets, and each crop's speaker."""
    out, owner = [], []
    for spk, waves in zip(bank.speakers, bank.waves, strict=True):
        for wav in waves:
            second = wav[len(wav) // 2 :]
            if len(second) < size:
                continue
            for start in rng.integers(0, len(second) - size + 1, per_recording):
                out.append(second[start : start + size])
                owner.append(spk)
    return out, owner


def read(
    reading: str, pieces: list[np.ndarray], embedder: Embedder, model: LoadedModel
) -> np.ndarray:
    """The crops' embeddings, ``tiled`` as the pipeline reads them or ``as is``."""
    if reading == "tiled":
        # the pipeline's rule (audio.fragment), below the CLI's minimum too
        tiled = [fragment(c, min_speech=min(LENGTHS))[0] for c in pieces]
        return embedder.embed_fragments(np.stack(tiled))
    with torch.inference_mode():
        batch = torch.from_numpy(np.stack(pieces))
        return l2_normalize(model.encoder(batch).numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", default="accurate")
    ap.add_argument("--crops", type=int, default=3, help="crops per length per recording")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default: docs/results/)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    embedder = Embedder(model, "cpu")
    bank = libri_bank(args.data, held_out_speakers(model))
    enroll, owner = enrollments(embedder, bank)
    rng = np.random.default_rng(0)
    readings = ["tiled"] + (["as is"] if model.encoder.config.arch == "campp" else [])
    results: dict[str, dict[str, dict]] = {r: {} for r in readings}
    for seconds in LENGTHS:
        pieces, piece_owner = crops(bank, int(seconds * SAMPLE_RATE), args.crops, rng)
        labels = np.asarray(piece_owner)[:, None] == owner[None, :]
        for reading in readings:
            scores = score(read(reading, pieces, embedder, model), enroll)
            r = verification_summary(scores.ravel(), labels.ravel())
            results[reading][f"{seconds:g}"] = {
                "eer": r.eer,
                "min_dcf": r.min_dcf,
                "n_target": r.n_target,
                "n_nontarget": r.n_nontarget,
            }
            print(
                f"{args.model} {reading:6} {seconds:>4g} s: EER {100 * r.eer:.2f}%",
                file=sys.stderr,
            )
    report = {
        "command": " ".join(sys.argv),
        "model": args.model,
        "fingerprint": model.fingerprint,
        "speakers": len(bank.speakers),
        "results": results,
    }
    out = args.out or Path(f"docs/results/short_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("| reading | " + " | ".join(f"{s:g} s" for s in LENGTHS) + " |")
    print("| --- |" + " ---: |" * len(LENGTHS))
    for reading, by_len in results.items():
        cells = [f"{100 * by_len[f'{s:g}']['eer']:.2f}%" for s in LENGTHS]
        print(f"| {args.model}, {reading} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
