"""What every command shares: the app, the consoles, the exit codes, the options, the error
handler, JSON output, progress bars and the helpers that open a model or a store.

Every command is registered with ``@command()``, which turns any ``SpeakerIDError`` into one
red line on stderr and exit status 2, and Ctrl-C into exit 130; under ``--json`` the line is
also printed on stdout as ``{"error": ..., "code": ...}``. Results go to stdout as Rich text,
or as JSON with ``--json``; messages go to stderr.

Whatever a command prints that came from outside (paths, names, library messages) goes
through ``shown``, so that control characters in a file name can neither drive the terminal
nor split a line. Python warnings raised while a command runs are held back: printed as
``warning:`` lines after a successful run, dropped after an error (whose line comes first and
alone). Output that stdout cannot take (a full disk, a closed pipe) is one error line too.

Exit status (like grep): 0 success / accepted, 1 rejected (``verify``), 2 error.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

# Only names and defaults at import time (stdlib-only modules): the options' help texts
# need them, and ``--help`` or a usage error should not import numpy and the core (about
# 60 ms). The core is imported inside the functions that run it.
from speakerid.audio.constants import STDIN, VAD_ENV, VADS
from speakerid.cli.helptext import HELP_MAX_WIDTH, Command, Group
from speakerid.cli.progress import progress_for, report_notes, stop_notes
from speakerid.decision.constants import DEFAULT_FAR, DEFAULT_THRESHOLD, GIVEN
from speakerid.embedding.constants import BACKEND_ENV, BACKENDS, PRECISION_ENV, PRECISIONS
from speakerid.errors import PLOT_EXTRA, TRAIN_EXTRA, SpeakerIDError
from speakerid.store.constants import NAME_MAX_CHARS, STORE_ENV

if TYPE_CHECKING:
    from speakerid.api import SpeakerID
    from speakerid.embedding.embedder import BaseEmbedder
    from speakerid.recognition import FileError, Source
    from speakerid.store.speakers import SpeakerStore

EXIT_OK = 0
EXIT_REJECTED = 1  # verify: the voice did not match
# Packages the runtime install leaves out, and the extra that brings each.
EXTRA_OF = {
    **dict.fromkeys(("torch", "torchaudio", "librosa", "sklearn"), TRAIN_EXTRA),
    "matplotlib": PLOT_EXTRA,
}
EXIT_ERROR = 2  # any SpeakerIDError (and usage errors, as Click does)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

app = typer.Typer(
    name="speakerid",
    cls=Group,
    help="Recognise people by their voice: enroll, verify (1:1) and identify (1:N).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # Plain help, as git and uv print it: Rich's mode kept the docstrings' line breaks
    # (ragged at 80 columns) and read ``[onnx]`` in a help text as markup.
    rich_markup_mode=None,
    context_settings={"max_content_width": HELP_MAX_WIDTH},
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

# ---------------------------------------------------------------- shared options

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME|PATH",
        help="accurate (CAM++, the default), fast, ecapa, best (CAM++ and ECAPA fused), or a "
        "checkpoint file (.safetensors); `speakerid models` lists them.",
        show_default=False,
    ),
]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        "-s",
        metavar="PATH",
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
        metavar="SCORE",
        help="Cosine score needed to accept, exactly, whatever the clip (instead of --far). "
        "Default: decide at --far where the store or the model is calibrated for it, else the "
        f"store's or the model's threshold ({DEFAULT_THRESHOLD} if it has none).",
        show_default=False,
    ),
]
FarOpt = Annotated[
    float | None,
    typer.Option(
        "--far",
        metavar="RATE",
        help="False-accept rate to decide at, in (0, 0.5]: the share of strangers accepted, "
        "held for each clip's length and each enrollment's size (identify: strangers named "
        f"per query). Default: {DEFAULT_FAR:g}.",
        show_default=False,
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        envvar=PRECISION_ENV,
        metavar="|".join((*PRECISIONS, "int8")),
        help="Encoder arithmetic. torch backend, auto: bf16 on CPUs with native bf16 (about 2x "
        "faster, same accuracy), else fp32. onnx backend, auto: the model's fp32 graph; int8: "
        "accurate's int8 graph (about 1.1x faster, same EER; stores made with it refuse fp32).",
    ),
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        envvar=BACKEND_ENV,
        metavar="|".join(BACKENDS),
        help="What runs the model. Default: onnx (onnxruntime, no torch). torch runs on GPUs "
        "and needs torch (in a checkout: pip install -e '.[train]').",
        show_default=False,
    ),
]
MinSpeechOpt = Annotated[
    float,
    typer.Option(
        "--min-speech",
        metavar="SECONDS",
        help="Seconds of speech (after trimming silence) a recording needs.",
    ),
]
VadOpt = Annotated[
    str | None,
    typer.Option(
        "--vad",
        envvar=VAD_ENV,
        help=f"How speech is found before embedding: {' | '.join(VADS)}. silero: Silero VAD "
        "(onnxruntime); energy: frames above the loudest one's level - 40 dB; none: the whole "
        "recording. Default: the store's own, else silero. A store refuses another.",
        show_default=False,
    ),
]
SampleRateOpt = Annotated[
    int | None,
    typer.Option(
        "--sample-rate",
        metavar="HZ",
        help="FILE - is raw PCM (mono signed 16-bit little-endian) at this rate in Hz.",
        show_default=False,
    ),
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Stop at the first file that fails (exit 2).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
QUIET_ENV = "SPEAKERID_QUIET"
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        envvar=QUIET_ENV,
        help="No progress or notes on stderr (results, warnings and errors still print).",
    ),
]
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
        help=f"Speaker name: letters, digits, spaces, . _ - ({NAME_MAX_CHARS} at most).",
        metavar="NAME",
        show_default=False,
    ),
]

ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        help="I/N: embed only slice I (0-based) of N of the sorted list, so N processes or "
        "machines share the work; join their outputs with `embed --merge`.",
        show_default=False,
    ),
]

F = TypeVar("F", bound=Callable[..., Any])

# Errors of a write that found no room or no reader: the output's, when no file is named.
_WRITE_ERRORS = {errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG}

# Whether the running command was given --json: then its errors are JSON on stdout too.
_json_errors: ContextVar[bool] = ContextVar("json_errors", default=False)
# Whether it was given --quiet: then no progress lines and no notes.
_quiet: ContextVar[bool] = ContextVar("quiet", default=False)


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command on ``app`` with the one error handler around it."""

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(*args: Any, **kw: Any) -> Any:
            token = _json_errors.set(bool(kw.get("json_")))
            quiet = _quiet.set(bool(kw.get("quiet")))
            notes = report_notes(err, bool(kw.get("quiet")))
            code = EXIT_ERROR
            with warnings.catch_warnings(record=True) as caught:
                try:
                    result = fn(*args, **kw)
                    flush_stdout()
                    code = EXIT_OK
                    return result
                except typer.Exit as exc:
                    flush_stdout()
                    code = exc.exit_code
                    raise
                except SpeakerIDError as exc:
                    fail(str(exc))
                except ModuleNotFoundError as exc:
                    # The runtime install leaves the lab's packages out: say which extra has it.
                    if exc.name not in EXTRA_OF:
                        raise
                    fail(f"this needs {exc.name}, which this install lacks: {EXTRA_OF[exc.name]}")
                except KeyboardInterrupt as exc:
                    # An interrupt may say what was kept (enroll-dir); a bare Ctrl-C says nothing.
                    fail(str(exc) or "interrupted", EXIT_INTERRUPTED, prefix="")
                except OSError as exc:
                    # A write error with no file named is the output's (stdout); a file's
                    # errors are the core's to word, with the file's name.
                    if exc.filename is None and exc.errno in _WRITE_ERRORS:
                        stdout_failed(exc)
                    raise
                finally:
                    _json_errors.reset(token)
                    _quiet.reset(quiet)
                    stop_notes(notes)
                    if code in (EXIT_OK, EXIT_REJECTED):
                        report_warnings(caught)

        app.command(name, cls=Command, **kwargs)(guarded)
        return fn

    return decorator


