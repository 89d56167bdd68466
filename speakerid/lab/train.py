"""Training the twin encoder: objectives, the loop, checkpoints (validation is ``validation``).

Objectives (their heads and distances are in ``losses``, never in the shipped encoder):

- ``bce``: the case study's. Balanced same/different pairs go through the twin encoder;
  a distance (euclidean, cosine or l1) between the two embeddings is mapped to a
  same-speaker logit by a learned affine head and trained with binary cross-entropy.
- ``aam``: additive angular margin softmax (ArcFace/AAM) over the training speakers.
- ``distill``: cosine distance to a frozen teacher's embedding of the clean fragment
  (Resemblyzer's GE2E, the ``ge2e`` extra, run on every batch; or a speakerid model such as
  ``accurate``, which labels a fixed pool of crops once, ``teachers.TeacherPool``), the
  student seeing the augmented fragment, plus ``aam_weight`` times the AAM loss when
  ``aam_weight > 0``. An ``lstm`` student may start from GE2E's own weights
  (``init_teacher``), read at a coarser frame rate.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from speakerid.audio import FRAGMENT_SAMPLES
from speakerid.encoders.twin import Encoder, save_encoder
from speakerid.errors import CheckpointError, DataError
from speakerid.lab import distributed
from speakerid.lab.config import TrainConfig
from speakerid.lab.data import (
    AudioBank,
    FragmentSet,
    Sampler,
    Split,
    augment,
    fragment_set,
    scan_corpora,
    spec_augment,
    split_speakers,
)
from speakerid.lab.losses import DISTANCES, AAMHead, PairBCEHead
from speakerid.lab.teachers import TeacherPool
from speakerid.lab.validation import embed_teacher, raw_embeddings, selection_key, validate

OBJECTIVES = ("bce", "aam", "distill")
SELECT_ON = ("accuracy", "distill")


# ---------------------------------------------------------------- the loop


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def init_from_checkpoint(encoder: Encoder, path: str | Path) -> None:
    """Copy a speakerid checkpoint's weights into ``encoder``; its settings must be the same.

    The one setting allowed to differ is ``whiten``: a whitened checkpoint (a shipped model)
    starts a run without the back-end, which ``speakerid whiten`` fits again afterwards. Its
    front-end and body are still loaded strictly; only the whitening is left out.
    """
    from speakerid.encoders.twin import load_encoder

    loaded = load_encoder(path)
    if replace(loaded.encoder.config, whiten=encoder.config.whiten) != encoder.config:
        raise CheckpointError(
            f"{path}: its model settings differ from this run's "
            f"({loaded.encoder.config} vs {encoder.config})"
        )
    state = {k: v for k, v in loaded.encoder.state_dict().items() if not k.startswith("whitening.")}
    if encoder.whitening is not None:  # the run's back-end starts as the identity
        state.update({f"whitening.{k}": v for k, v in encoder.whitening.state_dict().items()})
    encoder.load_state_dict(state, strict=True)


PROJECTION_FIT_CROPS = 2048  # pool crops the starting projection is fitted on


def _projector(head: nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """The run's student-to-teacher projection as a numpy function, for validation."""

    def run(raw: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head(torch.from_numpy(raw).to(device)).float().cpu().numpy()

    return run


def fit_projection(
    project: nn.Linear, encoder: Encoder, pool: TeacherPool, device: torch.device
) -> None:
    """Start the student-to-teacher projection at the least-squares map of the pool.

    A student that starts from trained weights (``init_from``) would otherwise send the
    gradients of a random projection through its body in the first steps, undoing what it
    knew; fitted, the projection starts where the student's embeddings already point.
    """
    n = min(len(pool.waves), PROJECTION_FIT_CROPS)
    student = raw_embeddings(encoder, pool.waves[:n], device)  # what the projection is given
    x = np.hstack([student, np.ones((n, 1), np.float32)]).astype(np.float64)
    solution, *_ = np.linalg.lstsq(x, pool.targets[:n].astype(np.float64), rcond=None)
    with torch.no_grad():
        project.weight.copy_(torch.from_numpy(solution[:-1].T).float())
        project.bias.copy_(torch.from_numpy(solution[-1]).float())


def train(cfg: TrainConfig, console: Console | None = None) -> dict[str, Any]:
    """Run training; returns the summary written to ``out/summary.json``.

    Writes ``best.safetensors`` (the encoder alone, threshold calibrated at the validation
    EER point), ``final.safetensors`` (the same for the encoder where the run ended: the
    choice when the selection metric saturates), ``last.pt`` (resume state, loaded with
    ``weights_only=True``), ``history.json`` and ``training_curves.png``.
    """
    console = console or Console(stderr=True)
    _check(cfg)
    device = _device(cfg)
    ranks = distributed.setup(device.type)
    try:
        return _train(cfg, console, ranks, device)
    finally:
        distributed.teardown(ranks)


def _check(cfg: TrainConfig) -> None:
    """Refuse unknown choices and settings that contradict each other, before any work."""
    loss, distill, model = cfg.loss, cfg.distill, cfg.model
    if loss.objective not in OBJECTIVES:
        raise DataError(f"unknown objective {loss.objective!r}; one of {list(OBJECTIVES)}")
    if cfg.optim.optimizer not in ("radam", "adamw"):
        raise DataError(f"unknown optimizer {cfg.optim.optimizer!r}; radam or adamw")
    if loss.distance not in DISTANCES:
        raise DataError(f"unknown distance {loss.distance!r}; one of {list(DISTANCES)}")
    select_on = cfg.validation.select_on
    if select_on not in SELECT_ON:
        raise DataError(f"unknown select_on {select_on!r}; one of {list(SELECT_ON)}")
    if select_on == "distill" and loss.objective != "distill":
        raise DataError("select_on distill needs the distill objective")
    if model.whiten or model.fragment_samples != FRAGMENT_SAMPLES:
        raise DataError("a run trains on whole fragments without whitening (speakerid whiten)")
    if model.windows < 1 or distill.teacher_windows < 0:
        raise DataError("windows must be at least 1 and teacher_windows at least 0")
    if cfg.init_from and distill.init_teacher:
        raise DataError("init_from and init_teacher both set the starting weights; pick one")
    if distill.teacher != "ge2e":
        if loss.objective != "distill":
            raise DataError(f"teacher {distill.teacher!r} needs the distill objective")
        if distill.init_teacher:
            raise DataError("init_teacher starts from GE2E's weights: it needs teacher ge2e")
        if distill.mix_prob > 0:
            raise DataError("mix_prob needs teacher ge2e: a pool teacher labels only its crops")


@dataclass
class _Run:
    """A run's parts, built once by ``_build``, and where its loop stands."""

    cfg: TrainConfig
    step_cfg: TrainConfig  # cfg with this rank's share of the batch
    out: Path
    split: Split
    val_frags: FragmentSet  # the fixed validation fragments
    val_targets: np.ndarray | None  # the teacher's embeddings of them (distill)
    project: Callable[[np.ndarray], np.ndarray] | None  # student-to-teacher, for validation
    encoder: Encoder
    heads: dict[str, nn.Module]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    sampler: Sampler | TeacherPool
    gen: torch.Generator
    seed: int  # this rank's seed
    device: torch.device
    ranks: distributed.Ranks
    console: Console
    start: int = 0  # the step to start at (a resumed run's)
    best: float = -math.inf  # the best selection key so far
    history: list[dict[str, float]] = field(default_factory=list)


def _train(
    cfg: TrainConfig, console: Console, ranks: distributed.Ranks, device: torch.device
) -> dict[str, Any]:
    """``train``'s work, on one process or as one rank of a torchrun job (``distributed``)."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if ranks.distributed and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
    if not ranks.main:
        console = Console(quiet=True)  # rank 0 reports for the job
    run = _build(cfg, console, ranks, device)
    if cfg.resume and (run.out / "last.pt").is_file():
        run.start, run.best, run.history = _load_resume(
            run.out / "last.pt", run.encoder, run.heads, run.optimizer
        )
        run.sampler.rng = np.random.default_rng(run.seed + run.start)
        console.print(f"resumed at step {run.start}")
    step_fn = _step_function(run)
    run.encoder.train()
    t0 = time.time()
    _loop(run, step_fn, t0)
    return _finish(run, t0)


def _load_data(
    cfg: TrainConfig, console: Console, device: torch.device
) -> tuple[Split, AudioBank, FragmentSet]:
    """The speaker split, the training speakers' audio and the validation fragments."""
    recordings = scan_corpora(cfg.data)
    split = split_speakers(
        recordings,
        n_test=cfg.split.test_speakers,
        n_val=cfg.split.val_speakers,
        n_train=cfg.split.train_speakers,
        seed=cfg.seed,
        holdout_prefix=cfg.split.holdout_prefix or None,
    )
    val_names = split.val or split.test
    train_bank = AudioBank.load(recordings, list(split.train))
    val_frags = fragment_set(AudioBank.load(recordings, list(val_names)), max_per_speaker=40)
    console.print(
        f"[bold]train[/] {len(train_bank)} speakers, {train_bank.seconds / 60:.1f} min | "
        f"[bold]{'val' if split.val else 'test (used for validation)'}[/] "
        f"{len(val_names)} speakers, {len(val_frags)} fragments | device {device}"
    )
    return split, train_bank, val_frags


def _build(
    cfg: TrainConfig, console: Console, ranks: distributed.Ranks, device: torch.device
) -> _Run:
    """The data, the encoder and heads at their starting weights, optimiser and sampler."""
    share = distributed.share(cfg.optim.batch_size, ranks)
    step_cfg = replace(cfg, optim=replace(cfg.optim, batch_size=share))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    split, train_bank, val_frags = _load_data(cfg, console, device)
    encoder = Encoder(cfg.model).to(device)
    aug = cfg.augmentation
    speed = (aug.speed_min, aug.speed_max) if aug.augment else None
    seed = distributed.rank_seed(cfg.seed, ranks)  # cfg.seed on rank 0 and on one process
    pool = None
    if cfg.loss.objective == "distill" and cfg.distill.teacher != "ge2e":
        pool = TeacherPool.build(
            train_bank, cfg.distill.teacher, cfg.distill.teacher_pool, seed, speed, out, console
        )
    heads = _build_heads(cfg, len(train_bank), device, pool.dim if pool else None)
    _starting_weights(cfg, encoder, heads, pool, device)
    # The teacher's embeddings of the fixed validation fragments, computed once.
    val_targets = None
    if pool is not None:
        val_targets = pool.label(val_frags.waves)
    elif "teacher" in heads:
        val_targets = embed_teacher(heads["teacher"], val_frags, device)
    params = list(encoder.parameters()) + [p for h in heads.values() for p in h.parameters()]
    opt_cls = torch.optim.RAdam if cfg.optim.optimizer == "radam" else torch.optim.AdamW
    return _Run(
        cfg=cfg,
        step_cfg=step_cfg,
        out=out,
        split=split,
        val_frags=val_frags,
        val_targets=val_targets,
        project=_projector(heads["project"], device) if "project" in heads else None,
        encoder=encoder,
        heads=heads,
        params=params,
        optimizer=opt_cls(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay),
        sampler=pool or Sampler(train_bank, seed=seed, speed=speed),
        gen=torch.Generator(device=device).manual_seed(seed),
        seed=seed,
        device=device,
        ranks=ranks,
        console=console,
    )


def _starting_weights(
    cfg: TrainConfig,
    encoder: Encoder,
    heads: dict[str, nn.Module],
    pool: TeacherPool | None,
    device: torch.device,
) -> None:
    """Start from GE2E's weights or a checkpoint's when asked, and fit the projection to a
    pool teacher (see ``fit_projection``)."""
    if cfg.distill.init_teacher:
        if "teacher" not in heads:
            raise DataError("init_teacher needs the distill objective")
        from speakerid.encoders.pretrained import init_from_ge2e

        init_from_ge2e(encoder.body, heads["teacher"])
    if cfg.init_from:
        init_from_checkpoint(encoder, cfg.init_from)
    if pool is not None and isinstance(heads["project"], nn.Linear):
        fit_projection(heads["project"], encoder, pool, device)


def _step_function(run: _Run) -> Callable[..., tuple[torch.Tensor, dict[str, float]]]:
    """The objective's step; under torchrun one DDP module runs it, so that its backward
    averages the gradients over the ranks."""
    step_fn = _STEPS[run.cfg.loss.objective]
    if not run.ranks.distributed:
        return step_fn
    device = run.device
    ddp = DistributedDataParallel(
        _Step(step_fn, run.step_cfg, run.encoder, run.heads),
        device_ids=[device.index] if device.type == "cuda" else None,
    )
    return lambda _cfg, _enc, _heads, *rest: ddp(*rest)


_COLUMNS = (
    TextColumn("[bold blue]{task.description}"),
    BarColumn(),
    TextColumn("{task.completed}/{task.total}"),
    TextColumn("{task.fields[status]}"),
    TimeElapsedColumn(),
    TimeRemainingColumn(),
)


def _loop(run: _Run, step_fn: Callable[..., Any], t0: float) -> None:
    """Optimise from ``run.start`` to the last step (or the time budget), validating and
    saving every ``val_every`` steps and at the end."""
    cfg = run.cfg
    with Progress(*_COLUMNS, console=run.console, transient=False) as progress:
        task = progress.add_task("training", total=cfg.optim.steps, completed=run.start, status="")
        running: list[float] = []
        for step in range(run.start, cfg.optim.steps):
            loss, metrics = _optimise(run, step_fn, step, t0)
            running.append(loss)
            done = step + 1
            out_of_time = _out_of_time(run, t0)
            validating = (
                done % cfg.validation.val_every == 0 or done == cfg.optim.steps or out_of_time
            )
            if validating and run.ranks.main:
                progress.update(task, status=_validate(run, done, running, metrics, t0))
            if validating:
                running = []
            progress.update(task, completed=done)
            if out_of_time:
                run.console.print(f"[yellow]stopped at step {done}: max_minutes reached[/]")
                break


def _optimise(
    run: _Run, step_fn: Callable[..., Any], step: int, t0: float
) -> tuple[float, dict[str, float]]:
    """One optimiser step at the scheduled learning rate; returns the loss and metrics."""
    elapsed = time.time() - t0
    if run.cfg.optim.max_minutes > 0:  # the schedule follows rank 0's clock on every rank
        elapsed = distributed.from_main(elapsed, run.ranks, run.device)
    _set_lr(run.optimizer, run.cfg, step, elapsed)
    autocast = run.device.type == "cuda" and run.cfg.amp
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss, metrics = step_fn(
            run.step_cfg, run.encoder, run.heads, run.sampler, run.gen, run.device
        )
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.params, 5.0)
    run.optimizer.step()
    return loss.item(), metrics


