"""What every command shares: the app, the consoles, the exit codes, the options, the error
handler, JSON output, progress bars and the helpers that open a model or a store.

Every command is registered with ``@command()``, which turns any ``SpeakerIDError`` into one
red line on stderr and exit status 2, and Ctrl-C into exit 130; under ``--json`` the line is
also printed on stdout as ``{"error": ..., "code": ...}``. Results go to stdout as Rich text,
or as JSON with ``--json``; messages go to stderr.

Exit status (like grep): 0 success / accepted, 1 rejected (``verify``), 2 error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from speakerid.api import SpeakerID
from speakerid.audio import STDIN, read_stdin
from speakerid.embed import BACKEND_ENV, BACKENDS, PRECISIONS, BaseEmbedder, open_embedder
from speakerid.errors import SpeakerIDError
from speakerid.modelinfo import check_threshold
from speakerid.service import FileError, Source
from speakerid.store import STORE_ENV, default_store_path
from speakerid.thresholds import DEFAULT_THRESHOLD, GIVEN

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
        help="accurate (CAM++, the default), fast, ecapa, or a checkpoint file (.safetensors); "
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


def threshold_flag(value: float | None) -> float | None:
    """``--threshold`` checked, in the flag's own name (the core names no flags)."""
    if value is None:
        return None
    try:
        return check_threshold(value, "--threshold")
    except ValueError as exc:
        raise SpeakerIDError(str(exc)) from None


def threshold_origin(source: str) -> str:
    """Where a threshold came from, as the CLI words it: ``--threshold`` for a given one."""
    return "--threshold" if source == GIVEN else source


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


def load_embedder(model: str | None, precision: str) -> BaseEmbedder:
    return open_embedder(model, None, precision)


def open_sid(
    store: Path | None,
    model: str | None,
    backend: str | None,
    precision: str,
    min_speech: float,
) -> SpeakerID:
    return SpeakerID(store, model, backend=backend, precision=precision, min_speech=min_speech)


def read_sources(files: list[str], sample_rate: int | None) -> list[Source]:
    """FILE arguments with ``-`` read from stdin (once: a pipe holds one recording)."""
    if files.count(STDIN) > 1:
        fail("- (stdin) can be given only once")
    if sample_rate is not None and STDIN not in files:
        fail("--sample-rate is for raw PCM on stdin; give - as FILE")
    return [read_stdin(sample_rate) if f == STDIN else f for f in files]


def progress_bar() -> Progress:
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
def failures_reported(failures: list[FileError]) -> Iterator[None]:
    """Around a batch command's output: first each file that failed on stderr
    (``report_failures``), then the block (the summary or JSON), then exit status 2 if any
    file failed. The rest of the batch is reported either way."""
    report_failures(failures)
    yield
    if failures:
        raise typer.Exit(EXIT_ERROR)


@contextmanager
def writing_sid(
    store: Path | None, model: str | None, backend: str | None, precision: str, min_speech: float
) -> Iterator[SpeakerID]:
    """``open_sid`` for a command that writes; says on stderr when the store's folder did not
    exist and was created with it (a mistyped --store goes unseen else)."""
    target = Path(store) if store is not None else default_store_path()
    folder_missing = not target.parent.exists()
    with open_sid(store, model, backend, precision, min_speech) as sid:
        yield sid
    if folder_missing and target.exists():
        err.print(
            f"created the store {target} in the new folder {target.parent}",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
