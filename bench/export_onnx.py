"""Export a checkpoint's ONNX graph, offline-optimised, for the onnx backend to ship.

    python bench/export_onnx.py accurate                  # models/campp_zh_en.onnx (shipped)
    python bench/export_onnx.py ecapa --fp16-storage      # models/ecapa_voxceleb.onnx (shipped)
    python bench/export_onnx.py accurate --int8 fast --data ../shared/data --out-dir /tmp/q

``<stem>.onnx``: the fp32 body (+ whitening), as ``speakerid export`` makes it, then
optimised by onnxruntime at the *extended* level and saved. Extended fusions (conv + batch
norm + activation, constant folding) are the same on every CPU; the layout level (NCHWc
blocking) depends on the CPU's vector width, so it is left for the session to apply at load
(onnxruntime's advice for offline optimisation). The export is deterministic: a rerun with
the same onnx/onnxruntime versions gives the same bytes (checked against the pinned sha256).

``--fp16-storage`` (ECAPA: its fp32 graph is 83 MB, over the 45 MB a shipped file may be)
stores every large float initializer as float16 with a Cast to float32 before its use, once
the graph is optimised. Only initializers that float16 holds exactly are converted (the
conversion is refused otherwise): ECAPA's checkpoint stores its weights in fp16, and the
extended optimisations fuse no batch norm into its convolutions (each follows a ReLU), so
every large initializer qualifies and the graph computes in fp32 with the checkpoint's very
weights. It is the ``fp32`` variant: the same embeddings as the checkpoint (parity measured
in docs/benchmarks.md). onnxruntime folds the casts when it loads the graph.

``--int8`` also writes ``<stem>.int8.onnx``, a static int8 candidate (QDQ, per-channel
weights, activations calibrated by min/max on ``--calibration`` 3-s fragments of LibriSpeech
speakers the checkpoint's split records as training speakers, never a test, validation or
evaluation-only one). CAM++'s pre-activation batch norms are first rewritten as the equal
depthwise 1x1 convolutions: ``fast`` quantises them too (all int8 between convolutions),
``bn-float`` keeps them float. Neither ships; docs/benchmarks.md has their speed and accuracy.

Both keep the metadata ``backends.onnx.open_onnx`` reads (format, config, threshold, source)
and add ``variant``. The sha256 of each output is printed for ``registry.py``. Needs torch,
onnx and onnxruntime (``pip install 'speakerid[train]'``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from speakerid.audio import load_audio, prepare
from speakerid.embedding.backends.onnx import INPUT_NAME, export_onnx
from speakerid.embedding.backends.torch import load_model
from speakerid.encoders.registry import resolve_model
from speakerid.features.numpy import numpy_frontend
from speakerid.lab.data import scan_corpus

LIBRI = "LibriSpeech/train-clean-100"
CALIBRATION_FRAGMENTS = 100  # one per training speaker: min/max settles well before this
FP16_STORAGE_MIN = 1024  # elements: smaller initializers (biases, norms) stay float32


def calibration_features(checkpoint: Path, data: Path, count: int) -> list[np.ndarray]:
    """``count`` front-end feature arrays ``(1, n_mels, frames)``: the first 3-s fragment of
    one recording of each of the first ``count`` LibriSpeech training speakers (sorted)."""
    model = load_model(checkpoint)
    train = {
        s.split(":", 1)[1] for s in model.info["split"]["train"] if s.startswith("train-clean")
    }
    frontend = numpy_frontend(asdict(model.encoder.config))
    first: dict[str, Path] = {}
    for rec in scan_corpus(data / LIBRI):
        if rec.speaker in train:
            first.setdefault(rec.speaker, rec.path)
    features = []
    for speaker in sorted(first)[:count]:
        fragments = prepare(load_audio(first[speaker]), name=str(first[speaker]))
        features.append(frontend(fragments[:1]))
    if len(features) < count:
        sys.exit(f"only {len(features)} training speakers under {data / LIBRI}, not {count}")
    return features


def batchnorm_as_depthwise(graph_path: Path, out: Path) -> list[str]:
    """Rewrite every batch norm whose statistics are constants as the equal depthwise 1x1
    convolution (``scale * x + shift`` per channel) at ``out``; returns their node names."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, replaced, dropped = [], [], set()
    for node in graph.node:
        if node.op_type != "BatchNormalization" or not all(n in inits for n in node.input[1:]):
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (
            numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[1:5]
        )
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        weight, bias = f"{node.name}/dw_weight", f"{node.name}/dw_bias"
        graph.initializer.extend(
            [
                numpy_helper.from_array(scale.astype(np.float32).reshape(-1, 1, 1), weight),
                numpy_helper.from_array(shift.astype(np.float32), bias),
            ]
        )
        nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], weight, bias],
                [node.output[0]],
                name=f"{node.name}/depthwise",
                group=len(scale),
                kernel_shape=[1],
            )
        )
        dropped.update(node.input[1:5])
        replaced.append(f"{node.name}/depthwise")
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(out))
    return replaced


