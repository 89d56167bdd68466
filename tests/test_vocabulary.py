"""One vocabulary across text, JSON and the API: the words a command prints are its JSON keys
(or README says which they stand for), and nothing a user needs is cut at 80 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

from speakerid.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_enroll_prints_its_json_words(cli, store_path: Path, voices_dir: Path) -> None:
    files = [str(voices_dir / f"alice_{k}.wav") for k in (1, 2)]
    data = json.loads(cli("enroll", "alice", *files, "--json", store=store_path).stdout)
    text = cli("enroll", "alice", files[0], store=store_path).stdout
    assert {"added", "updated", "recordings"} <= set(data)
    assert re.search(r": 0 added, 1 updated \(re-embedded\), 2 recording\(s\) in total", text)


def test_readme_says_what_unknown_is_in_json() -> None:
    # text "unknown" is JSON's null: a string could be an enrolled speaker's name
    assert re.search(r'`"best": null`[^.]*"unknown"', README)


def test_list_keeps_the_whole_timestamp_at_80_columns(
    runner, cli, store_path: Path, voices_dir: Path
) -> None:
    name = "Alexandra Konstantinopoulou-Vanderbilt"  # a long name takes the room
    cli("enroll", name, str(voices_dir / "alice_1.wav"), store=store_path)
    stamp = json.loads(runner.invoke(app, ["list", "--json", "--store", str(store_path)]).stdout)
    updated = stamp["speakers"][0]["updated"]
    shown = runner.invoke(app, ["list", "--store", str(store_path)], env={"COLUMNS": "80"})
    day, time = updated[:10], updated[11:19]  # ISO 8601 in JSON, "day time" in the table
    assert shown.exit_code == 0 and f"{day} {time}" in shown.stdout, shown.stdout
    assert "weakest agreement" in shown.stdout  # headers whole too
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