def _out_of_time(run: _Run, t0: float) -> bool:
    """Whether ``max_minutes`` is spent; every rank stops at rank 0's step."""
    minutes = run.cfg.optim.max_minutes
    if minutes <= 0:
        return False
    late = time.time() - t0 > 60 * minutes
    return bool(distributed.from_main(float(late), run.ranks, run.device))


def _validate(
    run: _Run, done: int, running: list[float], metrics: dict[str, float], t0: float
) -> str:
    """Validate after step ``done``, keep the best encoder and the resume state; returns
    the progress bar's status line."""
    settings = run.cfg.validation
    val = validate(
        run.encoder,
        run.val_frags,
        run.device,
        settings.val_ways,
        settings.val_trials,
        run.val_targets,
        run.project,
    )
    record = {"step": done, "loss": float(np.mean(running)), **metrics, **val}
    record["seconds"] = round(time.time() - t0, 1)
    run.history.append(record)
    key = selection_key(val, settings.select_on)
    if key > run.best:
        run.best = key
        save_encoder(
            run.encoder,
            run.out / "best.safetensors",
            threshold=val["threshold"],
            info=_info(run.cfg, run.split, done, val),
        )
    _save_resume(
        run.out / "last.pt", done, run.best, run.history, run.encoder, run.heads, run.optimizer
    )
    shown = " ".join(f"{k} {v:.3f}" for k, v in val.items() if k != "threshold")
    return f"loss {record['loss']:.3f} | {shown}"


