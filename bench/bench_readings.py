"""How GE2E's own weights score when read differently: the starting points of its students.

A student of the teacher's shape (``--init-teacher``) starts as GE2E read at a coarser step
(``stem_stride`` stacked 10-ms frames) and in ``windows`` equal slices of the fragment. This
table scores those untrained readings, and trained runs read as they were trained, on the
shipped model's 40 held-out LibriSpeech speakers (3-s fragments, hop 3 s): fragment EER over
all pairs and 1-shot 4-/40-way accuracy over the same 2000 tasks per k as
``bench_accuracy.py kway``. Resemblyzer's own reading (1.6-s partials, 1.3 per second) is the
reference row. Markdown to stdout, JSON to ``--out``.

    python bench/bench_readings.py --data ../shared/data --runs-dir runs --runs lstm_s3 lstm_s2w2
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import Resemblyzer, held_out_speakers, libri_bank, load_run, write_json

from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.encoders.pretrained import GE2E, init_from_ge2e
from speakerid.encoders.twin import Encoder, LoadedModel, ModelConfig
from speakerid.lab.data import fragment_set
from speakerid.lab.kway import kway_curve
from speakerid.lab.metrics import eer, verification_trials

STUDENT = ModelConfig(frontend="powermel", arch="lstm", channels=256, embedding_dim=256)
KS = (4, 40)


def teacher_reading(stride: int, windows: int, like: LoadedModel) -> LoadedModel:
    """GE2E's weights in a student read at ``stride`` frames per step, in ``windows`` slices."""
    encoder = Encoder(replace(STUDENT, stem_stride=stride, windows=windows)).eval()
    init_from_ge2e(encoder.body, GE2E())
    return LoadedModel(encoder, None, f"ge2e-s{stride}-w{windows}", like.path, like.info)


def score(emb: np.ndarray, speakers: np.ndarray, recordings: np.ndarray, trials: int) -> dict:
    scores, labels = verification_trials(emb, speakers, recordings)
    # Every k from 2 on, as bench_accuracy.py kway draws them: the same tasks as its table.
    curve = kway_curve(emb, speakers, recordings, range(2, max(KS) + 1), 1, trials, rng=0)
    return {"eer": eer(scores, labels)[0], **{f"acc{k}": curve[k].accuracy for k in KS}}


def print_table(rows: list[dict], n_speakers: int, n_fragments: int) -> None:
    lines = [
        f"### GE2E read differently ({n_speakers} held-out speakers, {n_fragments} fragments)",
        "",
        "| system | step (ms) | windows | fragment EER | 4-way | 40-way |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        step = 10 * r["stride"]
        lines.append(
            f"| {r['system']} | {step} | {r['windows']} | {r['eer']:.2%} "
            f"| {r['acc4']:.3f} | {r['acc40']:.3f} |"
        )
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--runs", nargs="*", default=[], help="trained runs to add")
    ap.add_argument("--strides", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--trials", type=int, default=2000, help="tasks per k")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--out", default="docs/results/readings.json", help="JSON file or -")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shipped = load_model()
    speakers = held_out_speakers(shipped)
    frags = fragment_set(libri_bank(args.data, speakers), hop_seconds=3.0)
    rows: list[dict] = []

    def add(label: str, stride: int | str, windows: int | str, emb: np.ndarray) -> None:
        row = {"system": label, "stride": stride, "windows": windows}
        row |= score(emb, frags.speakers, frags.recordings, args.trials)
        rows.append(row)
        print(f"  {label} s{stride} w{windows}: EER {row['eer']:.2%}", file=sys.stderr)

    resemblyzer = Resemblyzer()
    add("Resemblyzer (its partials)", 1, "partials", resemblyzer.fragments(frags.waves))
    for stride in args.strides:
        for windows in args.windows:
            model = teacher_reading(stride, windows, shipped)
            emb = Embedder(model, "cpu").embed_fragments(frags.waves)
            add("GE2E weights, untrained", stride, windows, emb)
    for name in args.runs:
        model = load_run(args.runs_dir, name, speakers)
        cfg = model.encoder.config
        add(
            f"run {name}",
            cfg.stem_stride,
            cfg.windows,
            Embedder(model, "cpu").embed_fragments(frags.waves),
        )

    print_table(rows, len(speakers), len(frags))
    report = {
        "command": "bench/bench_readings.py " + " ".join(sys.argv[1:]),
        "speakers": len(speakers),
        "fragments": len(frags),
        "trials_per_k": args.trials,
        "rows": rows,
    }
    if args.out != "-":
        write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
