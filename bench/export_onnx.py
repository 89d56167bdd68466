"""Export a checkpoint's ONNX graph, offline-optimised, for the onnx backend to ship.

    python bench/export_onnx.py accurate                  # models/campp_zh_en.onnx (shipped)
    python bench/export_onnx.py ecapa --fp16-storage      # models/ecapa_voxceleb.onnx (shipped)
    python bench/export_onnx.py accurate --int8 fast --data ../shared/data --out-dir /tmp/q
    python bench/export_onnx.py accurate --int8 fast --equalise peak --check 150 --out-dir /tmp/q

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
weights, activations calibrated on ``--calibration`` 3-s fragments of LibriSpeech speakers
the checkpoint's split records as training speakers, never a test, validation or
evaluation-only one; by min/max, or ``--calibrate Percentile`` / ``Entropy``). CAM++'s
pre-activation batch norms are first rewritten as the equal depthwise 1x1 convolutions:
``fast`` quantises them too (all int8 between convolutions), ``bn-float`` keeps them float;
``conv`` quantises the convolutions alone and leaves everything else float (the batch norms
as they are). ``--exclude NAME`` keeps float every node whose name holds NAME (mixed
precision, e.g. ``blocks.0/`` for the first dense block). ``--equalise peak|std`` first
rescales CAM++'s dense-block channels to a common range (``equalise_campp``, an exact
reparametrisation; ``--floor`` bounds the gain of near-silent channels), and ``--check N``
prints the candidate's cosine to the fp32 graph on 2N fragments the calibration did not see.
None ships; docs/benchmarks.md has their speed and accuracy.

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


def calibration_features(
    checkpoint: Path, data: Path, count: int, fragment: int = 0
) -> list[np.ndarray]:
    """``count`` front-end feature arrays ``(1, n_mels, frames)``: the ``fragment``-th 3-s
    fragment of the first recording of each of the first ``count`` LibriSpeech training
    speakers (sorted) that has one. ``fragment=0`` is the calibration set; later fragments
    check a candidate on other audio of the same training-allowed speakers."""
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
    for speaker in sorted(first):
        fragments = prepare(load_audio(first[speaker]), name=str(first[speaker]))
        if len(fragments) > fragment:
            features.append(frontend(fragments[fragment : fragment + 1]))
        if len(features) == count:
            break
    if len(features) < count:
        sys.exit(f"only {len(features)} training speakers under {data / LIBRI}, not {count}")
    return features


def _rescale_bn_input(bn, scale) -> None:
    """Make ``bn`` give the same output for its input multiplied by ``scale`` (per channel,
    > 0): the statistics scale with the input, and gamma absorbs what epsilon does not."""
    import torch

    eps = bn.eps
    var = bn.running_var.double()
    s = scale.double()
    new_var = s * s * var
    gain = torch.sqrt(new_var + eps) / (s * torch.sqrt(var + eps))
    if bn.affine:
        bn.weight.data = (bn.weight.double() * gain).float()
    else:  # no gamma to absorb it: it becomes affine, weight = gain, bias = 0
        raise ValueError("equalisation needs affine batch norms behind each concatenation")
    bn.running_mean.data = (bn.running_mean.double() * s).float()
    bn.running_var.data = new_var.float()


def equalise_campp(
    body, features: list[np.ndarray], stat: str = "peak", floor: float = 0.05
) -> dict[str, float]:
    """Rescale CAM++'s dense-block channels in place so each has the same peak magnitude.

    Every channel a dense block concatenates (the block's input, each CAM layer's output)
    and the last transition's output is divided by its ``stat`` over ``features`` (the
    calibration fragments): ``peak``, its largest magnitude, or ``std``, its standard
    deviation (after the ReLU for the TDNN layer's output). The scale is folded into the
    layer that makes the channel (the TDNN layer's batch norm, a CAM layer's local
    convolution, a transition's convolution) and its inverse into every batch norm that reads
    it (later CAM layers' and the transition's), so the network computes the same function
    (a positive scale passes through the ReLU after the TDNN's batch norm). Afterwards one
    per-tensor int8 scale fits the whole concatenation. Returns the spread of peaks before
    (largest / smallest) per block.
    """
    import torch

    from speakerid.encoders.campp import DenseBlock, Transition

    peaks: dict[str, torch.Tensor] = {}
    moments: dict[str, torch.Tensor] = {}  # count, sum, sum of squares per channel

    def record(name):
        def hook(_module, _inputs, output):
            out = output.detach().double()
            if name == "tdnn":
                out = out.clamp(min=0)  # read after the ReLU
            peak = out.abs().amax(dim=(0, 2))
            peaks[name] = torch.maximum(peaks[name], peak) if name in peaks else peak
            m = torch.stack(
                [
                    torch.full_like(peak, out.shape[0] * out.shape[2]),
                    out.sum((0, 2)),
                    (out * out).sum((0, 2)),
                ]
            )
            moments[name] = moments[name] + m if name in moments else m

        return hook

    blocks = list(body.blocks)
    handles = [body.tdnn_bn.register_forward_hook(record("tdnn"))]
    for b, module in enumerate(blocks):
        if isinstance(module, DenseBlock):
            for i, layer in enumerate(module.layers):
                handles.append(layer.register_forward_hook(record(f"{b}.{i}")))
        else:
            handles.append(module.conv.register_forward_hook(record(f"{b}.conv")))
    with torch.no_grad():
        for item in features:
            body(torch.from_numpy(item))
    for handle in handles:
        handle.remove()

    def scale_of(name: str) -> torch.Tensor:
        if stat == "peak":
            value = peaks[name]
        else:
            n, total, squares = moments[name]
            value = (squares / n - (total / n) ** 2).clamp(min=0).sqrt()
        # near-silent channels are not blown up: a rare value beyond what calibration saw
        # would then clip, and the batch norm after would magnify the error
        return (1 / value.clamp(min=max(floor * float(value.median()), 1e-6))).float()

    spreads = {}
    with torch.no_grad():
        s = scale_of("tdnn")
        body.tdnn_bn.weight.mul_(s)
        body.tdnn_bn.bias.mul_(s)
        incoming = s  # the scale of the tensor entering the next block
        for b, module in enumerate(blocks):
            if isinstance(module, DenseBlock):
                concat = incoming
                raw_peaks = [peaks["tdnn" if b == 0 else f"{b - 1}.conv"]]
                for i, layer in enumerate(module.layers):
                    _rescale_bn_input(layer.bn_in, concat)
                    s = scale_of(f"{b}.{i}")
                    layer.local.weight.mul_(s.view(-1, 1, 1))
                    raw_peaks.append(peaks[f"{b}.{i}"])
                    concat = torch.cat([concat, s])
                incoming = concat
                allp = torch.cat(raw_peaks)
                spreads[f"block {b // 2 + 1}"] = float(allp.max() / allp.clamp(min=1e-6).min())
            elif isinstance(module, Transition):
                _rescale_bn_input(module.bn, incoming)
                s = scale_of(f"{b}.conv")
                module.conv.weight.mul_(s.view(-1, 1, 1))
                incoming = s
        _rescale_bn_input(body.out_bn, incoming)
    return spreads


def export_equalised(
    checkpoint: Path,
    out: Path,
    features: list[np.ndarray],
    expected: str | None,
    stat: str = "peak",
    floor: float = 0.05,
) -> dict[str, float]:
    """The body (+ whitening) of a CAM++ checkpoint, channel-equalised, exported at ``out``
    as ``speakerid export`` would (no metadata: the caller copies the raw export's)."""
    from speakerid.embedding.backends.onnx import _graph_body, _trace_graph
    from speakerid.encoders.twin import load_encoder

    encoder = load_encoder(checkpoint, expected_sha256=expected).encoder.eval()
    spreads = equalise_campp(encoder.body, features, stat, floor)
    _trace_graph(*_graph_body(encoder), out)
    return spreads


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
    source: Path,
    out: Path,
    features: list[np.ndarray],
    work: Path,
    mode: str,
    exclude: tuple[str, ...] = (),
    method: str = "MinMax",
    extra: dict | None = None,
) -> list[str]:
    """Static int8 QDQ of ``source`` at ``out``: per-channel weights, activations calibrated
    on ``features`` by ``method`` (a ``CalibrationMethod`` name, ``extra`` its options).

    ``mode``: ``fast`` rewrites the batch norms as depthwise convolutions and quantises
    everything; ``bn-float`` leaves those depthwise convolutions float; ``conv`` quantises
    the convolutions alone and leaves every other node (batch norms included, as
    BatchNormalization) float. ``exclude`` also leaves float every node whose name contains
    one of its strings. Returns the names of the nodes left float by name.
    """
    import onnx
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

    prepared, rewritten = work / "prepared.onnx", work / "rewritten.onnx"
    quant_pre_process(str(source), str(prepared))  # shapes inferred, conv + bn fused
    if mode == "conv":
        rewritten.write_bytes(prepared.read_bytes())
        depthwise = []
    else:
        depthwise = batchnorm_as_depthwise(prepared, rewritten)
    excluded = depthwise if mode == "bn-float" else []
    excluded += [
        n.name
        for n in onnx.load(str(rewritten)).graph.node
        if any(part in n.name for part in exclude) and n.name not in excluded
    ]
    quantize_static(
        str(rewritten),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,  # u8 x s8: the pair x86's VNNI/AMX kernels take
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod[method],
        nodes_to_exclude=excluded,
        extra_options=extra or {},
        op_types_to_quantize=["Conv"] if mode == "conv" else None,
    )
    return excluded


def check(checkpoint: Path, data: Path, count: int, reference: Path, graphs: dict) -> None:
    """Print each graph's cosine to ``reference`` on the 2nd and 3rd 3-s fragments of
    ``count`` training speakers' recordings (audio the calibration did not see), one thread."""
    import onnxruntime as ort

    fragments = np.concatenate(
        calibration_features(checkpoint, data, count, 1)
        + calibration_features(checkpoint, data, count, 2)
    )

    def embed(path: Path) -> np.ndarray:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out = np.concatenate(
            [
                session.run(None, {INPUT_NAME: fragments[i : i + 10]})[0]
                for i in range(0, len(fragments), 10)
            ]
        )
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    ref = embed(reference)
    for name, path in graphs.items():
        if path == reference:
            continue
        cos = np.einsum("nd,nd->n", ref, embed(path))
        print(
            f"{name}: cosine to fp32 on {len(cos)} fragments: mean {cos.mean():.4f}, "
            f"min {cos.min():.4f}"
        )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a shipped model's name or a checkpoint")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: beside the checkpoint")
    ap.add_argument(
        "--int8", choices=("fast", "bn-float", "conv"), default=None, help="a candidate"
    )
    ap.add_argument(
        "--equalise", choices=("peak", "std"), default=None, help="int8: CAM++ channels first"
    )
    ap.add_argument("--floor", type=float, default=0.5, help="equalise: smallest stat / median")
    ap.add_argument("--calibrate", choices=("MinMax", "Percentile", "Entropy"), default="MinMax")
    ap.add_argument("--percentile", type=float, default=99.999, help="with --calibrate Percentile")
    ap.add_argument("--exclude", action="append", default=[], help="int8: node names kept float")
    ap.add_argument("--check", type=int, default=0, help="int8: cosine to fp32 on 2 x N fragments")
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
            source = raw
            if args.equalise:
                source = work / "equalised.onnx"
                spreads = export_equalised(
                    checkpoint, source, features, expected, args.equalise, args.floor
                )
                print(f"peak spread before equalising: {spreads}", file=sys.stderr)
            extra = {"CalibPercentile": args.percentile} if args.calibrate == "Percentile" else {}
            quantise(
                source,
                work / "int8.onnx",
                features,
                work,
                args.int8,
                tuple(args.exclude),
                args.calibrate,
                extra,
            )
            written.append(out_dir / f"{stem}.int8.onnx")
            optimise(work / "int8.onnx", written[-1], {**metadata, "variant": f"int8-{args.int8}"})
            if args.check:
                check(
                    checkpoint,
                    args.data,
                    args.check,
                    raw,
                    {"equalised fp32": source, "int8 candidate": written[-1]},
                )
    for path in written:
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB  sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