def _finish(run: _Run, t0: float) -> dict[str, Any]:
    """Save the final encoder and write the run's history, curves and summary (rank 0)."""
    out, history, ranks = run.out, run.history, run.ranks
    if ranks.main and history:  # the encoder as the schedule left it, validated last
        last = history[-1]
        # validate's own numbers (k-way accuracies, eer, threshold, val_distill), not the
        # step's training losses recorded beside them
        val = {
            k: v
            for k, v in last.items()
            if k.startswith("acc") or k in ("eer", "threshold", "val_distill")
        }
        save_encoder(
            run.encoder,
            out / "final.safetensors",
            threshold=last["threshold"],
            info=_info(run.cfg, run.split, int(last["step"]), val),
        )
    summary = {
        "best": str(out / "best.safetensors"),
        "final": str(out / "final.safetensors"),
        "history": history[-1] if history else {},
        "split": run.split.as_dict(),
        "seconds": round(time.time() - t0, 1),
    }
    if ranks.distributed:  # a collective: every rank takes part
        summary["world_size"] = ranks.world
        summary["ranks_in_sync"] = distributed.in_sync(run.encoder, ranks, run.device)
    if not ranks.main:
        return {**summary, "rank": ranks.rank}
    (out / "history.json").write_text(json.dumps(history, indent=1))
    _plot_history(history, out / "training_curves.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


class _Step(nn.Module):
    """One training step's forward (the objective's loss) as a module, so that
    DistributedDataParallel can wrap the encoder and the heads together."""

    def __init__(self, step_fn: Callable[..., Any], cfg: TrainConfig, encoder, heads) -> None:
        super().__init__()
        self.step_fn, self.cfg = step_fn, cfg
        self.encoder, self.heads = encoder, nn.ModuleDict(heads)

    def forward(self, sampler: Sampler, gen: torch.Generator, device: torch.device):
        return self.step_fn(self.cfg, self.encoder, dict(self.heads), sampler, gen, device)


def _set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int, elapsed: float) -> None:
    """Linear warm-up over 5% then cosine decay to zero.

    Progress is the fraction of steps done, or of ``max_minutes`` spent when that is further
    along, so that a time-budgeted run still ends with a fully decayed learning rate.
    """
    progress = step / cfg.optim.steps
    if cfg.optim.max_minutes > 0:
        progress = max(progress, elapsed / (60 * cfg.optim.max_minutes))
    warm = min(1.0, (progress + 1e-9) / 0.05)
    lr = cfg.optim.lr * warm * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    for group in optimizer.param_groups:
        group["lr"] = lr