# Spaces print as themselves; every other unprintable character is escaped: controls,
# bidirectional overrides (they reorder what follows on screen), line separators.
_SHOWN_AS_IS = {"Zs"}


def shown(value: object) -> str:
    """``value`` as text safe to print: control characters (escape sequences, newlines,
    tabs), bidirectional overrides and undecodable bytes are written out as ``\\x1b``,
    ``\\n``, ``\\u202e``..., so that a hostile file name can neither drive the terminal
    nor split one line into two."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or _plain_space(ch) else _escaped(ch) for ch in text)


def shown_markup(value: object) -> str:
    """``shown(value)`` for a Rich markup string: its brackets escaped too."""
    return escape(shown(value))


def _plain_space(ch: str) -> bool:
    return unicodedata.category(ch) in _SHOWN_AS_IS


def _escaped(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): the byte
        return f"\\x{code - 0xDC00:02x}"
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
    if named:
        return named
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def fail(message: str, code: int = EXIT_ERROR, prefix: str = "error: ") -> NoReturn:
    """One red line on stderr (``message`` through ``shown``), then exit status ``code`` (2).

    Under ``--json`` the same message is also printed on stdout as
    ``{"error": MESSAGE, "code": CODE}``, so that a script can parse every outcome.
    """
    line = shown(message) if message else "error"
    err.print(f"{prefix}{line}", style="red", markup=False, soft_wrap=True)
    if _json_errors.get():
        try:
            typer.echo(json.dumps({"error": line, "code": code}, ensure_ascii=False))
            sys.stdout.flush()
        except OSError as exc:  # stdout is full or closed: the stderr line is the answer
            stdout_failed(exc, report=False)
    raise typer.Exit(code)


def flush_stdout(report: bool = True) -> None:
    """Push out what the command printed (``stdout_failed`` if stdout cannot take it)."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        stdout_failed(exc, report)