def fp16_storage(path: Path, minimum: int = FP16_STORAGE_MIN) -> int:
    """Store each float32 initializer of ``minimum`` elements or more as float16, cast back
    to float32 by a Cast node at the graph's start; rewrites ``path`` and returns how many
    were converted. Refuses (exits) when one such initializer is not exact in float16."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype != np.float32 or values.size < minimum:
            kept.append(init)
            continue
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            sys.exit(f"{path}: initializer {init.name} is not exact in float16; not converted")
        stored = f"{init.name}/fp16"
        kept.append(numpy_helper.from_array(half, stored))
        casts.append(
            helper.make_node(
                "Cast", [stored], [init.name], name=f"{init.name}/cast", to=TensorProto.FLOAT
            )
        )
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)  # the casts first: the order stays topological
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(casts)


def optimise(source: Path, out: Path, metadata: dict[str, str]) -> None:
    """Save ``source`` optimised at onnxruntime's extended level, with ``metadata`` set."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(out))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))


def quantise(
    source: Path, out: Path, features: list[np.ndarray], work: Path, keep_bn_float: bool
) -> None:
    """Static int8 QDQ of ``source`` (per-channel weights, min/max activations) at ``out``;
    ``keep_bn_float`` leaves the batch norms' depthwise convolutions in float."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(features)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {INPUT_NAME: item}

    prepared, depthwise = work / "prepared.onnx", work / "depthwise.onnx"
    quant_pre_process(str(source), str(prepared))  # shapes inferred, conv + bn fused
    depthwise_nodes = batchnorm_as_depthwise(prepared, depthwise)
    quantize_static(
        str(depthwise),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,  # u8 x s8: the pair x86's VNNI/AMX kernels take
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=depthwise_nodes if keep_bn_float else [],
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a shipped model's name or a checkpoint")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: beside the checkpoint")
    ap.add_argument("--int8", choices=("fast", "bn-float"), default=None, help="also a candidate")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="int8 calibration")
    ap.add_argument("--calibration", type=int, default=CALIBRATION_FRAGMENTS)
    ap.add_argument(
        "--fp16-storage", action="store_true", help="large weights stored fp16, computed fp32"
    )
    ap.add_argument("--keep-raw", action="store_true", help="also <stem>.raw.onnx, unoptimised")
    args = ap.parse_args()

    import onnx

    checkpoint, expected = resolve_model(args.model)
    out_dir = args.out_dir or checkpoint.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = checkpoint.name.removesuffix(".safetensors")
    written = [out_dir / f"{stem}.onnx"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw = export_onnx(checkpoint, work / "raw.onnx", expected_sha256=expected)
        metadata = {p.key: p.value for p in onnx.load(str(raw)).metadata_props}
        metadata.pop("source", None)  # a path on the exporting machine: says nothing elsewhere
        optimise(raw, written[0], {**metadata, "variant": "fp32"})
        if args.fp16_storage:
            converted = fp16_storage(written[0])
            print(f"{written[0]}: {converted} initializers stored as float16", file=sys.stderr)
        if args.keep_raw:  # what the optimiser started from, for bench_onnx.py sessions
            written.append(out_dir / f"{stem}.raw.onnx")
            written[-1].write_bytes(raw.read_bytes())
        if args.int8:
            features = calibration_features(checkpoint, args.data, args.calibration)
            quantise(raw, work / "int8.onnx", features, work, args.int8 == "bn-float")
            written.append(out_dir / f"{stem}.int8.onnx")
            optimise(work / "int8.onnx", written[-1], {**metadata, "variant": f"int8-{args.int8}"})
    for path in written:
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB  sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
