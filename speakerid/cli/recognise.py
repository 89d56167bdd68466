"""verify (1:1) and identify (1:N, or who speaks when with --segments)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from speakerid.audio import MIN_SPEECH_SECONDS
from speakerid.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    AudioFile,
    AudioFiles,
    BackendOpt,
    FarOpt,
    JsonOpt,
    MinSpeechOpt,
    ModelOpt,
    PrecisionOpt,
    QuietOpt,
    SampleRateOpt,
    SpeakerName,
    StoreOpt,
    StrictOpt,
    ThresholdOpt,
    VadOpt,
    command,
    err,
    fail,
    failures_reported,
    far_flag,
    out,
    print_json,
    progress_bar,
    read_sources,
    shown,
    shown_markup,
    threshold_flag,
    threshold_origin,
)
from speakerid.errors import PLOT_EXTRA, require
from speakerid.outputs import output_target

if TYPE_CHECKING:
    from speakerid.api import SpeakerID
    from speakerid.decision.model import Quality
    from speakerid.recognition import FileError, Identification


@command("verify")
def verify_cmd(
    name: SpeakerName,
    file: AudioFile,
    far: FarOpt = None,
    threshold: ThresholdOpt = None,
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
    """1:1 check that FILE is NAME. Exit status 0 accepted, 1 rejected, 2 error.

    By default the decision lets in at most 1 stranger in 100 (--far 0.01), for this clip's
    length and this speaker's enrollment: a short clip needs a higher score than a long one.
    """
    from speakerid.api import SpeakerID

    far = far_flag(far, threshold)
    with SpeakerID(
        store, model, backend=backend, precision=precision, min_speech=min_speech, vad=vad
    ) as sid:
        (source,) = read_sources([file], sample_rate)
        result = sid.verify(name, source, threshold=threshold_flag(threshold), far=far)
        store_path = str(sid.store.path)
    origin = threshold_origin(result.threshold_source)
    if json_:
        print_json({**asdict(result), "threshold_source": origin, "store": store_path})
    else:
        verdict = "[green]accepted[/green]" if result.accepted else "[red]rejected[/red]"
        normalized = (
            "" if result.normalized_score is None else f", AS-norm {result.normalized_score:.4f}"
        )
        llr = "" if result.llr is None else f", llr {result.llr:+.1f}"
        out.print(
            f"{verdict} {shown_markup(result.speaker)}: score {result.score:.4f}{normalized}, "
            f"threshold {result.threshold:.4f}{llr}",
            soft_wrap=True,
        )
        out.print(operating_point(result.far, origin, result.quality), soft_wrap=True)
    raise typer.Exit(EXIT_OK if result.accepted else EXIT_REJECTED)


def operating_point(far: float | None, origin: str, quality: Quality | None) -> str:
    """The rule a decision was taken by, in one line."""
    if far is None:
        return f"rule: fixed threshold ({origin})"
    where = "the store's calibration" if origin == "store" else "the model's calibration"
    q = quality
    measured = (
        ""
        if q is None
        else f" for {q.test_seconds:.1f} s of speech against {q.enroll_count} "
        f"recording(s), {q.enroll_seconds:.0f} s"
    )
    return f"rule: at most {100 * far:g}% of strangers accepted{measured} ({where})"


def _seg_opt(help_: str) -> Any:
    return typer.Option(help=help_ + " (with --segments).", show_default=False)


TopOpt = Annotated[
    int | None, typer.Option("--top", "-k", help="Candidates to show (1 or more); default 5.")
]
SegmentsOpt = Annotated[
    bool,
    typer.Option("--segments", help="Who speaks when: a timeline of enrolled speakers per FILE."),
]
WindowOpt = Annotated[float | None, _seg_opt("Seconds per scored window; default 1.5")]
HopOpt = Annotated[float | None, _seg_opt("Seconds between windows; default 0.75")]
FitOpt = Annotated[
    str | None, _seg_opt("How a window meets the encoder: tile (to 3 s) | direct; default tile")
]
SwitchOpt = Annotated[float | None, _seg_opt("Score a change of speaker must earn; default 0.0")]
MinSegmentOpt = Annotated[
    float | None, _seg_opt("Shorter runs of speech join a neighbour, seconds; default 1.0")
]
MaxGapOpt = Annotated[
    float | None, _seg_opt("Pauses shorter than this inside a turn are bridged, s; default 1.0")
]
OffsetOpt = Annotated[
    float | None, _seg_opt("Added to the model's threshold, not to --threshold; default -0.15")
]
TimelineVadOpt = Annotated[
    str | None,
    _seg_opt(
        "How the timeline finds speech: energy | silero | none; default energy (whatever "
        "--vad the store was enrolled with)"
    ),
]
SnapOpt = Annotated[
    float | None, _seg_opt("A change of speaker moves to a pause this near, s; default 0.75")
]
ResegmentOpt = Annotated[
    float | None,
    _seg_opt("Weight of each voice's own mean in the second pass, 0-1 (0: none); default 0.85"),
]
RttmOpt = Annotated[bool, typer.Option("--rttm", help="Print RTTM lines (with --segments).")]
PlotOpt = Annotated[Path | None, _seg_opt("Write the timeline of one FILE as a PNG")]


@command("identify")
def identify_cmd(
    files: AudioFiles,
    top: TopOpt = None,
    far: FarOpt = None,
    threshold: ThresholdOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = "auto",
    min_speech: MinSpeechOpt = MIN_SPEECH_SECONDS,
    vad: VadOpt = None,
    sample_rate: SampleRateOpt = None,
    strict: StrictOpt = False,
    store: StoreOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    segments: SegmentsOpt = False,
    window: WindowOpt = None,
    hop: HopOpt = None,
    fit: FitOpt = None,
    switch_penalty: SwitchOpt = None,
    min_segment: MinSegmentOpt = None,
    max_gap: MaxGapOpt = None,
    threshold_offset: OffsetOpt = None,
    timeline_vad: TimelineVadOpt = None,
    snap: SnapOpt = None,
    resegment: ResegmentOpt = None,
    rttm: RttmOpt = False,
    plot: PlotOpt = None,
) -> None:
    """1:N: name the enrolled speaker in each FILE, or 'unknown'.

    By default a stranger is named at most 1 time in 100 per FILE (--far 0.01), however many
    speakers are enrolled: each candidate is judged for this clip's length and its own
    enrollment.

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
        "timeline_vad": timeline_vad,
        "snap": snap,
        "resegment": resegment,
    }
    if segments:
        _refuse_with_segments(top, far)
        settings = {k: v for k, v in seg_values.items() if v is not None}
        outputs = (json_, rttm, plot)
        opened = (store, model, backend, precision, min_speech, vad)
        _identify_segments(files, settings, threshold, sample_rate, strict, opened, outputs)
        return
    given = [k for k, v in seg_values.items() if v is not None]
    given += [k for k, v in (("rttm", rttm), ("plot", plot)) if v]
    if given:
        fail(f"--{given[0].replace('_', '-')} needs --segments")
    opened = (store, model, backend, precision, min_speech, vad)
    _identify_files(files, top, far, threshold, sample_rate, strict, opened, json_)


