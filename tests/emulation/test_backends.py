"""Backend registry and the (lazily imported) Mininet-WiFi backend."""

from __future__ import annotations

import importlib.util

import pytest

from emulation import backends

HAS_MN_WIFI = importlib.util.find_spec("mn_wifi") is not None


def test_choose_unknown_backend_rejected() -> None:
    with pytest.raises(backends.BackendUnavailable, match="unknown backend"):
        backends.choose("ns3")


def test_choose_hwsim_always_named() -> None:
    assert backends.choose("hwsim") == "hwsim"


@pytest.mark.skipif(HAS_MN_WIFI, reason="Mininet-WiFi is installed here")
def test_choose_auto_without_mininet_is_hwsim() -> None:
    assert backends.choose("auto") == "hwsim"
    ok, why = backends.mininet_available()
    assert not ok and "mn_wifi" in why


@pytest.mark.skipif(HAS_MN_WIFI, reason="Mininet-WiFi is installed here")
def test_choose_mininet_without_it_says_why() -> None:
    with pytest.raises(backends.BackendUnavailable, match="mn_wifi"):
        backends.choose("mininet")


def test_mininet_backend_builds_stations() -> None:
    ok, why = backends.mininet_available()
    if not ok:
        pytest.skip(f"Mininet-WiFi backend unavailable: {why}")
    from emulation.backends.mininet import MininetNetwork
    from emulation.station import StationSpec

    net = MininetNetwork([StationSpec("sta1"), StationSpec("sta2", position=(20.0, 0.0))])
    with net:
        assert all(s.alive() for s in net.stations.values())
        assert net.station("sta1").run("ip link").returncode == 0
