"""The ``speakerid`` command line: parse options, call one core function, render the result.

No logic lives here. Every command is registered with ``@command()``, which turns any
``SpeakerIDError`` into one red line on stderr and exit status 2, and Ctrl-C into exit 130;
under ``--json`` the line is also printed on stdout as ``{"error": ..., "code": ...}``.
Results go to stdout as Rich text, or as JSON with ``--json``; messages go to stderr.

Exit status (like grep): 0 success / accepted, 1 rejected (``verify``), 2 error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from speakerid.api import SpeakerID
from speakerid.audio import MIN_SPEECH_SECONDS, STDIN, read_stdin
from speakerid.embed import (
    BACKEND_ENV,
    BACKENDS,
    PRECISIONS,
    BaseEmbedder,
    load_model,
    open_embedder,
)
from speakerid.errors import SpeakerIDError
from speakerid.store import (
    DEFAULT_THRESHOLD,
    STORE_ENV,
    FileError,
    Identification,
    Source,
    SpeakerStore,
    calibration_notes,
    default_store_path,
    describe,
    save_embeddings,
    validate_name,
)

EXIT_OK = 0
EXIT_REJECTED = 1  # verify: the voice did not match
EXIT_ERROR = 2  # any SpeakerIDError (and usage errors, as Click does)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

app = typer.Typer(
    name="speakerid",
    help="Recognise people by their voice: enroll, verify (1:1) and identify (1:N).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

# ---------------------------------------------------------------- shared options

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="accurate (CAM++, the default), fast, or a checkpoint file (.safetensors); "
        "`speakerid models` lists them.",
        show_default=False,
    ),
]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        "-s",
        envvar=STORE_ENV,
        help="Enrollment store file. Default: the user data dir's speakerid/store.sqlite.",
        show_default=False,
        readable=False,  # else Click answers an unreadable store with a usage box
    ),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        "-t",
        help="Cosine score needed to accept. Default: the store's (speakerid calibrate), "
        f"else the model's calibrated threshold ({DEFAULT_THRESHOLD} if it has none).",
        show_default=False,
    ),
]
PRECISION_ENV = "SPEAKERID_PRECISION"
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        envvar=PRECISION_ENV,
        help=f"Encoder arithmetic: {' | '.join(PRECISIONS)}. auto: bf16 on CPUs with native "
        "bf16 (about 2x faster, same accuracy), else fp32.",
    ),
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        envvar=BACKEND_ENV,
        help=f"What runs the model: {' | '.join(BACKENDS)} (onnxruntime, no torch; "
        "pip install 'speakerid[onnx]'). Default: torch.",
        show_default=False,
    ),
]
MinSpeechOpt = Annotated[
    float,
    typer.Option(
        "--min-speech",
        help="Seconds of speech (after trimming silence) a recording needs.",
    ),
]
SampleRateOpt = Annotated[
    int | None,
    typer.Option(
        "--sample-rate",
        min=1,
        help="FILE - is raw PCM (mono signed 16-bit little-endian) at this rate in Hz.",
        show_default=False,
    ),
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Stop at the first file that fails (exit 2).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
AudioFiles = Annotated[
    list[str],
    typer.Argument(
        help="Audio files (wav, flac, ...); - reads one from stdin.",
        metavar="FILE...",
        show_default=False,
    ),
]
AudioFile = Annotated[
    str,
    typer.Argument(
        help="An audio file (wav, flac, ...); - reads it from stdin.",
        metavar="FILE",
        show_default=False,
    ),
]
SpeakerName = Annotated[
    str,
    typer.Argument(
        help="Speaker name: letters, digits, spaces, . _ - (64 at most).",
        metavar="NAME",
        show_default=False,
    ),
]

ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="I/N: embed only slice I (0-based) of N of the sorted list, so N processes or "
        "machines share the work; join their outputs with `embed --merge`.",
        show_default=False,
    ),
]

F = TypeVar("F", bound=Callable[..., Any])

# Whether the running command was given --json: then its errors are JSON on stdout too.
_json_errors: ContextVar[bool] = ContextVar("json_errors", default=False)


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command on ``app`` with the one error handler around it."""

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(*args: Any, **kw: Any) -> Any:
            token = _json_errors.set(bool(kw.get("json_")))
            try:
                return fn(*args, **kw)
            except SpeakerIDError as exc:
                fail(str(exc))
            except KeyboardInterrupt as exc:
                # An interrupt may say what was kept (enroll-dir); a bare Ctrl-C says nothing.
                fail(str(exc) or "interrupted", EXIT_INTERRUPTED, prefix="")
            finally:
                _json_errors.reset(token)

        app.command(name, **kwargs)(guarded)
        return fn

    return decorator


def fail(message: str, code: int = EXIT_ERROR, prefix: str = "error: ") -> NoReturn:
    """One red line on stderr (the message's first line), then exit status ``code`` (2).

    Under ``--json`` the same message is also printed on stdout as
    ``{"error": MESSAGE, "code": CODE}``, so that a script can parse every outcome.
    """
    first = message.splitlines()[0] if message else "error"
    err.print(f"{prefix}{first}", style="red", markup=False, soft_wrap=True)
    if _json_errors.get():
        typer.echo(json.dumps({"error": first, "code": code}, ensure_ascii=False))
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """JSON on stdout, unwrapped and uncoloured; never the invalid ``NaN`` / ``Infinity``."""
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise SpeakerIDError(
            "the result holds a non-finite number (NaN or infinity), which JSON cannot "
            "carry; the model or the store is damaged"
        ) from None
    typer.echo(text)


def _embedder(model: str | None, precision: str) -> BaseEmbedder:
    return open_embedder(model, None, precision)