# what the API is opened with: store, model, backend, precision, minimum speech, VAD
Opened = tuple[Path | None, str | None, str | None, str, float, str | None]


def _api(opened: Opened) -> SpeakerID:
    """The API for ``identify``: the store, model, backend, precision, minimum speech and VAD."""
    from speakerid.api import SpeakerID

    store, model, backend, precision, min_speech, vad = opened
    return SpeakerID(
        store, model, backend=backend, precision=precision, min_speech=min_speech, vad=vad
    )


def _identify_files(
    files: list[str],
    top: int | None,
    far: float | None,
    threshold: float | None,
    sample_rate: int | None,
    strict: bool,
    opened: Opened,
    json_: bool,
) -> None:
    """``identify``: ranked candidates and a decision per FILE, as tables or JSON."""
    from speakerid.decision.thresholds import calibration_notes
    from speakerid.recognition import FileError, Identification

    top = 5 if top is None else top
    if top < 1:  # before anything loads: a usage error costs no model
        fail(f"--top must be at least 1, not {top}")
    far = far_flag(far, threshold)
    sources = read_sources(files, sample_rate)
    with _api(opened) as sid, progress_bar() as progress:
        task = progress.add_task("identifying", total=len(sources))
        everything = sid.identify_many(
            sources,
            top,
            threshold=threshold_flag(threshold),
            far=far,
            strict=strict,
            on_file=lambda done, total: progress.update(task, completed=done),
        )
        identified = any(isinstance(r, Identification) for r in everything)
        notes = []  # about the calibration the decisions used: none when no file got one
        if threshold is None and identified:
            notes = calibration_notes(sid.store, sid.embedder.model.fingerprint)
        store_path = str(sid.store.path)
    for note in notes:
        if not note.startswith("not calibrated"):  # the usual case needs no warning
            err.print(f"warning: {shown(note)}", style="yellow", markup=False, soft_wrap=True)
    failures = [r for r in everything if isinstance(r, FileError)]
    results = [r for r in everything if isinstance(r, Identification)]
    with failures_reported(failures):
        if json_:
            print_json([_identification_json(r, store_path) for r in everything])
        else:
            _print_identifications(results)


