"""Scenarios: a TOML file that describes an emulation (nothing here runs anything).

The format is documented in ``docs/scenarios.md``; in short::

    name = "two stations"
    seed = 1                       # mobility randomness (reproducible runs)
    duration = 60                  # --batch: seconds to run (after the timeline ends)
    backend = "auto"               # "auto", "hwsim" or "mininet"

    [area]                         # metres; random mobility stays inside
    x_min = 0
    y_min = 0
    x_max = 500
    y_max = 500

    [medium]                       # log-distance path loss
    tx_power = 20.0
    exponent = 3.0

    [[stations]]
    name = "sta1"
    role = "plain"                 # "authority", "client" or "plain"
    position = [0, 0]
    range = 100
    mobility = { model = "random_walk", min_speed = 0.5, max_speed = 2, interval = 5 }

    [[timeline]]                   # --batch: CLI lines at given times
    at = 5.0
    do = "move sta1 300,0"
    retry_for = 0                  # retry a failing line for this long (seconds)

Unknown top-level keys and unknown station keys are kept (``Scenario.extra``,
``StationSpec.extra``) rather than rejected: later layers (FastPay's roles, transfers)
extend the format without this module knowing them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulation.medium import PathLoss
from emulation.mobility import Area, make_model
from emulation.station import StationSpec

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "default.toml"
BACKENDS = ("auto", "hwsim", "mininet")


class ScenarioError(ValueError):
    """The scenario file is invalid; the message says where."""


@dataclass(frozen=True)
class TimelineEntry:
    """One scheduled CLI line of a batch run."""

    at: float
    do: str
    retry_for: float = 0.0


@dataclass
class Scenario:
    """A whole emulation, as described by a scenario file."""

    name: str
    stations: list[StationSpec]
    area: Area = field(default_factory=lambda: Area(0, 0, 1000, 1000))
    seed: int = 0
    duration: float = 0.0
    backend: str = "auto"
    pathloss: PathLoss = field(default_factory=PathLoss)
    timeline: list[TimelineEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def station(self, name: str) -> StationSpec:
        """Return the station called ``name``; raise KeyError."""
        for spec in self.stations:
            if spec.name == name:
                return spec
        raise KeyError(name)


_KNOWN_TOP = {"name", "seed", "duration", "backend", "area", "medium", "stations", "timeline"}
_KNOWN_STATION = {"name", "role", "position", "range", "mobility"}


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise ScenarioError."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    scenario = parse(data, default_name=path.stem)
    scenario.path = path
    return scenario


def parse(data: dict[str, Any], default_name: str = "scenario") -> Scenario:
    """Build a Scenario from parsed TOML; raise ScenarioError."""
    try:
        return _parse(data, default_name)
    except ScenarioError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(str(exc)) from exc


def _parse(data: dict[str, Any], default_name: str) -> Scenario:
    area_data = data.get("area", {})
    area = Area(float(area_data.get("x_min", 0)), float(area_data.get("y_min", 0)),
                float(area_data.get("x_max", 1000)), float(area_data.get("y_max", 1000)))
    medium = data.get("medium", {})
    pathloss = PathLoss(tx_power_dbm=float(medium.get("tx_power", PathLoss.tx_power_dbm)),
                        exponent=float(medium.get("exponent", PathLoss.exponent)))
    seed = int(data.get("seed", 0))
    backend = str(data.get("backend", "auto"))
    if backend not in BACKENDS:
        raise ScenarioError(f"backend must be one of {BACKENDS}, not {backend!r}")

    stations = []
    raw_stations = data.get("stations", [])
    if not raw_stations:
        raise ScenarioError("a scenario needs at least one [[stations]] entry")
    for index, raw in enumerate(raw_stations):
        where = f"stations[{index}]"
        if "name" not in raw:
            raise ScenarioError(f"{where}: missing name")
        position = raw.get("position", [0, 0])
        if len(position) != 2:
            raise ScenarioError(f"{where} ({raw['name']}): position must be [x, y]")
        try:
            spec = StationSpec(
                name=str(raw["name"]), role=str(raw.get("role", "plain")),
                position=(float(position[0]), float(position[1])),
                range=float(raw.get("range", 100.0)), mobility=raw.get("mobility"),
                extra={k: v for k, v in raw.items() if k not in _KNOWN_STATION})
            if not area.contains(spec.position):
                raise ValueError(f"position {list(spec.position)} is outside the area")
            make_model(spec.mobility, spec.position, area, seed)  # validate it now
        except ValueError as exc:
            raise ScenarioError(f"{where} ({raw['name']}): {exc}") from exc
        stations.append(spec)
    names = [s.name for s in stations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScenarioError(f"duplicate station names: {', '.join(duplicates)}")

    timeline = []
    for index, raw in enumerate(data.get("timeline", [])):
        if "do" not in raw:
            raise ScenarioError(f"timeline[{index}]: missing do")
        timeline.append(TimelineEntry(at=float(raw.get("at", 0.0)), do=str(raw["do"]),
                                      retry_for=float(raw.get("retry_for", 0.0))))
    timeline.sort(key=lambda e: e.at)
    return Scenario(
        name=str(data.get("name", default_name)), stations=stations, area=area, seed=seed,
        duration=float(data.get("duration", 0.0)), backend=backend, pathloss=pathloss,
        timeline=timeline, extra={k: v for k, v in data.items() if k not in _KNOWN_TOP})