def _sid(
    store: Path | None,
    model: str | None,
    backend: str | None,
    precision: str,
    min_speech: float,
) -> SpeakerID:
    return SpeakerID(store, model, backend=backend, precision=precision, min_speech=min_speech)


def _sources(files: list[str], sample_rate: int | None) -> list[Source]:
    """FILE arguments with ``-`` read from stdin (once: a pipe holds one recording)."""
    if files.count(STDIN) > 1:
        fail("- (stdin) can be given only once")
    if sample_rate is not None and STDIN not in files:
        fail("--sample-rate is for raw PCM on stdin; give - as FILE")
    return [read_stdin(sample_rate) if f == STDIN else f for f in files]


def _progress() -> Progress:
    """A bar on stderr, drawn only when stderr is a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def report_failures(failures: list[FileError]) -> None:
    """One red ``error: path: reason`` line on stderr per file that failed."""
    for item in failures:
        line = item.error if item.error.startswith(item.file) else f"{item.file}: {item.error}"
        err.print(f"error: {line}", style="red", markup=False, soft_wrap=True)


@contextmanager
def _writing_sid(
    store: Path | None, model: str | None, backend: str | None, precision: str, min_speech: float
) -> Iterator[SpeakerID]:
    """``_sid`` for a command that writes; says on stderr when the store's folder did not
    exist and was created with it (a mistyped --store goes unseen else)."""
    target = Path(store) if store is not None else default_store_path()
    folder_missing = not target.parent.exists()
    with _sid(store, model, backend, precision, min_speech) as sid:
        yield sid
    if folder_missing and target.exists():
        err.print(
            f"created the store {target} in the new folder {target.parent}",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )


@contextmanager
def _writing_store(path: Path | None) -> Iterator[SpeakerStore]:
    """``SpeakerStore(path)`` for a command that writes; says on stderr when the store's
    folder did not exist and was created with it (a mistyped --store goes unseen else)."""
    with SpeakerStore(path) as db:
        folder_missing = not db.path.parent.exists()
        yield db
    if folder_missing and db.path.exists():
        err.print(
            f"created the store {db.path} in the new folder {db.path.parent}",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )


# ---------------------------------------------------------------- commands


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
    sample_rate: SampleRateOpt = None,
    store: StoreOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Enroll a speaker from one or more recordings (added to an existing speaker)."""
    if from_npz is not None:
        if name is not None or files:
            fail("give either NAME FILE... or --from-npz, not both")
        _enroll_from_npz(from_npz, replace, store, json_)
        return
    if name is None or not files:
        fail("enroll needs NAME and at least one FILE (or --from-npz FILE.npz)")
    with _writing_sid(store, model, backend, precision, min_speech) as sid:
        result = sid.enroll(name, _sources(files, sample_rate), replace=replace, strict=strict)
    if json_:
        print_json({**asdict(result), "store": str(sid.store.path)})
        return
    for quality in result.quality:
        for problem in quality.problems:
            err.print(
                f"warning: {quality.path}: {problem}", style="yellow", markup=False, soft_wrap=True
            )
    action = "enrolled" if result.created else ("re-enrolled" if result.replaced else "updated")
    out.print(
        f"[green]{action}[/green] [bold]{result.speaker}[/bold]: {result.added} new, "
        f"{result.updated} re-embedded, {result.recordings} recording(s) in total",
        soft_wrap=True,
    )


def _enroll_from_npz(path: Path, replace: bool, store: Path | None, json_: bool) -> None:
    from speakerid.bulk import enroll_embeddings, load_embeddings

    embeddings = load_embeddings(path)
    with SpeakerStore(store) as db:
        result = enroll_embeddings(db, embeddings, replace=replace)
    _report_bulk(result, db.path, json_)


