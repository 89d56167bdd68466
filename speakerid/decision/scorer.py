"""The decision home: one object that turns scores into accept/reject for every command.

``Scorer.open(store, identity)`` gathers everything a decision depends on: the caller's
``threshold`` or ``far``, the store's calibration (``speakerid calibrate``) when it was made
with the model in use, the model's shipped decision calibration (``registry``), the model's
threshold and its AS-norm cohort. ``verify``, ``identify``, ``identify --segments``, the
Python API and ``calibrate`` all decide through it.

The rules, in order of precedence:

1. ``threshold`` given: accept when the cosine (or the AS-norm score, for a store calibrated
   so) reaches it. Exactly that number, for users who want it.
2. The store's calibration (``speakerid calibrate`` on the user's recordings): its
   ``DecisionModel`` at the false-accept rate ``far`` (default 1 %) for the quality of the
   comparison (``decision.DecisionModel.decide``); a calibration made before decision
   calibrations existed keeps its fixed threshold (unless ``far`` is asked for).
3. The model's shipped ``DecisionModel``, at ``far`` likewise.
4. Else the model's calibrated cosine threshold, else ``thresholds.DEFAULT_THRESHOLD``.

For 1:N, each candidate is judged with its own enrollment's quality at the per-comparison
rate ``decision.sidak_far(far, N)`` (N enrolled speakers), so a stranger is named by mistake
at most about ``far`` of the time however many speakers are enrolled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from speakerid.decision.calibration import ASNORM_TOP_K, Calibration, as_norm_scores
from speakerid.decision.constants import DEFAULT_FAR, GIVEN
from speakerid.decision.model import (
    Decision,
    DecisionModel,
    Quality,
    check_far,
    sidak_far,
)
from speakerid.decision.thresholds import (
    calibration_for,
    identify_threshold,
    resolve_threshold,
)
from speakerid.errors import DataError, SpeakerIDError, StoreError
from speakerid.store.speakers import SpeakerStore
from speakerid.vectors import l2_normalize

# An enrolled recording whose speech was never measured (imported vectors) counts as this much.
UNKNOWN_RECORDING_SECONDS = 10.0


@dataclass(frozen=True)
class ModelIdentity:
    """What the decision needs to know of a model, whatever backend runs it."""

    fingerprint: str
    threshold: float | None  # the model's calibrated cosine threshold, if any
    decision: DecisionModel | None  # its shipped decision calibration, if any
    cohort: Callable[[], np.ndarray | None]  # its AS-norm cohort, read when first needed


@dataclass(frozen=True)
class Judgement:
    """One comparison decided: the score, the rule and what it promises."""

    score: float  # raw cosine
    accepted: bool
    threshold: float  # the cosine (or AS-norm) threshold used for this comparison
    source: str  # "given", "store" or "model" (where the rule came from), or "default"
    far: float | None = None  # the false-accept rate decided at, when the rule is calibrated
    llr: float | None = None  # log-likelihood ratio, when a decision calibration is known
    stranger_rate: float | None = None  # how often a stranger scores this high, estimated
    normalized_score: float | None = None  # the AS-norm score decided on, if any
    quality: Quality | None = None


def window_threshold(model_threshold: float | None, given: float | None, offset: float) -> float:
    """The cosine a window of ``identify --segments`` needs to name a speaker.

    ``given`` as it is; else the model's threshold plus ``offset``. Windows are short and the
    smoothing compares them across speakers, so they keep a fixed threshold tuned on meetings;
    a store's calibration, made on whole recordings, is not used.
    """
    threshold, source = resolve_threshold(model_threshold, given)
    return threshold if source == GIVEN else threshold + offset


class Scorer:
    """Decisions for one store and one model (see the module docstring for the rules)."""

    def __init__(
        self,
        store: SpeakerStore,
        model: ModelIdentity,
        *,
        threshold: float | None = None,
        far: float | None = None,
    ) -> None:
        if threshold is not None and far is not None:
            raise SpeakerIDError("give a threshold or a false-accept rate, not both")
        self.store = store
        self.model = model
        self.far = DEFAULT_FAR if far is None else check_far(far)
        self.far_given = far is not None
        self.calibration: Calibration | None = calibration_for(store, model.fingerprint)
        self.given = threshold
        store_decision = self._store_decision()
        legacy = self.calibration is not None and store_decision is None and not self.far_given
        # decides (rule 2), when set; the model's llr is reported under fixed thresholds too
        self.decision: DecisionModel | None = None if legacy else store_decision or model.decision
        self.evidence = store_decision or model.decision
        self.source = "store" if store_decision is not None else "model"
        if threshold is None and self.decision is None and self.far_given:
            raise SpeakerIDError(
                "this model has no decision calibration, so a false-accept rate cannot be "
                "targeted; give a threshold, or run speakerid calibrate on your recordings"
            )

    def _store_decision(self) -> DecisionModel | None:
        if self.calibration is None or not self.calibration.decision:
            return None
        try:
            return DecisionModel.from_dict(self.calibration.decision)
        except DataError as exc:
            raise StoreError(f"{self.store.path}: damaged store ({exc})") from None

    # ------------------------------------------------------------ what rule applies

    @property
    def calibrated(self) -> bool:
        """Whether decisions hold a false-accept rate (rule 2) rather than a fixed threshold."""
        return self.given is None and self.decision is not None

    def fixed_threshold(self, one_to_many: bool = False) -> tuple[float, str]:
        """The fixed threshold of rules 1, 3 and 4, and its source."""
        stored = None
        if self.calibration is not None and self.calibration.decision is None:
            stored = (
                identify_threshold(self.calibration) if one_to_many else self.calibration.threshold
            )
        return resolve_threshold(self.model.threshold, self.given, stored)

    @property
    def _asnorm(self) -> bool:
        return (
            self.given is None
            and not self.calibrated
            and self.calibration is not None
            and self.calibration.norm == "asnorm"
        )

    def window_threshold(self, offset: float) -> float:
        """The cosine a window of ``identify --segments`` needs (see ``window_threshold``)."""
        return window_threshold(self.model.threshold, self.given, offset)

    def operating_point(self) -> str:
        """The rule in one line, as the CLI prints it."""
        if self.calibrated:
            where = "the store's calibration" if self.source == "store" else "the model's"
            return f"false accepts held at {100 * self.far:g}% for each clip's quality ({where})"
        threshold, source = self.fixed_threshold()
        return f"fixed threshold {threshold:.4f} ({source})"

    # ------------------------------------------------------------ quality

    def enrollment_quality(self, name: str, test_seconds: float) -> Quality:
        count, seconds = self.store.enrollment(name)
        if seconds is None:
            seconds = count * UNKNOWN_RECORDING_SECONDS
        return Quality(float(test_seconds), float(seconds), int(count))

    # ------------------------------------------------------------ 1:1

    def judge(
        self, name: str, score: float, query: np.ndarray, test_seconds: float, far: float
    ) -> Judgement:
        """Decide one comparison of ``query`` against enrolled ``name`` at rate ``far``."""
        quality = self.enrollment_quality(name, test_seconds)
        if self.calibrated:
            assert self.decision is not None
            d: Decision = self.decision.decide(score, quality, far)
            return Judgement(
                score,
                d.accepted,
                d.threshold,
                self.source,
                far,
                d.llr,
                d.stranger_rate,
                quality=quality,
            )
        threshold, source = self.fixed_threshold()
        llr = None
        if self.evidence is not None:
            q = (quality.test_seconds, quality.enroll_seconds, quality.enroll_count)
            llr = float(self.evidence.llr(score, *q)[0])
        normalized = self.normalized(query, name) if self._asnorm else None
        decided = score if normalized is None else normalized
        return Judgement(
            score, decided >= threshold, threshold, source, None, llr, None, normalized, quality
        )

    def verify(self, name: str, score: float, query: np.ndarray, test_seconds: float) -> Judgement:
        return self.judge(name, score, query, test_seconds, self.far)

    # ------------------------------------------------------------ 1:N

    def identify(
        self, candidates: list[tuple[str, float]], query: np.ndarray, test_seconds: float
    ) -> tuple[str | None, list[Judgement]]:
        """The speaker to name (or None) among ranked ``(name, score)`` candidates.

        Calibrated: each candidate is judged with its own enrollment at ``sidak_far(far, N)``
        and the accepted one with the highest llr is named. Fixed threshold: the top
        candidate is named when it (or its AS-norm score) reaches the 1:N threshold.
        """
        if not candidates:
            return None, []
        if self.calibrated:
            rate = sidak_far(self.far, len(self.store))
            judged = [self.judge(n, s, query, test_seconds, rate) for n, s in candidates]
            passed = [(j.llr or 0.0, i) for i, j in enumerate(judged) if j.accepted]
            best = candidates[max(passed)[1]][0] if passed else None
            return best, judged
        threshold, source = self.fixed_threshold(one_to_many=True)
        judged = []
        for rank, (name, score) in enumerate(candidates):
            normalized = self.normalized(query, name) if self._asnorm and rank == 0 else None
            decided = score if normalized is None else normalized
            judged.append(
                Judgement(
                    score, decided >= threshold, threshold, source, None, None, None, normalized
                )
            )
        return (candidates[0][0] if judged[0].accepted else None), judged

    # ------------------------------------------------------------ AS-norm

    def cohort(self) -> tuple[np.ndarray | None, np.ndarray]:
        """The AS-norm cohort the store was calibrated with: (names or None, unit vectors)."""
        assert self.calibration is not None
        if self.calibration.cohort == "model":
            cohort = self.model.cohort()
            if cohort is None:
                raise StoreError(
                    f"{self.store.path}: calibrated with the model's AS-norm cohort, but this "
                    "model has none; run speakerid calibrate again"
                )
            return None, l2_normalize(np.asarray(cohort, dtype=np.float32))
        names, vectors = self.store.matrix()
        return np.asarray(names), vectors

    def normalized(self, query: np.ndarray, name: str) -> float:
        """AS-norm score of one query against one enrolled speaker, with the calibrated cohort."""
        assert self.calibration is not None
        names, cohort = self.cohort()
        try:
            return float(
                as_norm_scores(
                    query[None, :],
                    self.store.vector(name)[None, :],
                    np.asarray([name]),
                    cohort,
                    names,
                    self.calibration.top_k or ASNORM_TOP_K,
                )[0, 0]
            )
        except DataError as exc:
            raise StoreError(f"{self.store.path}: {exc}; run speakerid calibrate again") from None
