"""The medium's radio model (pure parts; the netlink side is covered by live tests)."""

from __future__ import annotations

import pytest

from emulation.medium import MediumState, PathLoss


def test_pathloss_log_distance_values() -> None:
    model = PathLoss(tx_power_dbm=20, ref_loss_db=40, exponent=3)
    assert model.signal_dbm(1) == -20
    assert model.signal_dbm(10) == -50
    assert model.signal_dbm(100) == -80
    assert model.signal_dbm(0.1) == -20  # clamped at the reference distance


def test_pathloss_decreases_with_distance() -> None:
    model = PathLoss()
    levels = [model.signal_dbm(d) for d in (1, 5, 20, 50, 100, 300)]
    assert levels == sorted(levels, reverse=True)
    assert len(set(levels)) == len(levels)


def _state() -> MediumState:
    state = MediumState()
    state.update("42:00:00:00:00:00", "a", (0, 0), 100, ["02:00:00:00:00:00"])
    state.update("42:00:00:00:01:00", "b", (50, 0), 100)
    state.update("42:00:00:00:02:00", "c", (150, 0), 30)
    return state


def test_receivers_within_sender_range_only() -> None:
    state = _state()
    a, b, c = (state.by_name(n) for n in "abc")
    assert [r.name for r, _ in state.receivers(a)] == ["b"]
    assert sorted(r.name for r, _ in state.receivers(b)) == ["a", "c"]
    assert state.receivers(c) == []  # c's range is short: range is the sender's


def test_receivers_signal_from_pathloss() -> None:
    state = _state()
    ((radio, level),) = state.receivers(state.by_name("a"))
    assert level == state.pathloss.signal_dbm(50)


def test_move_changes_reachability() -> None:
    state = _state()
    state.move("b", (500, 0))
    assert state.receivers(state.by_name("a")) == []
    with pytest.raises(KeyError):
        state.move("nobody", (0, 0))


def test_owns_permanent_and_added_addresses() -> None:
    state = _state()
    a = state.by_name("a")
    assert a.owns("02:00:00:00:00:00") and a.owns("42:00:00:00:00:00")
    assert not a.owns("02:00:00:00:09:00")
    a.extra_addresses.add("02:00:00:00:09:00")
    assert a.owns("02:00:00:00:09:00")


def test_links_describe_every_ordered_pair() -> None:
    links = _state().links()
    assert len(links) == 6
    ab = next(link for link in links if link["from"] == "a" and link["to"] == "b")
    assert ab["distance"] == 50 and ab["in_range"]