def stdout_failed(exc: OSError, report: bool = True) -> None:
    """Stdout could not take the output (``/dev/full``, a closed pipe): one line, exit 2
    (``report=False``: drop the output silently)."""
    # Point stdout at the null device: the held output goes there, not into a traceback at
    # exit.
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (a test's stream)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    if report:
        _json_errors.set(False)
        fail(f"cannot write the output to stdout ({exc.strerror or exc})")


def report_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Python warnings of a successful run, one ``warning:`` line each (repeats once).

    Deprecation notices are about the libraries, not the user's data: not shown.
    """
    hidden = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    lines = {
        shown(str(w.message).splitlines()[0] if str(w.message) else w.category.__name__)
        for w in caught
        if not issubclass(w.category, hidden)
    }
    for line in sorted(lines):
        err.print(f"warning: {line}", style="yellow", markup=False, soft_wrap=True)


def threshold_flag(value: float | None) -> float | None:
    """``--threshold`` checked, in the flag's own name (the core names no flags)."""
    if value is None:
        return None
    from speakerid.encoders.checkpoint import check_threshold

    try:
        return check_threshold(value, "--threshold")
    except ValueError as exc:
        raise SpeakerIDError(str(exc)) from None


def far_flag(value: float | None, threshold: float | None = None) -> float | None:
    """``--far`` checked, in the flag's own name, before anything loads."""
    if value is None:
        return None
    if threshold is not None:
        fail("--threshold and --far are two rules for one decision; give one")
    from speakerid.decision.model import check_far

    try:
        return check_far(value, "--far")
    except SpeakerIDError as exc:
        fail(str(exc))


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


def load_embedder(
    model: str | None,
    precision: str,
    backend: str | None = None,
    vad: str | None = None,
    store: SpeakerStore | None = None,
) -> BaseEmbedder:
    """The embedder of a command that runs the model itself; ``vad`` None: the one ``store``
    was enrolled with, else the default (``audio.resolve_vad``)."""
    from speakerid.audio import resolve_vad
    from speakerid.embedding.pipeline import open_embedder

    bound = store.bound_vad() if store is not None and vad is None else None
    return open_embedder(model, backend, precision, vad=resolve_vad(vad, bound))


def read_sources(files: list[str], sample_rate: int | None) -> list[Source]:
    """FILE arguments with ``-`` read from stdin (once: a pipe holds one recording)."""
    from speakerid.audio import read_stdin

    if files.count(STDIN) > 1:
        fail("- (stdin) can be given only once")
    if sample_rate is not None and STDIN not in files:
        fail("--sample-rate is for raw PCM on stdin; give - as FILE")
    return [read_stdin(sample_rate) if f == STDIN else f for f in files]


def progress_bar(unit: str = "files") -> Any:
    """Progress on stderr: a bar on a terminal, plain lines elsewhere (``PlainProgress``),
    nothing under ``--quiet``; counts are of ``unit``."""
    return progress_for(err, _quiet.get(), unit)


def report_failures(failures: list[FileError]) -> None:
    """One red ``error: path: reason`` line on stderr per file that failed."""
    for item in failures:
        line = item.error if item.error.startswith(item.file) else f"{item.file}: {item.error}"
        err.print(f"error: {shown(line)}", style="red", markup=False, soft_wrap=True)


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
    store: Path | None,
    model: str | None,
    backend: str | None,
    precision: str,
    min_speech: float,
    vad: str | None = None,
) -> Iterator[SpeakerID]:
    """The API for a command that writes; says on stderr when the store's folder did not
    exist and was created with it (a mistyped --store goes unseen else)."""
    from speakerid.api import SpeakerID
    from speakerid.store.speakers import default_store_path

    target = Path(store) if store is not None else default_store_path()
    folder_missing = not target.parent.exists()
    with SpeakerID(
        store, model, backend=backend, precision=precision, min_speech=min_speech, vad=vad
    ) as sid:
        yield sid
    if folder_missing and target.exists():
        err.print(
            f"created the store {shown(target)} in the new folder {shown(target.parent)}",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
