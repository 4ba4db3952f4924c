"""FastPay's emulation layer on the host: generated network files, control client, the
default scenario's geometry (no radios: the live tests run the daemons)."""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from emulation import fastpay, scenario
from emulation.cli import EmulationCLI


def _layer(tmp_path: Path, scen: scenario.Scenario) -> fastpay.FastPayLayer:
    net = SimpleNamespace(station=lambda n: SimpleNamespace(spec=scen.station(n), iface="wlan0"))
    return fastpay.FastPayLayer(net, scen, work=tmp_path / "fp")


def test_prepare_writes_committee_and_wifidirect_configs(tmp_path: Path) -> None:
    scen = scenario.load(scenario.DEFAULT_SCENARIO)
    layer = _layer(tmp_path, scen)
    layer.prepare()
    assert layer.authorities == ["auth0", "auth1", "auth2", "auth3"]
    assert layer.clients == ["client0", "client1"]
    assert layer.quorum == 3 and layer.genesis == {"client0": 1000, "client1": 1000}
    committee = tomllib.loads((tmp_path / "fp" / "committee.toml").read_text())
    assert [a["name"] for a in committee["authorities"]] == layer.authorities
    assert len({a["public_key"] for a in committee["authorities"]}) == 4
    assert [g["balance"] for g in committee["genesis"]] == [1000, 1000]
    node = tomllib.loads((tmp_path / "fp" / "client0.toml").read_text())
    assert node["node"] == {**node["node"], "role": "client", "name": "client0"}
    assert node["link"]["kind"] == "wifidirect" and node["link"]["interface"] == "wlan0"
    assert node["link"]["join_timeout"] == 45.0  # the scenario's [fastpay] link wins
    assert (tmp_path / "fp" / "client0.key").stat().st_mode & 0o077 == 0


