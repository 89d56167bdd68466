"""Checkpoint selection on held-out speakers."""

from __future__ import annotations

from speakerid.lab.validation import selection_key


def test_selection_key_by_accuracy_or_distillation() -> None:
    saturated = {"acc4": 0.999, "acc10": 0.999, "eer": 0.0073}
    assert selection_key({**saturated, "val_distill": 0.10}) == selection_key(
        {**saturated, "val_distill": 0.05}
    )  # the accuracy key cannot tell these apart ...
    assert selection_key({**saturated, "val_distill": 0.05}, "distill") > selection_key(
        {**saturated, "val_distill": 0.10}, "distill"
    )  # ... the distillation key prefers the closer student
