"""Fixtures for live tests: networks that are always torn down, supplicant clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from emulation.network import Network
from emulation.station import Station, StationSpec
from emulation.wpas import Supplicant


@pytest.fixture
def make_network() -> Iterator[Callable[..., Network]]:
    """Start a Network from station specs; every network made is stopped afterwards."""
    made: list[Network] = []

    def make(*specs: StationSpec, **kwargs: object) -> Network:
        net = Network(specs, **kwargs)  # type: ignore[arg-type]
        made.append(net)
        net.start()
        return net

    yield make
    for net in reversed(made):
        _print_logs(net)  # captured: pytest shows it only when the test failed
        net.stop()


def _print_logs(net: Network, lines: int = 40) -> None:
    logs = [net.run_dir / "medium.log"]
    for station in net.stations.values():
        logs += [station.dir / "wpa_supplicant.log", station.dir / "dbus.log"]
    for log in logs:
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            print(f"----- {log} (last {len(tail)} lines)", *tail, sep="\n")


@pytest.fixture
async def supplicant() -> AsyncIterator[Callable[[Station], object]]:
    """Connect a D-Bus client to a station's wpa_supplicant (closed afterwards)."""
    clients: list[Supplicant] = []

    async def connect(station: Station) -> Supplicant:
        client = await Supplicant.connect(station.outside_bus_address, station.iface)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()