def test_prepare_uses_station_weight_and_balance(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("""
        [[stations]]
        name = "a"
        role = "authority"
        weight = 3
        [[stations]]
        name = "b"
        role = "authority"
        [[stations]]
        name = "c"
        role = "client"
        balance = 7
    """)
    layer = _layer(tmp_path, scenario.load(path))
    layer.prepare()
    committee = tomllib.loads((tmp_path / "fp" / "committee.toml").read_text())
    assert [a["weight"] for a in committee["authorities"]] == [3, 1]
    assert layer.quorum == 3 and layer.genesis == {"c": 7}


def test_control_request_skips_progress_lines(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[dict[str, object]] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            seen.append(json.loads(conn.makefile().readline()))
            conn.sendall(b'{"progress": {"step": "x"}}\n{"ok": true, "balance": 5}\n')

    thread = threading.Thread(target=serve)
    thread.start()
    assert fastpay.control_request(path, {"cmd": "balance"}, 5) == {"ok": True, "balance": 5}
    thread.join()
    server.close()
    assert seen == [{"cmd": "balance"}]


def test_daemon_ctl_raises_on_refusal_and_absence(tmp_path: Path) -> None:
    d = fastpay.Daemon("x", "client", None, tmp_path / "x.toml", tmp_path / "none.sock",
                       tmp_path, tmp_path / "x.out")
    with pytest.raises(fastpay.ControlError, match="unreachable"):
        d.ctl({"cmd": "status"}, 1)


def _route(station: scenario.StationSpec) -> list[tuple[float, float, float]]:
    """(t, x, y) every metre or so along a station's waypoints."""
    points = [(0.0, *station.position)] + [tuple(p) for p in station.mobility["points"]]
    out = []
    for (t1, x1, y1), (t2, x2, y2) in zip(points, points[1:], strict=False):
        for i in range(101):
            f = i / 100
            out.append((t1 + (t2 - t1) * f, x1 + (x2 - x1) * f, y1 + (y2 - y1) * f))
    return out


def test_default_scenario_no_route_point_reaches_a_quorum() -> None:
    scen = scenario.load(scenario.DEFAULT_SCENARIO)
    auths = [s for s in scen.stations if s.role == "authority"]
    for name in ("client0", "client1"):
        client = scen.station(name)
        reached: set[str] = set()
        for _, x, y in _route(client):
            near = {a.name for a in auths
                    if math.hypot(x - a.position[0], y - a.position[1])
                    <= min(a.range, client.range)}
            assert len(near) < 3, (name, x, y, near)
            reached |= near
        assert reached == {a.name for a in auths}, name  # but each route passes all four


def test_default_scenario_payer_meets_the_payee_where_no_authority_reaches_it() -> None:
    scen = scenario.load(scenario.DEFAULT_SCENARIO)
    auths = [s for s in scen.stations if s.role == "authority"]
    payer, payee = scen.station("client0"), scen.station("client1")
    assert not [a.name for a in auths if math.dist(payee.position, a.position) <= a.range]
    waits_until = payee.mobility["points"][0][0]
    assert payee.mobility["points"][0][1:] == list(payee.position)
    # While the payee waits, the payer stops within its range after the certificate's stop
    # (auth1|auth2), with no authority in the payee's range.
    met = [t for t, x, y in _route(payer) if t <= waits_until
           and math.dist((x, y), payee.position) <= min(payer.range, payee.range)]
    assert met and min(met) > 95 and max(met) - min(met) >= 30, met


def test_commands_are_registered_with_help() -> None:
    for name in ("discover", "mobile_transfer", "show_peers", "connection_status",
                 "balances", "wait_payment", "receive", "expect_balance", "bare_join"):
        method = getattr(EmulationCLI, f"do_{name}")
        assert method.__doc__ and method.__doc__.startswith(name)


def test_commands_without_fastpay_network_fail_cleanly() -> None:
    out = __import__("io").StringIO()
    cli = EmulationCLI(SimpleNamespace(stations={}, failed=threading.Event()), stdout=out)
    cli.onecmd("balances")
    assert cli.last_ok is False and "no FastPay network" in out.getvalue()


def test_plot_draws_the_pictures_mid_run_from_the_events_so_far(tmp_path: Path) -> None:
    out = __import__("io").StringIO()
    specs = {"auth0": SimpleNamespace(role="authority", range=60.0, extra={}),
             "client0": SimpleNamespace(role="client", range=60.0, extra={})}
    stations = {n: SimpleNamespace(spec=s, position=(0.0, 0.0) if n == "auth0"
                                   else (30.0, 0.0)) for n, s in specs.items()}
    net = SimpleNamespace(stations=stations, station=stations.__getitem__,
                          failed=threading.Event(), running=False)
    layer = fastpay.FastPayLayer(net, SimpleNamespace(payments=[], station=specs.__getitem__),
                                 work=tmp_path / "fp",
                                 t0=100.0, tracks={"client0": [(100.0, 10.0, 0.0),
                                                               (110.0, 30.0, 0.0)]},
                                 report_path=str(tmp_path / "runs" / "run.json"))
    for name, role in (("auth0", "authority"), ("client0", "client")):
        state = tmp_path / "state" / name
        state.mkdir(parents=True)
        layer.daemons[name] = fastpay.Daemon(name, role, None, tmp_path / f"{name}.toml",
                                             tmp_path / f"{name}.sock", state,
                                             tmp_path / f"{name}.out")
    so_far = [{"t": 101.0, "event": "authority_in_range", "authority": "auth0"},
              {"t": 102.0, "event": "transfer_started", "recipient": "x", "amount": 1,
               "sequence_number": 0},
              {"t": 105.0, "event": "vote_received", "authority": "auth0",
               "sequence_number": 0}]
    (tmp_path / "state" / "client0" / "events.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in so_far))
    net.fastpay = layer
    cli = EmulationCLI(net, stdout=out)
    cli.onecmd(f"plot {tmp_path / 'mid' / 'now'}")
    assert cli.last_ok, out.getvalue()
    assert out.getvalue().split() == [str(tmp_path / "mid" / f"now-{kind}.png")
                                      for kind in ("topology", "latency", "timeline")]
    assert all(Path(p).stat().st_size > 0 for p in out.getvalue().split())
    out.truncate(0), out.seek(0)
    cli.onecmd("plot")  # next to the report, named after the time since the start
    assert cli.last_ok, out.getvalue()
    (first, *_) = out.getvalue().split()
    assert Path(first).parent == tmp_path / "runs"
    assert re.fullmatch(r"run-at\d+s-topology\.png", Path(first).name)
    assert EmulationCLI.do_plot.__doc__.startswith("plot")
