"""The threshold rules: which threshold a decision uses, and why.

In order of precedence: a threshold the caller gives, the store's calibrated one (``speakerid
calibrate``, when it was made with the model in use), the model's calibrated one, else
``DEFAULT_THRESHOLD``. Sources are named for what they are (``"given"``, ``"store"``,
``"model"``, ``"default"``), not for the flags that set them: the CLI words them itself.
"""

from __future__ import annotations

import numpy as np

from speakerid.decision.calibration import Calibration, expected_fpir
from speakerid.decision.constants import DEFAULT_THRESHOLD, GIVEN
from speakerid.encoders.checkpoint import check_threshold
from speakerid.errors import SpeakerIDError
from speakerid.store.speakers import SpeakerStore


def resolve_threshold(
    model_threshold: float | None, override: float | None, calibrated: float | None = None
) -> tuple[float, str]:
    """The decision threshold and where it came from, in this order of precedence.

    Returns ``(threshold, source)``, source one of ``GIVEN`` (``override``), ``"store"`` (the
    store's ``calibrate``d value), ``"model"`` (the checkpoint's calibrated value) or
    ``"default"`` (``DEFAULT_THRESHOLD``, uncalibrated).
    """
    try:
        if override is not None:
            return check_threshold(override, "the threshold given"), GIVEN
        if calibrated is not None:
            # A store's calibration may be on AS-normalised scores, which are not cosines
            # and not bounded; it must still be a number.
            if not np.isfinite(calibrated):
                raise ValueError(f"the store's calibrated threshold is {calibrated}")
            return float(calibrated), "store"
        if model_threshold is not None:
            return check_threshold(model_threshold, "the model's threshold"), "model"
    except ValueError as exc:
        raise SpeakerIDError(str(exc)) from None
    return DEFAULT_THRESHOLD, "default"


def calibration_for(store: SpeakerStore, fingerprint: str) -> Calibration | None:
    """The store's calibration if it was made with this model, else None (it does not apply)."""
    calibration = store.calibration()
    if calibration is None or calibration.model_fingerprint != fingerprint:
        return None
    return calibration


def identify_threshold(calibration: Calibration | None) -> float | None:
    """The calibrated 1:N threshold: the open-set one, else the 1:1 one (store was empty)."""
    if calibration is None:
        return None
    if calibration.identify_threshold is not None:
        return calibration.identify_threshold
    return calibration.threshold


def calibration_notes(store: SpeakerStore, fingerprint: str | None) -> list[str]:
    """Why the store's calibration does or does not apply, and whether it is due again."""
    calibration = store.calibration()
    if calibration is None:
        return ["not calibrated: run speakerid calibrate on recordings from your own domain"]
    if fingerprint is not None and calibration.model_fingerprint != fingerprint:
        return [
            f"the store was calibrated with model {calibration.model_fingerprint[:12]}, not "
            "the one in use, so its thresholds are ignored; run speakerid calibrate again"
        ]
    notes = []
    n_now = len(store)
    if calibration.identify_threshold is None:
        notes.append(
            "calibrated while no speakers were enrolled: identify uses the 1:1 threshold; run "
            "speakerid calibrate again to set the 1:N one"
        )
    elif calibration.regrow_due(n_now):
        fpir = calibration.identify_fpir or 0.0
        notes.append(
            f"the store has grown from {calibration.store_speakers} to {n_now} speakers since "
            f"calibration: strangers are now named about "
            f"{100 * expected_fpir(fpir, calibration.store_speakers, n_now):.1f}% of the time "
            f"instead of {100 * fpir:.1f}%; run speakerid calibrate again"
        )
    return notes
