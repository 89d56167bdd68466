"""``speakerid calibrate`` end to end, threshold precedence, and enrollment quality."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import Voice, synth_voice, write_wav

from speakerid.decision.calibration import Calibration
from speakerid.decision.constants import DEFAULT_THRESHOLD, GIVEN
from speakerid.decision.model import DecisionModel
from speakerid.decision.thresholds import resolve_threshold
from speakerid.recognition import recording_quality
from speakerid.store.db import SCHEMA_VERSION
from speakerid.store.speakers import SpeakerStore

PITCHES = (100.0, 125.0, 150.0, 180.0, 210.0, 240.0)


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/<speaker>/<k>.wav``: 6 synthetic speakers with 4 recordings each."""
    root = tmp_path_factory.mktemp("labelled")
    for i, pitch in enumerate(PITCHES):
        voice = Voice(pitch, ((500 + 60 * i, 80), (1500 + 150 * i, 110), (2600 + 80 * i, 150)))
        for k in range(4):
            write_wav(root / f"spk{i}" / f"{k}.wav", synth_voice(voice, seed=1000 * i + k))
    return root


def calibration_of(store: Path) -> dict:
    conn = sqlite3.connect(store)
    try:
        return json.loads(
            conn.execute("SELECT value FROM meta WHERE key = 'calibration'").fetchone()[0]
        )
    finally:
        conn.close()


def test_resolve_threshold_precedence() -> None:
    assert resolve_threshold(0.7, 0.2, 0.4) == (0.2, GIVEN)
    assert resolve_threshold(0.7, None, 0.4) == (0.4, "store")
    assert resolve_threshold(0.7, None, None) == (0.7, "model")
    assert resolve_threshold(None, None, None) == (DEFAULT_THRESHOLD, "default")


@pytest.mark.slow
def test_calibrate_then_verify_and_identify_use_the_store(
    cli, enrolled_store: Path, labelled_dir: Path, voices_dir: Path, tmp_path: Path
) -> None:
    plot = tmp_path / "cal.png"
    result = cli("calibrate", labelled_dir, "--plot", plot, store=enrolled_store)
    assert result.exit_code == 0, result.output
    assert "EER" in result.output and "written to" in result.output
    assert plot.stat().st_size > 10_000
    cal = calibration_of(enrolled_store)
    assert cal["n_speakers"] == 6 and cal["n_target"] == 24 and cal["n_nontarget"] == 24 * 20
    assert cal["data"] == [str(labelled_dir)] and len(cal["model_fingerprint"]) == 64
    assert cal["store_speakers"] == 2 and cal["identify_threshold"] is not None

    alice = voices_dir / "alice_3.wav"
    verified = json.loads(cli("verify", "alice", alice, "--json", store=enrolled_store).output)
    assert verified["threshold_source"] == "store" and verified["far"] == 0.01
    # the store's decision calibration: the threshold for this clip's and enrollment's quality
    decision = DecisionModel.from_dict(cal["decision"])
    q = verified["quality"]
    expected = decision.thresholds(0.01, q["test_seconds"], q["enroll_seconds"], 2)[0]
    assert q["enroll_count"] == 2 and verified["threshold"] == pytest.approx(expected)
    assert verified["accepted"] == (verified["score"] >= verified["threshold"])
    overridden = json.loads(
        cli("verify", "alice", alice, "--json", "-t", "0.123", store=enrolled_store).output
    )
    assert (overridden["threshold"], overridden["threshold_source"]) == (0.123, "--threshold")
    found = json.loads(cli("identify", alice, "--json", store=enrolled_store).output)[0]
    assert found["threshold_source"] == "store" and found["far"] == 0.01
    assert len(found["accepted"]) == len(found["candidates"]) == len(found["thresholds"])

    info = cli("info", store=enrolled_store)
    assert "calibrated on this store's data by speakerid calibrate" in info.output
    assert str(labelled_dir) in info.output
    data = json.loads(cli("info", "--json", store=enrolled_store).output)
    assert data["verify_source"] == "store" and data["identify_source"] == "store"
    assert data["model"]["threshold"] == 0.5  # the model's own stays visible


