"""train, whiten, evaluate and calibrate: the lab beside the runtime.

Their heavy modules (torch, training, evaluation, plotting) are imported inside each command,
so that loading this module for ``--help`` stays light.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from speakerid.cli.common import (
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    QuietOpt,
    StoreOpt,
    VadOpt,
    command,
    err,
    fail,
    load_embedder,
    out,
    print_json,
    progress_bar,
    shown,
    shown_markup,
)
from speakerid.decision.constants import DEFAULT_FAR
from speakerid.errors import PLOT_EXTRA, require
from speakerid.outputs import output_target, replacing

if TYPE_CHECKING:
    from speakerid.decision.calibrate import CalibrationReport

# ---------------------------------------------------------------- training and evaluation

F = TypeVar("F", bound=Callable[..., Any])

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


# The help of each training setting's flag, in --help order. The flag is the setting's name
# (``--batch-size`` sets ``batch_size``), its type the setting's; unset, the config's default
# holds. ``resume`` has a flag of its own below (no --no-resume).
TRAIN_FLAGS: dict[str, str] = {
    "objective": "bce (case study) | aam | distill.",
    "frontend": "raw | mfcc | fbank | kaldi_fbank | powermel | ge2e | vggish.",
    "arch": "cnn1d | cnn2d | ecapa_lite | lstm | campp.",
    "embedding_dim": "Embedding size.",
    "channels": "Width of the encoder body.",
    "n_mels": "fbank, kaldi_fbank: mel bands.",
    "n_mfcc": "mfcc: coefficients.",
    "stem_stride": "ecapa_lite stem stride; powermel frames per step.",
    "lstm_layers": "lstm: recurrent layers.",
    "windows": "lstm: equal windows a fragment is read as.",
    "teacher": "distill: ge2e, or a speakerid model (accurate, a path).",
    "teacher_pool": "distill, speakerid teacher: crops it labels once.",
    "teacher_windows": "distill: equal windows the teacher reads (0: its partials).",
    "distance": "bce: euclidean | cosine | l1.",
    "steps": "Optimiser steps.",
    "batch_size": "Fragments or pairs per step.",
    "lr": "Peak learning rate.",
    "optimizer": "radam | adamw.",
    "weight_decay": "Weight decay.",
    "aam_margin": "AAM angular margin.",
    "aam_scale": "AAM logit scale.",
    "test_speakers": "Speakers held out.",
    "val_speakers": "Held out for model selection (0: the test ones).",
    "train_speakers": "Training speakers (0: all the rest).",
    "holdout_prefix": "Hold out only ids starting with this.",
    "val_every": "Steps between validations.",
    "val_ways": "k of validation k-way tasks.",
    "val_trials": "Tasks per validation k.",
    "aam_weight": "distill: extra AAM term.",
    "relation_weight": "distill: batch cosine-matrix term.",
    "speed_min": "Slowest speed perturbation.",
    "speed_max": "Fastest speed perturbation.",
    "augment": "Augment on the fly.",
    "spec_augment": "Mask features.",
    "mix_prob": "distill: overlaid-voice share.",
    "init_teacher": "distill, lstm: start from GE2E.",
    "init_from": "Start from this checkpoint (same model settings).",
    "select_on": "Best checkpoint by: accuracy | distill (val distillation loss).",
    "seed": "Random seed (splits, sampling, init).",
    "device": "cpu | cuda (default: cuda if present).",
    "max_minutes": "Time budget; the schedule decays within it.",
    "amp": "bf16 on CUDA.",
}


def _setting_flag(name: str, kind: type, help_: str) -> inspect.Parameter:
    """The keyword parameter (so the Typer option) of one training setting."""
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        option = typer.Option(f"{flag}/--no-{flag[2:]}", help=help_)
    else:
        option = _opt(help_, flag)
    if typing.get_origin(kind) is tuple:  # a repeated option arrives as a list
        kind = list[typing.get_args(kind)[0]]
    annotation = Annotated[kind | None, option]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def _with_setting_flags(fn: F) -> F:
    """Give ``fn`` (``data, out_dir, ..., **settings``) a flag per entry of ``TRAIN_FLAGS``,
    after ``out_dir``; the values reach ``fn`` in ``settings``, None where not given."""
    from speakerid.lab.config import TrainConfig

    kinds = TrainConfig.settings()
    flags = [_setting_flag(name, kinds[name][1], help_) for name, help_ in TRAIN_FLAGS.items()]
    signature = inspect.signature(fn, eval_str=True)  # Typer reads __signature__ as it is
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in signature.parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    fn.__signature__ = signature.replace(parameters=[*own[:2], *flags, *own[2:]])  # type: ignore[attr-defined]
    return fn


@command("train")
@_with_setting_flags
def train_cmd(
    data: DataDirs,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/train"),
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
    **settings: Any,
) -> None:
    """Train a twin encoder on speaker-labelled audio.

    Keeps the best checkpoint (best.safetensors) and the last one in the run folder.
    """
    from speakerid.lab import distributed as ddp
    from speakerid.lab.config import TrainConfig
    from speakerid.lab.train import train

    if distributed and not ddp.launched():
        fail(f"--distributed: start the command under torchrun: {ddp.TORCHRUN_LINE}")
    given = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in settings.items()
        if value is not None  # not given: the config's default
    }
    data_dirs = tuple(str(d) for d in data)
    cfg = TrainConfig.from_flat(data_dirs, out=str(out_dir), resume=resume, **given)
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
    """Fit a WCCN back-end and write a whitened checkpoint.

    The back-end is fitted on the checkpoint's training speakers.
    DATA must hold the corpora the checkpoint was trained on (its recorded split names the
    speakers). The threshold is reset to the validation speakers' fragment EER point (or
    left uncalibrated when the checkpoint has no validation speakers).
    """
    from speakerid.embedding.backends.torch import load_model
    from speakerid.encoders.twin import save_encoder
    from speakerid.lab.whiten import WHITEN_SHRINKAGE, fit_whitening

    output_target(out_path)  # a directory, FIFO or device is refused before the slow part
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
    with replacing(out_path) as tmp:
        save_encoder(encoder, tmp, threshold=threshold, info=info)
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
    """Score a model on unseen speakers: k-way accuracy, EER, plots.

    Baselines and the --compare checkpoints are scored on the same tasks.
    """
    from speakerid.embedding.backends.torch import load_model
    from speakerid.lab.evaluate import evaluate_model

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
    out.print(_kway_table(report))
    ver = report["verification_fragments"]
    out.print(
        f"fragment EER {ver['eer']:.4f} at score {ver['eer_threshold']:.4f}, "
        f"minDCF(0.01) {ver['min_dcf']:.4f}; report and plots in {out_dir}"
    )


def _kway_table(report: dict[str, Any]) -> Table:
    """1-shot k-way accuracy at a few k: the model, the compared ones, the baselines."""
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
    return table


# ---------------------------------------------------------------- calibration


CalibrationData = Annotated[
    list[Path],
    typer.Argument(
        help="Labelled recordings from your domain: DIR/<speaker>/*.wav|flac or "
        "DIR/<speaker>/<chapter>/*.flac; 4+ speakers, most with 2+ recordings.",
        metavar="DATA...",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    str, typer.Option("--target", help="1:1 operating point: eer, or far (with --far).")
]
FarOpt = Annotated[
    float | None,
    _opt(
        "False-accept rate to set the 1:1 threshold for (e.g. 0.01); implies --target far.",
        "--far",
    ),
]
FpirOpt = Annotated[
    float,
    typer.Option(
        "--fpir",
        help="Share of strangers identify may name as someone enrolled, at the store's "
        "current size: sets the 1:N threshold.",
    ),
]
NormOpt = Annotated[
    str, typer.Option("--norm", help="Scores to calibrate: none (cosine) | asnorm.")
]
CohortOpt = Annotated[
    str,
    typer.Option(
        "--cohort",
        help="AS-norm cohort: auto (the model's if it ships one) | model | store (the "
        "enrolled speakers).",
    ),
]
EnrollSizeOpt = Annotated[
    int, typer.Option("--enroll-size", min=1, help="Recordings pooled per trial model.")
]
PlotOpt = Annotated[
    Path | None, _opt("Write score histograms and a DET curve to this PNG.", "--plot")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Report only; leave the store as it is.")
]


@command("calibrate")
def calibrate_cmd(
    data: CalibrationData,
    target: TargetOpt = "eer",
    far: FarOpt = None,
    fpir: FpirOpt = 0.05,
    norm: NormOpt = "none",
    cohort: CohortOpt = "auto",
    enroll_size: EnrollSizeOpt = 3,
    plot: PlotOpt = None,
    dry_run: DryRunOpt = False,
    seed: Annotated[int, typer.Option(help="Seed of the trial models' recordings.")] = 0,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    vad: VadOpt = None,
    store: StoreOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Calibrate the store's decisions on recordings of your domain.

    Scores every same- and different-speaker trial (one recording against a model pooled
    from 1 and from --enroll-size others, as verify does), reports EER, minDCF and the score
    distributions, and writes into the store its decision calibration: the model's, refitted
    on these trials (or only shifted to their level when they are few), reported per length
    of test speech and enrollment size. verify and identify then hold their --far there. The
    fixed thresholds of --target (1:1) and --fpir (1:N) are written too; they decide for
    --norm asnorm, where scores are not cosines.
    """
    from speakerid.decision.calibrate import calibrate
    from speakerid.recognition import check_root
    from speakerid.store.speakers import SpeakerStore

    if plot is not None:  # before the embedding, not after it
        require("matplotlib", "--plot", PLOT_EXTRA)
    if target not in ("eer", "far"):
        fail(f"unknown --target {target!r}; one of ['eer', 'far']")
    if target == "far" and far is None:
        fail("--target far needs --far RATE (e.g. --far 0.01)")
    # --far alone implies --target far: the rate given is always the one to calibrate for
    if plot is not None:
        output_target(plot)  # refused before the store is written, not after
    for root in data:
        check_root(root)  # a mistyped folder costs no model load
    with SpeakerStore(store) as db:
        # torch (calibrate has no --backend), once the store opened: a bad one costs no load
        embedder = load_embedder(model, precision, vad=vad, store=db)
        with progress_bar() as progress:
            task = progress.add_task("embedding", total=None)

            def on_file(speaker: str, done: int, total: int) -> None:
                shown_as = shown_markup(speaker)
                progress.update(task, completed=done, total=total, description=shown_as)

            report = calibrate(
                db,
                embedder,
                data,
                far=far,
                fpir=fpir,
                norm=norm,
                cohort=cohort,
                enroll_size=enroll_size,
                seed=seed,
                dry_run=dry_run,
                on_file=on_file,
            )
    if plot is not None:
        _plot_calibration(report, plot)
    if json_:
        print_json({**report.as_dict(), "store": str(db.path), "plot": plot and str(plot)})
        return
    _print_calibration(report)
    where = shown_markup(db.path)
    out.print(f"written to {where}" if report.written else f"dry run: {where} unchanged")


