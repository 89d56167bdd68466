"""embed and export: write a model's output (embeddings) or the model itself (ONNX) to a file."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from speakerid.audio import MIN_SPEECH_SECONDS
from speakerid.cli.common import (
    AudioFiles,
    BackendOpt,
    JsonOpt,
    MinSpeechOpt,
    ModelOpt,
    PrecisionOpt,
    QuietOpt,
    SampleRateOpt,
    ShardOpt,
    StrictOpt,
    VadOpt,
    command,
    fail,
    failures_reported,
    out,
    print_json,
    progress_bar,
    read_sources,
    shown_markup,
)
from speakerid.outputs import output_target


@command("embed")
def embed_cmd(
    files: AudioFiles,
    out_path: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output .npz, one array per file keyed by its path."),
    ],
    shard: ShardOpt = None,
    merge: Annotated[
        bool,
        typer.Option("--merge", help="FILE... are .npz files of one model: join them into --out."),
    ] = False,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = "auto",
    min_speech: MinSpeechOpt = MIN_SPEECH_SECONDS,
    vad: VadOpt = None,
    sample_rate: SampleRateOpt = None,
    strict: StrictOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write one unit embedding per FILE to an .npz file.

    The file is written atomically, one array per FILE keyed by the path as given.

    Every FILE is tried: one that fails is reported on stderr (and under "errors" with
    --json), the others are written, and the exit status is 2.
    """
    from speakerid.api import SpeakerID
    from speakerid.embedding.shards import parse_shard
    from speakerid.store.npz import header, save_embeddings

    output_target(out_path)  # a directory, FIFO or device is refused before any work
    if merge:
        _merge(files, out_path, json_)
        return
    if shard is not None:  # else the files keep the order given
        part = parse_shard(shard)
        files = part.take(files)
        if not files:
            fail(f"shard {part} holds no file (fewer files than N)")
    sources = read_sources(files, sample_rate)
    sid = SpeakerID(
        None, model, backend=backend, precision=precision, min_speech=min_speech, vad=vad
    )
    with progress_bar() as progress:
        task = progress.add_task("embedding", total=len(sources))
        result = sid.embed_many(
            sources,
            strict=strict,
            on_file=lambda done, total: progress.update(task, completed=done),
        )
    vectors = result.vectors
    with failures_reported(result.errors):
        if vectors:  # nothing is written when every file failed
            model_used = sid.embedder.model
            source = str(Path(model_used.path).resolve())
            head = header(model_used.fingerprint, sid.embedder.dim, source, vad=sid.embedder.vad)
            save_embeddings(out_path, vectors, head)
        if json_:
            print_json(
                {
                    "out": str(out_path) if vectors else None,
                    "files": list(vectors),
                    "dim": sid.embedder.dim,
                    "errors": [asdict(e) for e in result.errors],
                }
            )
        elif vectors:
            out.print(
                f"wrote {len(vectors)} embedding(s) of size {sid.embedder.dim} to "
                f"{shown_markup(out_path)}",
                soft_wrap=True,
            )


def _merge(files: list[str], out_path: Path, json_: bool) -> None:
    """``embed --merge``: join .npz files of one model into ``out_path``."""
    from speakerid.store.npz import header, merge_embeddings, save_embeddings

    merged = merge_embeddings(files)
    head = header(
        merged.model_fingerprint or "",
        merged.embedding_dim,
        merged.model_source,
        merged.root,
        merged.vad,
    )
    save_embeddings(out_path, merged.vectors, head)
    if json_:
        print_json({"out": str(out_path), "merged": merged.parts, "keys": len(merged.vectors)})
        return
    out.print(
        f"merged {len(merged.parts)} file(s), {len(merged.vectors)} embedding(s), "
        f"into {shown_markup(out_path)}",
        soft_wrap=True,
    )


@command("export")
def export_cmd(
    onnx: Annotated[
        Path, typer.Option("--onnx", help="Where to write the ONNX graph.", show_default=False)
    ],
    model: Annotated[
        str | None,
        typer.Argument(
            help="A shipped model's name (accurate, fast, ecapa) or a checkpoint (.safetensors). "
            "Default: the default shipped model.",
            metavar="MODEL",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the file if it exists.")
    ] = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a model's ONNX graph for --backend onnx.

    Needs torch and the onnx package.
    The graph holds the encoder body and whitening; the front-end runs in numpy. Run it
    with --backend onnx --model OUT.onnx. The default model ships its graph; the others'
    are built once into the user cache.
    """
    from speakerid.embedding.backends.onnx import export_onnx
    from speakerid.encoders.registry import resolve_model

    output_target(onnx)  # a directory, FIFO or device: refused even with --force
    if onnx.exists() and not force:
        fail(f"{onnx} exists; pass --force to overwrite it")
    checkpoint, expected = resolve_model(model)
    written = export_onnx(checkpoint, onnx, expected_sha256=expected)
    if json_:
        print_json({"model": str(checkpoint), "onnx": str(written)})
        return
    out.print(f"[green]exported[/green] {shown_markup(checkpoint)} to {shown_markup(written)}")