def test_calibration_of_another_model_is_ignored(
    cli, enrolled_store: Path, labelled_dir: Path, voices_dir: Path
) -> None:
    with SpeakerStore(enrolled_store) as db:
        db.set_calibration(Calibration.from_json(json.dumps(_fake(model_fingerprint="b" * 64))))
    verified = json.loads(
        cli("verify", "alice", voices_dir / "alice_3.wav", "--json", store=enrolled_store).output
    )
    assert (verified["threshold"], verified["threshold_source"]) == (0.5, "model")
    assert "not the one in use" in cli("info", store=enrolled_store).output


def _fake(**changes: object) -> dict:
    base = dict(
        threshold=0.3, raw_threshold=0.3, target="eer", norm="none", eer=0.1, eer_threshold=0.3,
        min_dcf=0.5, min_dcf_threshold=0.4, p_target=0.01, false_accept_rate=0.1,
        miss_rate=0.1, n_speakers=6, n_recordings=24, n_target=24, n_nontarget=480,
        enroll_size=3, data=["x"], date="2026-01-01T00:00:00+00:00", model_fingerprint="",
        identify_threshold=0.35, identify_fpir=0.05, identify_method="leave-one-speaker-out",
        identify_fpir_measured=0.05, store_speakers=1,
    )  # fmt: skip
    return {**base, **changes}


def test_identify_warns_when_the_store_outgrew_its_calibration(
    cli, enrolled_store: Path, voices_dir: Path, model_path: Path
) -> None:
    from speakerid.pins import file_sha256

    fake = _fake(model_fingerprint=file_sha256(model_path), store_speakers=1)
    with SpeakerStore(enrolled_store) as db:
        db.set_calibration(Calibration.from_json(json.dumps(fake)))
    result = cli("identify", voices_dir / "alice_3.wav", store=enrolled_store)
    assert result.exit_code == 0
    assert "grown from 1 to 2 speakers" in result.output
    assert "threshold 0.3500 (store)" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("speakers", [3, 1])
def test_calibrate_refuses_too_little_data(
    cli, enrolled_store: Path, labelled_dir: Path, tmp_path: Path, speakers: int
) -> None:
    small = tmp_path / "small"
    for i in range(speakers):
        shutil.copytree(labelled_dir / f"spk{i}", small / f"spk{i}")
    before = enrolled_store.read_bytes()
    result = cli("calibrate", small, store=enrolled_store)
    assert result.exit_code == 2
    assert "at least 4 speakers" in result.output
    assert "Traceback" not in result.output
    assert enrolled_store.read_bytes() == before


