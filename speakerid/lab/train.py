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
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from speakerid.encoders.twin import Encoder, ModelConfig, save_encoder
from speakerid.errors import CheckpointError, DataError
from speakerid.lab import distributed
from speakerid.lab.data import (
    AudioBank,
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


@dataclass(frozen=True)
class TrainConfig:
    """A training run. CLI flags of ``speakerid train`` carry these field names."""

    data: tuple[str, ...]  # corpus roots: LibriSpeech subset folders or <root>/<speaker>/ trees
    out: str = "runs/train"  # run folder: best.safetensors, last.pt, history.json, plots
    objective: str = "aam"  # bce | aam | distill
    frontend: str = "fbank"  # see ModelConfig
    arch: str = "ecapa_lite"
    embedding_dim: int = 192
    channels: int = 192
    distance: str = "euclidean"  # pair distance of the bce head: euclidean | cosine | l1
    steps: int = 2000  # optimiser steps
    batch_size: int = 64  # fragments (aam/distill) or pairs (bce) per step
    lr: float = 1e-3
    optimizer: str = "radam"  # radam (the case study's) | adamw
    weight_decay: float = 1e-4
    aam_margin: float = 0.2
    aam_scale: float = 30.0
    aam_weight: float = 0.0  # distill only: weight of an extra AAM term
    relation_weight: float = 0.0  # distill only: weight of matching the batch's cosine matrix
    speed_min: float = 0.9  # speed perturbation range (with augment); for distillation a wide
    speed_max: float = 1.1  # range makes new voices the teacher labels, so it may be wider
    n_mels: int = 80  # see ModelConfig (fbank, kaldi_fbank)
    n_mfcc: int = 32  # see ModelConfig (mfcc)
    stem_stride: int = 2  # see ModelConfig
    lstm_layers: int = 3  # see ModelConfig (lstm body)
    windows: int = 1  # see ModelConfig (lstm body)
    teacher: str = "ge2e"  # distill: ge2e, or a speakerid model (name or checkpoint path)
    teacher_pool: int = 8192  # distill, speakerid teacher: clean crops it labels once
    teacher_windows: int = 0  # distill, ge2e: equal windows the teacher reads; 0: partials
    spec_augment: bool = False  # mask random bands and frame spans of the features (training)
    mix_prob: float = 0.0  # distill: share of fragments overlaid with another at 0-10 dB
    init_teacher: bool = False  # distill, lstm body: start from the teacher's weights
    init_from: str = ""  # start from this speakerid checkpoint (same model settings)
    select_on: str = "accuracy"  # best checkpoint by: accuracy (k-way, then EER) | distill
    test_speakers: int = 40  # held out, never seen in training (the case study: 40)
    val_speakers: int = 0  # held out for model selection; 0 = validate on the test speakers
    train_speakers: int = 0  # 0 = every speaker not held out (the case study: 80)
    holdout_prefix: str = ""  # hold out only speakers whose id starts with this ("" = any)
    val_every: int = 200  # steps between validations
    val_ways: tuple[int, ...] = (4, 10, 40)  # 1-shot k-way tasks reported at validation
    val_trials: int = 1000
    augment: bool = True  # gain, reverb, noise on the fly, and speed perturbation
    seed: int = 0
    device: str = ""  # "" = cuda when available, else cpu
    amp: bool = True  # bf16 autocast on CUDA
    resume: bool = False  # continue from out/last.pt
    max_minutes: float = 0.0  # stop early (validating and saving) after this long; 0 = never

    def model_config(self) -> ModelConfig:
        """The encoder this run trains. Two ``ModelConfig`` fields are not the run's to set:
        ``whiten`` (the back-end is fitted afterwards, by ``speakerid whiten``) and
        ``fragment_samples`` (every fragment is ``audio.FRAGMENT_SAMPLES`` long)."""
        return ModelConfig(
            frontend=self.frontend,
            arch=self.arch,
            embedding_dim=self.embedding_dim,
            channels=self.channels,
            n_mels=self.n_mels,
            n_mfcc=self.n_mfcc,
            stem_stride=self.stem_stride,
            lstm_layers=self.lstm_layers,
            windows=self.windows,
        )


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
    if cfg.objective not in OBJECTIVES:
        raise DataError(f"unknown objective {cfg.objective!r}; one of {list(OBJECTIVES)}")
    if cfg.optimizer not in ("radam", "adamw"):
        raise DataError(f"unknown optimizer {cfg.optimizer!r}; radam or adamw")
    if cfg.distance not in DISTANCES:
        raise DataError(f"unknown distance {cfg.distance!r}; one of {list(DISTANCES)}")
    if cfg.select_on not in SELECT_ON:
        raise DataError(f"unknown select_on {cfg.select_on!r}; one of {list(SELECT_ON)}")
    if cfg.select_on == "distill" and cfg.objective != "distill":
        raise DataError("select_on distill needs the distill objective")
    if cfg.windows < 1 or cfg.teacher_windows < 0:
        raise DataError("windows must be at least 1 and teacher_windows at least 0")
    if cfg.init_from and cfg.init_teacher:
        raise DataError("init_from and init_teacher both set the starting weights; pick one")
    if cfg.teacher != "ge2e":
        if cfg.objective != "distill":
            raise DataError(f"teacher {cfg.teacher!r} needs the distill objective")
        if cfg.init_teacher:
            raise DataError("init_teacher starts from GE2E's weights: it needs teacher ge2e")
        if cfg.mix_prob > 0:
            raise DataError("mix_prob needs teacher ge2e: a pool teacher labels only its crops")
    device = _device(cfg)
    ranks = distributed.setup(device.type)
    try:
        return _train(cfg, console, ranks, device)
    finally:
        distributed.teardown(ranks)


def _train(
    cfg: TrainConfig, console: Console, ranks: distributed.Ranks, device: torch.device
) -> dict[str, Any]:
    """``train``'s loop, on one process or as one rank of a torchrun job (``distributed``)."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if ranks.distributed and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
    if not ranks.main:
        console = Console(quiet=True)  # rank 0 reports for the job
    step_cfg = replace(cfg, batch_size=distributed.share(cfg.batch_size, ranks))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    recordings = scan_corpora(cfg.data)
    split = split_speakers(
        recordings,
        n_test=cfg.test_speakers,
        n_val=cfg.val_speakers,
        n_train=cfg.train_speakers,
        seed=cfg.seed,
        holdout_prefix=cfg.holdout_prefix or None,
    )
    val_names = split.val or split.test
    train_bank = AudioBank.load(recordings, list(split.train))
    val_frags = fragment_set(AudioBank.load(recordings, list(val_names)), max_per_speaker=40)
    console.print(
        f"[bold]train[/] {len(train_bank)} speakers, {train_bank.seconds / 60:.1f} min | "
        f"[bold]{'val' if split.val else 'test (used for validation)'}[/] "
        f"{len(val_names)} speakers, {len(val_frags)} fragments | device {device}"
    )

    encoder = Encoder(cfg.model_config()).to(device)
    speed = (cfg.speed_min, cfg.speed_max) if cfg.augment else None
    seed = distributed.rank_seed(cfg.seed, ranks)  # cfg.seed on rank 0 and on one process
    pool = None
    if cfg.objective == "distill" and cfg.teacher != "ge2e":
        pool = TeacherPool.build(
            train_bank, cfg.teacher, cfg.teacher_pool, seed, speed, out, console
        )
    heads = _build_heads(cfg, len(train_bank), device, pool.dim if pool else None)
    if cfg.init_teacher:
        if "teacher" not in heads:
            raise DataError("init_teacher needs the distill objective")
        from speakerid.encoders.pretrained import init_from_ge2e

        init_from_ge2e(encoder.body, heads["teacher"])
    if cfg.init_from:
        init_from_checkpoint(encoder, cfg.init_from)
    if pool is not None and isinstance(heads["project"], nn.Linear):
        fit_projection(heads["project"], encoder, pool, device)
    # The teacher's embeddings of the fixed validation fragments, computed once.
    val_targets = None
    if pool is not None:
        val_targets = pool.label(val_frags.waves)
    elif "teacher" in heads:
        val_targets = embed_teacher(heads["teacher"], val_frags, device)
    project = _projector(heads["project"], device) if "project" in heads else None
    params = list(encoder.parameters()) + [p for h in heads.values() for p in h.parameters()]
    opt_cls = torch.optim.RAdam if cfg.optimizer == "radam" else torch.optim.AdamW
    optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = pool or Sampler(train_bank, seed=seed, speed=speed)
    gen = torch.Generator(device=device).manual_seed(seed)
    history: list[dict[str, float]] = []
    best = -math.inf
    start = 0
    if cfg.resume and (out / "last.pt").is_file():
        start, best, history = _load_resume(out / "last.pt", encoder, heads, optimizer)
        sampler.rng = np.random.default_rng(seed + start)
        console.print(f"resumed at step {start}")

    step_fn = _STEPS[cfg.objective]
    if ranks.distributed:  # one DDP module runs the step, so its backward averages gradients
        ddp = DistributedDataParallel(
            _Step(step_fn, step_cfg, encoder, heads),
            device_ids=[device.index] if device.type == "cuda" else None,
        )
        step_fn = lambda _cfg, _enc, _heads, *rest: ddp(*rest)  # noqa: E731
    autocast = device.type == "cuda" and cfg.amp
    encoder.train()
    columns = (
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    t0 = time.time()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("training", total=cfg.steps, completed=start, status="")
        running: list[float] = []
        for step in range(start, cfg.steps):
            elapsed = time.time() - t0
            if cfg.max_minutes > 0:  # the schedule follows rank 0's clock on every rank
                elapsed = distributed.from_main(elapsed, ranks, device)
            _set_lr(optimizer, cfg, step, elapsed)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, metrics = step_fn(step_cfg, encoder, heads, sampler, gen, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            running.append(loss.item())
            done = step + 1
            out_of_time = cfg.max_minutes > 0 and time.time() - t0 > 60 * cfg.max_minutes
            if cfg.max_minutes > 0:  # every rank stops at rank 0's step
                out_of_time = bool(distributed.from_main(float(out_of_time), ranks, device))
            validating = done % cfg.val_every == 0 or done == cfg.steps or out_of_time
            if validating and not ranks.main:
                running = []
            elif validating:
                val = validate(
                    encoder, val_frags, device, cfg.val_ways, cfg.val_trials, val_targets, project
                )
                record = {"step": done, "loss": float(np.mean(running)), **metrics, **val}
                record["seconds"] = round(time.time() - t0, 1)
                history.append(record)
                running = []
                key = selection_key(val, cfg.select_on)
                if key > best:
                    best = key
                    save_encoder(
                        encoder,
                        out / "best.safetensors",
                        threshold=val["threshold"],
                        info=_info(cfg, split, done, val),
                    )
                _save_resume(out / "last.pt", done, best, history, encoder, heads, optimizer)
                shown = " ".join(f"{k} {v:.3f}" for k, v in val.items() if k != "threshold")
                progress.update(task, status=f"loss {record['loss']:.3f} | {shown}")
            progress.update(task, completed=done)
            if out_of_time:
                console.print(f"[yellow]stopped at step {done}: max_minutes reached[/]")
                break

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
            encoder,
            out / "final.safetensors",
            threshold=last["threshold"],
            info=_info(cfg, split, int(last["step"]), val),
        )
    summary = {
        "best": str(out / "best.safetensors"),
        "final": str(out / "final.safetensors"),
        "history": history[-1] if history else {},
        "split": split.as_dict(),
        "seconds": round(time.time() - t0, 1),
    }
    if ranks.distributed:  # a collective: every rank takes part
        summary["world_size"] = ranks.world
        summary["ranks_in_sync"] = distributed.in_sync(encoder, ranks, device)
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
    progress = step / cfg.steps
    if cfg.max_minutes > 0:
        progress = max(progress, elapsed / (60 * cfg.max_minutes))
    warm = min(1.0, (progress + 1e-9) / 0.05)
    lr = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    for group in optimizer.param_groups:
        group["lr"] = lr


def _info(cfg: TrainConfig, split: Split, step: int, val: dict[str, float]) -> dict[str, Any]:
    conf = asdict(cfg)
    conf["data"] = [str(d) for d in cfg.data]
    return {"train_config": conf, "split": split.as_dict(), "step": step, "validation": val}


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
    dim = cfg.embedding_dim
    heads: dict[str, nn.Module] = {}
    if cfg.objective == "bce":
        heads["pair"] = PairBCEHead(cfg.distance)
    if cfg.objective == "aam" or (cfg.objective == "distill" and cfg.aam_weight > 0):
        heads["aam"] = AAMHead(dim, n_speakers, cfg.aam_margin, cfg.aam_scale)
    if pool_dim is not None:  # the teacher's labels are in the pool; only the projection here
        heads["project"] = nn.Identity() if dim == pool_dim else nn.Linear(dim, pool_dim)
    elif cfg.objective == "distill":
        from speakerid.encoders.pretrained import GE2E, GE2E_DIM

        heads["teacher"] = GE2E(windows=cfg.teacher_windows)
        # Same size as the teacher: distil straight into the embedding, so that the shipped
        # encoder's own cosine geometry is the one trained; otherwise through a projection.
        heads["project"] = nn.Identity() if dim == GE2E_DIM else nn.Linear(dim, GE2E_DIM)
    return {k: v.to(device) for k, v in heads.items()}


def _to(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(x).to(device, non_blocking=True)


def _bce_step(cfg, encoder, heads, sampler, gen, device):
    a, b, same = sampler.pairs(cfg.batch_size)
    wav = _to(np.concatenate([a, b]), device)
    if cfg.augment:
        wav = augment(wav, gen)
    emb = _encode(cfg, encoder, wav, gen).float()
    logits = heads["pair"](emb[: len(a)], emb[len(a) :])
    target = _to(same, device)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    acc = ((logits > 0).float() == target).float().mean()
    return loss, {"pair_acc": acc.item()}


def _encode(cfg: TrainConfig, encoder: Encoder, wav: torch.Tensor, gen: torch.Generator):
    """The encoder's forward, with feature masking in between when asked for."""
    if not cfg.spec_augment:
        return encoder(wav)
    return encoder.body(spec_augment(encoder.frontend(wav), gen))


def _aam_step(cfg, encoder, heads, sampler, gen, device):
    waves, labels = sampler.classes(cfg.batch_size)
    wav = _to(waves, device)
    if cfg.augment:
        wav = augment(wav, gen)
    loss = heads["aam"](_encode(cfg, encoder, wav, gen), _to(labels, device))
    return loss, {}


def _distill_step(cfg, encoder, heads, sampler, gen, device):
    if isinstance(sampler, TeacherPool):  # labelled once, ahead of training
        waves, labels, targets = sampler.draw(cfg.batch_size)
        clean, target = _to(waves, device), _to(targets, device)
    else:
        clean, labels, target = _ge2e_targets(cfg, heads, sampler, gen, device)
    wav = augment(clean, gen) if cfg.augment else clean
    emb = _encode(cfg, encoder, wav, gen)
    pred = F.normalize(heads["project"](emb.float()), dim=-1)
    distill = (1.0 - (pred * target).sum(dim=-1)).mean()
    metrics = {"distill": distill.item()}
    loss = distill
    if cfg.relation_weight > 0:
        off = ~torch.eye(len(pred), dtype=torch.bool, device=pred.device)
        relation = ((pred @ pred.T - target @ target.T)[off] ** 2).mean()
        loss = loss + cfg.relation_weight * relation
        metrics["relation"] = relation.item()
    if "aam" in heads:
        aam = heads["aam"](emb, _to(labels, device))
        loss = loss + cfg.aam_weight * aam
        metrics["aam"] = aam.item()
    return loss, metrics


def _ge2e_targets(cfg, heads, sampler, gen, device):
    """A fresh batch, optionally overlaid with other voices, and GE2E's embeddings of it."""
    waves, labels = sampler.classes(cfg.batch_size)
    clean = _to(waves, device)
    if cfg.mix_prob > 0:  # overlay another voice: new inputs for the teacher to label
        snr = torch.rand(len(clean), 1, generator=gen, device=device) * 10
        other = clean.roll(1, dims=0)
        gain = clean.norm(dim=1, keepdim=True) / other.norm(dim=1, keepdim=True).clamp_min(1e-8)
        mixed = clean + other * gain * torch.pow(10.0, -snr / 20)
        chosen = torch.rand(len(clean), 1, generator=gen, device=device) < cfg.mix_prob
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


def config_from_overrides(data: tuple[str, ...], **overrides: Any) -> TrainConfig:
    """TrainConfig from CLI values, ignoring ``None`` (an option the user did not give)."""
    known = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in overrides.items() if v is not None and k in known}
    return replace(TrainConfig(data=data), **given)
