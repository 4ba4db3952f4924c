"""Scenario files: parsing, validation, extensibility."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulation import scenario
from emulation.mobility import Area

MINIMAL = """
name = "mini"
[[stations]]
name = "a"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_load_plain_scenario_is_valid() -> None:
    scen = scenario.load(scenario.DEFAULT_SCENARIO.with_name("plain.toml"))
    assert [s.name for s in scen.stations] == ["sta1", "sta2", "sta3"]
    assert scen.timeline and scen.timeline == sorted(scen.timeline, key=lambda e: e.at)


def test_load_minimal_uses_defaults(tmp_path: Path) -> None:
    scen = scenario.load(_write(tmp_path, MINIMAL))
    (station,) = scen.stations
    assert (station.role, station.position, station.range) == ("plain", (0.0, 0.0), 100.0)
    assert scen.area == Area(0, 0, 1000, 1000)
    assert scen.backend == "auto" and scen.timeline == []


def test_load_full_station_and_timeline(tmp_path: Path) -> None:
    scen = scenario.load(_write(tmp_path, """
        seed = 9
        duration = 30
        [area]
        x_max = 200
        y_max = 100
        [medium]
        exponent = 2.5
        [[stations]]
        name = "auth1"
        role = "authority"
        position = [10, 20]
        range = 80
        mobility = { model = "random_waypoint", max_speed = 3 }
        [[timeline]]
        at = 5
        do = "move auth1 30,30"
        [[timeline]]
        at = 1
        do = "nodes"
        retry_for = 4
    """))
    station = scen.station("auth1")
    assert station.role == "authority" and station.position == (10.0, 20.0)
    assert station.mobility == {"model": "random_waypoint", "max_speed": 3}
    assert scen.pathloss.exponent == 2.5 and scen.seed == 9 and scen.duration == 30
    assert [e.do for e in scen.timeline] == ["nodes", "move auth1 30,30"]
    assert scen.timeline[0].retry_for == 4


def test_fastpay_keys_are_kept_for_its_layer(tmp_path: Path) -> None:
    scen = scenario.load(_write(tmp_path, '[fastpay]\nbalance = 5\n[[stations]]\nname = "a"\n'
                                'role = "client"\nbalance = 7\n'))
    assert scen.extra == {"fastpay": {"balance": 5}}
    assert scen.stations[0].extra == {"balance": 7}


@pytest.mark.parametrize("text, message", [
    ('name = "x"', "at least one"),
    ('[[stations]]\nrole = "plain"', "missing name"),
    ('[[stations]]\nname = "a"\nrole = "king"', "role must be"),
    ('[[stations]]\nname = "a"\n[[stations]]\nname = "a"', "duplicate"),
    ('[[stations]]\nname = "a"\nposition = [5000, 0]', "outside the area"),
    ('[[stations]]\nname = "a"\nposition = [1]', r"\[x, y\]"),
    ('[[stations]]\nname = "a"\nrange = -1', "range"),
    ('[[stations]]\nname = "a"\nmobility = { model = "fly" }', "unknown mobility"),
    ('[[stations]]\nname = "a_very_long_name"', "too long"),
    ('backend = "ns3"\n[[stations]]\nname = "a"', "backend"),
    ('[[stations]]\nname = "a"\n[[timeline]]\nat = 1', "missing do"),
    ("[[stations]\n", "s.toml"),
])
def test_bad_scenarios_rejected_with_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(scenario.ScenarioError, match=message):
        scenario.load(_write(tmp_path, text))


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(scenario.ScenarioError, match="No such file"):
        scenario.load(tmp_path / "nope.toml")
