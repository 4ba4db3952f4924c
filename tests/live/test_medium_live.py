"""Live: what the medium does to real radios -- signal levels, and what happens if it dies."""

from __future__ import annotations

import pytest

from emulation.medium import PathLoss
from emulation.network import MediumDied, Network
from emulation.station import StationSpec

pytestmark = [pytest.mark.live, pytest.mark.slow]


async def test_medium_signal_decreases_with_distance(make_network, supplicant,
                                                     record_property) -> None:
    net: Network = make_network(StationSpec("go", position=(0.0, 0.0), range=150.0),
                                StationSpec("rx", position=(5.0, 0.0), range=150.0))
    go, rx = net.station("go"), net.station("rx")
    a, b = await supplicant(go), await supplicant(rx)
    mark = a.mark()
    await a.group_add(frequency=2437)
    await a.wait_signal("GroupStarted", since=mark, timeout=60)
    bssid = go.radio.addresses[0]  # the GO runs on wlan0 (p2p_no_group_iface)

    levels = []
    for distance in (5.0, 40.0, 120.0):
        net.move("rx", (distance, 0.0))
        levels.append(await b.scan_bss_signal(bssid, 2437, timeout=60))
    record_property("signal_dbm_at_5_40_120_m", levels)

    assert levels[0] > levels[1] > levels[2]
    # What the receiver's wpa_supplicant reports is the medium's path-loss level.
    expected = [PathLoss().signal_dbm(d) for d in (5.0, 40.0, 120.0)]
    assert all(abs(got - want) <= 2 for got, want in zip(levels, expected, strict=True)), \
        (levels, expected)


def test_medium_killed_stops_emulation_with_clear_error(make_network) -> None:
    net: Network = make_network(StationSpec("sta1", position=(0.0, 0.0)),
                                StationSpec("sta2", position=(30.0, 0.0)))
    daemons = [p for s in net.stations.values() for p in s.procs.values()]
    assert net.medium_proc is not None
    net.medium_proc.kill()

    assert net.failed.wait(timeout=30), "the emulation did not notice its medium dying"
    assert isinstance(net.error, MediumDied)
    assert "medium" in str(net.error) and "perfect medium" in str(net.error)
    assert all(p.poll() is not None for p in daemons)  # every station was stopped
    assert not net.running
    with pytest.raises(Exception, match="stopped"):
        net.move("sta1", (1.0, 1.0))