def _plot_calibration(report: CalibrationReport, path: Path) -> None:
    """Score histograms with the thresholds drawn in, and the DET curve, into ``path``."""
    from speakerid.decision.plot import plot_calibration

    cal = report.calibration
    lines = {f"calibrated ({cal.target})": cal.threshold}
    if report.model_threshold is not None and cal.norm == "none":
        lines = {"model": report.model_threshold, **lines}
    plot_calibration(
        report.trials,
        lines,
        path,
        "AS-norm score" if cal.norm == "asnorm" else "cosine",
        report.decided,
    )


def _print_calibration(report: CalibrationReport) -> None:
    """The score distributions, error rates and thresholds set, and any notes."""
    cal = report.calibration
    for item in report.skipped:
        err.print(f"skipped: {shown(item.error)}", style="yellow", markup=False, soft_wrap=True)
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
    if report.conditions:
        _print_conditions(report.conditions, cal.decision)
    for note in report.notes:
        err.print(f"note: {shown(note)}", style="yellow", markup=False, soft_wrap=True)


def _print_conditions(rows: list[dict[str, Any]], decision: dict[str, Any] | None) -> None:
    """The store's decision calibration per condition, on the calibration trials."""
    method = (decision or {}).get("method", "fit")
    how = {"refit": "refitted on", "shift": "shifted to", "fit": "fitted on"}[method]
    table = Table(
        title=f"decisions at {100 * DEFAULT_FAR:g}% false accepts, {how} these recordings "
        "(measured on the same trials)"
    )
    for col in ("test speech", "enrolled", "trials", "FAR", "FRR", "actDCF", "minDCF", "Cllr",
                "minCllr"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        if "far" not in r:
            continue
        table.add_row(
            r["test_speech"],
            str(r["enroll_recordings"]),
            f"{r['n_target']}/{r['n_nontarget']}",
            f"{100 * r['far']:.1f}%",
            f"{100 * r['frr']:.1f}%",
            f"{r['act_dcf']:.3f}",
            f"{r['min_dcf']:.3f}",
            f"{r['cllr']:.3f}",
            f"{r['min_cllr']:.3f}",
        )
    out.print(table)
    out.print(
        "verify and identify now decide with this calibration (--far picks another rate)",
        soft_wrap=True,
    )
