"""Validation on held-out speakers: the numbers that choose checkpoints and set thresholds.

``validate`` embeds a fixed ``FragmentSet`` of held-out speakers and measures 1-shot k-way
accuracies (``kway``) and the fragment-level EER, whose threshold (``calibration.eer_point``)
becomes the checkpoint's; ``selection_key`` orders the results. ``train`` runs it at every
validation step, ``whiten`` to choose its shrinkage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from speakerid.decision.calibration import eer_point
from speakerid.encoders.twin import Encoder
from speakerid.lab.data import FragmentSet
from speakerid.lab.kway import kway_accuracy
from speakerid.lab.metrics import verification_trials
from speakerid.vectors import l2_normalize, score_pairs


@torch.inference_mode()
def batched(
    fn: Callable[[torch.Tensor], torch.Tensor], waves: np.ndarray, device: torch.device, batch: int
) -> np.ndarray:
    """``fn`` over ``(N, samples)`` audio in batches of ``batch`` -> float32 numpy ``(N, D)``."""
    out = [
        fn(torch.from_numpy(waves[i : i + batch]).to(device)).float().cpu().numpy()
        for i in range(0, len(waves), batch)
    ]
    return np.concatenate(out)


def raw_embeddings(
    encoder: Encoder, waves: np.ndarray, device: torch.device, batch: int = 128
) -> np.ndarray:
    """The encoder's outputs ``(N, D)`` for ``(N, samples)`` audio, in eval mode, not normalised.

    The encoder is put back in the mode it was in (a training run validates mid-run).
    """
    was_training = encoder.training
    encoder.eval()
    try:
        return batched(encoder, waves, device, batch)
    finally:
        encoder.train(was_training)


def embed_set(encoder: Encoder, frags: FragmentSet, device: torch.device, batch: int = 128):
    """Unit embeddings ``(N, D)`` of a FragmentSet, in eval mode."""
    return l2_normalize(raw_embeddings(encoder, frags.waves, device, batch))


def embed_teacher(teacher: nn.Module, frags: FragmentSet, device: torch.device, batch: int = 64):
    """The teacher's unit embeddings ``(N, 256)`` of a FragmentSet (numpy)."""
    return batched(teacher.embed, frags.waves, device, batch)


def validate(
    encoder: Encoder,
    frags: FragmentSet,
    device: torch.device,
    ways: tuple[int, ...],
    trials: int,
    targets: np.ndarray | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """1-shot k-way accuracies and fragment-level EER on held-out speakers.

    With the teacher's embeddings of the same fragments (``targets``, distillation runs), also
    ``val_distill``: the mean cosine distance of the student's embeddings, mapped by the run's
    ``project`` head when the teacher's space differs, to them. Unlike the accuracies, which a
    student started from trained weights saturates within a few hundred steps on 20 speakers,
    it keeps telling checkpoints apart.
    """
    raw = raw_embeddings(encoder, frags.waves, device)
    emb = l2_normalize(raw)
    rng = np.random.default_rng(1234)  # the same tasks at every validation
    n_spk = len(set(frags.speakers.tolist()))
    out: dict[str, float] = {}
    for k in ways:
        if k <= n_spk:
            res = kway_accuracy(emb, frags.speakers, frags.recordings, k=k, trials=trials, rng=rng)
            out[f"acc{k}"] = float(res.accuracy)
    scores, labels = verification_trials(
        emb, frags.speakers, frags.recordings, max_pairs=200_000, rng=rng
    )
    out["eer"], out["threshold"] = eer_point(scores, labels)  # the model's threshold
    if targets is not None:
        pred = emb if project is None else l2_normalize(project(raw))
        if pred.shape[1] == targets.shape[1]:
            out["val_distill"] = float(1.0 - score_pairs(pred, targets).mean())
    return out


def selection_key(metrics: dict[str, float], select_on: str = "accuracy") -> float:
    """Higher is better: the hardest k-way accuracy measured, minus EER to break ties; or,
    with ``select_on="distill"``, the lowest validation distillation loss."""
    if select_on == "distill":
        return -metrics["val_distill"]
    accs = [v for k, v in metrics.items() if k.startswith("acc")]
    hardest = max((int(k[3:]) for k in metrics if k.startswith("acc")), default=None)
    primary = metrics[f"acc{hardest}"] if hardest else (sum(accs) / len(accs) if accs else 0.0)
    return primary - 0.01 * metrics.get("eer", 0.0)
