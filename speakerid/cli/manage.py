"""list, remove and index: look after the enrollment store."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from speakerid.cli.common import (
    JsonOpt,
    SpeakerName,
    StoreOpt,
    command,
    out,
    print_json,
    shown_markup,
)


@command("list")
def list_cmd(store: StoreOpt = None, json_: JsonOpt = False) -> None:
    """List enrolled speakers."""
    from speakerid.store.speakers import SpeakerStore

    with SpeakerStore(store) as db:
        speakers = db.speakers()
    if json_:
        print_json({"store": str(db.path), "speakers": [asdict(s) for s in speakers]})
        return
    if not speakers:
        out.print(f"no speakers enrolled in {shown_markup(db.path)}", soft_wrap=True)
        return
    table = Table(title=shown_markup(db.path), title_justify="left")
    table.add_column("speaker")
    table.add_column("recordings", justify="right")
    table.add_column("speech s", justify="right")
    table.add_column("weakest agreement", justify="right", no_wrap=True)
    table.add_column("updated (UTC)", no_wrap=True)  # names wrap first; a time cut is no time
    for s in speakers:
        seconds = "?" if s.speech_seconds is None else f"{s.speech_seconds:.1f}"
        weakest = "-" if s.weakest_agreement is None else f"{s.weakest_agreement:.4f}"
        name, updated = shown_markup(s.speaker), shown_markup(utc_shown(s.updated))
        table.add_row(name, str(s.recordings), seconds, weakest, updated)
    out.print(table)


def utc_shown(stamp: str) -> str:
    """``2026-12-06T17:14:44+00:00`` as ``2026-12-06 17:14:44`` (the column says UTC; JSON
    keeps the ISO form); anything else as it is."""
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp


@command("remove")
def remove_cmd(name: SpeakerName, store: StoreOpt = None, json_: JsonOpt = False) -> None:
    """Remove an enrolled speaker and their recordings."""
    from speakerid.store.speakers import SpeakerStore, validate_name

    speaker = validate_name(name)
    with SpeakerStore(store) as db:
        count = db.remove(speaker)
    if json_:
        print_json({"speaker": speaker, "recordings": count, "store": str(db.path)})
        return
    out.print(f"removed {shown_markup(speaker)} ({count} recording(s))", soft_wrap=True)


@command("index")
def index_cmd(
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="auto | flat | pq | hnsw | ivf. auto: flat (exact scan of memory-mapped "
            "vectors) below 50,000 speakers or without faiss, else pq (scan of compact "
            "codes, best candidates re-scored exactly).",
        ),
    ] = "auto",
    drop: Annotated[bool, typer.Option("--drop", help="Delete the index instead.")] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild", help="Retrain the index from every vector instead of folding changes in."
        ),
    ] = False,
    store: StoreOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Keep a search index beside the store, for 1:N at scale.

    A store of 10^5-10^7 speakers opens and searches fast with it. Once built it is kept:
    enrollments and removals leave it as it is, searches read the changes since it was
    written from the store, and writes fold them in once they pass 1% of the index. Run
    again to fold them in now; --rebuild retrains it.
    """
    from speakerid.store.speakers import SpeakerStore

    with SpeakerStore(store) as db:
        if drop:
            dropped = db.drop_index()
            if json_:
                print_json({"dropped": dropped, "store": str(db.path)})
            else:
                out.print("index dropped" if dropped else "no index to drop", soft_wrap=True)
            return
        info = db.build_index(kind, rebuild=rebuild)
    if json_:
        print_json(asdict(info))
        return
    out.print(
        f"[green]indexed[/green] {info.speakers} speaker(s) ({info.kind}, dimension {info.dim}) "
        f"in {info.build_seconds:.1f} s: {shown_markup(info.path)}",
        soft_wrap=True,
    )