def _info(cfg: TrainConfig, split: Split, step: int, val: dict[str, float]) -> dict[str, Any]:
    return {"train_config": cfg.flat(), "split": split.as_dict(), "step": step, "validation": val}


def _plot_history(history: list[dict[str, float]], path: Path) -> None:
    if not history:
        return
    from speakerid.lab.plots import plot_training_curves

    plot_training_curves(history, path)


# ---------------------------------------------------------------- objectives


def _build_heads(
    cfg: TrainConfig, n_speakers: int, device: torch.device, pool_dim: int | None = None
) -> dict[str, nn.Module]:
    """The run's training-only modules; ``pool_dim``: a pool teacher's embedding size."""
    dim = cfg.model.embedding_dim
    heads: dict[str, nn.Module] = {}
    if cfg.loss.objective == "bce":
        heads["pair"] = PairBCEHead(cfg.loss.distance)
    if cfg.loss.objective == "aam" or (
        cfg.loss.objective == "distill" and cfg.distill.aam_weight > 0
    ):
        heads["aam"] = AAMHead(dim, n_speakers, cfg.loss.aam_margin, cfg.loss.aam_scale)
    if pool_dim is not None:  # the teacher's labels are in the pool; only the projection here
        heads["project"] = nn.Identity() if dim == pool_dim else nn.Linear(dim, pool_dim)
    elif cfg.loss.objective == "distill":
        from speakerid.encoders.pretrained import GE2E, GE2E_DIM

        heads["teacher"] = GE2E(windows=cfg.distill.teacher_windows)
        # Same size as the teacher: distil straight into the embedding, so that the shipped
        # encoder's own cosine geometry is the one trained; otherwise through a projection.
        heads["project"] = nn.Identity() if dim == GE2E_DIM else nn.Linear(dim, GE2E_DIM)
    return {k: v.to(device) for k, v in heads.items()}