def _report_bulk(result: Any, store_path: Path, json_: bool) -> None:
    """Each failed file or folder on stderr, the summary (or JSON); exit 2 if any failed."""
    report_failures(result.errors)
    if json_:
        print_json({**asdict(result), "store": str(store_path)})
    else:
        for quality in (q for r in result.enrolled for q in r.quality):
            for problem in quality.problems:
                err.print(
                    f"warning: {quality.path}: {problem}",
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
    if result.errors:
        raise typer.Exit(EXIT_ERROR)


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
    strict: StrictOpt = False,
    store: StoreOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Enroll every speaker folder under DIR. A file that fails is reported on stderr and the
    rest are enrolled; exit status 2 if any failed."""
    from speakerid.bulk import parse_shard

    part = parse_shard(shard)
    if out_path is not None:
        _embed_dir_to_npz(_embedder(model, precision), directory, part, out_path, json_)
        return
    with (
        _writing_sid(store, model, backend, precision, min_speech) as sid,
        _progress() as progress,
    ):
        sid.load()  # before the bar starts: loading prints nothing and takes a while
        task = progress.add_task("embedding", total=None)

        def on_file(speaker: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=speaker)

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
    from speakerid.bulk import embed_directory, header

    vectors, skipped = embed_directory(embedder, directory, part)
    if not vectors:
        first = f"; first problem: {skipped[0][1]}" if skipped else ""
        fail(f"{directory}: nothing could be embedded ({len(skipped)} skipped){first}")
    model = embedder.model
    source = str(Path(model.path).resolve())
    save_embeddings(
        out_path, vectors, header(model.fingerprint, embedder.dim, source, str(directory))
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
        err.print(f"skipped: {reason}", style="yellow", markup=False, soft_wrap=True)
    out.print(
        f"wrote {len(vectors)} embedding(s) of shard {part} to {escape(str(out_path))}; "
        f"{len(skipped)} skipped",
        soft_wrap=True,
    )


@command("verify")
def verify_cmd(
    name: SpeakerName,
    file: AudioFile,
    threshold: ThresholdOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = "auto",
    min_speech: MinSpeechOpt = MIN_SPEECH_SECONDS,
    sample_rate: SampleRateOpt = None,
    store: StoreOpt = None,
    json_: JsonOpt = False,
) -> None:
    """1:1 check that FILE is NAME. Exit status 0 accepted, 1 rejected, 2 error."""
    with _sid(store, model, backend, precision, min_speech) as sid:
        (source,) = _sources([file], sample_rate)
        result = sid.verify(name, source, threshold=threshold)
        store_path = str(sid.store.path)
    if json_:
        print_json({**asdict(result), "store": store_path})
    else:
        verdict = "[green]accepted[/green]" if result.accepted else "[red]rejected[/red]"
        normalized = (
            "" if result.normalized_score is None else f", AS-norm {result.normalized_score:.4f}"
        )
        origin = "" if result.threshold_source == "model" else f" ({result.threshold_source})"
        out.print(
            f"{verdict} {result.speaker}: score {result.score:.4f}{normalized}, "
            f"threshold {result.threshold:.4f}{origin}",
            soft_wrap=True,
        )
    raise typer.Exit(EXIT_OK if result.accepted else EXIT_REJECTED)


def _seg_opt(help_: str) -> Any:
    return typer.Option(help=help_ + " (with --segments).", show_default=False)


@command("identify")
def identify_cmd(
    files: AudioFiles,
    top: Annotated[int, typer.Option("--top", "-k", help="Candidates to show (1 or more).")] = 5,
    threshold: ThresholdOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = "auto",
    min_speech: MinSpeechOpt = MIN_SPEECH_SECONDS,
    sample_rate: SampleRateOpt = None,
    strict: StrictOpt = False,
    store: StoreOpt = None,
    json_: JsonOpt = False,
    segments: Annotated[
        bool,
        typer.Option(
            "--segments", help="Who speaks when: a timeline of enrolled speakers per FILE."
        ),
    ] = False,
    window: Annotated[float | None, _seg_opt("Seconds per scored window; default 1.5")] = None,
    hop: Annotated[float | None, _seg_opt("Seconds between windows; default 0.75")] = None,
    fit: Annotated[
        str | None, _seg_opt("How a window meets the encoder: tile (to 3 s) | direct; default tile")
    ] = None,
    switch_penalty: Annotated[
        float | None, _seg_opt("Score a change of speaker must earn; default 0.3")
    ] = None,
    min_segment: Annotated[
        float | None, _seg_opt("Shorter runs of speech join a neighbour, seconds; default 1.0")
    ] = None,
    max_gap: Annotated[
        float | None, _seg_opt("Pauses shorter than this inside a turn are bridged, s; default 1.0")
    ] = None,
    threshold_offset: Annotated[
        float | None, _seg_opt("Added to the model's threshold, not to --threshold; default -0.15")
    ] = None,
    rttm: Annotated[
        bool, typer.Option("--rttm", help="Print RTTM lines (with --segments).")
    ] = False,
    plot: Annotated[Path | None, _seg_opt("Write the timeline of one FILE as a PNG")] = None,
) -> None:
    """1:N: who is speaking in each FILE? 'unknown' when no one scores above threshold.

    With --json: a list with one object per FILE, in the order given (even for one FILE); a
    FILE that fails is {"file": ..., "error": ...} there and a line on stderr (exit 2).

    With --segments: who speaks when along each FILE (long files stream in chunks). Each
    window is scored against every enrolled speaker and the path is smoothed; overlapping
    speech is out of scope (each instant gets at most one speaker).
    """
    seg_values = {
        "window": window,
        "hop": hop,
        "fit": fit,
        "switch_penalty": switch_penalty,
        "min_segment": min_segment,
        "max_gap": max_gap,
        "threshold_offset": threshold_offset,
    }
    if segments:
        settings = {k: v for k, v in seg_values.items() if v is not None}
        _identify_segments(files, settings, threshold, model, precision, store, json_, rttm, plot)
        return
    if top < 1:  # before anything loads: a usage error costs no model
        fail(f"--top must be at least 1, not {top}")
    given = [k for k, v in seg_values.items() if v is not None]
    given += [k for k, v in (("rttm", rttm), ("plot", plot)) if v]
    if given:
        fail(f"--{given[0].replace('_', '-')} needs --segments")
    sources = _sources(files, sample_rate)
    with _sid(store, model, backend, precision, min_speech) as sid, _progress() as progress:
        task = progress.add_task("identifying", total=len(sources))
        everything = sid.identify_many(
            sources,
            top,
            threshold=threshold,
            strict=strict,
            on_file=lambda done, total: progress.update(task, completed=done),
        )
        fingerprint = sid.embedder.model.fingerprint
        notes = calibration_notes(sid.store, fingerprint) if threshold is None else []
        store_path = str(sid.store.path)
    for note in notes:
        if not note.startswith("not calibrated"):  # the usual case needs no warning
            err.print(f"warning: {note}", style="yellow", markup=False, soft_wrap=True)
    failures = [r for r in everything if isinstance(r, FileError)]
    results = [r for r in everything if isinstance(r, Identification)]
    report_failures(failures)
    if json_:
        print_json([{**asdict(r), "store": store_path} for r in everything])
    else:
        _print_identifications(results)
    if failures:
        raise typer.Exit(EXIT_ERROR)


def _print_identifications(results: list[Identification]) -> None:
    if not results:
        return
    for result in results:
        best = f"[green]{result.best}[/green]" if result.best else "[yellow]unknown[/yellow]"
        out.print(f"{escape(result.file)}: {best}", soft_wrap=True)
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("speaker")
        table.add_column("score", justify="right")
        for rank, cand in enumerate(result.candidates, 1):
            mark = "" if cand.score >= result.threshold else " (below)"
            if result.normalized_score is not None:  # the decision was on the AS-norm score
                mark = f" (AS-norm {result.normalized_score:.4f})" if rank == 1 else ""
            table.add_row(str(rank), cand.speaker, f"{cand.score:.4f}{mark}")
        out.print(table)
    origin = "" if results[0].threshold_source == "model" else f" ({results[0].threshold_source})"
    out.print(f"threshold {results[0].threshold:.4f}{origin}")


def _identify_segments(
    files: list[str],
    settings: dict[str, Any],
    threshold: float | None,
    model: str | None,
    precision: str,
    store: Path | None,
    json_: bool,
    rttm: bool,
    plot: Path | None,
) -> None:
    """``identify --segments``: one timeline per file, as a table, JSON, RTTM or a plot."""
    from speakerid.segments import UNKNOWN, SegmentConfig, identify_segments, plot_timeline
    from speakerid.segments import rttm_lines as to_rttm

    if json_ and rttm:
        fail("--rttm and --json are two output formats; choose one")
    if plot is not None and len(files) != 1:
        fail(f"--plot draws one FILE's timeline, not {len(files)}")
    config = SegmentConfig(**settings)
    with SpeakerStore(store) as db:
        embedder = _embedder(model, precision)
        timelines = [identify_segments(db, embedder, f, threshold, config) for f in files]
    if plot is not None:
        plot_timeline(timelines[0], plot)
    if json_:
        print_json([asdict(t) for t in timelines])
        return
    if rttm:
        for timeline in timelines:
            for line in to_rttm(timeline):
                typer.echo(line)
        return
    for timeline in timelines:
        table = Table(title=escape(f"{timeline.file} ({timeline.duration:.1f} s)"))
        table.add_column("start", justify="right")
        table.add_column("end", justify="right")
        table.add_column("speaker")
        table.add_column("score", justify="right")
        for seg in timeline.segments:
            who = escape(seg.speaker) if seg.speaker else f"[yellow]{UNKNOWN}[/yellow]"
            table.add_row(f"{seg.start:.2f}", f"{seg.end:.2f}", who, f"{seg.score:.4f}")
        out.print(table)
    out.print(f"threshold {timelines[0].threshold:.4f}")
    if plot is not None:
        out.print(f"timeline plot: {escape(str(plot))}", soft_wrap=True)


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
    sample_rate: SampleRateOpt = None,
    strict: StrictOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Write one L2-normalised embedding per FILE to an .npz file (atomically).

    Every FILE is tried: one that fails is reported on stderr (and under "errors" with
    --json), the others are written, and the exit status is 2.
    """
    from speakerid.bulk import header, merge_embeddings, parse_shard

    if merge:
        merged = merge_embeddings(files)
        head = header(
            merged.model_fingerprint or "", merged.embedding_dim, merged.model_source, merged.root
        )
        save_embeddings(out_path, merged.vectors, head)
        if json_:
            print_json({"out": str(out_path), "merged": merged.parts, "keys": len(merged.vectors)})
            return
        out.print(
            f"merged {len(merged.parts)} file(s), {len(merged.vectors)} embedding(s), "
            f"into {escape(str(out_path))}",
            soft_wrap=True,
        )
        return
    if shard is not None:  # else the files keep the order given
        part = parse_shard(shard)
        files = part.take(files)
        if not files:
            fail(f"shard {part} holds no file (fewer files than N)")
    sources = _sources(files, sample_rate)
    sid = _sid(None, model, backend, precision, min_speech)
    with _progress() as progress:
        sid.load()  # before the bar starts: loading prints nothing and takes a while
        task = progress.add_task("embedding", total=len(sources))
        result = sid.embed_many(
            sources,
            strict=strict,
            on_file=lambda done, total: progress.update(task, completed=done),
        )
    vectors = result.vectors
    report_failures(result.errors)
    if vectors:  # nothing is written when every file failed
        model_used = sid.embedder.model
        source = str(Path(model_used.path).resolve())
        head = header(model_used.fingerprint, sid.embedder.dim, source)
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
            f"{escape(str(out_path))}",
            soft_wrap=True,
        )
    if result.errors:
        raise typer.Exit(EXIT_ERROR)


