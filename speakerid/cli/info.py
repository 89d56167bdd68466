"""info and models: describe the model, the store and the shipped models."""

from __future__ import annotations

from dataclasses import asdict

from speakerid.cli.common import (
    JsonOpt,
    ModelOpt,
    StoreOpt,
    command,
    fail,
    out,
    print_json,
    shown_markup,
)


@command("info")
def info_cmd(model: ModelOpt = None, store: StoreOpt = None, json_: JsonOpt = False) -> None:
    """Show the model, the store and how decisions are taken.

    The model's path, fingerprint and threshold; the store's path and counts; which
    calibration decides and why.
    """
    from speakerid.recognition import describe
    from speakerid.store.speakers import SpeakerStore

    with SpeakerStore(store) as db:
        info = describe(db, model)
    if model is not None and info.model.error:  # asked about this model: it is the answer
        fail(info.model.error)
    if json_:
        print_json(asdict(info))
        return
    m, s = info.model, info.store
    why = {
        "store": "calibrated on this store's data by speakerid calibrate",
        "model": "calibrated, from the model",
        "default": "built-in default: the model has no calibrated threshold",
    }
    rows = [("model", shown_markup(m.path))]
    if m.error:
        rows.append(("model error", f"[red]{shown_markup(m.error)}[/red]"))
    else:
        rows += [("fingerprint", m.fingerprint or ""), ("embedding size", str(m.embedding_dim))]
    cal = info.calibration
    normalised = cal is not None and cal.norm == "asnorm" and info.verify_source == "store"
    norm = " on AS-norm scores" if normalised else ""
    if info.decisions:
        rows.append(("decisions", shown_markup(info.decisions)))
    rows += [
        ("threshold", f"{info.verify_threshold:.4f} ({why[info.verify_source]}{norm})"),
        ("identify at", f"{info.identify_threshold:.4f} ({why[info.identify_source]}{norm})"),
        ("store", shown_markup(s.path) + ("" if s.exists else " (not created yet)")),
        ("speakers", str(s.speakers)),
        ("recordings", str(s.recordings)),
        ("store model", shown_markup(s.model_fingerprint or "(none yet)")),
    ]
    if info.compatible is False:
        rows.append(("", "[red]the store was made by another model[/red]"))
    if cal is not None:
        fpir = (
            f", 1:N for {100 * cal.identify_fpir:g}% strangers named at {cal.store_speakers} "
            f"speakers ({cal.identify_method})"
            if cal.identify_fpir is not None
            else ""
        )
        rows.append(
            (
                "calibration",
                f"{shown_markup(cal.date)}: {shown_markup(cal.target)}{fpir}; "
                f"{cal.n_speakers} speakers, "
                f"{cal.n_target} same / {cal.n_nontarget} different-speaker trials from "
                f"{shown_markup(', '.join(cal.data))}",
            )
        )
    rows += [("", f"[yellow]{shown_markup(note)}[/yellow]") for note in info.notes]
    for label, value in rows:
        out.print(f"[bold]{label:<15}[/bold] {value}", soft_wrap=True)


@command("models")
def models_cmd(json_: JsonOpt = False) -> None:
    """List the shipped models: size, threshold, measured EER, speed.

    Pick one with --model NAME. More numbers in README and docs/benchmarks.md.
    """
    from speakerid.encoders.registry import list_models, measured

    rows = list_models()
    if json_:
        print_json([asdict(r) for r in rows])
        return
    for r in rows:
        out.print(
            f"[bold]{r.name}[/bold]{' (default)' if r.default else ''}  {r.summary}",
            soft_wrap=True,
        )
        if r.error:
            out.print(f"  [red]{shown_markup(r.error)}[/red]", soft_wrap=True)
            continue
        threshold = f"{r.threshold:.4f}" if r.threshold is not None else "none"
        out.print(
            f"  {r.megabytes:.1f} MB, {r.parameters / 1e6:.2f} M parameters, "
            f"{r.embedding_dim}-d, threshold {threshold}",
            soft_wrap=True,
        )
        eer = r.measured.get("eer", {})
        if eer:
            out.print(
                "  EER " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in sorted(eer.items())),
                soft_wrap=True,
            )
        speed = r.measured.get("speed", {})
        if speed:
            out.print(
                f"  speed {speed['audio_s_per_s']:.0f} s of audio per second "
                f"({speed['backend']}, {speed['threads']} CPU thread)",
                soft_wrap=True,
            )
    for key in ("_source", "_speed_source"):
        source = measured().get(key)
        if source:
            out.print(f"measured by {shown_markup(source)}", soft_wrap=True)
