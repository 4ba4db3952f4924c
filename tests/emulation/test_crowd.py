"""Crowds and payment schedules of a scenario (emulation/scenario.py's [crowd], [payments])."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulation import scenario
from emulation.mobility import make_model

MANY = scenario.DEFAULT_SCENARIO.with_name("many.toml")
BASE = {"area": {"x_max": 300, "y_max": 200},
        "stations": [{"name": "auth0", "role": "authority", "position": [150, 100]}]}


def _crowd(**crowd: object) -> dict[str, object]:
    return {**BASE, "crowd": {"count": 5, "min_x": 50, "max_x": 250, "min_y": 20,
                              "max_y": 180, "min_v": 1, "max_v": 3, "seed": 4, **crowd}}


def test_crowd_expands_into_clients_within_bounds() -> None:
    scen = scenario.parse(_crowd())
    clients = [s for s in scen.stations if s.role == "client"]
    assert [c.name for c in clients] == [f"client{i}" for i in range(5)]
    for c in clients:
        assert 50 <= c.position[0] <= 250 and 20 <= c.position[1] <= 180
        model = make_model(c.mobility, c.position, scen.area)
        for t in range(0, 2000, 7):
            x, y = model.position(float(t))
            assert 50 - 1e-6 <= x <= 250 + 1e-6 and 20 - 1e-6 <= y <= 180 + 1e-6
        # Speeds within min_v..max_v: no step faster than max_v.
        a, b = model.position(100.0), model.position(101.0)
        assert ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5 <= 3 + 1e-6


def test_crowd_is_deterministic_and_seeded() -> None:
    one, two = scenario.parse(_crowd()), scenario.parse(_crowd())
    assert [(s.name, s.position, s.mobility) for s in one.stations] == \
        [(s.name, s.position, s.mobility) for s in two.stations]
    other = scenario.parse(_crowd(seed=5))
    assert [s.position for s in other.stations] != [s.position for s in one.stations]
    # Each client walks its own path.
    assert len({str(s.mobility) for s in one.stations if s.role == "client"}) == 5


def test_crowd_size_override_keeps_the_first_clients() -> None:
    small, big = scenario.parse(_crowd(), clients=3), scenario.parse(_crowd(), clients=8)
    assert sum(s.role == "client" for s in small.stations) == 3
    assert sum(s.role == "client" for s in big.stations) == 8
    assert [s.position for s in small.stations] == [s.position for s in big.stations][:4]


@pytest.mark.parametrize(("crowd", "message"), [
    ({"count": 0}, "count must be a whole number >= 1"),
    ({"min_v": 3, "max_v": 1}, "need 0 < min_v <= max_v"),
    ({"max_x": 400}, "leave the [area]"),
    ({"min_speed": 1}, "unknown key 'min_speed'"),
    ({"min_x": 260}, "empty area"),
])
def test_crowd_mistakes_are_named(crowd: dict[str, object], message: str) -> None:
    with pytest.raises(scenario.ScenarioError, match=message.replace("[", r"\[")):
        scenario.parse(_crowd(**crowd))


def test_clients_override_without_a_crowd_is_an_error() -> None:
    with pytest.raises(scenario.ScenarioError, match="--clients needs a \\[crowd\\]"):
        scenario.parse(BASE, clients=4)


def _payments(**payments: object) -> scenario.Scenario:
    return scenario.parse({**_crowd(), "fastpay": {"balance": 100},
                           "payments": {"per_client": 2, "amount": [5, 30],
                                        "window": [10, 40], "seed": 3, **payments}})


def test_payment_schedule_is_deterministic_and_valid() -> None:
    scen = _payments()
    assert scen.payments == _payments().payments
    assert scen.payments != _payments(seed=4).payments
    clients = {s.name for s in scen.stations if s.role == "client"}
    assert len(scen.payments) == 10
    paid: dict[str, int] = {}
    for p in scen.payments:
        assert p.payer != p.payee and {p.payer, p.payee} <= clients
        assert 5 <= p.amount <= 30 and 10 <= p.at <= 40
        paid[p.payer] = paid.get(p.payer, 0) + p.amount
    assert set(paid) == clients  # every client pays (twice here)
    assert all(total <= 100 for total in paid.values())
    assert [p.at for p in scen.payments] == sorted(p.at for p in scen.payments)
    lines = [e.do for e in scen.timeline if e.do.startswith("pay ")]
    assert lines == [f"pay {p.payer} {p.payee} {p.amount}" for p in scen.payments]


def test_payment_schedule_count_and_balance() -> None:
    scen = scenario.parse({**_crowd(), "payments": {"count": 7, "amount": [1, 2]}})
    assert len(scen.payments) == 7
    with pytest.raises(scenario.ScenarioError, match="more than its balance 100"):
        _payments(amount=[60, 90])


@pytest.mark.parametrize(("payments", "message"), [
    ({"count": 3}, "exactly one of count"),
    ({"amount": [0, 3]}, "amount must be whole numbers >= 1"),
    ({"window": [40, 10]}, "window must be \\[low, high\\]"),
    ({"rate": 1}, "unknown key 'rate'"),
])
def test_payment_mistakes_are_named(payments: dict[str, object], message: str) -> None:
    with pytest.raises(scenario.ScenarioError, match=message):
        _payments(**payments)


def test_payments_need_two_clients() -> None:
    with pytest.raises(scenario.ScenarioError, match="at least two client stations"):
        scenario.parse({**_crowd(count=1), "payments": {"count": 1}})


def test_many_scenario_loads_at_both_sizes() -> None:
    for clients, stations in ((None, 14), (4, 8), (26, 30)):
        scen = scenario.load(MANY, clients=clients)
        assert len(scen.stations) == stations
        assert sum(s.role == "authority" for s in scen.stations) == 4
        assert len(scen.payments) == stations - 4  # each client pays once
        assert any(e.do.startswith("wait_payments") and e.at > max(p.at for p in scen.payments)
                   for e in scen.timeline)


def test_load_passes_the_override(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[crowd]\ncount = 2\n[area]\nx_max = 50\ny_max = 50\n')
    assert len(scenario.load(path, clients=6).stations) == 6