@command("export")
def export_cmd(
    onnx: Annotated[
        Path, typer.Option("--onnx", help="Where to write the ONNX graph.", show_default=False)
    ],
    model: Annotated[
        str | None,
        typer.Argument(
            help="A shipped model's name (accurate, fast) or a checkpoint (.safetensors). "
            "Default: the default shipped model.",
            metavar="[MODEL]",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the file if it exists.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Export a model for --backend onnx (needs torch and the onnx package).

    The graph holds the encoder body and whitening; the front-end runs in numpy. Run it
    with --backend onnx --model OUT.onnx. Shipped models need no export: the onnx
    backend builds its graph once into the user cache.
    """
    from speakerid.onnx_backend import export_onnx
    from speakerid.registry import resolve_model

    if onnx.exists() and not force:
        fail(f"{onnx} exists; pass --force to overwrite it")
    checkpoint, expected = resolve_model(model)
    written = export_onnx(checkpoint, onnx, expected_sha256=expected)
    if json_:
        print_json({"model": str(checkpoint), "onnx": str(written)})
        return
    out.print(f"[green]exported[/green] {escape(str(checkpoint))} to {escape(str(written))}")


@command("list")
def list_cmd(store: StoreOpt = None, json_: JsonOpt = False) -> None:
    """List enrolled speakers."""
    with SpeakerStore(store) as db:
        speakers = db.speakers()
    if json_:
        print_json({"store": str(db.path), "speakers": [asdict(s) for s in speakers]})
        return
    if not speakers:
        out.print(f"no speakers enrolled in {escape(str(db.path))}", soft_wrap=True)
        return
    table = Table(title=escape(str(db.path)), title_justify="left")
    table.add_column("speaker")
    table.add_column("recordings", justify="right")
    table.add_column("speech s", justify="right")
    table.add_column("weakest agreement", justify="right")
    table.add_column("updated (UTC)")
    for s in speakers:
        seconds = "?" if s.speech_seconds is None else f"{s.speech_seconds:.1f}"
        weakest = "-" if s.weakest_agreement is None else f"{s.weakest_agreement:.4f}"
        table.add_row(s.speaker, str(s.recordings), seconds, weakest, s.updated)
    out.print(table)


@command("remove")
def remove_cmd(name: SpeakerName, store: StoreOpt = None, json_: JsonOpt = False) -> None:
    """Remove an enrolled speaker and their recordings."""
    speaker = validate_name(name)
    with SpeakerStore(store) as db:
        count = db.remove(speaker)
    if json_:
        print_json({"speaker": speaker, "recordings": count, "store": str(db.path)})
        return
    out.print(f"removed {speaker} ({count} recording(s))", soft_wrap=True)


@command("index")
def index_cmd(
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="auto | flat | pq | hnsw | ivf. auto: flat (exact scan of memory-mapped "
            "vectors) below 50,000 speakers or without faiss, else pq (scan of compact "
            "codes, best candidates re-scored exactly).",
        ),
    ] = "auto",
    drop: Annotated[bool, typer.Option("--drop", help="Delete the index instead.")] = False,
    store: StoreOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Build a search index beside the store for fast open and 1:N search at scale.

    Once built it is kept: searches check it against the store and rebuild it (same --kind)
    after enrollments and removals, so rebuild cost falls on the first search after a change.
    """
    with SpeakerStore(store) as db:
        if drop:
            dropped = db.drop_index()
            if json_:
                print_json({"dropped": dropped, "store": str(db.path)})
            else:
                out.print("index dropped" if dropped else "no index to drop", soft_wrap=True)
            return
        info = db.build_index(kind)
    if json_:
        print_json(asdict(info))
        return
    out.print(
        f"[green]indexed[/green] {info.speakers} speaker(s) ({info.kind}, dimension {info.dim}) "
        f"in {info.build_seconds:.1f} s: {escape(info.path)}",
        soft_wrap=True,
    )


@command("info")
def info_cmd(model: ModelOpt = None, store: StoreOpt = None, json_: JsonOpt = False) -> None:
    """Show the model (path, fingerprint, threshold) and the store (path, counts)."""
    with SpeakerStore(store) as db:
        info = describe(db, model)
    if json_:
        print_json(asdict(info))
        return
    m, s = info.model, info.store
    why = {
        "store": "calibrated on this store's data by speakerid calibrate",
        "model": "calibrated, from the model",
        "default": "built-in default: the model has no calibrated threshold",
    }
    rows = [("model", escape(m.path))]
    if m.error:
        rows.append(("model error", f"[red]{escape(m.error)}[/red]"))
    else:
        rows += [("fingerprint", m.fingerprint or ""), ("embedding size", str(m.embedding_dim))]
    cal = info.calibration
    normalised = cal is not None and cal.norm == "asnorm" and info.verify_source == "store"
    norm = " on AS-norm scores" if normalised else ""
    rows += [
        ("threshold", f"{info.verify_threshold:.4f} ({why[info.verify_source]}{norm})"),
        ("identify at", f"{info.identify_threshold:.4f} ({why[info.identify_source]}{norm})"),
        ("store", escape(s.path) + ("" if s.exists else " (not created yet)")),
        ("speakers", str(s.speakers)),
        ("recordings", str(s.recordings)),
        ("store model", s.model_fingerprint or "(none yet)"),
    ]
    if info.compatible is False:
        rows.append(("", "[red]the store was made by another model[/red]"))
    if cal is not None:
        fpir = (
            f", 1:N for {100 * cal.identify_fpir:g}% strangers named at {cal.store_speakers} "
            f"speakers ({cal.identify_method})"
            if cal.identify_fpir is not None
            else ""
        )
        rows.append(
            (
                "calibration",
                f"{escape(cal.date)}: {cal.target}{fpir}; {cal.n_speakers} speakers, "
                f"{cal.n_target} same / {cal.n_nontarget} different-speaker trials from "
                f"{escape(', '.join(cal.data))}",
            )
        )
    rows += [("", f"[yellow]{escape(note)}[/yellow]") for note in info.notes]
    for label, value in rows:
        out.print(f"[bold]{label:<15}[/bold] {value}", soft_wrap=True)


@command("models")
def models_cmd(json_: JsonOpt = False) -> None:
    """List the shipped models (--model NAME) with size, speed and measured error rates."""
    from speakerid.registry import list_models, measured

    rows = list_models()
    if json_:
        print_json([asdict(r) for r in rows])
        return
    for r in rows:
        out.print(f"[bold]{r.name}[/bold]{' (default)' if r.default else ''}  {r.summary}")
        if r.error:
            out.print(f"  [red]{escape(r.error)}[/red]", soft_wrap=True)
            continue
        threshold = f"{r.threshold:.4f}" if r.threshold is not None else "none"
        out.print(
            f"  {r.megabytes:.1f} MB, {r.parameters / 1e6:.2f} M parameters, "
            f"{r.embedding_dim}-d, threshold {threshold}",
            soft_wrap=True,
        )
        eer = r.measured.get("eer", {})
        if eer:
            out.print(
                "  EER " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in sorted(eer.items())),
                soft_wrap=True,
            )
    source = measured().get("_source")
    if source:
        out.print(f"measured by {escape(source)}", soft_wrap=True)


# ---------------------------------------------------------------- training and evaluation

DataDirs = Annotated[
    list[Path],
    typer.Argument(
        help="Corpus folders: a LibriSpeech subset (<speaker>/<chapter>/*.flac) or "
        "<root>/<speaker>/*.{wav,flac,ogg}. Several are mixed.",
        metavar="DATA...",
        show_default=False,
    ),
]


def _opt(help_: str, *names: str) -> Any:
    return typer.Option(*names, help=help_, show_default=False)


@command("train")
def train_cmd(
    data: DataDirs,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/train"),
    objective: Annotated[
        str | None, _opt("bce (case study) | aam | distill.", "--objective")
    ] = None,
    frontend: Annotated[
        str | None, _opt("raw | mfcc | fbank | powermel | ge2e | vggish.", "--frontend")
    ] = None,
    arch: Annotated[str | None, _opt("cnn1d | cnn2d | ecapa_lite | lstm.", "--arch")] = None,
    embedding_dim: Annotated[int | None, _opt("Embedding size.", "--embedding-dim")] = None,
    channels: Annotated[int | None, _opt("Width of the encoder body.", "--channels")] = None,
    stem_stride: Annotated[
        int | None, _opt("ecapa_lite stem stride; powermel frames per step.", "--stem-stride")
    ] = None,
    windows: Annotated[
        int | None, _opt("lstm: equal windows a fragment is read as.", "--windows")
    ] = None,
    teacher: Annotated[
        str | None,
        _opt("distill: ge2e, or a speakerid model (accurate, a path).", "--teacher"),
    ] = None,
    teacher_pool: Annotated[
        int | None, _opt("distill, speakerid teacher: crops it labels once.", "--teacher-pool")
    ] = None,
    teacher_windows: Annotated[
        int | None,
        _opt("distill: equal windows the teacher reads (0: its partials).", "--teacher-windows"),
    ] = None,
    distance: Annotated[str | None, _opt("bce: euclidean | cosine | l1.", "--distance")] = None,
    steps: Annotated[int | None, _opt("Optimiser steps.", "--steps")] = None,
    batch_size: Annotated[int | None, _opt("Fragments or pairs per step.", "--batch-size")] = None,
    lr: Annotated[float | None, _opt("Peak learning rate.", "--lr")] = None,
    optimizer: Annotated[str | None, _opt("radam | adamw.", "--optimizer")] = None,
    weight_decay: Annotated[float | None, _opt("Weight decay.", "--weight-decay")] = None,
    aam_margin: Annotated[float | None, _opt("AAM angular margin.", "--aam-margin")] = None,
    aam_scale: Annotated[float | None, _opt("AAM logit scale.", "--aam-scale")] = None,
    test_speakers: Annotated[int | None, _opt("Speakers held out.", "--test-speakers")] = None,
    val_speakers: Annotated[
        int | None, _opt("Held out for model selection (0: the test ones).", "--val-speakers")
    ] = None,
    train_speakers: Annotated[
        int | None, _opt("Training speakers (0: all the rest).", "--train-speakers")
    ] = None,
    holdout_prefix: Annotated[
        str | None, _opt("Hold out only ids starting with this.", "--holdout-prefix")
    ] = None,
    val_every: Annotated[int | None, _opt("Steps between validations.", "--val-every")] = None,
    val_ways: Annotated[
        list[int] | None, _opt("k of validation k-way tasks.", "--val-ways")
    ] = None,
    val_trials: Annotated[int | None, _opt("Tasks per validation k.", "--val-trials")] = None,
    aam_weight: Annotated[float | None, _opt("distill: extra AAM term.", "--aam-weight")] = None,
    relation_weight: Annotated[
        float | None, _opt("distill: batch cosine-matrix term.", "--relation-weight")
    ] = None,
    speed_min: Annotated[float | None, _opt("Slowest speed perturbation.", "--speed-min")] = None,
    speed_max: Annotated[float | None, _opt("Fastest speed perturbation.", "--speed-max")] = None,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Augment on the fly.")
    ] = None,
    spec_augment: Annotated[
        bool | None, typer.Option("--spec-augment/--no-spec-augment", help="Mask features.")
    ] = None,
    mix_prob: Annotated[float | None, _opt("distill: overlaid-voice share.", "--mix-prob")] = None,
    init_teacher: Annotated[
        bool | None,
        typer.Option("--init-teacher/--no-init-teacher", help="distill, lstm: start from GE2E."),
    ] = None,
    init_from: Annotated[
        str | None, _opt("Start from this checkpoint (same model settings).", "--init-from")
    ] = None,
    select_on: Annotated[
        str | None,
        _opt("Best checkpoint by: accuracy | distill (val distillation loss).", "--select-on"),
    ] = None,
    seed: Annotated[int | None, _opt("Random seed (splits, sampling, init).", "--seed")] = None,
    device: Annotated[
        str | None, _opt("cpu | cuda (default: cuda if present).", "--device")
    ] = None,
    max_minutes: Annotated[
        float | None, _opt("Time budget; the schedule decays within it.", "--max-minutes")
    ] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="bf16 on CUDA.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")] = False,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help="Insist on data-parallel training: start this command under torchrun, "
            "e.g. torchrun --standalone --nproc_per_node N -m speakerid.cli train DATA... "
            "(under torchrun training is data-parallel with or without this flag).",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Train a twin encoder on speaker-labelled audio and keep the best checkpoint."""
    from speakerid import distributed as ddp
    from speakerid.train import config_from_overrides, train

    if distributed and not ddp.launched():
        fail(f"--distributed: start the command under torchrun: {ddp.TORCHRUN_LINE}")
    skip = {"data", "out_dir", "json_", "distributed", "ddp"}
    values = {k: v for k, v in locals().items() if k not in skip}
    if values["val_ways"]:
        values["val_ways"] = tuple(values["val_ways"])
    cfg = config_from_overrides(tuple(str(d) for d in data), out=str(out_dir), **values)
    summary = train(cfg, console=err)
    if summary.get("rank", 0):  # rank 0 reports for a torchrun job
        return
    if json_:
        print_json(summary)
        return
    last = summary["history"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith(("acc", "eer")))
    out.print(f"[green]best checkpoint[/green] {summary['best']}  (last validation: {shown})")


@command("whiten")
def whiten_cmd(
    model: Annotated[
        Path, typer.Argument(help="Checkpoint to whiten (.safetensors).", show_default=False)
    ],
    data: DataDirs,
    out_path: Annotated[
        Path, typer.Option("--out", help="Where to write the whitened checkpoint.")
    ] = Path("whitened.safetensors"),
    shrinkage: Annotated[
        list[float] | None,
        _opt("Candidate shrinkages (repeat); the validation speakers choose.", "--shrinkage"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda.")] = "cpu",
    json_: JsonOpt = False,
) -> None:
    """Fit a WCCN back-end on a checkpoint's training speakers and write a new checkpoint.

    DATA must hold the corpora the checkpoint was trained on (its recorded split names the
    speakers). The threshold is reset to the validation speakers' fragment EER point (or
    left uncalibrated when the checkpoint has no validation speakers).
    """
    from speakerid.model import save_encoder
    from speakerid.train import WHITEN_SHRINKAGE, fit_whitening

    if out_path.exists() and not force:
        fail(f"{out_path} exists; pass --force to overwrite it")
    loaded = load_model(model)
    encoder, report = fit_whitening(
        loaded, [str(d) for d in data], tuple(shrinkage or WHITEN_SHRINKAGE), device
    )
    # Whitening moves scores: the old threshold no longer applies. Without validation
    # speakers the new checkpoint has none, and the built-in default is used until calibrated.
    threshold = report["validation"].get(str(report["shrinkage"]), {}).get("threshold")
    info = {k: v for k, v in loaded.info.items() if k != "calibration"}  # stale once whitened
    info["whitening"] = report
    try:
        save_encoder(encoder, out_path, threshold=threshold, info=info)
    except OSError as exc:
        fail(f"{out_path}: cannot write ({exc.strerror or exc})")
    if json_:
        print_json({"out": str(out_path), **report})
        return
    table = Table(title=f"validation ({report['validation_speakers']} speakers)")
    metrics = [k for k in next(iter(report["validation"].values()), {}) if k != "threshold"]
    for col in ("shrinkage", *metrics):
        table.add_column(col, justify="right")
    for label, values in report["validation"].items():
        mark = " *" if label == str(report["shrinkage"]) else ""
        table.add_row(label + mark, *[f"{values[m]:.3f}" for m in metrics])
    if report["validation"]:
        out.print(table)
    if report["better_than_none"] is False:
        err.print("[yellow]warning:[/] on the validation speakers no shrinkage beats no whitening")
    out.print(
        f"[green]whitened[/green] on {report['speakers']} training speakers "
        f"({report['fragments']} fragments), shrinkage {report['shrinkage']}: {out_path}"
    )


@command("evaluate")
def evaluate_cmd(
    data: DataDirs,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    out_dir: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("eval"),
    speakers: Annotated[
        str, typer.Option(help="test | val (the model's held-out speakers) | all.")
    ] = "test",
    max_way: Annotated[int, typer.Option(help="Largest k of the k-way tasks.")] = 40,
    shots: Annotated[list[int], typer.Option("--shots", help="n of n-shot tasks.")] = [1, 5],  # noqa: B006
    trials: Annotated[int, typer.Option(help="Tasks per k.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed of the tasks.")] = 0,
    compare: Annotated[
        list[Path] | None,
        typer.Option(help="More checkpoints scored on the same tasks (e.g. other front-ends)."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Evaluate a model on unseen speakers: k-way accuracy, baselines, EER, plots."""
    from speakerid.evaluate import evaluate_model

    others = [load_model(p) for p in compare or []]
    report = evaluate_model(
        load_model(model),
        data,
        out_dir,
        speakers,
        max_way,
        shots,
        trials,
        seed,
        compare=others,
        precision=precision,
    )
    if json_:
        print_json(report)
        return
    curve = report["kway"]["model, 1-shot"]
    knn = report["kway"]["MFCC-stats k-NN, 1-shot"]
    table = Table(title=f"{report['n_speakers']} speakers, {report['n_fragments']} fragments")
    extra = [name for name in report["kway"] if name.endswith(", 1-shot")][1:-1]
    for col in (
        "k",
        "model 1-shot",
        *[n.removesuffix(", 1-shot") for n in extra],
        "MFCC k-NN",
        "random",
    ):
        table.add_column(col, justify="right")
    for k in sorted(curve, key=int):
        if int(k) in (2, 4, 10, 20, 40) or k == max(curve, key=int):
            table.add_row(
                str(k),
                f"{curve[k]['accuracy']:.3f}",
                *[f"{report['kway'][n][k]['accuracy']:.3f}" for n in extra],
                f"{knn[k]['accuracy']:.3f}",
                f"{report['random_baseline'][k]:.3f}",
            )
    out.print(table)
    ver = report["verification_fragments"]
    out.print(
        f"fragment EER {ver['eer']:.4f} at score {ver['eer_threshold']:.4f}, "
        f"minDCF(0.01) {ver['min_dcf']:.4f}; report and plots in {out_dir}"
    )


