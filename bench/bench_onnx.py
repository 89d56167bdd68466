"""The onnx graphs of a model against its torch fp32 run: accuracy, parity and a profile.

    OMP_NUM_THREADS=1 python bench/bench_onnx.py accuracy --data ../shared/data \
        --graph fp32=models/campp_zh_en.onnx --graph int8=models/campp_zh_en.int8.onnx
    OMP_NUM_THREADS=1 python bench/bench_onnx.py profile --graph fp32=models/campp_zh_en.onnx

``accuracy`` embeds ``bench_models.py``'s trial sets (held-out LibriSpeech test speakers'
fragments and halves, RAVDESS, AMI, VCTK + ARCTIC) with the torch fp32 model and with each
graph (numpy front-end, one thread), and reports every set's EER / minDCF and the cosine
between each graph's embeddings and torch's. Writes ``docs/results/onnx_accuracy.json``.

``frontend`` times the numpy Kaldi fbank against ``kaldi-native-fbank`` (the C++ one
sherpa-onnx uses; ``[dev]`` installs it) on one thread, interleaved, and gives their largest
difference in log mel energy.

``sessions`` times creating a session, its first run (one fragment, as a cold ``verify``)
and a batch, for each graph and each optimisation level applied at load, interleaved: the
raw export against the shipped (offline-optimised) graph, and with ``--cached`` the
optimised graph the backend caches per machine (``speakerid.onnx_sessions``).

``profile`` runs onnxruntime's profiler on one thread over ``--runs`` batches of noise-like
fragments and splits the time by stage: the numpy front-end, the 2-D convolution head (FCM),
the TDNN layer, each dense block and transition, and the session's own overhead (the run's
wall time less its kernels).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

SETS = ("libri_fragments", "libri_halves", "ravdess", "ami", "vctk_arctic")


def single_thread_session(path: Path, profile: bool = False):
    """An onnxruntime session on one thread, otherwise as the backend opens one."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = False
    options.enable_profiling = profile
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parse_graphs(specs: list[str]) -> dict[str, Path]:
    graphs = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not name or not path:
            sys.exit(f"--graph {spec!r}: NAME=PATH")
        graphs[name] = Path(path)
    return graphs


# ------------------------------------------------------------------------------- accuracy


