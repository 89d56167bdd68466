"""train, whiten, evaluate and calibrate: the lab beside the runtime.

Their heavy modules (torch, training, evaluation, plotting) are imported inside each command,
so that loading this module for ``--help`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from speakerid.cli.common import (
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    StoreOpt,
    command,
    err,
    fail,
    out,
    print_json,
    progress_bar,
    shown,
    shown_markup,
)
from speakerid.decision.model import DEFAULT_FAR
from speakerid.embedding.backends.torch import load_model
from speakerid.embedding.pipeline import open_embedder
from speakerid.errors import PLOT_EXTRA, require
from speakerid.outputs import output_target, replacing
from speakerid.store.speakers import SpeakerStore

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
        str | None,
        _opt("raw | mfcc | fbank | kaldi_fbank | powermel | ge2e | vggish.", "--frontend"),
    ] = None,
    arch: Annotated[
        str | None, _opt("cnn1d | cnn2d | ecapa_lite | lstm | campp.", "--arch")
    ] = None,
    embedding_dim: Annotated[int | None, _opt("Embedding size.", "--embedding-dim")] = None,
    channels: Annotated[int | None, _opt("Width of the encoder body.", "--channels")] = None,
    n_mels: Annotated[int | None, _opt("fbank, kaldi_fbank: mel bands.", "--n-mels")] = None,
    n_mfcc: Annotated[int | None, _opt("mfcc: coefficients.", "--n-mfcc")] = None,
    stem_stride: Annotated[
        int | None, _opt("ecapa_lite stem stride; powermel frames per step.", "--stem-stride")
    ] = None,
    lstm_layers: Annotated[int | None, _opt("lstm: recurrent layers.", "--lstm-layers")] = None,
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
    from speakerid.lab import distributed as ddp
    from speakerid.lab.train import config_from_overrides, train

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
    """Evaluate a model on unseen speakers: k-way accuracy, baselines, EER, plots."""
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
    """Calibrate the store's decisions on labelled recordings of your own domain.

    Scores every same- and different-speaker trial (one recording against a model pooled
    from 1 and from --enroll-size others, as verify does), reports EER, minDCF and the score
    distributions, and writes into the store its decision calibration: the model's, refitted
    on these trials (or only shifted to their level when they are few), reported per length
    of test speech and enrollment size. verify and identify then hold their --far there. The
    fixed thresholds of --target (1:1) and --fpir (1:N) are written too; they decide for
    --norm asnorm, where scores are not cosines.
    """
    from speakerid.decision.calibrate import calibrate

    if plot is not None:  # before the embedding, not after it
        require("matplotlib", "--plot", PLOT_EXTRA)
    if target not in ("eer", "far"):
        fail(f"unknown --target {target!r}; one of ['eer', 'far']")
    if target == "far" and far is None:
        fail("--target far needs --far RATE (e.g. --far 0.01)")
    if target == "eer" and far is not None:
        target = "far"
    if plot is not None:
        output_target(plot)  # refused before the store is written, not after
    embedder = open_embedder(
        model, None, precision
    )  # the torch backend: calibrate has no --backend
    with (
        SpeakerStore(store) as db,
        progress_bar() as progress,
    ):
        task = progress.add_task("embedding", total=None)

        def on_file(speaker: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=shown_markup(speaker))

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
        from speakerid.decision.plot import plot_calibration

        lines = {f"calibrated ({cal.target})": cal.threshold}
        if report.model_threshold is not None and cal.norm == "none":
            lines = {"model": report.model_threshold, **lines}
        plot_calibration(
            report.trials,
            lines,
            plot,
            "AS-norm score" if cal.norm == "asnorm" else "cosine",
            report.decided,
        )
    if json_:
        print_json({**report.as_dict(), "store": str(db.path), "plot": plot and str(plot)})
        return
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
    where = shown_markup(db.path)
    out.print(f"written to {where}" if report.written else f"dry run: {where} unchanged")


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