# ---------------------------------------------------------------- calibration


@command("calibrate")
def calibrate_cmd(
    data: Annotated[
        list[Path],
        typer.Argument(
            help="Labelled recordings from your domain: DIR/<speaker>/*.wav|flac or "
            "DIR/<speaker>/<chapter>/*.flac; 4+ speakers, most with 2+ recordings.",
            metavar="DATA...",
            show_default=False,
        ),
    ],
    target: Annotated[
        str, typer.Option("--target", help="1:1 operating point: eer, or far (with --far).")
    ] = "eer",
    far: Annotated[
        float | None,
        _opt(
            "False-accept rate to set the 1:1 threshold for (e.g. 0.01); implies --target far.",
            "--far",
        ),
    ] = None,
    fpir: Annotated[
        float,
        typer.Option(
            "--fpir",
            help="Share of strangers identify may name as someone enrolled, at the store's "
            "current size: sets the 1:N threshold.",
        ),
    ] = 0.05,
    norm: Annotated[
        str, typer.Option("--norm", help="Scores to calibrate: none (cosine) | asnorm.")
    ] = "none",
    cohort: Annotated[
        str,
        typer.Option(
            "--cohort",
            help="AS-norm cohort: auto (the model's if it ships one) | model | store (the "
            "enrolled speakers).",
        ),
    ] = "auto",
    enroll_size: Annotated[
        int, typer.Option("--enroll-size", min=1, help="Recordings pooled per trial model.")
    ] = 3,
    plot: Annotated[
        Path | None, _opt("Write score histograms and a DET curve to this PNG.", "--plot")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report only; leave the store as it is.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the trial models' recordings.")] = 0,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    store: StoreOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Set the store's thresholds from labelled recordings of your own domain.

    Scores every same- and different-speaker trial (one recording against a model pooled
    from --enroll-size others, as verify does), reports EER, minDCF and the score
    distributions, and writes into the store: the 1:1 threshold for --target (verify) and
    the 1:N threshold for --fpir at the store's size (identify), with their provenance.
    verify and identify then use, in order: --threshold, the store's, the model's.
    """
    from speakerid.calibrate import calibrate

    if target not in ("eer", "far"):
        fail(f"unknown --target {target!r}; one of ['eer', 'far']")
    if target == "far" and far is None:
        fail("--target far needs --far RATE (e.g. --far 0.01)")
    if target == "eer" and far is not None:
        target = "far"
    embedder = _embedder(model, precision)
    with (
        SpeakerStore(store) as db,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("embedding", total=None)

        def on_file(speaker: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=speaker)

        report = calibrate(
            db,
            embedder,
            data,
            far=far if target == "far" else None,
            fpir=fpir,
            norm=norm,
            cohort=cohort,
            enroll_size=enroll_size,
            seed=seed,
            dry_run=dry_run,
            on_file=on_file,
        )
    cal = report.calibration
    if plot is not None:
        from speakerid.calplot import plot_calibration

        lines = {f"calibrated ({cal.target})": cal.threshold}
        if report.model_threshold is not None and cal.norm == "none":
            lines = {"model": report.model_threshold, **lines}
        plot_calibration(
            report.trials, lines, plot, "AS-norm score" if cal.norm == "asnorm" else "cosine"
        )
    if json_:
        print_json({**report.as_dict(), "store": str(db.path), "plot": plot and str(plot)})
        return
    for item in report.skipped:
        err.print(f"skipped: {item.error}", style="yellow", markup=False, soft_wrap=True)
    table = Table(title=f"{cal.n_speakers} speakers, {cal.n_recordings} recordings")
    for col in ("trials", "n", "mean", "std", "p1", "p5", "p50", "p95", "p99"):
        table.add_column(col, justify="right")
    for label, dist in (("same", report.target_scores), ("different", report.nontarget_scores)):
        table.add_row(label, str(dist["n"]), *[f"{dist[k]:.3f}" for k in list(dist)[1:]])
    out.print(table)
    out.print(
        f"EER {100 * cal.eer:.2f}% at {cal.eer_threshold:.4f}; minDCF({cal.p_target:g}) "
        f"{cal.min_dcf:.4f} at {cal.min_dcf_threshold:.4f}"
        + (f"; scores AS-normalised against the {cal.cohort} cohort" if cal.norm != "none" else "")
    )
    if report.model_threshold is not None:
        out.print(
            f"model threshold {report.model_threshold:.4f}: false accepts "
            f"{100 * (report.model_false_accept_rate or 0):.2f}%, "
            f"misses {100 * (report.model_miss_rate or 0):.2f}%"
        )
    out.print(
        f"[bold]1:1 threshold {cal.threshold:.4f}[/bold] ({cal.target}): false accepts "
        f"{100 * cal.false_accept_rate:.2f}%, misses {100 * cal.miss_rate:.2f}%"
    )
    if cal.identify_threshold is not None:
        out.print(
            f"[bold]1:N threshold {cal.identify_threshold:.4f}[/bold] for "
            f"{100 * (cal.identify_fpir or 0):g}% strangers named among {cal.store_speakers} "
            f"enrolled ({cal.identify_method}; measured "
            f"{100 * (cal.identify_fpir_measured or 0):.2f}% on the calibration recordings)"
        )
    for note in report.notes:
        err.print(f"note: {note}", style="yellow", markup=False, soft_wrap=True)
    where = escape(str(db.path))
    out.print(f"written to {where}" if report.written else f"dry run: {where} unchanged")


def main() -> None:
    """Entry point of the ``speakerid`` console script."""
    app()

