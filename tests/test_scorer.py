"""The decision home: which rule decides, and how 1:1 and 1:N use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speakerid.decision.model import DecisionModel, QualityTrials, fit_decision_model, sidak_far
from speakerid.decision.scorer import ModelIdentity, Scorer, window_threshold
from speakerid.errors import DataError, SpeakerIDError
from speakerid.store.speakers import SpeakerStore

FINGERPRINT = "a" * 64


@pytest.fixture(scope="module")
def decision() -> DecisionModel:
    rng = np.random.default_rng(0)
    n = 20_000
    t = rng.choice([0.5, 1.0, 3.0, 10.0], n)
    c = rng.choice([1.0, 3.0, 10.0], n)
    y = rng.random(n) < 0.2
    spread = 0.05 + 0.1 / np.sqrt(t)
    s = np.where(y, 0.6, 0.1) + spread * rng.standard_normal(n)
    return fit_decision_model(QualityTrials(s, y, t, 10 * c, c, np.ones(n)))


def _store(path: Path, speakers: dict[str, int]) -> SpeakerStore:
    store = SpeakerStore(path)
    rng = np.random.default_rng(1)
    for name, count in speakers.items():
        store.add_recordings(
            name,
            [f"{name}_{k}.wav" for k in range(count)],
            rng.standard_normal((count, 8)).astype(np.float32),
            fingerprint=FINGERPRINT,
            speech_seconds=[5.0] * count,
            hashes=[f"{name}{k}" for k in range(count)],
        )
    return store


def _identity(decision: DecisionModel | None, threshold: float | None = 0.45) -> ModelIdentity:
    return ModelIdentity(FINGERPRINT, threshold, decision, lambda: None)


def test_calibrated_rule_uses_each_enrollments_quality(
    tmp_path: Path, decision: DecisionModel
) -> None:
    with _store(tmp_path / "s.sqlite", {"one": 1, "ten": 10}) as store:
        scorer = Scorer(store, _identity(decision))
        assert scorer.calibrated and "1%" in scorer.operating_point()
        query = np.zeros(8, np.float32)
        one = scorer.verify("one", 0.3, query, 1.0)
        ten = scorer.verify("ten", 0.3, query, 1.0)
        assert (one.quality.enroll_count, one.quality.enroll_seconds) == (1, 5.0)
        assert (ten.quality.enroll_count, ten.quality.enroll_seconds) == (10, 50.0)
        assert one.far == 0.01 and one.source == "model" and one.llr is not None
        expected = decision.thresholds(0.01, 1.0, 5.0, 1)[0]
        assert one.threshold == pytest.approx(expected)
        # a longer clip lowers the bar; a lower rate raises it
        assert scorer.verify("one", 0.3, query, 10.0).threshold < one.threshold
        strict = Scorer(store, _identity(decision), far=0.001).verify("one", 0.3, query, 1.0)
        assert strict.threshold > one.threshold


def test_a_given_threshold_decides_exactly(tmp_path: Path, decision: DecisionModel) -> None:
    with _store(tmp_path / "s.sqlite", {"one": 1}) as store:
        scorer = Scorer(store, _identity(decision), threshold=0.31)
        judged = scorer.verify("one", 0.31, np.zeros(8, np.float32), 0.5)
        assert judged.accepted and judged.threshold == 0.31 and judged.source == "given"
        assert judged.far is None and judged.llr is not None  # evidence still reported
        assert not scorer.verify("one", 0.3099, np.zeros(8, np.float32), 0.5).accepted


def test_without_a_decision_calibration_the_fixed_threshold_stays(tmp_path: Path) -> None:
    with _store(tmp_path / "s.sqlite", {"one": 1}) as store:
        scorer = Scorer(store, _identity(None))
        judged = scorer.verify("one", 0.46, np.zeros(8, np.float32), 2.0)
        assert judged.accepted and (judged.threshold, judged.source) == (0.45, "model")
        assert judged.far is None and judged.llr is None
        with pytest.raises(SpeakerIDError, match="false-accept rate"):
            Scorer(store, _identity(None), far=0.01)
        with pytest.raises(SpeakerIDError, match="not both"):
            Scorer(store, _identity(None), threshold=0.3, far=0.01)
        with pytest.raises(DataError):
            Scorer(store, _identity(None), far=0.9)


def test_identify_spends_the_rate_over_all_enrolled_speakers(
    tmp_path: Path, decision: DecisionModel
) -> None:
    speakers = {f"s{i}": 3 for i in range(20)}
    with _store(tmp_path / "s.sqlite", speakers) as store:
        scorer = Scorer(store, _identity(decision))
        query = np.zeros(8, np.float32)
        best, judged = scorer.identify([("s1", 0.9), ("s2", 0.2)], query, 3.0)
        assert best == "s1" and [j.accepted for j in judged] == [True, False]
        assert judged[0].far == pytest.approx(sidak_far(0.01, 20))
        one_to_one = scorer.verify("s1", 0.9, query, 3.0).threshold
        assert judged[0].threshold > one_to_one  # 20 chances to name a stranger cost a margin
        best, _ = scorer.identify([("s1", 0.2), ("s2", 0.1)], query, 3.0)
        assert best is None


def test_store_calibration_wins_and_a_damaged_one_is_refused(
    tmp_path: Path, decision: DecisionModel
) -> None:
    from speakerid.decision.calibration import Calibration
    from speakerid.errors import StoreError

    with _store(tmp_path / "s.sqlite", {"one": 1}) as store:
        fields = dict(
            threshold=0.3, raw_threshold=0.3, target="eer", norm="none", eer=0.1,
            eer_threshold=0.3, min_dcf=0.5, min_dcf_threshold=0.4, p_target=0.01,
            false_accept_rate=0.1, miss_rate=0.1, n_speakers=6, n_recordings=24, n_target=24,
            n_nontarget=480, enroll_size=3, data=["x"], date="2026-01-01T00:00:00+00:00",
            model_fingerprint=FINGERPRINT,
        )  # fmt: skip
        shifted = json.loads(decision.to_json())
        shifted["impostor_mean"][0] += 0.2
        store.set_calibration(Calibration(**fields, decision=shifted))
        scorer = Scorer(store, _identity(decision))
        assert scorer.source == "store"
        judged = scorer.verify("one", 0.5, np.zeros(8, np.float32), 3.0)
        assert judged.source == "store"
        assert judged.threshold == pytest.approx(
            DecisionModel.from_dict(shifted).thresholds(0.01, 3.0, 5.0, 1)[0]
        )
        store.set_calibration(Calibration(**fields))  # an older calibrate: its fixed threshold
        older = Scorer(store, _identity(decision)).verify("one", 0.31, np.zeros(8), 3.0)
        assert (older.threshold, older.source, older.accepted) == (0.3, "store", True)
        store.set_calibration(Calibration(**fields, decision={"tail_z": "x"}))
        with pytest.raises(StoreError, match="damaged"):
            Scorer(store, _identity(decision))


def test_segment_windows_keep_their_offset_rule() -> None:
    assert window_threshold(0.5, None, -0.15) == pytest.approx(0.35)
    assert window_threshold(0.5, 0.2, -0.15) == 0.2
    assert window_threshold(None, None, -0.1) == pytest.approx(0.4)


def test_readme_and_help_state_the_default_operating_point(runner) -> None:
    from speakerid.cli import app
    from speakerid.decision.constants import DEFAULT_FAR

    for command in ("verify", "identify"):
        shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert f"(--far {DEFAULT_FAR:g})" in shown and f"Default: {DEFAULT_FAR:g}" in shown
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"(`--far {DEFAULT_FAR:g}`)" in readme
    assert f"at most {100 * DEFAULT_FAR:g}% of strangers accepted" in readme