def accuracy(args: argparse.Namespace) -> None:
    import torch
    from bench_models import build_sets, recording_trials, summarise

    from speakerid.embedding.backends.onnx import OnnxEmbedder, open_onnx
    from speakerid.embedding.backends.torch import Embedder, load_model
    from speakerid.lab.metrics import verification_trials

    torch.set_num_threads(1)
    model = load_model(args.model)
    speakers = sorted(s.rsplit(":", 1)[-1] for s in model.info["split"]["test"])
    sets = build_sets(args.data, speakers, args.ravdess_per_actor)
    if args.sets:
        sets = {name: s for name, s in sets.items() if name in args.sets}
    systems = {"torch fp32": Embedder(model, "cpu", precision="fp32")}
    for name, path in parse_graphs(args.graph).items():
        loaded = open_onnx(path)
        loaded = replace(loaded, session=single_thread_session(path))
        systems[f"onnx {name}"] = OnnxEmbedder(loaded)
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    for label, embedder in systems.items():
        start = time.perf_counter()
        embeddings[label] = {
            name: embedder.embed_fragments(s["fragments"])
            if "fragments" in s
            else np.stack([embedder.embed_waveform(w, trim=False) for w in s["waves"]])
            for name, s in sets.items()
        }
        print(f"  {label}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    results: dict[str, dict] = {}
    reference = embeddings["torch fp32"]
    for label, by_set in embeddings.items():
        results[label] = {}
        for name, emb in by_set.items():
            spk = np.asarray(sets[name]["speakers"])
            rec = np.asarray(sets[name]["recordings"])
            if name == "libri_fragments":
                scores, labels = verification_trials(emb, spk, rec)
            else:
                scores, labels = recording_trials(emb, spk, rec)[2:]
            row = summarise(scores, labels)
            cos = np.einsum("nd,nd->n", emb, reference[name])
            row["cosine_to_torch_min"] = float(cos.min())
            row["cosine_to_torch_mean"] = float(cos.mean())
            results[label][name] = row
    report = {
        "command": " ".join(sys.argv),
        "model": model.fingerprint,
        "sets": {
            n: f"{len(s['speakers'])} items, {len(set(s['speakers']))} speakers"
            for n, s in sets.items()
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print("| system | " + " | ".join(sets) + " | min cosine to torch |")
    print("| --- |" + " ---: |" * (len(sets) + 1))
    for label, by_set in results.items():
        cells = [f"{100 * by_set[n]['eer']:.2f}%" for n in sets]
        low = min(r["cosine_to_torch_min"] for r in by_set.values())
        print(f"| {label} | " + " | ".join(cells) + f" | {low:.5f} |")


# -------------------------------------------------------------------------------- profile

STAGES = (
    ("FCM (2-D conv head)", re.compile(r"/front/")),
    ("TDNN layer", re.compile(r"/tdnn")),
    ("dense block 1", re.compile(r"/blocks\.0/")),
    ("dense block 2", re.compile(r"/blocks\.2/")),
    ("dense block 3", re.compile(r"/blocks\.4/")),
    ("transitions", re.compile(r"/blocks\.[135]/")),
)


def stage_of(node: str) -> str:
    for stage, pattern in STAGES:
        if pattern.search(node):
            return stage
    return "pooling, embedding, rest"


def profile(args: argparse.Namespace) -> None:
    from speakerid.features.numpy import kaldi_fbank_frontend

    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal((args.batch, 48_000))).astype(np.float32)
    frontend = kaldi_fbank_frontend({"n_mels": 80})
    frontend(wav)
    start = time.perf_counter()
    for _ in range(args.runs):
        features = frontend(wav)
    frontend_ms = (time.perf_counter() - start) / args.runs / args.batch * 1e3
    report = {"command": " ".join(sys.argv), "batch": args.batch, "graphs": {}}
    for name, path in parse_graphs(args.graph).items():
        session = single_thread_session(path, profile=True)
        for _ in range(args.runs + 2):
            session.run(None, {"features": features})
        trace_path = session.end_profiling()
        events = json.loads(Path(trace_path).read_text())
        os.remove(trace_path)
        stages: collections.Counter[str] = collections.Counter()
        ops: collections.Counter[str] = collections.Counter()
        runs = [e["dur"] for e in events if e.get("name") == "model_run"]
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                stages[stage_of(e["name"])] += e["dur"]
                ops[e["args"].get("op_name", "?")] += e["dur"]
        total = (args.runs + 2) * args.batch * 1e3  # microseconds of all runs -> ms/fragment
        run_ms = float(np.mean(runs)) / args.batch / 1e3  # the same runs as the kernels
        kernels_ms = sum(stages.values()) / total
        row = {
            "front-end (numpy Kaldi fbank)": round(frontend_ms, 2),
            **{s: round(v / total, 2) for s, v in stages.most_common()},
            "session overhead": round(run_ms - kernels_ms, 2),
            "graph run (mean)": round(run_ms, 2),
            "top ops": {op: round(v / total, 2) for op, v in ops.most_common(8)},
        }
        report["graphs"][name] = row
        print(f"{name} ({path}), ms per 3-s fragment, batch {args.batch}, one thread:")
        for key, value in row.items():
            print(f"  {key:32s} {value}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


# ------------------------------------------------------------------------------- sessions

LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "disable": "ORT_DISABLE_ALL"}


def sessions(args: argparse.Namespace) -> None:
    """Session creation and run time of each graph at each optimisation level, interleaved.

    Wall and CPU (this thread's: one intra-op thread runs on the calling thread, so CPU time
    holds still on a loaded machine where wall time does not). ``--cached`` adds the
    default model's optimised graph from the session cache (``speakerid.onnx_sessions``,
    built first if missing), which the backend loads with optimisation off."""
    import onnxruntime as ort

    from speakerid.features.numpy import kaldi_fbank_frontend

    graphs = parse_graphs(args.graph)
    cases = [(g, lv) for g in graphs.items() for lv in args.level]
    if args.cached:
        from speakerid.embedding.backends.onnx import load_onnx_model
        from speakerid.onnx_sessions import cache_key, cache_stem

        model = load_onnx_model()  # builds the cache entry when there is none
        stem = cache_stem(cache_key(model.graph_sha256, model.onnx_path))
        cases.append((("cached", stem.with_suffix(".onnx")), "disable"))
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal((args.batch, 48_000))).astype(np.float32)
    features = kaldi_fbank_frontend({"n_mels": 80})(wav)
    rows: dict[str, dict[str, list[float]]] = {}
    clock = (time.perf_counter, time.thread_time)
    for _ in range(args.runs):
        for (name, path), level in cases:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.enable_cpu_mem_arena = False
            options.log_severity_level = 3
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
            marks = [[f() for f in clock]]
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            marks.append([f() for f in clock])
            session.run(None, {"features": features[:1]})
            marks.append([f() for f in clock])
            session.run(None, {"features": features})
            marks.append([f() for f in clock])
            row = rows.setdefault(f"{name} @ {level}", {})
            for k, (a, b) in enumerate(itertools.pairwise(marks)):
                for c, kind in enumerate(("wall", "cpu")):
                    scale = 1e3 / (args.batch if k == 2 else 1)
                    step = ("create", "first", "batch")[k]
                    row.setdefault(f"{step} {kind}", []).append((b[c] - a[c]) * scale)
    print(
        "| graph @ level at load | create, wall / CPU (ms) | first run, 1 fragment, wall / CPU "
        f"(ms) | ms/fragment, batch {args.batch}, wall / CPU |"
    )
    print("| --- | ---: | ---: | ---: |")
    for label, r in rows.items():
        cells = [
            f"{np.median(r[f'{k} wall']):.{d}f} / {np.median(r[f'{k} cpu']):.{d}f}"
            for k, d in (("create", 0), ("first", 0), ("batch", 1))
        ]
        print(f"| {label} | {' | '.join(cells)} |")


# ------------------------------------------------------------------------------- frontend


def frontend(args: argparse.Namespace) -> None:
    """The numpy Kaldi fbank against kaldi-native-fbank (C++): speed and parity."""
    import kaldi_native_fbank as knf

    from speakerid.features.numpy import KALDI_F_MAX, KALDI_F_MIN, KALDI_N_MELS, kaldi_fbank

    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.samp_freq = 16_000
    options.mel_opts.num_bins = KALDI_N_MELS
    options.mel_opts.low_freq, options.mel_opts.high_freq = KALDI_F_MIN, KALDI_F_MAX

    def native(wav: np.ndarray) -> np.ndarray:
        rows = []
        for row in wav:
            fbank = knf.OnlineFbank(options)
            fbank.accept_waveform(16_000, row.tolist())
            fbank.input_finished()
            rows.append(np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]))
        return np.stack(rows)

    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal((args.batch, 48_000))).astype(np.float32)
    diff = np.abs(kaldi_fbank(wav) - native(wav))
    times: dict[str, list[float]] = {"numpy": [], "kaldi-native-fbank": []}
    for _ in range(args.runs):  # interleaved
        for name, fn in (("numpy", kaldi_fbank), ("kaldi-native-fbank", native)):
            start = time.perf_counter()
            fn(wav)
            times[name].append((time.perf_counter() - start) / args.batch * 1e3)
    for name, t in times.items():
        print(f"{name:20s} {np.median(t):.2f} ms per 3-s fragment (median of {args.runs})")
    print(f"log-mel difference: max {diff.max():.2e}, mean {diff.mean():.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--model", default="accurate")
    acc.add_argument("--data", type=Path, default=Path("../shared/data"))
    acc.add_argument("--graph", action="append", default=[], metavar="NAME=PATH")
    acc.add_argument("--ravdess-per-actor", type=int, default=20)
    acc.add_argument("--sets", nargs="+", default=None, choices=SETS, help="default: all")
    acc.add_argument("--out", type=Path, default=Path("docs/results/onnx_accuracy.json"))
    prof = sub.add_parser("profile")
    prof.add_argument("--graph", action="append", default=[], metavar="NAME=PATH")
    prof.add_argument("--batch", type=int, default=16)
    prof.add_argument("--runs", type=int, default=5)
    prof.add_argument("--out", type=Path, default=Path("docs/results/onnx_profile.json"))
    sess = sub.add_parser("sessions")
    sess.add_argument("--graph", action="append", default=[], metavar="NAME=PATH")
    sess.add_argument("--level", nargs="+", default=["all", "disable"], choices=list(LEVELS))
    sess.add_argument("--batch", type=int, default=8)
    sess.add_argument("--runs", type=int, default=5)
    sess.add_argument("--cached", action="store_true", help="add the cached optimised graph")
    front = sub.add_parser("frontend")
    front.add_argument("--batch", type=int, default=16)
    front.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    {"accuracy": accuracy, "profile": profile, "sessions": sessions, "frontend": frontend}[
        args.command
    ](args)


if __name__ == "__main__":
    main()
