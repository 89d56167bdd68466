"""The command line through Typer's CliRunner: exit codes, JSON, and what must not appear."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, VOICES, synth_voice, write_wav

from speakerid.encoders.twin import load_encoder
from speakerid.lab.whiten import WHITEN_SHRINKAGE

# ---------------------------------------------------------------- helpers


def ok(result, code: int = 0):
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return result


def error(result, *needles: str):
    """Exit 2, one red line on stderr starting 'error:', no traceback, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""
    return lines[0]


def as_json(result):
    return json.loads(result.stdout)


def voice(voices_dir: Path, name: str, k: int) -> str:
    return str(voices_dir / f"{name}_{k}.wav")


def snapshot(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


# ---------------------------------------------------------------- happy paths


def test_enroll_verify_identify_list_remove_info(cli, store_path: Path, voices_dir: Path) -> None:
    r = as_json(
        ok(cli("enroll", "alice", voice(voices_dir, "alice", 1), "--json", store=store_path))
    )
    assert r["speaker"] == "alice" and r["created"] and r["recordings"] == 1
    r = as_json(
        ok(cli("enroll", "alice", voice(voices_dir, "alice", 2), "--json", store=store_path))
    )
    assert not r["created"] and r["added"] == 1 and r["recordings"] == 2
    out = ok(
        cli(
            "enroll",
            "bob",
            voice(voices_dir, "bob", 1),
            voice(voices_dir, "bob", 2),
            store=store_path,
        )
    ).stdout
    assert "enrolled" in out and "bob" in out

    # verify: JSON shape, ranges, and an exit status that follows "accepted"
    for name, f in (("alice", "alice"), ("alice", "bob")):
        res = cli("verify", name, voice(voices_dir, f, 3), "--json", store=store_path)
        v = as_json(ok(res, res.exit_code))
        assert set(v) >= {"speaker", "score", "threshold", "accepted"}
        assert -1.0 <= v["score"] <= 1.0 and v["threshold"] == 0.5
        assert v["accepted"] == (v["score"] >= v["threshold"])
        assert res.exit_code == (0 if v["accepted"] else 1)
    res = ok(cli("verify", "alice", voice(voices_dir, "alice", 3), "-t", "-1", store=store_path))
    assert "accepted" in res.stdout
    res = ok(
        cli(
            "verify",
            "alice",
            voice(voices_dir, "alice", 3),
            "--threshold",
            "1.0",
            "--json",
            store=store_path,
        ),
        1,
    )
    assert as_json(res)["accepted"] is False and as_json(res)["threshold"] == 1.0

    # identify: ranked, --top, open set
    (one,) = as_json(  # a list even for one file: scripts need not special-case it
        ok(
            cli(
                "identify",
                voice(voices_dir, "bob", 3),
                "--top",
                "1",
                "--json",
                "-t",
                "-1",
                store=store_path,
            )
        )
    )
    assert one["file"] == voice(voices_dir, "bob", 3)
    assert len(one["candidates"]) == 1 and one["best"] == one["candidates"][0]["speaker"]
    files = [voice(voices_dir, "alice", 3), voice(voices_dir, "carol", 1)]
    many = as_json(ok(cli("identify", *files, "--json", "--threshold", "1.0", store=store_path)))
    assert [m["file"] for m in many] == files
    for m in many:
        assert m["best"] is None
        assert {c["speaker"] for c in m["candidates"]} == {"alice", "bob"}
        scores = [c["score"] for c in m["candidates"]]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= s <= 1.0 for s in scores)
    text = ok(cli("identify", *files, "-t", "1.0", store=store_path)).stdout
    assert text.count("unknown") == 2
    assert ok(cli("identify", files[0], "--top", "0", store=store_path), 2)

    listed = as_json(ok(cli("list", "--json", store=store_path, model=False)))
    assert [(s["speaker"], s["recordings"]) for s in listed["speakers"]] == [
        ("alice", 2),
        ("bob", 2),
    ]
    assert "alice" in ok(cli("list", store=store_path, model=False)).stdout

    info = as_json(ok(cli("info", "--json", store=store_path)))
    assert info["store"]["speakers"] == 2 and info["store"]["recordings"] == 4
    assert info["model"]["fingerprint"] == info["store"]["model_fingerprint"]
    assert info["model"]["threshold"] == 0.5 and info["model"]["threshold_source"] == "model"
    assert info["compatible"] is True
    text = ok(cli("info", store=store_path)).stdout
    assert "fingerprint" in text and "threshold" in text

    r = as_json(ok(cli("remove", "bob", "--json", store=store_path, model=False)))
    assert r == {"speaker": "bob", "recordings": 2, "store": str(store_path)}
    listed = as_json(ok(cli("list", "--json", store=store_path, model=False)))
    assert [s["speaker"] for s in listed["speakers"]] == ["alice"]

    r = as_json(
        ok(
            cli(
                "enroll",
                "alice",
                voice(voices_dir, "alice", 3),
                "--replace",
                "--json",
                store=store_path,
            )
        )
    )
    assert r["replaced"] and r["recordings"] == 1


