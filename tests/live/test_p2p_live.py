"""Live: real wpa_supplicant P2P between hwsim radios, with range enforced by our medium."""

from __future__ import annotations

import time

import pytest

from emulation.network import Network
from emulation.station import StationSpec
from emulation.wpas import Supplicant

pytestmark = [pytest.mark.live, pytest.mark.slow]

RANGE = 100.0
NEAR = (40.0, 0.0)
FAR = (400.0, 0.0)
# Discovery in range takes ~4-8 s under TCG; "not found" is judged over several times that.
OUT_OF_RANGE_WINDOW = 25.0


async def discover_both(a: Supplicant, b: Supplicant, addr_a: str, addr_b: str,
                        timeout: float = 60.0) -> tuple[str, str, float]:
    """Both find; return (a's path of b, b's path of a, seconds until both saw each other)."""
    ma, mb = a.mark(), b.mark()
    t0 = time.monotonic()
    await a.find()
    await b.find()
    peer_b = await a.wait_device_found(addr_b, since=ma, timeout=timeout)
    peer_a = await b.wait_device_found(addr_a, since=mb, timeout=timeout)
    return peer_b, peer_a, time.monotonic() - t0


async def form_group(a: Supplicant, b: Supplicant, peer_b: str, peer_a: str,
                     timeout: float = 60.0) -> tuple[dict, dict, float]:
    """a (still in Find) authorizes b and becomes GO; b connects. Return both GroupStarted."""
    ma, mb = a.mark(), b.mark()
    t0 = time.monotonic()
    await a.connect_peer(peer_b, go_intent=15, authorize_only=True)
    await b.connect_peer(peer_a, go_intent=0)
    started_b = await b.wait_signal("GroupStarted", since=mb, timeout=timeout)
    started_a = await a.wait_signal("GroupStarted", since=ma, timeout=timeout)
    return started_a.body[0], started_b.body[0], time.monotonic() - t0


async def test_p2p_in_range_discover_group_and_ping(make_network, supplicant,
                                                    record_property) -> None:
    net: Network = make_network(StationSpec("sta1", position=(0.0, 0.0), range=RANGE),
                                StationSpec("sta2", position=NEAR, range=RANGE))
    s1, s2 = net.station("sta1"), net.station("sta2")
    a, b = await supplicant(s1), await supplicant(s2)

    peer_b, peer_a, discovery_s = await discover_both(a, b, s1.p2p_device_address,
                                                      s2.p2p_device_address)
    group_a, group_b, group_s = await form_group(a, b, peer_b, peer_a)
    assert group_a["role"] == "GO"
    assert group_b["role"] == "client"

    # a authorized b while still in Find: a device in Find leaves the group's channel for
    # its search and listen phases.  A group in use stops finding (as fastpayd does once
    # it is in a group).  (Not the whole cause of the loss noted below: a loaded run on
    # branch issue-15-radio still lost 2 of 5 after it.)
    await a.stop_find()
    await b.stop_find()
    if_a = await a.ifname_of(group_a["interface_object"])
    if_b = await b.ifname_of(group_b["interface_object"])
    s1.run(["ip", "addr", "add", "10.77.0.1/24", "dev", if_a], check=True)
    s2.run(["ip", "addr", "add", "10.77.0.2/24", "dev", if_b], check=True)
    # The first packets race ARP and the keys being installed right after GroupStarted:
    # wait for a first reply, then the link must carry traffic without loss.
    first_reply = time.monotonic()
    for _ in range(15):
        if s2.run(["busybox", "ping", "-c", "1", "-W", "2", "10.77.0.1"]).returncode == 0:
            break
    else:
        pytest.fail("no ping reply over the P2P group within 15 tries")
    record_property("first_ping_s", round(time.monotonic() - first_reply, 2))
    ping = s2.run(["busybox", "ping", "-c", "5", "-W", "5", "10.77.0.1"], timeout=60)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    replies = ping.stdout.count("bytes from 10.77.0.1")
    record_property("ping_replies_of_5", replies)
    # Known issue: on a heavily loaded host up to 2 of 5 packets were lost right after
    # group formation (cause not yet found; the medium has no loss model). Traffic must
    # flow; the loss is recorded, not hidden.
    assert replies >= 3, ping.stdout

    record_property("discovery_s", round(discovery_s, 2))
    record_property("group_formation_s", round(group_s, 2))
    record_property("startup_s", round(net.timings["stations_ready_s"], 2))
    stats = net.medium_stats()
    assert stats["acked"] > 0  # unicast frames (negotiation, EAPOL, ping) were delivered


async def test_p2p_out_of_range_not_discovered(make_network, supplicant) -> None:
    net: Network = make_network(StationSpec("sta1", position=(0.0, 0.0), range=RANGE),
                                StationSpec("sta2", position=FAR, range=RANGE))
    s1, s2 = net.station("sta1"), net.station("sta2")
    a, b = await supplicant(s1), await supplicant(s2)
    before = net.medium_stats()

    with pytest.raises(TimeoutError):
        await discover_both(a, b, s1.p2p_device_address, s2.p2p_device_address,
                            timeout=OUT_OF_RANGE_WINDOW)
    assert not [s for s in a.history + b.history if s.member == "DeviceFound"]

    # The radios did transmit all along: the medium dropped their frames for range.
    after = net.medium_stats()
    assert after["frames"] > before["frames"]
    assert after["out_of_range"] > before["out_of_range"]


async def test_p2p_move_out_of_range_ends_link_and_back_finds_again(
        make_network, supplicant, record_property) -> None:
    net: Network = make_network(StationSpec("sta1", position=(0.0, 0.0), range=RANGE),
                                StationSpec("sta2", position=NEAR, range=RANGE))
    s1, s2 = net.station("sta1"), net.station("sta2")
    a, b = await supplicant(s1), await supplicant(s2)
    peer_b, peer_a, _ = await discover_both(a, b, s1.p2p_device_address,
                                            s2.p2p_device_address)
    await form_group(a, b, peer_b, peer_a)

    # Out of range: the client loses the GO's beacons and its group ends.
    mark = b.mark()
    t0 = time.monotonic()
    net.move("sta2", FAR)
    finished = await b.wait_signal("GroupFinished", since=mark, timeout=120)
    record_property("link_loss_s", round(time.monotonic() - t0, 2))
    assert finished.body[0]["role"] == "client"

    # Still away: a fresh discovery does not see sta1 ...
    await b.flush()
    mark = b.mark()
    await b.find()
    with pytest.raises(TimeoutError):
        await b.wait_device_found(s1.p2p_device_address, since=mark, timeout=10)

    # ... back in range, it does.
    t0 = time.monotonic()
    net.move("sta2", NEAR)
    await b.wait_device_found(s1.p2p_device_address, since=mark, timeout=60)
    record_property("rediscovery_s", round(time.monotonic() - t0, 2))
