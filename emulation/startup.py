"""Where an emulation's start-up time goes: the breakdown in the run report.

Three sources, all measured on the machine that runs the stations (monotonic clock,
one for every namespace of the VM), and put together here so that the arithmetic is
unit-tested on recorded data (``tests/emulation/test_startup.py``):

* **stations** — :class:`emulation.station.Station` times its own phases: namespace and
  radio (``netns_s``), its dbus-daemon listening (``dbus_s``), wpa_supplicant up to its
  P2P control socket (``wpa_supplicant_s``) and then on D-Bus (``wpa_dbus_s``);
* **daemons** — each fastpayd runs with ``python -X importtime``: its output gives the
  time spent importing (:func:`import_seconds`); its ``events.jsonl`` gives an
  authority's ``state_loaded`` (config, keys, database done), ``link_up`` (D-Bus and
  wpa_supplicant set up, an authority's group up) and, for a client, the first
  ``authority_discovered`` (the first discovery round that found someone); the daemon's
  sd_notify ``READY=1`` (its control socket answers) ends its start;
* **the run** — the phases :mod:`emulation.run` and the VM wrapper mark (VM boot,
  medium, stations, daemons, first payment started).

:func:`daemon_breakdown` turns one daemon's marks into phases; :func:`table` prints them.
"""

from __future__ import annotations

from typing import Any

# A daemon's phases, in the order they happen, with the table's labels. Imports are not
# a phase of their own: the link's modules are imported when the link starts, so
# ``imports_s`` (from -X importtime, the whole start) overlaps the two phases after it.
DAEMON_PHASES = (
    ("imports_s", "imports (all, overlapping)"),
    ("to_state_s", "spawn → state loaded (client: link up)"),
    ("link_s", "→ link up (D-Bus, wpa_supplicant, GO)"),
    ("to_ready_s", "→ READY"),
    ("total_s", "spawn → READY"),
    ("first_discovery_s", "READY → first authority found"),
)
STATION_PHASES = (
    ("netns_s", "netns + radio"),
    ("dbus_s", "dbus-daemon"),
    ("wpa_supplicant_s", "wpa_supplicant"),
    ("wpa_dbus_s", "wpa on D-Bus"),
    ("total_s", "total"),
)


def import_seconds(text: str) -> float | None:
    """Seconds of imports in ``python -X importtime`` output (None if there is none).

    Each line is ``import time: self | cumulative | name``, a nested import's name
    indented under its importer; the top-level lines' cumulative times add up to
    everything imported (site and the program's own modules).
    """
    total = 0
    seen = False
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) != 3:
            continue
        name = parts[2]
        if not name.startswith(" ") or name.startswith("  "):  # nested (or malformed)
            continue
        try:
            total += int(parts[1])
        except ValueError:  # the header line ("cumulative")
            continue
        seen = True
    return round(total / 1e6, 3) if seen else None


def first_event(events: list[dict[str, Any]], name: str, after: float | None = None
                ) -> float | None:
    """The monotonic ``t`` of the first ``name`` event (after ``after``), or None."""
    for e in events:
        if e.get("event") == name and isinstance(e.get("t"), int | float):
            if after is None or e["t"] >= after:
                return float(e["t"])
    return None


def daemon_breakdown(*, spawned: float, ready: float | None, events: list[dict[str, Any]],
                     imports: float | None, role: str) -> dict[str, float | None]:
    """One daemon's start-up phases in seconds (keys of :data:`DAEMON_PHASES`).

    ``spawned`` is when its process was started, ``ready`` when its ``READY=1`` came,
    ``events`` its event log, ``imports`` from :func:`import_seconds`. An authority's
    ``state_loaded`` splits the start before its link (interpreter, most imports,
    config, keys, database: ``to_state_s``) from the link's (``link_s``); a client marks
    nothing there, so its ``to_state_s`` runs to ``link_up`` (its D-Bus set-up included)
    and it has no ``link_s``. Phases that did not happen are None.
    """
    out: dict[str, float | None] = {k: None for k, _ in DAEMON_PHASES}
    out["imports_s"] = imports
    link_up = first_event(events, "link_up", after=spawned)
    state = first_event(events, "state_loaded", after=spawned) if role == "authority" \
        else None
    before_link = state if state is not None else link_up
    if before_link is not None:
        out["to_state_s"] = round(before_link - spawned, 3)
    if state is not None and link_up is not None:
        out["link_s"] = round(link_up - state, 3)
    if ready is not None:
        out["total_s"] = round(ready - spawned, 3)
        if link_up is not None:
            out["to_ready_s"] = round(ready - link_up, 3)
        if role == "client":
            found = first_event(events, "authority_discovered", after=spawned)
            if found is not None:
                out["first_discovery_s"] = round(found - ready, 3)
    return out


def summary(values: list[float | None]) -> dict[str, float | None]:
    """{"max", "mean"} of the values that exist (None when none do)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return {"max": None, "mean": None}
    return {"max": round(max(xs), 3), "mean": round(sum(xs) / len(xs), 3)}


def table(breakdown: dict[str, Any]) -> Any:
    """A rich Table of the run's phases, stations and daemons."""
    from rich.table import Table

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}"

    t = Table(title="start-up breakdown (seconds, monotonic, in the VM unless marked)")
    t.add_column("what")
    t.add_column("phases")
    t.add_column("total", justify="right")
    for key, value in breakdown.get("run", {}).items():
        t.add_row(f"run: {key.removesuffix('_s').replace('_', ' ')}", "", fmt(value))
    for name, phases in breakdown.get("stations", {}).items():
        parts = [f"{label} {fmt(phases.get(k))}" for k, label in STATION_PHASES[:-1]]
        t.add_row(f"station {name}", ", ".join(parts), fmt(phases.get("total_s")))
    for name, phases in breakdown.get("daemons", {}).items():
        parts = [f"{label} {fmt(phases.get(k))}" for k, label in DAEMON_PHASES
                 if k != "total_s" and phases.get(k) is not None]
        t.add_row(f"fastpayd {name}", ", ".join(parts), fmt(phases.get("total_s")))
    return t


def print_table(breakdown: dict[str, Any]) -> None:
    """Print :func:`table` on stdout."""
    from rich.console import Console

    Console(width=140).print(table(breakdown))