def _print_identifications(results: list[Identification]) -> None:
    if not results:
        return
    for result in results:
        best = "[yellow]unknown[/yellow]"
        if result.best:
            best = f"[green]{shown_markup(result.best)}[/green]"
        out.print(f"{shown_markup(result.file)}: {best}", soft_wrap=True)
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("speaker")
        table.add_column("score", justify="right")
        for rank, cand in enumerate(result.candidates, 1):
            passed = (
                result.accepted[rank - 1] if result.accepted else cand.score >= result.threshold
            )
            mark = "" if passed else " (below)"
            if result.normalized_score is not None:  # the decision was on the AS-norm score
                mark = f" (AS-norm {result.normalized_score:.4f})" if rank == 1 else ""
            table.add_row(str(rank), shown_markup(cand.speaker), f"{cand.score:.4f}{mark}")
        out.print(table)
    first = results[0]
    origin = threshold_origin(first.threshold_source)
    if first.far is None:
        shown = "" if origin == "model" else f" ({origin})"
        out.print(f"threshold {first.threshold:.4f}{shown}")
        return
    where = "the store's calibration" if origin == "store" else "the model's calibration"
    out.print(
        f"rule: a stranger is named at most {100 * first.far:g}% of the time per file, "
        f"whatever the number of speakers; each candidate judged for its own enrollment "
        f"({where})",
        soft_wrap=True,
    )


def _identification_json(result: Identification | FileError, store_path: str) -> dict:
    from speakerid.recognition import Identification

    data = {**asdict(result), "store": store_path}
    if isinstance(result, Identification):
        data["threshold_source"] = threshold_origin(result.threshold_source)
    return data


def _refuse_with_segments(top: int | None, far: float | None) -> None:
    """The flags of ``identify`` that a timeline has no use for, refused in one line each."""
    if top is not None:
        fail("--top ranks candidates per FILE; --segments names one speaker per stretch")
    if far is not None:
        fail(
            "--far is not used by --segments: windows are judged at the model's threshold "
            "plus --threshold-offset; give --threshold to set it"
        )


def _identify_segments(
    files: list[str],
    settings: dict[str, Any],
    threshold: float | None,
    sample_rate: int | None,
    strict: bool,
    opened: Opened,
    outputs: tuple[bool, bool, Path | None],
) -> None:
    """``identify --segments``: one timeline per FILE, as a table, JSON, RTTM or a plot.

    ``opened``: the store, model, backend, precision and minimum speech the API opens;
    ``outputs``: --json, --rttm and --plot. A FILE that fails is reported and the others
    are still shown (with --strict the first failure stops the batch).
    """
    from speakerid.decision.timeline import SegmentConfig
    from speakerid.recognition import FileError

    json_, rttm, plot = outputs
    if json_ and rttm:
        fail("--rttm and --json are two output formats; choose one")
    if plot is not None and len(files) != 1:
        fail(f"--plot draws one FILE's timeline, not {len(files)}")
    if plot is not None:
        require("matplotlib", "--plot", PLOT_EXTRA)  # before the embedding, not after it
        output_target(plot)  # a directory, FIFO or device is refused before any work
    config = SegmentConfig(**settings)
    sources = read_sources(files, sample_rate)
    with _api(opened) as sid, progress_bar() as progress:
        task = progress.add_task("who speaks when", total=len(sources))
        everything = sid.identify_segments(
            sources,
            threshold=threshold_flag(threshold),
            config=config,
            strict=strict,
            on_file=lambda done, total: progress.update(task, completed=done),
        )
    failures = [r for r in everything if isinstance(r, FileError)]
    timelines = [r for r in everything if not isinstance(r, FileError)]
    with failures_reported(failures):
        _show_timelines(everything, timelines, json_, rttm, plot)


def _show_timelines(
    everything: list[Any], timelines: list[Any], json_: bool, rttm: bool, plot: Path | None
) -> None:
    from speakerid.decision.timeline import UNKNOWN, plot_timeline, rttm_lines

    if plot is not None and timelines:
        plot_timeline(timelines[0], plot)
    if json_:
        print_json([asdict(t) for t in everything])
        return
    if rttm:
        for timeline in timelines:
            for line in rttm_lines(timeline):
                typer.echo(line)
        return
    for timeline in timelines:
        table = Table(title=shown_markup(f"{timeline.file} ({timeline.duration:.1f} s)"))
        table.add_column("start", justify="right")
        table.add_column("end", justify="right")
        table.add_column("speaker")
        table.add_column("score", justify="right")
        for seg in timeline.segments:
            who = shown_markup(seg.speaker) if seg.speaker else f"[yellow]{UNKNOWN}[/yellow]"
            table.add_row(f"{seg.start:.2f}", f"{seg.end:.2f}", who, f"{seg.score:.4f}")
        out.print(table)
    if timelines:
        out.print(f"threshold {timelines[0].threshold:.4f}")
    if plot is not None and timelines:
        out.print(f"timeline plot: {shown_markup(plot)}", soft_wrap=True)
