"""The start-up breakdown (emulation.startup) and the layer's readiness over sd_notify:
recorded importtime output and events, and a real fastpayd on an IP link that says
READY=1 on the socket the layer gives it (no radios: the live run reports the rest)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from emulation import fastpay, startup
from fastpayd.testnet import generate_testnet

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:       300 |       1000 | site
import time:      1000 |      1000 |     protocol.codec
import time:      2000 |       3000 |   protocol
import time:      4000 |       7000 | fastpayd.daemon
2026-12-02 fastpayd[a] INFO fastpayd: ready
"""


def test_import_seconds_adds_the_top_level_imports() -> None:
    assert startup.import_seconds(IMPORTTIME) == 0.008
    assert startup.import_seconds("no imports here\n") is None


def _events(*pairs: tuple[str, float]) -> list[dict[str, Any]]:
    return [{"event": name, "t": t} for name, t in pairs]


def test_daemon_breakdown_authority_splits_state_link_and_ready() -> None:
    events = _events(("state_loaded", 7.0), ("group_started", 8.0), ("link_up", 9.0),
                     ("node_started", 9.5))
    got = startup.daemon_breakdown(spawned=2.0, ready=10.0, events=events, imports=3.0,
                                   role="authority")
    assert got == {"imports_s": 3.0, "to_state_s": 5.0, "link_s": 2.0,
                   "to_ready_s": 1.0, "total_s": 8.0, "first_discovery_s": None}


def test_daemon_breakdown_client_first_discovery_after_ready_and_restart() -> None:
    # Events of an earlier start (before this spawn) are not this start's.
    events = _events(("link_up", 1.0), ("authority_discovered", 1.5), ("link_up", 14.0),
                     ("authority_discovered", 20.0))
    got = startup.daemon_breakdown(spawned=10.0, ready=15.0, events=events, imports=2.0,
                                   role="client")
    assert got["to_state_s"] == 4.0 and got["link_s"] is None
    assert got["to_ready_s"] == 1.0 and got["total_s"] == 5.0
    assert got["first_discovery_s"] == 5.0


def test_daemon_breakdown_not_ready_leaves_marks_out() -> None:
    got = startup.daemon_breakdown(spawned=0.0, ready=None, events=[], imports=None,
                                   role="client")
    assert set(got.values()) == {None}


def test_table_lists_run_stations_and_daemons() -> None:
    breakdown = {"run": {"stations_s": 12.34},
                 "stations": {"auth0": {"netns_s": 1.0, "dbus_s": 0.5, "wpa_supplicant_s": 2.0,
                                        "wpa_dbus_s": 0.2, "total_s": 3.7}},
                 "daemons": {"client0": {"imports_s": 4.0, "total_s": 9.0,
                                         "first_discovery_s": 6.0}}}
    out = io.StringIO()
    Console(file=out, width=200).print(startup.table(breakdown))
    text = out.getvalue()
    assert "run: stations" in text and "12.3" in text
    assert "station auth0" in text and "wpa_supplicant 2.0" in text
    assert "fastpayd client0" in text and "imports (all, overlapping) 4.0" in text and "9.0" in text


class _HostStation:
    """Runs processes on this host: the seam Daemon.start uses (env + popen)."""

    name = "host"

    def env(self) -> dict[str, str]:
        import os

        return dict(os.environ)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, **kwargs)


def test_layer_waits_for_ready_over_sd_notify(tmp_path: Path) -> None:
    generate_testnet(tmp_path, authorities=1, clients=0, balance=10)
    d = fastpay.Daemon("auth0", "authority", _HostStation(), tmp_path / "auth0.toml",
                       tmp_path / "run" / "auth0.sock", tmp_path / "state" / "auth0",
                       tmp_path / "auth0.out")
    layer = fastpay.FastPayLayer(SimpleNamespace(), SimpleNamespace(), work=tmp_path)
    layer.daemons["auth0"] = d
    lines: list[str] = []
    try:
        d.start()
        layer.wait_all([d], 120.0, lines.append)
        assert d.ready_at is not None and d.alive()
        assert d.ctl({"cmd": "status"})["name"] == "auth0"
        phases = d.breakdown()
        assert phases["imports_s"] is not None and phases["imports_s"] > 0
        assert phases["to_state_s"] is not None and phases["link_s"] is not None
        assert phases["to_ready_s"] is not None
        assert 0 < phases["to_ready_s"] <= phases["total_s"]  # type: ignore[operator]
    finally:
        d.stop()
    assert d.notify is None


def test_layer_names_a_daemon_that_exits_before_ready(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[node]\nrole = 'authority'\n")
    d = fastpay.Daemon("bad", "authority", _HostStation(), tmp_path / "bad.toml",
                       tmp_path / "bad.sock", tmp_path / "state", tmp_path / "bad.out")
    layer = fastpay.FastPayLayer(SimpleNamespace(), SimpleNamespace(), work=tmp_path)
    d.start()
    try:
        with pytest.raises(RuntimeError, match="fastpayd bad exited"):
            layer.wait_all([d], 120.0)
    finally:
        d.stop()


def test_keygen_started_early_gives_prepare_its_keys(tmp_path: Path) -> None:
    from emulation import scenario

    scen = scenario.load(scenario.DEFAULT_SCENARIO)
    keygen = fastpay.start_keygen(scen)
    assert keygen is not None and (keygen.authorities, keygen.clients) == (4, 2)
    net = SimpleNamespace(station=lambda n: SimpleNamespace(spec=scen.station(n), iface="wlan0"))
    layer = fastpay.FastPayLayer(net, scen, work=tmp_path / "fp", keygen=keygen)
    layer.prepare()
    assert layer.keygen is None and not keygen.out.parent.exists()
    assert sorted(p.name for p in (tmp_path / "fp").glob("*.key")) == [
        "auth0.key", "auth1.key", "auth2.key", "auth3.key", "client0.key", "client1.key"]


def test_run_report_startup_section_without_fastpay() -> None:
    from emulation import run

    net = SimpleNamespace(timings={"medium_ready_s": 1.5, "note": "x"},
                          startup_breakdown=lambda: {"a": {"total_s": 2.0},
                                                     "b": {"total_s": 4.0}})
    got = run._startup(net, None, {"process_to_start_s": 0.5, "stations_s": 6.0}, 0.0)
    assert got["run"] == {"process_to_start_s": 0.5, "stations_s": 6.0,
                          "network_medium_ready_s": 1.5}
    assert got["per_station_s"] == {"max": 4.0, "mean": 3.0}
    assert got["daemons"] == {} and got["per_daemon_s"] == {"max": None, "mean": None}


def test_first_payment_line_is_the_timelines_mobile_transfer() -> None:
    from emulation import run

    assert run.FIRST_PAYMENT_LINE.match("[    1.3 s] ok   mobile_transfer client0 client1 10")
    assert not run.FIRST_PAYMENT_LINE.match("[    1.3 s] FAIL mobile_transfer c0 c1 10")
    assert not run.FIRST_PAYMENT_LINE.match("client0: transfer #0 of 10 to client1 staged")
