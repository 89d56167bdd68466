"""The whitening back-end: WCCN fitted on a checkpoint's training speakers.

``speakerid whiten`` runs ``fit_whitening``: embed the checkpoint's training speakers with
its body, estimate the within-speaker covariance (``wccn``) for each candidate shrinkage,
choose the shrinkage on the validation speakers as training chooses checkpoints
(``validation.validate``), and load the fit into the encoder's ``Whitening`` layer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from speakerid.encoders.twin import Encoder, LoadedModel
from speakerid.errors import DataError
from speakerid.lab.data import AudioBank, fragment_set, scan_corpora
from speakerid.lab.evaluate import match_speakers
from speakerid.lab.validation import embed_set, selection_key, validate

# Candidate ridges for the within-speaker covariance, in units of its mean eigenvalue:
# small trusts the estimate, large tends to plain centring.
WHITEN_SHRINKAGE = (0.03, 0.1, 0.3, 1.0, 3.0)
WHITEN_HOP_SECONDS = 1.0  # training fragments overlap by 2 s: more within-speaker samples
WHITEN_MAX_PER_SPEAKER = 60  # so that the three speakers with whole chapters do not dominate


def wccn(emb: np.ndarray, speakers: np.ndarray, shrinkage: float) -> tuple[np.ndarray, ...]:
    """Mean ``(D,)`` and matrix ``(D, D)`` that whiten the within-speaker covariance.

    ``emb`` are ``(N, D)`` unit embeddings, ``speakers`` their ``(N,)`` labels. Each row is
    centred on its speaker's mean; the pooled covariance, plus ``shrinkage`` times its mean
    eigenvalue on the diagonal, gives the symmetric inverse square root ``matrix``.
    """
    emb = np.asarray(emb, dtype=np.float64)
    speakers = np.asarray(speakers)
    dim = emb.shape[1]
    within = np.zeros((dim, dim))
    for speaker in np.unique(speakers):
        dev = emb[speakers == speaker] - emb[speakers == speaker].mean(axis=0)
        within += dev.T @ dev
    within /= len(emb)
    ridge = shrinkage * np.trace(within) / dim
    if ridge <= 0:
        raise DataError("whitening needs speakers with at least two fragments each")
    vals, vecs = np.linalg.eigh(within + ridge * np.eye(dim))
    matrix = (vecs / np.sqrt(vals)) @ vecs.T
    return emb.mean(axis=0).astype(np.float32), matrix.astype(np.float32)


def _set_whitening(encoder: Encoder, fit: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Load a ``wccn`` fit into a whitened encoder; None: the identity (plain cosine)."""
    assert encoder.whitening is not None
    dim = encoder.config.embedding_dim
    mean, matrix = fit if fit is not None else (np.zeros(dim), np.eye(dim))
    with torch.no_grad():
        encoder.whitening.mean.copy_(torch.from_numpy(np.asarray(mean)))
        encoder.whitening.matrix.copy_(torch.from_numpy(np.asarray(matrix)))


def fit_whitening(
    model: LoadedModel,
    data: tuple[str, ...] | list[str],
    shrinkages: tuple[float, ...] = WHITEN_SHRINKAGE,
    device: str = "cpu",
) -> tuple[Encoder, dict[str, Any]]:
    """Fit a ``Whitening`` on a checkpoint's training speakers, choosing its shrinkage.

    The checkpoint's recorded split decides the speakers: the whitening is estimated on its
    training speakers' fragments (``WHITEN_HOP_SECONDS`` apart) found under ``data``, and
    each shrinkage is scored on its validation speakers as training selects checkpoints
    (``validate``). A checkpoint that is already whitened is refitted from its body.

    Returns
    -------
    The whitened encoder (eval mode, on CPU) and a report: the chosen shrinkage, the data
    it was fitted on, and the validation metrics of every candidate and of no whitening.
    """
    split = model.info.get("split") or {}
    if not split.get("train"):
        raise DataError(f"{model.path}: the checkpoint records no training speakers")
    if not shrinkages or any(s <= 0 for s in shrinkages):
        raise DataError("shrinkage values must be positive")
    # One whitened encoder serves every candidate; its identity whitening gives the body's
    # plain unit embedding, so a whitened checkpoint is refitted from its body.
    encoder = Encoder(replace(model.encoder.config, whiten=True))
    identity = encoder.whitening.state_dict(prefix="whitening.")
    encoder.load_state_dict({**model.encoder.state_dict(), **identity}, strict=True)
    dev = torch.device(device)
    encoder = encoder.to(dev).eval()

    recordings = scan_corpora(data)
    available = sorted({r.speaker for r in recordings})
    train_names = match_speakers(split["train"], available)
    if not train_names:
        raise DataError("none of the checkpoint's training speakers are in the data given")
    frags = fragment_set(
        AudioBank.load(recordings, train_names),
        hop_seconds=WHITEN_HOP_SECONDS,
        max_per_speaker=WHITEN_MAX_PER_SPEAKER,
    )
    emb = embed_set(encoder, frags, dev)
    fits = {s: wccn(emb, frags.speakers, s) for s in shrinkages}

    val_names = match_speakers(split.get("val") or [], available)
    validation: dict[str, dict[str, float]] = {}
    if len(val_names) >= 2:
        val_frags = fragment_set(AudioBank.load(recordings, val_names), max_per_speaker=40)
        # k-way up to every validation speaker (40 at most), as far as there are speakers
        ways = tuple(
            sorted({k for k in (4, 10, 40) if k <= len(val_names)} | {min(40, len(val_names))})
        )
        for label, fit in {"none": None, **{str(s): f for s, f in fits.items()}}.items():
            _set_whitening(encoder, fit)
            validation[label] = validate(encoder, val_frags, dev, ways, trials=1000)
        chosen = max(shrinkages, key=lambda s: selection_key(validation[str(s)]))
        helps = selection_key(validation[str(chosen)]) > selection_key(validation["none"])
    else:  # nothing to choose on: the middle of the grid
        chosen = sorted(shrinkages)[len(shrinkages) // 2]
        helps = None
    report = {
        "method": "wccn",
        "shrinkage": chosen,
        "better_than_none": helps,  # on the validation speakers; None: not measured
        "speakers": len(set(frags.speakers.tolist())),
        "fragments": len(frags),
        "hop_seconds": WHITEN_HOP_SECONDS,
        "max_per_speaker": WHITEN_MAX_PER_SPEAKER,
        "validation_speakers": len(val_names),
        "validation": validation,
    }
    _set_whitening(encoder, fits[chosen])
    return encoder.cpu(), report