@pytest.mark.slow
def test_calibrate_dry_run_and_bad_options(cli, store_path: Path, labelled_dir: Path) -> None:
    result = cli("calibrate", labelled_dir, "--dry-run", "--json", store=store_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["written"] is False and report["calibration"]["identify_threshold"] is None
    assert not store_path.exists()
    for bad in (["--far", "2"], ["--target", "far"], ["--norm", "znorm"], ["--fpir", "0"]):
        result = cli("calibrate", labelled_dir, *bad, store=store_path)
        assert result.exit_code == 2, bad
        assert "Traceback" not in result.output
    assert not store_path.exists()
    result = cli("calibrate", labelled_dir, "--norm", "asnorm", store=store_path)
    assert result.exit_code == 2 and "cohort" in result.output


def test_recording_quality_flags_short_and_disagreeing() -> None:
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(16)
    same = centre + 0.3 * rng.standard_normal((3, 16))
    other = rng.standard_normal((1, 16))
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    earlier = unit(same[:2])
    new = unit(np.concatenate([same[2:], other]))
    quality = recording_quality(["good.wav", "other.wav"], new, [12.0, 1.2], earlier, 0.5)
    assert quality[0].problems == [] and quality[0].agreement > 0.5
    assert len(quality[1].problems) == 2
    assert "1.2 s of speech" in quality[1].problems[0]
    assert "below the threshold 0.5000" in quality[1].problems[1]


def test_enroll_warns_and_strict_refuses_short_speech(
    cli, store_path: Path, voices_dir: Path, tmp_path: Path
) -> None:
    from conftest import VOICES

    short = write_wav(tmp_path / "short.wav", synth_voice(VOICES["alice"], 1.3, seed=7))
    files = [voices_dir / "alice_1.wav", short]
    result = cli("enroll", "alice", *files, "--strict", store=store_path)
    assert result.exit_code == 2
    assert "of speech" in result.output and "nothing was enrolled" in result.output
    assert not store_path.exists()
    result = cli("enroll", "alice", *files, store=store_path)
    assert result.exit_code == 0
    assert "warning:" in result.output and "of speech" in result.output
    listing = cli("list", "--json", store=store_path, model=None)
    (alice,) = json.loads(listing.output)["speakers"]
    assert alice["recordings"] == 2
    assert 3.5 < alice["speech_seconds"] < 2.5 + 1.3 + 0.01
    assert -1.0 <= alice["weakest_agreement"] <= 1.0
    table = cli("list", store=store_path, model=None).output
    assert "weakest agreement" in table


def test_schema_1_store_is_read_then_migrated(cli, enrolled_store: Path, voices_dir: Path) -> None:
    # Make a schema-1 store: the same tables without the quality columns.
    conn = sqlite3.connect(enrolled_store)
    conn.execute("ALTER TABLE recordings DROP COLUMN speech_seconds")
    conn.execute("ALTER TABLE recordings DROP COLUMN agreement")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    listing = json.loads(cli("list", "--json", store=enrolled_store, model=None).output)
    assert [s["weakest_agreement"] for s in listing["speakers"]] == [None, None]
    assert cli("enroll", "carol", voices_dir / "carol_1.wav", store=enrolled_store).exit_code == 0
    with SpeakerStore(enrolled_store) as db:
        assert db.meta()["schema_version"] == str(SCHEMA_VERSION)
        speakers = {s.speaker: s for s in db.speakers()}
    assert speakers["alice"].weakest_agreement is not None  # recomputed from stored vectors
    assert speakers["alice"].speech_seconds is None  # unknown: the files were not reread
    assert speakers["carol"].speech_seconds == pytest.approx(2.5, abs=0.5)


def test_calibration_survives_replace(enrolled_store: Path) -> None:
    cal = Calibration.from_json(json.dumps(_fake()))
    with SpeakerStore(enrolled_store) as db:
        db.set_calibration(cal)
        assert db.calibration() == cal
        db.set_calibration(replace(cal, threshold=0.25))
        assert db.calibration().threshold == 0.25
        db.set_calibration(None)
        assert db.calibration() is None


@pytest.mark.slow
def test_asnorm_with_the_store_cohort(
    cli, enrolled_store: Path, labelled_dir: Path, voices_dir: Path, model_path: Path
) -> None:
    from speakerid.decision.calibration import as_norm_scores
    from speakerid.embedding.pipeline import open_embedder
    from speakerid.pins import file_sha256

    rng = np.random.default_rng(0)
    with SpeakerStore(enrolled_store) as db:  # a cohort: 12 more speakers of this model
        names = [f"cohort{i}" for i in range(12)]
        db.add_vectors(names, rng.standard_normal((12, 16)), fingerprint=file_sha256(model_path))
    result = cli(
        "calibrate", labelled_dir, "--norm", "asnorm", "--cohort", "store", store=enrolled_store
    )
    assert result.exit_code == 0, result.output
    cal = calibration_of(enrolled_store)
    assert (cal["norm"], cal["cohort"], cal["cohort_size"], cal["top_k"]) == (
        "asnorm",
        "store",
        14,
        13,
    )
    alice = voices_dir / "alice_3.wav"
    got = json.loads(cli("verify", "alice", alice, "--json", store=enrolled_store).output)
    assert got["accepted"] == (got["normalized_score"] >= cal["threshold"])
    with SpeakerStore(enrolled_store) as db:
        names, matrix = db.matrix()
        reference = db.vector("alice")
    query = open_embedder(model_path).embed_file(alice)  # what the CLI ran: the default backend
    expected = as_norm_scores(
        query[None], reference[None], np.array(["alice"]), matrix, np.array(names), 13
    )[0, 0]
    assert got["normalized_score"] == pytest.approx(expected, abs=1e-5)
    raw = json.loads(
        cli("verify", "alice", alice, "--json", "-t", "0.5", store=enrolled_store).output
    )
    assert raw["normalized_score"] is None and raw["threshold_source"] == "--threshold"


def test_enroll_dir_warns_about_quality(cli, store_path: Path, tmp_path: Path) -> None:
    from conftest import VOICES

    root = tmp_path / "people"
    write_wav(root / "alice" / "long.wav", synth_voice(VOICES["alice"], seed=1))
    write_wav(root / "alice" / "short.wav", synth_voice(VOICES["alice"], 1.3, seed=2))
    write_wav(root / "bob" / "long.wav", synth_voice(VOICES["bob"], seed=3))
    result = cli("enroll-dir", root, store=store_path)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "short.wav" in warnings[0] and "of speech" in warnings[0]
    report = json.loads(cli("enroll-dir", root, "--json", store=store_path).output)
    quality = {Path(q["path"]).name: q for r in report["enrolled"] for q in r["quality"]}
    assert quality["short.wav"]["problems"] and not quality["long.wav"]["problems"]


@pytest.mark.slow
def test_asnorm_with_the_model_cohort_works_on_both_backends(
    cli, store_path: Path, labelled_dir: Path, voices_dir: Path, tmp_path: Path
) -> None:
    """A store calibrated on the model's cohort under torch verifies under onnx (and back)."""
    pytest.importorskip("onnxruntime")
    import torch

    from speakerid.encoders.twin import Encoder, ModelConfig, save_encoder

    torch.manual_seed(7)
    rng = np.random.default_rng(7)
    model = tmp_path / "with_cohort.safetensors"
    save_encoder(
        Encoder(ModelConfig(channels=32, embedding_dim=16)),
        model,
        threshold=0.5,
        cohort=rng.standard_normal((30, 16)),
    )
    for name in ("alice", "bob"):
        files = [voices_dir / f"{name}_{k}.wav" for k in (1, 2)]
        assert cli("enroll", name, *files, model=model, store=store_path).exit_code == 0
    result = cli(
        "calibrate", labelled_dir, "--norm", "asnorm", "--cohort", "model",
        model=model, store=store_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    alice = voices_dir / "alice_3.wav"
    answers = {}
    for backend in ("torch", "onnx"):
        got = cli(
            "verify", "alice", alice, "--json", "--backend", backend, model=model, store=store_path
        )
        assert got.exit_code in (0, 1), got.output
        answers[backend] = json.loads(got.output)
    # AS-norm divides by the spread of the top cohort scores, which magnifies the backends'
    # float differences; the same cohort gives the same score to about 1 %
    assert answers["onnx"]["normalized_score"] == pytest.approx(
        answers["torch"]["normalized_score"], rel=0.01
    )
    assert answers["onnx"]["accepted"] == answers["torch"]["accepted"]


def test_calibrate_over_copies_of_one_recording_is_refused(
    cli, enrolled_store: Path, labelled_dir: Path, tmp_path: Path
) -> None:
    """#25 finding 10: folders of links (or copies) of one recording each calibrate nothing."""
    copies = tmp_path / "copies"
    for speaker in sorted(p for p in labelled_dir.iterdir() if p.is_dir()):
        (copies / speaker.name).mkdir(parents=True)
        for k in range(4):
            link = copies / speaker.name / f"{k}.wav"
            if k % 2:
                shutil.copyfile(speaker / "0.wav", link)
            else:
                link.symlink_to(speaker / "0.wav")
    before = enrolled_store.read_bytes()
    result = cli("calibrate", copies, store=enrolled_store)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "2 or more recordings" in lines[0], result.output
    assert "Traceback" not in result.output
    assert enrolled_store.read_bytes() == before


def test_a_degenerate_calibration_is_refused() -> None:
    from speakerid.decision.calibrate import Labelled, fit_calibration
    from speakerid.errors import DataError

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 16))
    emb = np.repeat(centres, 4, axis=0) + 1e-6 * rng.standard_normal((24, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    speakers = np.repeat([f"s{i}" for i in range(6)], 4)
    data = Labelled(emb, speakers, speakers, [f"{i}.wav" for i in range(24)])
    with pytest.raises(DataError, match="degenerate calibration"):
        fit_calibration(data, "f" * 64)
