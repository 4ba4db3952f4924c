"""Live: FastPay over WiFi Direct on the Mininet-WiFi backend (issue 11).

Mininet-WiFi builds the stations (hwsim radios from ``hwsim_mgmt``, ranges as tx powers)
and runs wmediumd; each station runs our dbus-daemon, ``wpa_supplicant -u`` and a real
fastpayd. One network for the module: importing mn_wifi and ``configureNodes()`` cost
about 1.5 min under TCG, so they happen once per VM boot.

Four authorities at the corners of a 100 m square, each reaching 65 m (Mininet-WiFi's
effective range at a whole-dBm tx power: 63-68 m). ``c0`` starts between auth0 and auth1
(50 m from each, 112 m from auth2 and auth3); ``c1`` stands 42 m from auth3 only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emulation import backends, fastpay, mobility, scenario
from emulation.station import StationSpec

pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.mininet]

AUTHS = {"auth0": (100.0, 100.0), "auth1": (200.0, 100.0), "auth2": (200.0, 200.0),
         "auth3": (100.0, 200.0)}
RANGE = 65.0
GENESIS = 1000
C0 = (150.0, 100.0)
C1 = (70.0, 230.0)
# c0's walk, one edge midpoint at a time: each reaches two authorities.
STOPS = [(200.0, 150.0), (150.0, 200.0), (100.0, 150.0)]


@pytest.fixture(scope="module")
def layer() -> Iterator[fastpay.FastPayLayer]:
    ok, why = backends.mininet_available()
    if not ok:
        pytest.skip(f"Mininet-WiFi backend unavailable: {why}")
    from emulation.backends.mininet import MininetNetwork

    specs = [StationSpec(n, "authority", p, RANGE) for n, p in AUTHS.items()]
    specs += [StationSpec("c0", "client", C0, RANGE), StationSpec("c1", "client", C1, RANGE)]
    scen = scenario.Scenario(
        name="live mininet payment", stations=specs, seed=1,
        area=mobility.Area(0, 0, 400, 400), backend="mininet",
        extra={"fastpay": {"balance": GENESIS, "link": {"join_timeout": 45.0}}})
    net = MininetNetwork(specs, area=scen.area, seed=1)
    net.start()
    made = None
    try:
        made = fastpay.attach(net, scen)
        assert made is not None
        yield made
    finally:
        if made is not None:
            made.stop()
            for d in made.daemons.values():
                print(f"----- {d.name}\n{d.tail(30)}")
        net.stop()


def _wait(pred: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(0.5)  # polling daemons' control sockets
    raise AssertionError(f"no {what} within {timeout} s (last: {last})")


def _p2p_peers(layer: fastpay.FastPayLayer, name: str) -> set[str]:
    station = layer.net.station(name)
    out = station.run(["wpa_cli", "-p", str(station.ctrl_dir), "-i", station.p2p_ctrl_iface,
                       "p2p_peers"], timeout=30).stdout
    return {line.strip() for line in out.split() if line.count(":") == 5}


def test_mininet_stations_run_our_daemons(layer: fastpay.FastPayLayer,
                                          record_property: Any) -> None:
    net = layer.net
    assert net.backend == "mininet"
    for name, station in net.stations.items():
        assert station.alive(), name
        assert station.iface == f"{name}-wlan0"
        effective = float(station.node.wintfs[0].range)
        assert 55.0 <= effective <= 75.0, (name, effective, station.node.wintfs[0].txpower)
    for key in ("import_s", "configure_s", "build_s", "stations_ready_s"):
        record_property(f"mininet_{key}", net.timings[key])
    record_property("fastpayd_ready_s", round(max(
        d.ready_at - d.started_at for d in layer.daemons.values()
        if d.ready_at and d.started_at), 3))


def test_mininet_discovery_in_range_and_far_never_found(
        layer: fastpay.FastPayLayer, record_property: Any) -> None:
    want = {a for a, p in AUTHS.items() if math.dist(C0, p) <= RANGE}
    assert want == {"auth0", "auth1"}  # 50 m; auth2 and auth3 are 112 m away
    t0 = time.monotonic()
    _wait(lambda: set(layer.in_range("c0")) >= want, 180, "discovery of auth0 and auth1")
    record_property("c0_discovery_s", round(time.monotonic() - t0, 3))
    far = {layer.net.station(a).p2p_device_address for a in AUTHS if a not in want}
    near = {layer.net.station(a).p2p_device_address for a in want}
    # Several more discovery rounds (8 s windows): the far ones never show up, neither in
    # the daemon's table nor in wpa_supplicant's own peer list.
    end = time.monotonic() + 25
    while time.monotonic() < end:
        assert set(layer.in_range("c0")) <= want
        assert not _p2p_peers(layer, "c0") & far
        time.sleep(1.0)
    assert near <= _p2p_peers(layer, "c0")
    table = layer.in_range("c0")
    assert set(table) == want
    record_property("c0_levels_dbm", table)


def test_mininet_mobile_transfer_completes_as_the_client_moves(
        layer: fastpay.FastPayLayer, record_property: Any) -> None:
    c0 = layer.daemon("c0")
    answer = layer.transfer("c0", "c1", 10)
    assert answer["accepted"], answer
    seq = answer["sequence_number"]

    def seen(event: str, **match: Any) -> Any:
        return next((e for e in c0.events() if e["event"] == event
                     and e.get("sequence_number", seq) == seq
                     and all(e.get(k) == v for k, v in match.items())), None)

    _wait(lambda: seen("vote_received", authority="auth0")
          and seen("vote_received", authority="auth1"), 300, "votes from auth0 and auth1")
    assert seen("certificate_formed") is None  # weight 2 of quorum 3: not here
    layer.net.move("c0", STOPS[0])  # auth1 and auth2
    _wait(lambda: seen("certificate_formed"), 300, "the certificate (auth2's vote)")
    # Confirm where the certificate formed before walking on (auth1 is not met again).
    _wait(lambda: seen("confirmation_delivered", authority="auth1")
          and seen("confirmation_delivered", authority="auth2"), 300,
          "the confirmations at auth1 and auth2")
    layer.net.move("c0", STOPS[1])  # auth2 and auth3
    _wait(lambda: seen("confirmation_delivered", authority="auth3"), 300,
          "the confirmation at auth3")
    layer.net.move("c0", STOPS[2])  # auth3 and auth0
    done = layer.wait_payment("c0", 400)
    assert done["state"] == "complete"
    assert sorted(done["confirmed"]) == sorted(AUTHS)
    got = layer.receive("c1", GENESIS + 10, 300)
    assert got["reached"] == ["auth3"], got
    table = layer.balances()
    assert table["c0"] == dict.fromkeys([*AUTHS, "own"], GENESIS - 10), table
    assert table["c1"] == dict.fromkeys([*AUTHS, "own"], GENESIS + 10), table
    events = c0.events()
    t0 = next(e["t"] for e in events if e["event"] == "transfer_started")
    record_property("certificate_s", round(seen("certificate_formed")["t"] - t0, 3))
    record_property("complete_s", round(next(
        e["t"] for e in events if e["event"] == "transfer_completed") - t0, 3))
    record_property("joins_s", [round(e["elapsed"], 2) for e in events
                                if e["event"] == "group_joined"])
