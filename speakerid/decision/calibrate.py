"""The ``calibrate`` service: labelled in-domain recordings -> a store's thresholds.

``embed_folders`` embeds ``<root>/<speaker>/*`` recordings with the store's model;
``fit_calibration`` turns labelled embeddings into a ``Calibration`` (the maths is in
``calibration``); ``calibrate`` does both and writes the result into the store's metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from speakerid.decision.calibration import (
    ASNORM_TOP_K,
    MIN_COHORT,
    MIN_TARGET_TRIALS,
    P_TARGET,
    Calibration,
    Trials,
    as_norm_scores,
    best_other_scores,
    decision_cells,
    distribution,
    eer_point,
    enrollment_trials,
    far_threshold,
    fpir_threshold,
    min_dcf,
    power_threshold,
    quality_trials,
    rates_at,
)
from speakerid.decision.constants import DEFAULT_FAR
from speakerid.decision.model import (
    MIN_FIT_NONTARGET,
    MIN_FIT_TARGET,
    DecisionModel,
    QualityTrials,
    fit_decision_model,
    refit,
)
from speakerid.embedding.embedder import BaseEmbedder
from speakerid.errors import AudioError, DataError
from speakerid.pins import file_sha256
from speakerid.recognition import (
    FileError,
    embed_measured,
    model_id,
    model_identity,
    speaker_folders,
)
from speakerid.store.speakers import SpeakerStore
from speakerid.vectors import l2_normalize, score

log = logging.getLogger(__name__)  # notes of slow steps; the CLI prints them

NORMS = ("none", "asnorm")
COHORTS = ("auto", "model", "store")
DEFAULT_FPIR = 0.05  # strangers named by identify: 1 in 20


@dataclass(frozen=True)
class Labelled:
    """Embedded calibration recordings."""

    embeddings: np.ndarray  # (R, D) unit vectors
    speakers: np.ndarray  # (R,) labels, unique across roots ("<root #>:<folder>")
    names: np.ndarray  # (R,) speaker folder names (matched against enrolled names)
    paths: list[str]
    skipped: list[FileError] = field(default_factory=list)
    seconds: np.ndarray | None = None  # (R,) seconds of speech of each recording, if measured


@dataclass(frozen=True)
class CalibrationReport:
    """What ``calibrate`` measured and set."""

    calibration: Calibration
    target_scores: dict[str, float]  # distribution of same-speaker trial scores
    nontarget_scores: dict[str, float]  # distribution of different-speaker trial scores
    model_threshold: float | None  # the model's own threshold, for comparison
    model_false_accept_rate: float | None  # at the model's threshold, these trials (raw)
    model_miss_rate: float | None
    notes: list[str]
    skipped: list[FileError]
    written: bool  # False with dry_run
    trials: Trials = field(repr=False, compare=False)  # the scored trials (for plots)
    # decisions at the default false-accept rate per test-speech bucket and enrollment size,
    # on the calibration trials themselves (see ``calibration.decision_cells``)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    # the quality-annotated trials and the decisions taken on them (for the plot)
    decided: tuple[QualityTrials, np.ndarray] | None = field(
        default=None, repr=False, compare=False
    )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, without the trial arrays."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("trials", "decided")}
        data["calibration"] = asdict(self.calibration)
        data["skipped"] = [asdict(s) for s in self.skipped]
        return data


def embed_folders(
    embedder: BaseEmbedder,
    roots: Sequence[str | Path],
    on_file: Callable[[str, int, int], None] | None = None,
) -> Labelled:
    """Embed every recording under each root's speaker folders (see ``speaker_folders``).

    Unusable files are skipped and listed; speaker folders of the same name under
    different roots count as different speakers.
    """
    folders = [
        (i, name, files) for i, root in enumerate(roots) for name, files in speaker_folders(root)
    ]
    total = sum(len(files) for *_, files in folders)
    log.info("embedding %d recordings of %d speakers, then scoring", total, len(folders))
    vectors, labels, names, paths, skipped, seconds = [], [], [], [], [], []
    seen: dict[str, str] = {}  # content sha256 -> the first path holding it
    done = 0
    for i, name, files in folders:
        for path in files:
            done += 1
            try:
                digest = file_sha256(path)
            except OSError as exc:
                skipped.append(FileError(str(path), f"{path}: unreadable ({exc.strerror})"))
                continue
            if digest in seen:
                skipped.append(
                    FileError(str(path), f"{path}: the same recording as {seen[digest]}; left out")
                )
                continue
            seen[digest] = str(path)
            try:
                vector, speech = embed_measured(embedder, path)
                vectors.append(vector)
                seconds.append(speech)
                labels.append(f"{i}:{name}")
                names.append(name)
                paths.append(str(path))
            except AudioError as exc:
                skipped.append(FileError(str(path), str(exc)))
            if on_file:
                on_file(name, done, total)
    if not vectors:
        raise DataError("no usable recordings in the calibration data")
    return Labelled(
        np.stack(vectors),
        np.asarray(labels),
        np.asarray(names),
        paths,
        skipped,
        np.asarray(seconds),
    )


def _operating_point(trials: Trials, far: float | None) -> float:
    if far is None:
        return eer_point(trials.scores, trials.labels)[1]
    return far_threshold(trials.scores[~trials.labels], far)


def fit_calibration(
    data: Labelled,
    fingerprint: str,
    *,
    far: float | None = None,
    fpir: float = DEFAULT_FPIR,
    norm: str = "none",
    cohort: np.ndarray | None = None,
    cohort_names: np.ndarray | None = None,
    cohort_kind: str | None = None,
    gallery: np.ndarray | None = None,
    gallery_names: Sequence[str] = (),
    enroll_size: int = 3,
    seed: int = 0,
    model_threshold: float | None = None,
    sources: Sequence[str] = (),
    decision: DecisionModel | None = None,
) -> CalibrationReport:
    """Score enrollment-style trials and choose the thresholds.

    Parameters
    ----------
    far: the 1:1 false-accept rate to set the threshold for; None: the EER point.
    fpir: the false-positive identification rate to set the 1:N threshold for.
    norm: ``none`` (raw cosine) or ``asnorm`` against ``cohort`` (``(C, D)``; with
        ``cohort_names`` when it is a store's own speakers).
    decision: the model's decision calibration. With ``norm="none"`` and measured seconds
        of speech, it is refitted (or, with few trials, shifted) on quality-annotated trials
        of enrollments of 1 and ``enroll_size`` recordings (``decision.refit``), or fitted
        from scratch when the model has none; verify and identify then decide with it.
    gallery, gallery_names: the store's ``(N, D)`` speaker vectors and names. The 1:N
        threshold is set from each calibration recording's best score over the gallery,
        leaving out an enrolled speaker of the recording's own folder name
        (leave-one-speaker-out); with fewer recordings than that needs, from the 1:1
        impostor scores raised to the N-th power; with no gallery, not at all.
    """
    _check_operating_points(norm, far, fpir)
    raw = _trials(data, enroll_size, seed)
    trials, top_k = raw, None
    if norm == "asnorm":
        trials, top_k = _asnorm_trials(data, enroll_size, seed, cohort, cohort_names, cohort_kind)
    threshold = _operating_point(trials, far)
    raw_threshold = threshold if trials is raw else _operating_point(raw, far)
    _refuse_degenerate(raw, raw_threshold)
    notes: list[str] = []
    open_set = _open_set(
        data, trials, fpir, norm, cohort, cohort_names, top_k, gallery, gallery_names, notes
    )
    fitted, cells, decided = None, [], None
    if norm == "none" and data.seconds is not None:
        fitted, cells, decided = _decision_fit(data, decision, enroll_size, seed, sources, notes)
    calibration = Calibration(
        threshold=threshold,
        raw_threshold=raw_threshold,
        target="eer" if far is None else f"far={far:g}",
        norm=norm,
        **_trial_measures(trials, threshold),
        **_provenance(data, enroll_size, sources, fingerprint),
        store_speakers=0 if gallery is None else len(gallery),
        **_cohort_fields(norm, cohort, cohort_kind, top_k),
        decision=None if fitted is None else asdict(fitted),
        **open_set,
    )
    return _report(calibration, raw, trials, model_threshold, notes, data, cells, decided)


def _provenance(
    data: Labelled, enroll_size: int, sources: Sequence[str], fingerprint: str
) -> dict[str, Any]:
    """``Calibration``'s fields saying what it was fitted on, when, for which model."""
    return {
        "n_speakers": len(np.unique(data.speakers)),
        "n_recordings": len(data.speakers),
        "enroll_size": enroll_size,
        "data": [str(s) for s in sources],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_fingerprint": fingerprint,
    }


def _cohort_fields(
    norm: str, cohort: np.ndarray | None, cohort_kind: str | None, top_k: int | None
) -> dict[str, Any]:
    """``Calibration``'s AS-norm fields: which cohort, its size, the top-k used."""
    asnorm = norm == "asnorm"
    return {
        "cohort": cohort_kind if asnorm else None,
        "cohort_size": None if not asnorm or cohort is None else len(cohort),
        "top_k": top_k,
    }


def _report(
    calibration: Calibration,
    raw: Trials,
    trials: Trials,
    model_threshold: float | None,
    notes: list[str],
    data: Labelled,
    cells: list[dict[str, Any]],
    decided: tuple[QualityTrials, np.ndarray] | None,
) -> CalibrationReport:
    """The report of a calibration: its trials' score distributions and how the model's
    own threshold fares on them (raw cosine)."""
    model_fa = model_miss = None
    if model_threshold is not None:
        model_fa, model_miss = rates_at(raw.scores, raw.labels, model_threshold)
    return CalibrationReport(
        calibration,
        distribution(trials.scores[trials.labels]),
        distribution(trials.scores[~trials.labels]),
        model_threshold,
        model_fa,
        model_miss,
        notes,
        list(data.skipped),
        False,
        trials,
        cells,
        decided,
    )


def _check_operating_points(norm: str, far: float | None, fpir: float) -> None:
    """Refuse an unknown score normalisation or a rate outside (0, 1)."""
    if norm not in NORMS:
        raise DataError(f"unknown --norm {norm!r}; one of {list(NORMS)}")
    if far is not None and not 0.0 < far < 1.0:
        raise DataError(f"--far must lie strictly between 0 and 1, not {far}")
    if not 0.0 < fpir < 1.0:
        raise DataError(f"--fpir must lie strictly between 0 and 1, not {fpir}")


def _asnorm_trials(
    data: Labelled,
    enroll_size: int,
    seed: int,
    cohort: np.ndarray | None,
    cohort_names: np.ndarray | None,
    cohort_kind: str | None,
) -> tuple[Trials, int]:
    """The enrollment-style trials scored with AS-norm against ``cohort``, and its top-k.

    A cohort of the store's own speakers (``cohort_names`` given) needs one speaker more,
    since the trial's own speaker is left out of it.
    """
    if cohort is None or len(cohort) < MIN_COHORT + (cohort_names is not None):
        size = 0 if cohort is None else len(cohort)
        raise DataError(
            f"AS-norm needs a cohort of at least {MIN_COHORT} speakers besides the one "
            f"scored; the {cohort_kind or 'store'} cohort has {size} (enroll more speakers, "
            "or use --norm none)"
        )
    top_k = min(ASNORM_TOP_K, len(cohort) - 1)
    name_of = dict(zip(data.speakers.tolist(), data.names.tolist(), strict=True))

    def normalised(q: np.ndarray, m: np.ndarray, owners: np.ndarray) -> np.ndarray:
        owner_names = np.asarray([name_of[o] for o in owners])
        return as_norm_scores(q, m, owner_names, cohort, cohort_names, top_k)

    return _trials(data, enroll_size, seed, normalised), top_k


def _trial_measures(trials: Trials, threshold: float) -> dict[str, Any]:
    """``Calibration``'s fields measured on the trials: EER, minDCF, the rates at
    ``threshold`` and the trial counts."""
    rate, eer_at = eer_point(trials.scores, trials.labels)
    dcf, dcf_at = min_dcf(trials.scores, trials.labels, P_TARGET)
    fa, miss = rates_at(trials.scores, trials.labels, threshold)
    return {
        "eer": rate,
        "eer_threshold": eer_at,
        "min_dcf": dcf,
        "min_dcf_threshold": dcf_at,
        "p_target": P_TARGET,
        "false_accept_rate": fa,
        "miss_rate": miss,
        "n_target": trials.n_target,
        "n_nontarget": trials.n_nontarget,
    }


DEGENERATE_THRESHOLD = 0.999  # a cosine threshold this high accepts only copies of a recording


def _refuse_degenerate(trials: Trials, threshold: float) -> None:
    """Refuse a calibration that copies of recordings would give (``DataError``).

    ``trials`` and ``threshold`` on raw cosine: a threshold at 1 accepts only copies, and
    same-speaker trials that mostly score as copies are copies under other names.
    """
    same = trials.scores[trials.labels]
    copies = float((same >= DEGENERATE_THRESHOLD).mean())
    if threshold >= DEGENERATE_THRESHOLD or copies > 0.5:
        raise DataError(
            f"degenerate calibration: threshold {threshold:.4f}, {100 * copies:.0f}% of "
            "same-speaker trials score as copies of one recording; give each speaker "
            "different recordings (nothing was written)"
        )


def _decision_fit(
    data: Labelled,
    base: DecisionModel | None,
    enroll_size: int,
    seed: int,
    sources: Sequence[str],
    notes: list[str],
) -> tuple[DecisionModel | None, list[dict[str, Any]], tuple[QualityTrials, np.ndarray] | None]:
    """The store's decision calibration and its report per condition (see ``fit_calibration``)."""
    assert data.seconds is not None
    where = ", ".join(str(s) for s in sources) or "calibration recordings"
    try:
        qt = quality_trials(data.embeddings, data.speakers, data.seconds, (1, enroll_size), seed)
        fitted = refit(base, qt, where) if base is not None else fit_decision_model(qt, where)
    except DataError as exc:
        notes.append(f"decisions keep the model's calibration: {exc}")
        return None, [], None
    if fitted.method == "shift":
        notes.append(
            f"only {int(qt.labels.sum())} same-speaker and {int((~qt.labels).sum())} "
            f"different-speaker trials (a refit needs {MIN_FIT_TARGET} and "
            f"{MIN_FIT_NONTARGET}): the model's decision calibration was shifted to these "
            "recordings' level, not refitted"
        )
    accepted = qt.scores >= fitted.thresholds(DEFAULT_FAR, *qt.quality)
    cells = decision_cells(qt, accepted, fitted.llr(qt.scores, *qt.quality))
    return fitted, cells, (qt, accepted)


def _trials(data: Labelled, enroll_size: int, seed: int, score_fn: Any = None) -> Trials:
    trials = enrollment_trials(data.embeddings, data.speakers, enroll_size, seed, score_fn)
    if trials.n_target < MIN_TARGET_TRIALS:
        raise DataError(
            f"the data gives only {trials.n_target} same-speaker trials; calibration needs at "
            f"least {MIN_TARGET_TRIALS} (more speakers with 2 or more recordings each)"
        )
    return trials


def _open_set(
    data: Labelled,
    trials: Trials,
    fpir: float,
    norm: str,
    cohort: np.ndarray | None,
    cohort_names: np.ndarray | None,
    top_k: int | None,
    gallery: np.ndarray | None,
    gallery_names: Sequence[str],
    notes: list[str],
) -> dict[str, Any]:
    """The 1:N threshold fields of a ``Calibration`` (see ``fit_calibration``); none, with
    a note, when no speaker is enrolled."""
    if gallery is None or not len(gallery):
        notes.append(
            "no speakers are enrolled yet: the 1:N threshold is not set; identify "
            "uses the 1:1 one until you enroll speakers and run calibrate again"
        )
        return {}
    enrolled = np.asarray(gallery_names)
    best = best_other_scores(data.embeddings, data.names, gallery, enrolled)
    strangers = np.isfinite(best)  # a recording whose name is the only one enrolled has none
    scores = best[strangers]
    if norm == "asnorm" and len(scores):
        # identify names the top raw candidate when its normalised score passes: the same here
        sims = score(data.embeddings[strangers], gallery)
        same = data.names[strangers][:, None] == enrolled[None, :]
        top = np.argmax(np.where(same, -np.inf, sims), axis=1)
        scores = np.asarray(
            [
                as_norm_scores(
                    q[None],
                    gallery[j][None],
                    enrolled[j : j + 1],
                    cohort,
                    cohort_names,
                    top_k or ASNORM_TOP_K,
                )[0, 0]
                for q, j in zip(data.embeddings[strangers], top, strict=True)
            ]
        )
    try:
        threshold = fpir_threshold(scores, fpir)
        method = "leave-one-speaker-out"
    except DataError as exc:
        try:
            threshold = power_threshold(trials.scores[~trials.labels], fpir, len(gallery))
            method = "power"
            notes.append(
                f"1:N threshold from 1:1 impostor scores raised to N={len(gallery)} "
                f"(too few calibration recordings for a direct estimate: {exc})"
            )
        except DataError as exc2:
            notes.append(f"the 1:N threshold is not set: {exc2}")
            return {}
    measured = float((scores >= threshold).mean()) if len(scores) else None
    return {
        "identify_threshold": threshold,
        "identify_fpir": fpir,
        "identify_method": method,
        "identify_fpir_measured": measured,
    }


def calibrate(
    store: SpeakerStore,
    embedder: BaseEmbedder,
    roots: Sequence[str | Path],
    *,
    far: float | None = None,
    fpir: float = DEFAULT_FPIR,
    norm: str = "none",
    cohort: str = "auto",
    enroll_size: int = 3,
    seed: int = 0,
    dry_run: bool = False,
    on_file: Callable[[str, int, int], None] | None = None,
) -> CalibrationReport:
    """Calibrate a store on labelled in-domain recordings and write it (unless ``dry_run``).

    ``cohort`` (with ``norm="asnorm"``): ``model`` (the checkpoint's shipped cohort),
    ``store`` (the enrolled speakers) or ``auto`` (the model's when it has one).
    """
    if cohort not in COHORTS:
        raise DataError(f"unknown --cohort {cohort!r}; one of {list(COHORTS)}")
    if norm not in NORMS:
        raise DataError(f"unknown --norm {norm!r}; one of {list(NORMS)}")
    fingerprint, dim, source = model_id(embedder)
    store.check_model(fingerprint, dim, source, embedder.vad)  # fail before the slow part
    names, gallery = store.matrix()
    identity = model_identity(embedder)
    shipped = identity.cohort() if norm == "asnorm" else None
    kind = cohort if cohort != "auto" else ("model" if shipped is not None else "store")
    cohort_vectors = cohort_names = None
    if norm == "asnorm":
        if kind == "model":
            if shipped is None:
                raise DataError(
                    f"{embedder.model.path}: this model ships no AS-norm cohort; use --cohort store"
                )
            cohort_vectors = l2_normalize(np.asarray(shipped, dtype=np.float32))
        else:
            cohort_vectors, cohort_names = gallery, np.asarray(names)
    data = embed_folders(embedder, roots, on_file)
    report = fit_calibration(
        data,
        fingerprint,
        far=far,
        fpir=fpir,
        norm=norm,
        cohort=cohort_vectors,
        cohort_names=cohort_names,
        cohort_kind=kind,
        gallery=gallery if len(names) else None,
        gallery_names=names,
        enroll_size=enroll_size,
        seed=seed,
        model_threshold=embedder.model.threshold,
        sources=[str(r) for r in roots],
        decision=identity.decision,
    )
    if dry_run:
        return report
    store.set_calibration(report.calibration)
    return CalibrationReport(**{**report.__dict__, "written": True})
