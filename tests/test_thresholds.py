"""The threshold rules: which threshold a decision uses, and that every one is a cosine."""

from __future__ import annotations

import pytest

from speakerid.decision.constants import DEFAULT_THRESHOLD, GIVEN
from speakerid.decision.thresholds import resolve_threshold
from speakerid.errors import SpeakerIDError


def test_resolve_threshold() -> None:
    assert resolve_threshold(0.7, None) == (0.7, "model")
    assert resolve_threshold(None, None) == (DEFAULT_THRESHOLD, "default")
    assert resolve_threshold(0.7, -1.0) == (-1.0, GIVEN)
    with pytest.raises(SpeakerIDError):
        resolve_threshold(0.7, float("nan"))


def test_every_threshold_is_a_cosine() -> None:
    for bad in (5.0, -5.0, 1.0001, -1.0001, float("nan"), float("inf")):
        with pytest.raises(SpeakerIDError, match="threshold"):
            resolve_threshold(0.5, bad)
    with pytest.raises(SpeakerIDError, match="threshold"):
        resolve_threshold(float("nan"), None)
    assert resolve_threshold(0.5, 1.0) == (1.0, GIVEN)
    assert resolve_threshold(0.5, -1.0) == (-1.0, GIVEN)