def test_info_without_calibrated_threshold_says_so(cli, tmp_path: Path) -> None:
    from conftest import make_checkpoint

    model = make_checkpoint(tmp_path / "nothr.safetensors", seed=0, threshold=None)
    info = as_json(ok(cli("info", "--json", store=tmp_path / "s.sqlite", model=model)))
    assert info["model"]["threshold_source"] == "default"
    text = ok(cli("info", store=tmp_path / "s.sqlite", model=model)).stdout
    assert "no calibrated threshold" in text
    assert not (tmp_path / "s.sqlite").exists()  # info never creates a store


def test_info_reports_missing_default_model(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speakerid.encoders.registry

    monkeypatch.setattr(speakerid.encoders.registry, "PACKAGE_DIR", tmp_path / "none")
    monkeypatch.setattr(speakerid.encoders.registry, "REPO_DIR", tmp_path / "none")
    info = as_json(ok(cli("info", "--json", store=tmp_path / "s.sqlite", model=False)))
    assert info["model"]["error"] and info["model"]["fingerprint"] is None


def test_shipped_model_loads_and_is_checksummed(cli, tmp_path: Path) -> None:
    info = as_json(ok(cli("info", "--json", store=tmp_path / "s.sqlite", model=False)))
    from speakerid.encoders.registry import DEFAULT_MODEL, SHIPPED

    assert info["model"]["fingerprint"] == SHIPPED[DEFAULT_MODEL].sha256
    assert 0.0 < info["model"]["threshold"] < 1.0


def test_embed_npz_keys_exactly_as_given(
    cli, voices_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(voices_dir)
    keys = [
        "./alice_1.wav",
        "bob_1.wav",
        str(voices_dir / "carol_1.wav"),
        f"../{voices_dir.name}/alice_2.wav",
    ]
    out = tmp_path / "embeddings.npz"
    r = as_json(ok(cli("embed", *keys, "--out", out, "--json")))
    assert r["files"] == keys and r["dim"] == 16
    with np.load(out) as z:
        assert sorted(z.files) == sorted(keys)
        for k in keys:
            assert z[k].shape == (16,) and z[k].dtype == np.float32
            assert abs(float(np.linalg.norm(z[k])) - 1.0) < 1e-5


def test_precision_option_and_environment(cli, voices_dir: Path, tmp_path: Path) -> None:
    import torch

    from speakerid.embedding.backends.torch import native_bf16

    sample = voice(voices_dir, "alice", 1)
    torch_backend = ("--backend", "torch")  # fp32/bf16/auto are the torch backend's
    got = {}
    native = native_bf16(torch.device("cpu"))
    for precision in ("fp32", "bf16", "auto") if native else ("fp32", "auto"):
        out = tmp_path / f"{precision}.npz"
        ok(cli("embed", sample, "--out", out, "--precision", precision, *torch_backend))
        with np.load(out) as z:
            got[precision] = z[sample]
    if native:
        assert float(got["fp32"] @ got["bf16"]) > 0.99
    else:  # refused in one line rather than emulated
        refused = cli(
            "embed", sample, "--out", tmp_path / "b.npz", "--precision", "bf16", *torch_backend
        )
        error(refused, "bf16")
    assert any(np.array_equal(got["auto"], got[p]) for p in got if p != "auto")
    env = {"SPEAKERID_PRECISION": "fp32"}
    ok(cli("embed", sample, "--out", tmp_path / "env.npz", *torch_backend, env=env))
    with np.load(tmp_path / "env.npz") as z:
        np.testing.assert_array_equal(z[sample], got["fp32"])
    error(cli("embed", sample, "--out", tmp_path / "x.npz", "--precision", "fp8"), "fp8")
    assert not (tmp_path / "x.npz").exists()
    # the onnx backend (the default) runs fp32 graphs: bf16 is refused there in one line
    error(cli("embed", sample, "--out", tmp_path / "y.npz", "--precision", "bf16"), "torch")


def test_store_from_environment(cli, runner, tmp_path: Path, voices_dir: Path) -> None:
    env_store = tmp_path / "env" / "store.sqlite"
    env = {"SPEAKERID_STORE": str(env_store)}
    ok(cli("enroll", "carol", voice(voices_dir, "carol", 1), env=env))
    assert env_store.exists()
    listed = as_json(ok(cli("list", "--json", model=False, env=env)))
    assert listed["store"] == str(env_store)
    assert [s["speaker"] for s in listed["speakers"]] == ["carol"]
    # --store wins over the environment
    other = tmp_path / "other.sqlite"
    listed = as_json(ok(cli("list", "--json", store=other, model=False, env=env)))
    assert listed["speakers"] == [] and not other.exists()
    # without either: the user data dir (XDG_DATA_HOME is a tmp dir in the tests)
    ok(cli("enroll", "carol", voice(voices_dir, "carol", 2)))
    assert (tmp_path / "xdg-data" / "speakerid" / "store.sqlite").exists()


@pytest.mark.slow
def test_enroll_dir(cli, tmp_path: Path, store_path: Path) -> None:
    root = tmp_path / "corpus"
    for i, (name, v) in enumerate(VOICES.items()):
        for k in (1, 2):
            if name == "bob":  # LibriSpeech layout: <speaker>/<chapter>/<utt>.flac
                path = root / "bob" / "42" / f"bob-42-{k}.flac"
            else:
                path = root / name / f"{name}_{k}.wav"
            write_wav(path, synth_voice(v, seed=10 * i + k))
    (root / "carol" / "broken.wav").write_text("not audio")
    (root / "bad name!").mkdir()
    write_wav(root / "bad name!" / "x.wav", synth_voice(VOICES["alice"], seed=99))
    (root / "empty").mkdir()

    # the good files are enrolled, each bad one is a line on stderr, and the exit status is 2
    res = ok(cli("enroll-dir", root, "--json", store=store_path), code=2)
    r = as_json(res)
    assert sorted(e["speaker"] for e in r["enrolled"]) == ["alice", "bob", "carol"]
    assert {e["speaker"]: e["recordings"] for e in r["enrolled"]}["carol"] == 2
    failed = {Path(s["file"]).name for s in r["errors"]}
    assert failed == {"broken.wav", "bad name!"}
    assert all(e["error"] for e in r["errors"])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert any("broken.wav" in line for line in lines)

    # a second run adds nothing new: the same paths are re-embedded
    r = as_json(ok(cli("enroll-dir", root, "--json", store=store_path), code=2))
    assert all(e["added"] == 0 and e["updated"] == 2 for e in r["enrolled"])
    text = ok(cli("enroll-dir", root, "--replace", store=store_path), code=2)
    assert "3 speaker(s)" in text.stdout and "2 failed" in text.stdout
    assert "broken.wav" in text.stderr

    # --strict stops at the first failure (folders are taken in order: "bad name!" first)
    error(cli("enroll-dir", root, "--strict", store=tmp_path / "strict.sqlite"), "bad name!")

    error(cli("enroll-dir", tmp_path / "nowhere", store=store_path), "no such directory")
    error(cli("enroll-dir", root / "empty", store=store_path), "no speaker folders")


def test_keyboard_interrupt_is_clean(
    cli, store_path: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speakerid.api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(speakerid.api, "enroll", interrupted)
    res = cli("enroll", "alice", voice(voices_dir, "alice", 1), store=store_path)
    assert res.exit_code == 130 and "interrupted" in res.stderr
    assert "Traceback" not in res.output


# ---------------------------------------------------------------- bad audio


def _flac_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "good.flac"
    sf.write(str(path), synth_voice(VOICES["carol"], seconds=2.5, seed=5), SR, format="FLAC")
    return path.read_bytes()


def _put(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


BAD_AUDIO = {
    "missing": lambda d: d / "missing.wav",
    "directory": lambda d: _mkdir(d / "adir.wav"),
    "empty": lambda d: _put(d / "empty.wav", b""),
    "zero-samples": lambda d: write_wav(d / "zero.wav", np.zeros(0, np.float32)),
    "silent": lambda d: write_wav(d / "silent.wav", np.zeros(2 * SR, np.float32)),
    "too-short": lambda d: write_wav(d / "short.wav", synth_voice(VOICES["bob"], 0.3)),
    "corrupt-flac": lambda d: _put(
        d / "corrupt.flac", _flac_bytes(d)[:64] + np.random.default_rng(0).bytes(40_000)
    ),
    "truncated-flac": lambda d: _put(d / "trunc.flac", _flac_bytes(d)[:3000]),
    "text-as-wav": lambda d: _put(d / "text.wav", "hello\n" * 100),
}


BAD_AUDIO_REASON = {
    "missing": "no such file",
    "directory": "is a directory",
    "empty": "the file is empty",
    "zero-samples": "no audio samples",
    "silent": "silent",
    "too-short": "of speech",
    "corrupt-flac": "damaged",
    "truncated-flac": "cut short or damaged",
    "text-as-wav": "cannot be read as audio",
}


@pytest.mark.parametrize("kind", list(BAD_AUDIO))
def test_bad_audio_every_command(cli, kind: str, tmp_path: Path, enrolled_store: Path) -> None:
    bad = str(BAD_AUDIO[kind](tmp_path))
    reason = BAD_AUDIO_REASON[kind]
    before = contents_and_bytes(enrolled_store)
    for args in (
        ("enroll", "carol", bad),
        ("enroll", "alice", bad),
        ("verify", "alice", bad),
        ("identify", bad),
    ):
        error(cli(*args, store=enrolled_store), bad, reason)
    out = tmp_path / "e.npz"
    error(cli("embed", bad, "--out", out), bad, reason)
    assert not out.exists()
    assert contents_and_bytes(enrolled_store) == before


def test_one_bad_file_enrolls_nothing(
    cli, tmp_path: Path, enrolled_store: Path, voices_dir: Path
) -> None:
    bad = BAD_AUDIO["silent"](tmp_path)
    before = contents_and_bytes(enrolled_store)
    error(
        cli("enroll", "carol", voice(voices_dir, "carol", 1), bad, store=enrolled_store), "silent"
    )
    assert contents_and_bytes(enrolled_store) == before


@pytest.mark.skipif(os.name != "posix", reason="chmod")
def test_unreadable_file(cli, tmp_path: Path, enrolled_store: Path, voices_dir: Path) -> None:
    path = tmp_path / "secret.wav"
    path.write_bytes(Path(voice(voices_dir, "alice", 1)).read_bytes())
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user that reads mode-000 files (root)")
        error(cli("verify", "alice", path, store=enrolled_store), "secret.wav")
    finally:
        path.chmod(0o644)


# ---------------------------------------------------------------- stores, names, models


def contents_and_bytes(path: Path) -> tuple:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = tuple(
            tuple(conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall())
            for t in ("meta", "speakers", "recordings")
        )
    finally:
        conn.close()
    return rows, path.read_bytes()


def test_unknown_speaker(cli, enrolled_store: Path, voices_dir: Path) -> None:
    before = contents_and_bytes(enrolled_store)
    error(cli("verify", "zed", voice(voices_dir, "alice", 3), store=enrolled_store), "'zed'")
    error(cli("remove", "zed", store=enrolled_store, model=False), "not enrolled")
    assert contents_and_bytes(enrolled_store) == before


@pytest.mark.parametrize("name", ["../evil", "a/b", " alice", "x" * 65, "..", ""])
def test_invalid_names(cli, name: str, store_path: Path, voices_dir: Path) -> None:
    error(cli("enroll", name, voice(voices_dir, "alice", 1), store=store_path), "speaker name")
    assert not store_path.exists()
    assert not (store_path.parent / "evil").exists()


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"not a database at all\n",
        bytes(range(256)) * 64,
        b"SQLite format 3\x00" + b"\xff" * 4000,
    ],
)
def test_damaged_store(cli, damage: bytes, store_path: Path, voices_dir: Path) -> None:
    store_path.write_bytes(damage)
    for args, model in (
        (("enroll", "alice", voice(voices_dir, "alice", 1)), True),
        (("verify", "alice", voice(voices_dir, "alice", 1)), True),
        (("identify", voice(voices_dir, "alice", 1)), True),
        (("list",), False),
        (("remove", "alice"), False),
        (("info",), True),
    ):
        error(cli(*args, store=store_path, model=model), str(store_path))
    assert store_path.read_bytes() == damage


def _flip_weight_byte(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[-101] ^= 0x10  # deep in the weights, past the JSON header
    dst.write_bytes(bytes(data))
    return dst


def test_bad_checkpoints(
    cli,
    tmp_path: Path,
    enrolled_store: Path,
    model_path: Path,
    other_model_path: Path,
    voices_dir: Path,
) -> None:
    before = contents_and_bytes(enrolled_store)
    sample = voice(voices_dir, "alice", 3)
    random_model = tmp_path / "random.safetensors"
    random_model.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(model_path.read_bytes()[:5000])
    tampered = _flip_weight_byte(model_path, tmp_path / "tampered.safetensors")
    for model, needle in (
        (random_model, "random.safetensors"),
        (truncated, "trunc.safetensors"),
        (tmp_path / "none.safetensors", "no such model"),
        (tmp_path, "no such model"),
        (tampered, "another"),  # loads, but its fingerprint is not the store's
        (other_model_path, "--store"),
    ):
        for args in (
            ("enroll", "alice", sample),
            ("verify", "alice", sample),
            ("identify", sample),
        ):
            line = error(cli(*args, store=enrolled_store, model=model))
            if needle in ("another", "--store"):
                assert "--store" in line and "remove" in line
            else:
                assert needle in line
        if needle not in ("another", "--store"):  # embed needs no store
            error(cli("embed", sample, "--out", tmp_path / "e.npz", model=model))
    assert contents_and_bytes(enrolled_store) == before
    assert not (tmp_path / "e.npz").exists()


def test_model_mismatch_names_both_models(
    cli, enrolled_store: Path, model_path: Path, other_model_path: Path, voices_dir: Path
) -> None:
    line = error(
        cli(
            "verify",
            "alice",
            voice(voices_dir, "alice", 3),
            store=enrolled_store,
            model=other_model_path,
        )
    )
    assert model_path.name in line and other_model_path.name in line
    info = as_json(ok(cli("info", "--json", store=enrolled_store, model=other_model_path)))
    assert info["compatible"] is False


def test_every_train_flag_sets_the_train_setting_of_its_name(
    runner, tmp_path: Path, monkeypatch
) -> None:
    """One flag per TrainConfig setting, named after it: given a value other than the
    default, each flag changes that setting and no other; unset, the defaults hold."""
    import speakerid.lab.train as train_module
    from speakerid.cli import app
    from speakerid.lab.config import TrainConfig

    seen = {}

    def fake_train(cfg, console=None):
        seen["cfg"] = cfg
        return {"best": "x", "history": {}}

    monkeypatch.setattr(train_module, "train", fake_train)
    argv, expected = ["train", str(tmp_path), "--json"], {}
    for name, (_, kind, default) in TrainConfig.settings().items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            argv.append(flag if not default else f"--no-{flag[2:]}")
            expected[name] = not default
        elif name == "val_ways":
            argv += [flag, "7", flag, "9"]
            expected[name] = [7, 9]
        else:
            value = "other" if kind is str else default + (3 if kind is int else 0.25)
            argv += [flag, str(value)]
            expected[name] = value
    ok(runner.invoke(app, argv))
    record = seen["cfg"].flat()
    assert record == {"data": [str(tmp_path)], **expected}
    ok(runner.invoke(app, ["train", str(tmp_path), "--json"]))
    assert seen["cfg"] == TrainConfig(data=(str(tmp_path),))
    assert not seen["cfg"].model.whiten  # fitted afterwards by `speakerid whiten`
    help_text = ok(runner.invoke(app, ["train", "--help"])).stdout
    assert "campp" in help_text and "kaldi_fbank" in help_text


@pytest.mark.slow
def test_train_and_evaluate_commands(runner, tmp_path: Path) -> None:
    from conftest import Voice

    from speakerid.cli import app

    for s in range(5):
        voice = Voice(100.0 + 30 * s, ((500.0 + 60 * s, 80.0), (1200.0 + 120 * s, 100.0)))
        for r in range(2):
            write_wav(
                tmp_path / "corpus" / f"spk{s}" / f"r{r}.wav",
                synth_voice(voice, seconds=4.0, seed=r),
            )
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "corpus"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--val-every",
            "2",
            "--test-speakers",
            "3",
            "--channels",
            "16",
            "--embedding-dim",
            "16",
            "--batch-size",
            "4",
            "--val-ways",
            "3",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "best.safetensors").is_file()
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "corpus"),
            "--model",
            str(out / "best.safetensors"),
            "--out",
            str(tmp_path / "ev"),
            "--trials",
            "50",
            "--compare",
            str(out / "best.safetensors"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["n_speakers"] == 3 and "MFCC-stats k-NN, 1-shot" in report["kway"]
    # the compared checkpoint (here the same one) answers the very same tasks
    assert report["kway"]["run, 1-shot"] == report["kway"]["model, 1-shot"]
    compared = report["compared"]["run"]["verification_fragments"]
    assert compared == report["verification_fragments"]
    for name in ("kway.png", "det.png", "tsne.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 0
    res = runner.invoke(app, ["train", str(tmp_path / "missing"), "--out", str(out)])
    assert res.exit_code == 2 and "Traceback" not in res.output

    # whiten: a new checkpoint with the back-end, fitted on the run's training speakers
    whitened = tmp_path / "whitened.safetensors"
    argv = ["whiten", str(out / "best.safetensors"), str(tmp_path / "corpus"), "--out"]
    res = ok(runner.invoke(app, [*argv, str(whitened), "--json"]))
    report = as_json(res)
    assert report["speakers"] == 2 and report["fragments"] >= 4
    assert report["shrinkage"] in WHITEN_SHRINKAGE
    assert report["better_than_none"] is None  # no validation speakers to measure it on
    model = load_encoder(whitened)
    assert model.encoder.config.whiten and model.info["whitening"]["method"] == "wccn"
    assert model.threshold is None  # nothing to calibrate on: the run's old threshold is void
    before = whitened.read_bytes()
    error(runner.invoke(app, [*argv, str(whitened)]), "exists", "--force")
    assert whitened.read_bytes() == before
    res = ok(runner.invoke(app, [*argv, str(whitened), "--force", "--shrinkage", "0.5"]))
    assert "whitened on 2 training speakers" in res.stdout
    assert load_encoder(whitened).info["whitening"]["shrinkage"] == 0.5
    error(runner.invoke(app, [*argv, str(whitened), "--force", "--shrinkage", "0"]), "positive")
    error(
        runner.invoke(app, [*argv[:2], str(tmp_path / "missing"), "--out", str(tmp_path / "w")]),
        "missing",
    )
    assert not (tmp_path / "w").exists()


def test_whiten_needs_a_checkpoint_with_a_split(runner, model_path: Path, tmp_path: Path) -> None:
    from speakerid.cli import app

    argv = ["whiten", str(model_path), str(tmp_path), "--out", str(tmp_path / "w.safetensors")]
    error(runner.invoke(app, argv), "records no training speakers")
    assert not (tmp_path / "w.safetensors").exists()


def test_models_lists_the_shipped_models(cli) -> None:
    from speakerid.encoders.registry import DEFAULT_MODEL, FUSIONS, SHIPPED

    rows = as_json(ok(cli("models", "--json", model=False)))
    assert [r["name"] for r in rows] == [*SHIPPED, *FUSIONS]
    by_name = {r["name"]: r for r in rows}
    assert by_name[DEFAULT_MODEL]["default"] and not by_name["fast"]["default"]
    for r in rows:
        assert r["error"] is None and r["parameters"] > 1e6 and r["megabytes"] > 1
        assert set(r["measured"]["eer"]) >= {"ravdess", "ami", "libri_fragments"}
        if r["name"] in SHIPPED:
            assert r["sha256"] == SHIPPED[r["name"]].sha256 and -1 < r["threshold"] < 1
    best = by_name["best"]  # the fusion: its members' sizes, summed
    assert best["sha256"] == FUSIONS["best"].sha256 and best["embedding_dim"] == 384
    assert best["parameters"] == by_name["accurate"]["parameters"] + by_name["ecapa"]["parameters"]
    text = ok(cli("models", model=False)).stdout
    assert "accurate (default)" in text and "\nfast" in text and "ravdess" in text
    assert "\nbest" in text


def test_fast_and_accurate_names_select_shipped_models(cli, tmp_path: Path) -> None:
    from speakerid.encoders.registry import SHIPPED

    for name in ("fast", "accurate"):
        info = as_json(ok(cli("info", "--json", store=tmp_path / "s.sqlite", model=name)))
        assert info["model"]["fingerprint"] == SHIPPED[name].sha256
    sample = tmp_path / "x.wav"
    write_wav(sample, synth_voice(VOICES["alice"], seconds=2.0))
    missing = cli("embed", sample, "--out", tmp_path / "x.npz", model="nosuchmodel")
    error(missing, "no such model file")


# ---------------------------------------------------------------- batches, stdin, limits


def test_embed_batch_keeps_every_good_file(cli, voices_dir: Path, tmp_path: Path) -> None:
    good = [voice(voices_dir, "alice", 1), voice(voices_dir, "bob", 1)]
    bad = str(BAD_AUDIO["silent"](tmp_path))
    missing = str(tmp_path / "missing.wav")
    out = tmp_path / "e.npz"
    res = ok(cli("embed", good[0], bad, good[1], missing, "--out", out, "--json"), code=2)
    r = as_json(res)
    assert r["files"] == good and r["out"] == str(out)
    assert [e["file"] for e in r["errors"]] == [bad, missing]
    assert "silent" in r["errors"][0]["error"] and "no such file" in r["errors"][1]["error"]
    lines = res.stderr.strip().splitlines()
    assert lines == [f"error: {e['error']}" for e in r["errors"]]
    with np.load(out) as z:
        assert sorted(z.files) == sorted(good)
    # --strict stops at the first failure and writes nothing
    strict = tmp_path / "strict.npz"
    error(cli("embed", good[0], bad, good[1], "--out", strict, "--strict"), bad, "silent")
    assert not strict.exists()
    # text mode: the good ones are reported on stdout, the bad one on stderr
    res = ok(cli("embed", bad, good[0], "--out", tmp_path / "t.npz"), code=2)
    assert "wrote 1 embedding" in res.stdout and bad in res.stderr


def test_identify_batch_reports_bad_files_in_place(
    cli, enrolled_store: Path, voices_dir: Path, tmp_path: Path
) -> None:
    bad = str(BAD_AUDIO["too-short"](tmp_path))
    query = voice(voices_dir, "alice", 3)
    res = ok(cli("identify", bad, query, "--json", store=enrolled_store), code=2)
    r = as_json(res)
    assert r[0]["file"] == bad and "of speech" in r[0]["error"] and "candidates" not in r[0]
    assert r[1]["file"] == query and r[1]["candidates"]
    text = ok(cli("identify", query, bad, store=enrolled_store), code=2)
    assert query in text.stdout and "threshold" in text.stdout and bad not in text.stdout
    assert text.stderr.strip().startswith(f"error: {bad}")
    error(cli("identify", query, bad, "--strict", store=enrolled_store), bad)


def test_min_speech_is_named_measured_and_overridable(
    cli, enrolled_store: Path, tmp_path: Path
) -> None:
    from speakerid.audio import MIN_SPEECH_SECONDS

    short = write_wav(tmp_path / "short.wav", synth_voice(VOICES["alice"], 0.4))
    line = error(cli("verify", "alice", short, store=enrolled_store))
    assert f"at least {MIN_SPEECH_SECONDS:g} s" in line and "--min-speech" in line
    measured = float(line.split("only ")[1].split(" s")[0])
    assert 0.1 < measured < MIN_SPEECH_SECONDS
    res = cli("verify", "alice", short, "--min-speech", "0.1", store=enrolled_store)
    assert res.exit_code in (0, 1), res.output
    error(cli("verify", "alice", short, "--min-speech", "0", store=enrolled_store), "positive")


def test_audio_from_stdin(cli, enrolled_store: Path, voices_dir: Path, runner) -> None:
    from speakerid.cli import app

    path = voice(voices_dir, "alice", 3)
    by_path = as_json(ok(cli("verify", "alice", path, "--json", store=enrolled_store), code=0))
    args = ["verify", "alice", "-", "--json", "--store", str(enrolled_store)]
    args += ["--model", str(_model_of(enrolled_store))]
    piped = runner.invoke(app, args, input=Path(path).read_bytes())
    r = json.loads(piped.stdout)
    assert r["file"] == "-" and abs(r["score"] - by_path["score"]) < 1e-5
    # raw PCM: the same samples without a header, at the rate given
    wav, rate = sf.read(path, dtype="int16")
    raw = runner.invoke(app, [*args, "--sample-rate", str(rate)], input=wav.tobytes())
    assert abs(json.loads(raw.stdout)["score"] - by_path["score"]) < 1e-4
    # 8 kHz raw PCM is resampled
    eight = runner.invoke(app, [*args, "--sample-rate", "8000"], input=wav[::2].tobytes())
    assert eight.exit_code in (0, 1), eight.output
    json_error(runner.invoke(app, args, input=b""), "nothing was read")
    json_error(runner.invoke(app, args, input=b"\x00\x01" * 100), "--sample-rate")
    error(runner.invoke(app, ["identify", "-", "-"], input=b""), "only once")
    error(runner.invoke(app, ["identify", path, "--sample-rate", "8000"]), "stdin")


def _model_of(store: Path) -> Path:
    conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return Path(conn.execute("SELECT value FROM meta WHERE key='model_source'").fetchone()[0])
    finally:
        conn.close()


def test_export_command(cli, model_path: Path, tmp_path: Path, voices_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    r = as_json(ok(cli("export", model_path, "--onnx", out, "--json", model=False)))
    assert r["onnx"] == str(out) and out.is_file()
    error(cli("export", model_path, "--onnx", out, model=False), "--force")
    ok(cli("export", model_path, "--onnx", out, "--force", model=False))
    sample = voice(voices_dir, "alice", 1)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    ok(cli("embed", sample, "--out", a, "--precision", "fp32"))
    ok(cli("embed", sample, "--out", b, "--backend", "onnx", model=out))
    with np.load(a) as za, np.load(b) as zb:
        assert float(za[sample] @ zb[sample]) >= 0.9999
    error(cli("export", tmp_path / "none.safetensors", "--onnx", tmp_path / "x.onnx", model=False))


# ---------------------------------------------------------------- one name, valid JSON, errors


def _refuse_constant(name: str) -> None:
    raise ValueError(f"invalid JSON: {name}")


def json_error(result, *needles: str, code: int = 2) -> dict:
    """With --json: the one stderr line, and ``{"error": ..., "code": ...}`` on stdout."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    obj = json.loads(result.stdout, parse_constant=_refuse_constant)  # strict JSON
    assert set(obj) == {"error", "code"} and obj["code"] == code
    for needle in needles:
        assert needle in obj["error"], (needle, obj)
    return obj


def test_decomposed_name_verifies_and_removes(cli, store_path: Path, voices_dir: Path) -> None:
    composed, decomposed = "Jos\u00e9", "Jose\u0301"
    ok(cli("enroll", composed, voice(voices_dir, "alice", 1), store=store_path))
    res = cli("verify", decomposed, voice(voices_dir, "alice", 2), "--json", store=store_path)
    assert as_json(ok(res, res.exit_code))["speaker"] == composed
    r = as_json(ok(cli("remove", decomposed, "--json", store=store_path, model=False)))
    assert r["speaker"] == composed


@pytest.mark.parametrize("value", ["5", "-5", "1.5", "nan"])
def test_threshold_out_of_range_is_one_line(cli, enrolled_store: Path, value: str, voices_dir):
    sample = voice(voices_dir, "alice", 3)
    error(cli("verify", "alice", sample, "--threshold", value, store=enrolled_store), "threshold")
    error(cli("identify", sample, "-t", value, store=enrolled_store), "threshold")


def test_top_zero_is_one_line(cli, enrolled_store: Path, voices_dir: Path) -> None:
    error(
        cli("identify", voice(voices_dir, "alice", 3), "--top", "0", store=enrolled_store), "--top"
    )


def test_json_errors_are_json_on_stdout(
    cli, enrolled_store: Path, voices_dir: Path, tmp_path: Path
) -> None:
    sample = voice(voices_dir, "alice", 3)
    json_error(cli("verify", "zed", sample, "--json", store=enrolled_store), "'zed'")
    json_error(cli("identify", sample, "--top", "0", "--json", store=enrolled_store), "--top")
    json_error(cli("enroll", "x", tmp_path / "none.wav", "--json", store=enrolled_store), "no such")
    damaged = tmp_path / "d.sqlite"
    damaged.write_text("not a store\n")
    json_error(cli("list", "--json", store=damaged, model=False), "not an SQLite")
    batch = cli("embed", tmp_path / "none.wav", "--out", tmp_path / "e.npz", "--json")
    assert batch.exit_code == 2 and json.loads(batch.stdout)["errors"][0]["error"]


def test_json_interrupt_is_json(cli, store_path, voices_dir, monkeypatch) -> None:
    from speakerid.api import SpeakerID

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SpeakerID, "enroll", interrupted)
    res = cli("enroll", "alice", voice(voices_dir, "alice", 1), "--json", store=store_path)
    json_error(res, "interrupted", code=130)


def test_non_finite_result_never_prints_invalid_json(
    cli, enrolled_store: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from speakerid.api import SpeakerID
    from speakerid.recognition import Verification

    def nan_verify(self, name, path, threshold=None, far=None):
        return Verification(name, str(path), float("nan"), 0.5, False)

    monkeypatch.setattr(SpeakerID, "verify", nan_verify)
    res = cli("verify", "alice", voice(voices_dir, "alice", 3), "--json", store=enrolled_store)
    json_error(res, "non-finite")


def test_json_keys_are_consistent(cli, store_path: Path, voices_dir: Path) -> None:
    store = str(store_path)
    r = as_json(
        ok(cli("enroll", "alice", voice(voices_dir, "alice", 1), "--json", store=store_path))
    )
    assert r["speaker"] == "alice" and r["store"] == store
    res = cli("verify", "alice", voice(voices_dir, "alice", 2), "--json", store=store_path)
    v = as_json(ok(res, res.exit_code))
    assert v["speaker"] == "alice" and v["store"] == store
    (i,) = as_json(ok(cli("identify", voice(voices_dir, "alice", 2), "--json", store=store_path)))
    assert i["store"] == store and "speaker" in i["candidates"][0]
    listed = as_json(ok(cli("list", "--json", store=store_path, model=False)))
    assert listed["store"] == store and listed["speakers"][0]["speaker"] == "alice"
    assert "name" not in listed["speakers"][0]
    r = as_json(ok(cli("remove", "alice", "--json", store=store_path, model=False)))
    assert r == {"speaker": "alice", "recordings": 1, "store": store}


def test_store_in_a_new_folder_says_so(cli, tmp_path: Path, voices_dir: Path) -> None:
    path = tmp_path / "new" / "folder" / "s.sqlite"
    res = ok(cli("enroll", "alice", voice(voices_dir, "alice", 1), store=path))
    assert "created" in res.stderr and str(path.parent) in res.stderr
    res = ok(cli("enroll", "alice", voice(voices_dir, "alice", 2), store=path))
    assert "created" not in res.stderr


def test_interrupted_enroll_dir_says_what_was_kept(
    cli, tmp_path: Path, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from speakerid.embedding.embedder import BaseEmbedder  # what every backend embeds with

    root = tmp_path / "corpus"
    for i, (name, v) in enumerate(VOICES.items()):
        for k in (1, 2):
            write_wav(root / name / f"{name}_{k}.wav", synth_voice(v, seed=10 * i + k))
    real = BaseEmbedder.embed_waveform
    calls = []

    def interrupt_third(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 3:  # the first speaker (two files) is written by then
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BaseEmbedder, "embed_waveform", interrupt_third)
    res = cli("enroll-dir", root, store=store_path)
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert "1 speaker(s)" in res.stderr and "kept" in res.stderr
    listed = as_json(ok(cli("list", "--json", store=store_path, model=False)))
    assert [s["speaker"] for s in listed["speakers"]] == ["alice"]


def _list_as(store: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from speakerid.cli import app

    res = CliRunner().invoke(app, ["list", "--store", store])
    return res.exit_code, res.stderr or repr(res.exception)


def test_unreadable_store_is_one_line(open_tmp: Path) -> None:
    from conftest import run_unprivileged

    from speakerid.store.speakers import SpeakerStore

    path = open_tmp / "s.sqlite"
    with SpeakerStore(path) as db:
        db.add_vectors(["a"], np.ones((1, 4), np.float32), fingerprint="f" * 64)
    # the child cannot import from a venv only root may read (/root/.cache): whatever ``list``
    # imports lazily, on success and on error, is imported here first
    assert _list_as(str(path))[0] == 0
    (open_tmp / "not-a-store.sqlite").write_text("not a store")
    assert _list_as(str(open_tmp / "not-a-store.sqlite"))[0] == 2
    path.chmod(0)
    code, stderr = run_unprivileged(_list_as, str(path))
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr


@pytest.mark.parametrize(
    ("raw", "printed"),
    [
        ("\x1b]0;T\x07\x1b[2Jx.flac", "\\x1b]0;T\\x07\\x1b[2Jx.flac"),
        ("two\nlines\tand\r", "two\\nlines\\tand\\r"),
        ("\u202eevil.wav", "\\u202eevil.wav"),
        (b"\xff.wav".decode("utf-8", "surrogateescape"), "\\xff.wav"),
        ("café 日本 a b.wav", "café 日本 a b.wav"),
    ],
)
def test_printed_text_is_escaped(raw: str, printed: str) -> None:
    from speakerid.cli.common import shown

    assert shown(raw) == printed