def _to(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(x).to(device, non_blocking=True)


def _bce_step(cfg, encoder, heads, sampler, gen, device):
    a, b, same = sampler.pairs(cfg.optim.batch_size)
    wav = _to(np.concatenate([a, b]), device)
    if cfg.augmentation.augment:
        wav = augment(wav, gen)
    emb = _encode(cfg, encoder, wav, gen).float()
    logits = heads["pair"](emb[: len(a)], emb[len(a) :])
    target = _to(same, device)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    acc = ((logits > 0).float() == target).float().mean()
    return loss, {"pair_acc": acc.item()}


def _encode(cfg: TrainConfig, encoder: Encoder, wav: torch.Tensor, gen: torch.Generator):
    """The encoder's forward, with feature masking in between when asked for."""
    if not cfg.augmentation.spec_augment:
        return encoder(wav)
    return encoder.body(spec_augment(encoder.frontend(wav), gen))


def _aam_step(cfg, encoder, heads, sampler, gen, device):
    waves, labels = sampler.classes(cfg.optim.batch_size)
    wav = _to(waves, device)
    if cfg.augmentation.augment:
        wav = augment(wav, gen)
    loss = heads["aam"](_encode(cfg, encoder, wav, gen), _to(labels, device))
    return loss, {}


def _distill_step(cfg, encoder, heads, sampler, gen, device):
    if isinstance(sampler, TeacherPool):  # labelled once, ahead of training
        waves, labels, targets = sampler.draw(cfg.optim.batch_size)
        clean, target = _to(waves, device), _to(targets, device)
    else:
        clean, labels, target = _ge2e_targets(cfg, heads, sampler, gen, device)
    wav = augment(clean, gen) if cfg.augmentation.augment else clean
    emb = _encode(cfg, encoder, wav, gen)
    pred = F.normalize(heads["project"](emb.float()), dim=-1)
    distill = (1.0 - (pred * target).sum(dim=-1)).mean()
    metrics = {"distill": distill.item()}
    loss = distill
    if cfg.distill.relation_weight > 0:
        off = ~torch.eye(len(pred), dtype=torch.bool, device=pred.device)
        relation = ((pred @ pred.T - target @ target.T)[off] ** 2).mean()
        loss = loss + cfg.distill.relation_weight * relation
        metrics["relation"] = relation.item()
    if "aam" in heads:
        aam = heads["aam"](emb, _to(labels, device))
        loss = loss + cfg.distill.aam_weight * aam
        metrics["aam"] = aam.item()
    return loss, metrics


def _ge2e_targets(cfg, heads, sampler, gen, device):
    """A fresh batch, optionally overlaid with other voices, and GE2E's embeddings of it."""
    waves, labels = sampler.classes(cfg.optim.batch_size)
    clean = _to(waves, device)
    if cfg.distill.mix_prob > 0:  # overlay another voice: new inputs for the teacher to label
        snr = torch.rand(len(clean), 1, generator=gen, device=device) * 10
        other = clean.roll(1, dims=0)
        gain = clean.norm(dim=1, keepdim=True) / other.norm(dim=1, keepdim=True).clamp_min(1e-8)
        mixed = clean + other * gain * torch.pow(10.0, -snr / 20)
        chosen = torch.rand(len(clean), 1, generator=gen, device=device) < cfg.distill.mix_prob
        clean = torch.where(chosen, mixed, clean)
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        target = heads["teacher"].embed(clean.float())
    return clean, labels, target


_STEPS: dict[str, Callable[..., tuple[torch.Tensor, dict[str, float]]]] = {
    "bce": _bce_step,
    "aam": _aam_step,
    "distill": _distill_step,
}


# ---------------------------------------------------------------- resume state


def _trainable(heads: dict[str, nn.Module]) -> dict[str, nn.Module]:
    return {k: h for k, h in heads.items() if k != "teacher"}


def _save_resume(path, step, best, history, encoder, heads, optimizer) -> None:
    state = {
        "step": step,
        "best": best,
        "history": json.dumps(history),
        "encoder": encoder.state_dict(),
        "heads": {k: h.state_dict() for k, h in _trainable(heads).items()},
        "optimizer": optimizer.state_dict(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_resume(path, encoder, heads, optimizer):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        encoder.load_state_dict(state["encoder"], strict=True)
        for k, h in _trainable(heads).items():
            h.load_state_dict(state["heads"][k], strict=True)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, OSError, EOFError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: cannot resume from it ({reason})") from None
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: cannot resume from it (not a checkpoint)") from None
    return int(state["step"]), float(state["best"]), json.loads(state["history"])
