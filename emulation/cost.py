"""What a station costs the machine: start-up seconds, memory and CPU per daemon.

The FastPay layer samples every daemon's ``/proc/<pid>/status`` (``VmRSS``, resident
memory) and ``/proc/<pid>/stat`` (``utime`` + ``stime``, CPU time in clock ticks) while
the run goes on (:func:`read_proc`); the rest is pure arithmetic on those samples, so it
is tested on sample text (``tests/emulation/test_cost.py``):

* :func:`daemon_cost` — one daemon: peak and last RSS (MiB), CPU seconds and CPU share
  (CPU seconds / wall seconds between its first and last sample; 1.0 is one core busy);
* :func:`per_station` — the run: start-up seconds per station (stations up + daemons
  ready, divided by the stations), RSS and CPU share per daemon (mean, max), and by role.

A run at two sizes then shows whether a station's cost stays flat as stations are added
(the issue's target), or grows (contention on the 2 cores of the VM).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# (monotonic seconds, utime + stime in ticks, VmRSS in KiB); None where unreadable.
Sample = tuple[float, int | None, int | None]


def vmrss_kib(status: str) -> int | None:
    """The ``VmRSS`` of a ``/proc/<pid>/status`` text, in KiB (None if absent)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])  # the kernel always writes "kB" (KiB)
    return None


def cpu_ticks(stat: str) -> int | None:
    """``utime + stime`` (clock ticks) of a ``/proc/<pid>/stat`` text (None if malformed).

    The command name (field 2) is in parentheses and may hold spaces or ``)``: fields are
    counted from the last ``)``; utime and stime are fields 14 and 15.
    """
    try:
        rest = stat.rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (IndexError, ValueError):
        return None


def read_proc(pid: int, proc: Path = Path("/proc")) -> tuple[int | None, int | None]:
    """(CPU ticks, RSS KiB) of process ``pid`` now; (None, None) once it is gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None, None
    return cpu_ticks(stat), vmrss_kib(status)


def clock_ticks() -> int:
    """The kernel's clock ticks per second (``SC_CLK_TCK``, usually 100)."""
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return 100


def daemon_cost(samples: list[Sample], ticks_per_s: int = 100) -> dict[str, Any]:
    """One daemon's cost from its samples (in time order): ``rss_mib_max``,
    ``rss_mib_last``, ``cpu_s`` and ``cpu_share`` over ``wall_s`` (None where the samples
    do not say)."""
    rss = [kib for _, _, kib in samples if kib is not None]
    cpu = [(t, ticks) for t, ticks, _ in samples if ticks is not None]
    out: dict[str, Any] = {
        "samples": len(samples),
        "rss_mib_max": round(max(rss) / 1024, 1) if rss else None,
        "rss_mib_last": round(rss[-1] / 1024, 1) if rss else None,
        "cpu_s": None, "wall_s": None, "cpu_share": None,
    }
    if len(cpu) >= 2 and cpu[-1][0] > cpu[0][0]:
        cpu_s = (cpu[-1][1] - cpu[0][1]) / ticks_per_s
        wall = cpu[-1][0] - cpu[0][0]
        out.update(cpu_s=round(cpu_s, 2), wall_s=round(wall, 1),
                   cpu_share=round(cpu_s / wall, 4))
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "max": None, "sum": None}
    return {"n": len(values), "mean": round(sum(values) / len(values), 4),
            "max": round(max(values), 4), "sum": round(sum(values), 4)}


def per_station(daemons: dict[str, dict[str, Any]], roles: dict[str, str],
                startup_s: float | None, stations: int) -> dict[str, Any]:
    """The run's cost per station: ``startup_s_per_station`` (``startup_s`` — stations
    up plus daemons ready — over ``stations``), ``rss_mib`` and ``cpu_share`` per daemon
    (mean/max/sum), the same ``by_role``, and every daemon's own figures."""

    def of(names: list[str]) -> dict[str, Any]:
        return {"rss_mib": _stats([daemons[n]["rss_mib_max"] for n in names
                                   if daemons[n].get("rss_mib_max") is not None]),
                "cpu_share": _stats([daemons[n]["cpu_share"] for n in names
                                     if daemons[n].get("cpu_share") is not None])}

    names = sorted(daemons)
    return {
        "stations": stations,
        "startup_s": None if startup_s is None else round(startup_s, 3),
        "startup_s_per_station": None if startup_s is None or not stations
        else round(startup_s / stations, 3),
        **of(names),
        "by_role": {role: of([n for n in names if roles.get(n) == role])
                    for role in sorted({roles.get(n, "?") for n in names})},
        "daemons": daemons,
    }


def table(cost: dict[str, Any]) -> Any:
    """A rich Table of the cost per station."""
    from rich.table import Table

    t = Table(title=f"Cost per station ({cost['stations']} stations)")
    for col in ("what", "mean", "max", "sum"):
        t.add_column(col, justify="left" if col == "what" else "right")

    def fmt(v: Any, unit: str = "") -> str:
        return "-" if v is None else f"{v}{unit}"

    t.add_row("start-up s per station", fmt(cost["startup_s_per_station"]), "",
              fmt(cost["startup_s"]))
    plural = {"authority": "authorities"}
    groups = [("all daemons", cost),
              *((plural.get(r, f"{r}s"), c) for r, c in cost["by_role"].items())]
    for label, c in groups:
        r, s = c["rss_mib"], c["cpu_share"]
        t.add_row(f"RSS MiB per daemon ({label}, n={r['n']})", fmt(r["mean"]),
                  fmt(r["max"]), fmt(r["sum"]))
        t.add_row(f"CPU share per daemon ({label}, n={s['n']})", fmt(s["mean"]),
                  fmt(s["max"]), fmt(s["sum"]))
    return t


def print_table(cost: dict[str, Any]) -> None:
    """Print the cost table on stdout."""
    from rich.console import Console

    Console(width=100).print(table(cost))
