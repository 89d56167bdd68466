"""The evaluation report: results made JSON-ready."""

from __future__ import annotations

import json

import numpy as np
from conftest import embedding_corpus

from speakerid.lab.evaluate import report_json
from speakerid.lab.kway import kway_curve
from speakerid.lab.metrics import verification_summary, verification_trials

# -------------------------------------------------------------------------------- reports


def test_report_json_round_trips() -> None:
    x, spk, rec = embedding_corpus(n_speakers=4)
    curve = kway_curve(x, spk, rec, trials=50, rng=22)
    scores, labels = verification_trials(x, spk, rec)
    report = report_json(
        {
            "kway": curve,
            "verification": verification_summary(scores, labels),
            "extra": {"nan": float("nan"), "x": np.float32(1 / 3), "n": np.int64(3)},
        }
    )
    text = json.dumps(report, allow_nan=False)
    back = json.loads(text)
    assert set(back["kway"]) == {"2", "3", "4"}
    assert back["kway"]["2"]["k"] == 2
    assert back["extra"] == {"nan": None, "x": 0.3333, "n": 3}
