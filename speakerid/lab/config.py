"""The settings of a training run: ``TrainConfig`` and the groups it is made of.

A leaf module (no torch), so that the CLI can build a config without loading the lab.
Every setting is a flag of ``speakerid train`` named after its field (``--batch-size`` sets
``optim.batch_size``); field names are unique across the groups, so ``from_flat`` can route
a flag to its group, and ``flat`` lists a config the way a checkpoint records it.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from speakerid.encoders.config import ModelConfig

# ModelConfig fields a run does not set: the back-end is fitted afterwards (``speakerid
# whiten``) and every fragment is ``audio.FRAGMENT_SAMPLES`` long.
NOT_RUN_SETTINGS = ("whiten", "fragment_samples")


@dataclass(frozen=True)
class LossConfig:
    """The training objective and its head."""

    objective: str = "aam"  # bce | aam | distill
    distance: str = "euclidean"  # pair distance of the bce head: euclidean | cosine | l1
    aam_margin: float = 0.2
    aam_scale: float = 30.0


@dataclass(frozen=True)
class DistillConfig:
    """The distill objective: its teacher and the terms added to the distillation loss."""

    teacher: str = "ge2e"  # ge2e, or a speakerid model (name or checkpoint path)
    teacher_pool: int = 8192  # speakerid teacher: clean crops it labels once
    teacher_windows: int = 0  # ge2e: equal windows the teacher reads; 0: partials
    mix_prob: float = 0.0  # share of fragments overlaid with another at 0-10 dB
    init_teacher: bool = False  # lstm body: start from the teacher's weights
    aam_weight: float = 0.0  # weight of an extra AAM term
    relation_weight: float = 0.0  # weight of matching the batch's cosine matrix


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser and its schedule."""

    steps: int = 2000  # optimiser steps
    batch_size: int = 64  # fragments (aam/distill) or pairs (bce) per step
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "radam"  # radam (the case study's) | adamw
    weight_decay: float = 1e-4
    max_minutes: float = 0.0  # stop early (validating and saving) after this long; 0 = never


@dataclass(frozen=True)
class AugmentConfig:
    """What is done to the training audio and features on the fly."""

    augment: bool = True  # gain, reverb, noise on the fly, and speed perturbation
    speed_min: float = 0.9  # speed perturbation range (with augment); for distillation a wide
    speed_max: float = 1.1  # range makes new voices the teacher labels, so it may be wider
    spec_augment: bool = False  # mask random bands and frame spans of the features


@dataclass(frozen=True)
class SplitConfig:
    """Which speakers train, and which are held out."""

    test_speakers: int = 40  # held out, never seen in training (the case study: 40)
    val_speakers: int = 0  # held out for model selection; 0 = validate on the test speakers
    train_speakers: int = 0  # 0 = every speaker not held out (the case study: 80)
    holdout_prefix: str = ""  # hold out only speakers whose id starts with this ("" = any)


@dataclass(frozen=True)
class ValidationConfig:
    """How often the run is validated, on what, and how the best checkpoint is chosen."""

    val_every: int = 200  # steps between validations
    val_ways: tuple[int, ...] = (4, 10, 40)  # 1-shot k-way tasks reported at validation
    val_trials: int = 1000
    select_on: str = "accuracy"  # best checkpoint by: accuracy (k-way, then EER) | distill


@dataclass(frozen=True)
class TrainConfig:
    """A training run: the corpora, where it writes, and its groups of settings."""

    data: tuple[str, ...]  # corpus roots: LibriSpeech subset folders or <root>/<speaker>/ trees
    out: str = "runs/train"  # run folder: best.safetensors, last.pt, history.json, plots
    model: ModelConfig = field(default_factory=ModelConfig)  # the encoder the run trains
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    init_from: str = ""  # start from this speakerid checkpoint (same model settings)
    seed: int = 0
    device: str = ""  # "" = cuda when available, else cpu
    amp: bool = True  # bf16 autocast on CUDA
    resume: bool = False  # continue from out/last.pt

    @classmethod
    def settings(cls) -> dict[str, tuple[str | None, type, Any]]:
        """Every setting by name: ``(group or None, type, default)``, in field order.

        ``data`` and the ``ModelConfig`` fields of ``NOT_RUN_SETTINGS`` are not settings.
        """
        found: dict[str, tuple[str | None, type, Any]] = {}
        hints = typing.get_type_hints(cls)
        for top in fields(cls):
            if top.name == "data":
                continue
            if not is_dataclass(hints[top.name]):
                found[top.name] = (None, hints[top.name], top.default)
                continue
            group = hints[top.name]
            group_hints = typing.get_type_hints(group)
            for f in fields(group):
                if f.name not in NOT_RUN_SETTINGS:
                    found[f.name] = (top.name, group_hints[f.name], f.default)
        return found

    @classmethod
    def from_flat(cls, data: tuple[str, ...], **values: Any) -> TrainConfig:
        """The config with settings given by name (as flags name them); the rest default."""
        return cls(data=data).changed(**values)

    def changed(self, **values: Any) -> TrainConfig:
        """A copy with settings changed by name: ``cfg.changed(lr=0.01, arch="lstm")``.

        Raises ``TypeError`` for a name that is no setting, as a constructor does.
        """
        settings = self.settings()
        unknown = sorted(set(values) - set(settings) - {"data"})
        if unknown:
            raise TypeError(f"not training settings: {unknown}")
        top = {k: v for k, v in values.items() if k == "data" or settings[k][0] is None}
        groups: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in top:
                groups.setdefault(settings[name][0], {})[name] = value
        parts = {g: replace(getattr(self, g), **given) for g, given in groups.items()}
        return replace(self, **top, **parts)

    def flat(self) -> dict[str, Any]:
        """``data`` and every setting by name, JSON-ready: what a checkpoint records."""
        record: dict[str, Any] = {"data": [str(d) for d in self.data]}
        for name, (group, _, _) in self.settings().items():
            value = getattr(self if group is None else getattr(self, group), name)
            record[name] = list(value) if isinstance(value, tuple) else value
        return record
