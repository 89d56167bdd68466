"""enroll and enroll-dir: put speakers into the store (or their embeddings into an .npz)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    SpeakerName,
    StoreOpt,
    StrictOpt,
    VadOpt,
    command,
    err,
    fail,
    failures_reported,
    load_embedder,
    out,
    print_json,
    progress_bar,
    read_sources,
    shown,
    shown_markup,
    writing_sid,
)
from speakerid.outputs import output_target

if TYPE_CHECKING:
    from speakerid.embedding.embedder import BaseEmbedder


@command()
def enroll(
    name: Annotated[str | None, SpeakerName.__metadata__[0]] = None,
    files: Annotated[list[str] | None, AudioFiles.__metadata__[0]] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Drop the speaker's earlier recordings first.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse (enroll nothing) if a recording holds too little speech or disagrees "
            "with the speaker's other recordings beyond the threshold.",
        ),
    ] = False,
    from_npz: Annotated[
        Path | None,
        typer.Option(
            "--from-npz",
            help="Enroll every speaker of an `enroll-dir --out` (or merged) .npz instead of "
            "NAME FILE...: no model runs; the file's model must be the store's.",
            show_default=False,
        ),
    ] = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = "auto",
    min_speech: MinSpeechOpt = MIN_SPEECH_SECONDS,
    vad: VadOpt = None,
    sample_rate: SampleRateOpt = None,
    store: StoreOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Enroll a speaker from one or more recordings.

    The recordings are added to the speaker's earlier ones; --replace starts over.
    """
    if from_npz is not None:
        if name is not None or files:
            fail("give either NAME FILE... or --from-npz, not both")
        _enroll_from_npz(from_npz, replace, store, json_)
        return
    if name is None or not files:
        fail("enroll needs NAME and at least one FILE (or --from-npz FILE.npz)")
    with writing_sid(store, model, backend, precision, min_speech, vad) as sid:
        result = sid.enroll(name, read_sources(files, sample_rate), replace=replace, strict=strict)
    if json_:
        print_json({**asdict(result), "store": str(sid.store.path)})
        return
    for quality in result.quality:
        for problem in quality.problems:
            err.print(
                f"warning: {shown(quality.path)}: {shown(problem)}",
                style="yellow",
                markup=False,
                soft_wrap=True,
            )
    action = "enrolled" if result.created else ("re-enrolled" if result.replaced else "updated")
    out.print(
        f"[green]{action}[/green] [bold]{shown_markup(result.speaker)}[/bold]: "
        f"{result.added} added, {result.updated} updated (re-embedded), "
        f"{result.recordings} recording(s) in total",
        soft_wrap=True,
    )


def _enroll_from_npz(path: Path, replace: bool, store: Path | None, json_: bool) -> None:
    from speakerid.embedding.bulk import enroll_embeddings
    from speakerid.store.npz import load_embeddings
    from speakerid.store.speakers import SpeakerStore

    embeddings = load_embeddings(path)
    with SpeakerStore(store) as db:
        result = enroll_embeddings(db, embeddings, replace=replace)
    _report_bulk(result, db.path, json_)


def _report_bulk(result: Any, store_path: Path, json_: bool) -> None:
    """Each failed file or folder on stderr, the summary (or JSON); exit 2 if any failed."""
    with failures_reported(result.errors):
        if json_:
            print_json({**asdict(result), "store": str(store_path)})
        else:
            for quality in (q for r in result.enrolled for q in r.quality):
                for problem in quality.problems:
                    err.print(
                        f"warning: {shown(quality.path)}: {shown(problem)}",
                        style="yellow",
                        markup=False,
                        soft_wrap=True,
                    )
            recordings = sum(r.added + r.updated for r in result.enrolled)
            out.print(
                f"[green]enrolled[/green] {len(result.enrolled)} speaker(s) from {recordings} "
                f"recording(s); {len(result.errors)} failed",
                soft_wrap=True,
            )


@command("enroll-dir")
def enroll_dir(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Folder of speaker folders: DIR/<speaker>/*.wav|flac or "
            "DIR/<speaker>/<chapter>/*.flac (LibriSpeech).",
            metavar="DIR",
            show_default=False,
        ),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Drop each speaker's earlier recordings first.")
    ] = False,
    shard: ShardOpt = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the embeddings to this .npz instead of the store (for machines "
            "without the store; then `embed --merge` and `enroll --from-npz`).",
            show_default=False,
        ),
    ] = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = "auto",
    min_speech: MinSpeechOpt = MIN_SPEECH_SECONDS,
    vad: VadOpt = None,
    strict: StrictOpt = False,
    store: StoreOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Enroll every speaker folder under DIR.

    A file that fails is reported on stderr and the rest are enrolled; exit status 2 if
    any failed.
    """
    from speakerid.embedding.shards import parse_shard
    from speakerid.recognition import check_root

    part = parse_shard(shard)
    check_root(directory)  # a mistyped folder costs no model load
    if out_path is not None:
        output_target(out_path)  # a directory, FIFO or device is refused before any work
        embedder = load_embedder(model, precision, backend, vad)
        _embed_dir_to_npz(embedder, directory, part, out_path, json_)
        return
    with (
        writing_sid(store, model, backend, precision, min_speech, vad) as sid,
        progress_bar() as progress,
    ):
        task = progress.add_task("embedding", total=None)

        def on_file(speaker: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=shown_markup(speaker))

        try:
            result = sid.enroll_dir(
                directory,
                replace=replace,
                strict=strict,
                on_file=on_file,
                shard=(part.index, part.count),
            )
        except KeyboardInterrupt:
            # Each speaker is one transaction: the finished ones are in the store.
            kept = len(dict.fromkeys(sid.store.written_speakers))
            raise KeyboardInterrupt(
                f"interrupted: the {kept} speaker(s) finished before it were kept in "
                f"{sid.store.path}"
            ) from None
    _report_bulk(result, sid.store.path, json_)


def _embed_dir_to_npz(
    embedder: BaseEmbedder, directory: Path, part: Any, out_path: Path, json_: bool
) -> None:
    from speakerid.embedding.bulk import embed_directory
    from speakerid.store.npz import header, save_embeddings

    vectors, skipped = embed_directory(embedder, directory, part)
    if not vectors:
        first = f"; first problem: {skipped[0][1]}" if skipped else ""
        fail(f"{directory}: nothing could be embedded ({len(skipped)} skipped){first}")
    model = embedder.model
    source = str(Path(model.path).resolve())
    save_embeddings(
        out_path,
        vectors,
        header(model.fingerprint, embedder.dim, source, str(directory), embedder.vad),
    )
    if json_:
        print_json(
            {
                "out": str(out_path),
                "shard": str(part),
                "files": len(vectors),
                "skipped": [{"path": p, "reason": r} for p, r in skipped],
            }
        )
        return
    for _, reason in skipped:
        err.print(f"skipped: {shown(reason)}", style="yellow", markup=False, soft_wrap=True)
    out.print(
        f"wrote {len(vectors)} embedding(s) of shard {part} to {shown_markup(out_path)}; "
        f"{len(skipped)} skipped",
        soft_wrap=True,
    )
