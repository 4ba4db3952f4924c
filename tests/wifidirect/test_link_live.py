"""Live tests of the WiFi Direct link: real wpa_supplicant, real D-Bus, real hwsim radios.

Each test drives stations from :mod:`conftest` (one thread per station, inside the
station's network namespace). Waits are on D-Bus signals and sockets, with generous
timeouts: under QEMU/TCG a P2P find takes seconds.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from fastpayd.wifidirect import (
    AuthorityPeer,
    FastPayRecord,
    WifiDirectAuthority,
    WifiDirectClient,
)
from fastpayd.wifidirect.service import records_from_tlvs
from tests.wifidirect.streams import read_frame, serve, session, write_frame

pytestmark = [pytest.mark.live, pytest.mark.slow]

COMMITTEE = "committee-test"
PORT = 7400


def record(name: str, committee: str = COMMITTEE, port: int = PORT) -> FastPayRecord:
    return FastPayRecord(role="authority", name=name, public_key=bytes([len(name)] * 32),
                         committee=committee, port=port)


async def start_authority(st: Any, rec: FastPayRecord, on_event: Any,
                          echo: bool = False) -> WifiDirectAuthority:
    """Start an authority on ``st`` (inside its loop); with ``echo``, serve a frame echo."""
    auth = WifiDirectAuthority(rec, ifname=st.ifname, bus_address=st.bus, on_event=on_event)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                msg = msgpack.unpackb(await read_frame(reader))
                await write_frame(writer, msgpack.packb({"echo": msg, "by": rec.name}))
        except (EOFError, ConnectionError):
            pass
        finally:
            writer.close()

    await auth.start()
    if echo:
        auth._server = await serve(auth, handler)  # type: ignore[attr-defined]
    return auth


async def stop_authority(auth: WifiDirectAuthority) -> None:
    server = getattr(auth, "_server", None)
    if server is not None:
        server.close()
    await auth.stop()


async def discover(st: Any, on_event: Any, want: int | None = 1, timeout: float = 60.0
                   ) -> list[AuthorityPeer]:
    async with WifiDirectClient(COMMITTEE, ifname=st.ifname, bus_address=st.bus,
                                on_event=on_event) as client:
        return await client.discover(timeout=timeout, want=want)


def _the(peers: list[AuthorityPeer], address: str) -> AuthorityPeer:
    """The peer at ``address`` among those discovered, or a failure that says so."""
    mine = [p for p in peers if p.address == address]
    assert mine, f"{address} not discovered (found {[p.address for p in peers]})"
    return mine[0]


async def discover_and_echo(st: Any, on_event: Any, authority: str, payload: Any
                            ) -> dict[str, Any]:
    """Discover, join ``authority``'s group, send one frame, read the echo, leave."""
    out: dict[str, Any] = {}
    async with WifiDirectClient(COMMITTEE, ifname=st.ifname, bus_address=st.bus,
                                on_event=on_event) as client:
        t0 = time.monotonic()
        peers = await client.discover(timeout=90.0, want=1)
        out["discover_s"] = time.monotonic() - t0
        peer = _the(peers, authority)
        t1 = time.monotonic()
        async with session(client, peer, timeout=120.0) as (reader, writer):
            out["connected_s"] = time.monotonic() - t1
            t2 = time.monotonic()
            await write_frame(writer, msgpack.packb(payload))
            out["reply"] = msgpack.unpackb(await asyncio.wait_for(read_frame(reader), 30))
            out["first_byte_s"] = time.monotonic() - t2
        out["groups_after"] = dict(client.manager.groups)
    return out


async def test_discover_authority_via_service_discovery(stations: Any, events: Any) -> None:
    auth_st, cli = stations["auth1"], stations["cli1"]
    rec = record("auth1")
    auth = await auth_st.run(start_authority(auth_st, rec, events.sink("auth1")))
    try:
        peers = await cli.run(discover(cli, events.sink("cli1")))
    finally:
        await auth_st.run(stop_authority(auth))
    assert [p.address for p in peers] == [auth_st.p2p_address]
    assert peers[0].record == rec
    assert isinstance(peers[0].level, int) and -100 < peers[0].level < 0
    found = events.named("authority_discovered", "cli1")
    assert found and found[0]["authority"] == "auth1" and found[0]["sd_seconds"] > 0
    print("measured:", {k: round(v, 2) for k, v in found[0].items()
                        if isinstance(v, float) and k != "t"})


async def plain_service_query(target: str) -> bytes:
    """What an ordinary P2P device does: Find, then ask for *all* services (TLV 02 00 00 01).

    Raw dbus-fast calls only -- no fastpayd code.
    """
    bus = await MessageBus(bus_address="unix:abstract=fastpay-wd-bus").connect()
    wpa = "fi.w1.wpa_supplicant1"
    p2p = wpa + ".Interface.P2PDevice"
    queue: asyncio.Queue[Message] = asyncio.Queue()

    def handler(msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.interface == p2p:
            queue.put_nowait(msg)

    bus.add_message_handler(handler)
    try:
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="AddMatch",
                               signature="s", body=[f"type='signal',sender='{wpa}'"]))
        reply = await bus.call(Message(destination=wpa, path="/fi/w1/wpa_supplicant1",
                                       interface=wpa, member="GetInterface", signature="s",
                                       body=["wlan0"]))
        iface = reply.body[0]
        await bus.call(Message(destination=wpa, path=iface, interface=p2p, member="Find",
                               signature="a{sv}", body=[{}]))
        peer_path = f"{iface}/Peers/{target.replace(':', '')}"
        # A query to every peer (no peer_object) asking for all service types.
        reply = await bus.call(Message(destination=wpa, path=iface, interface=p2p,
                                       member="ServiceDiscoveryRequest", signature="a{sv}",
                                       body=[{"tlv": Variant("ay", b"\x02\x00\x00\x01")}]))
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        end = time.monotonic() + 90
        while True:
            msg = await asyncio.wait_for(queue.get(), max(0.1, end - time.monotonic()))
            if msg.member == "ServiceDiscoveryResponse":
                args = msg.body[0]
                if args["peer_object"].value == peer_path:
                    return bytes(args["tlvs"].value)
    finally:
        bus.disconnect()


async def test_plain_wpa_supplicant_sees_the_record(stations: Any, events: Any) -> None:
    auth_st, plain = stations["auth1"], stations["plain"]
    rec = record("auth1")
    auth = await auth_st.run(start_authority(auth_st, rec, events.sink("auth1")))
    try:
        tlvs = await plain.run(plain_service_query(auth_st.p2p_address))
    finally:
        await auth_st.run(stop_authority(auth))
    # The standard answer carries the DNS-SD names and TXT strings in the clear...
    assert b"\x08_fastpay\x04_tcp\x05local" in tlvs
    assert b"pk=" + rec.public_key.hex().encode() in tlvs
    assert b"committee=" + COMMITTEE.encode() in tlvs
    # ...and decodes to the advertised record.
    assert records_from_tlvs(tlvs) == [rec]


async def test_join_exchange_and_leave(stations: Any, events: Any) -> None:
    auth_st, cli = stations["auth1"], stations["cli1"]
    auth = await auth_st.run(start_authority(auth_st, record("auth1"), events.sink("auth1"),
                                             echo=True))
    try:
        out = await cli.run(discover_and_echo(cli, events.sink("cli1"), auth_st.p2p_address,
                                              {"op": "ping", "n": 1, "blob": b"\x00" * 1000}))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{events.story()}") from exc
    finally:
        await auth_st.run(stop_authority(auth))
    assert out["reply"] == {"echo": {"op": "ping", "n": 1, "blob": b"\x00" * 1000},
                            "by": "auth1"}
    assert out["groups_after"] == {}  # left the group
    joined = events.named("group_joined", "cli1")
    opened = events.named("session_opened", "cli1")
    left = events.named("group_left", "cli1")
    assert len(joined) == 1 and len(opened) == 1 and len(left) == 1
    assert joined[0]["t"] < opened[0]["t"] < left[0]["t"]
    assert left[0]["reason"] == "done"
    assert joined[0]["ifname"] and joined[0]["go_address"]
    assert [e["address"] for e in events.named("client_joined", "auth1")]
    print("measured:", {k: round(v, 2) for k, v in out.items() if isinstance(v, float)},
          "join", round(joined[0]["elapsed"], 2))


async def test_three_clients_join_concurrently(stations: Any, events: Any) -> None:
    auth_st = stations["auth1"]
    clients = [stations[n] for n in ("cli1", "cli2", "cli3")]
    auth = await auth_st.run(start_authority(auth_st, record("auth1"), events.sink("auth1"),
                                             echo=True))
    try:
        results = await asyncio.gather(*[
            st.run(discover_and_echo(st, events.sink(st.name), auth_st.p2p_address,
                                     {"from": st.name}))
            for st in clients], return_exceptions=True)
    finally:
        await auth_st.run(stop_authority(auth))
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{failures}\n{events.story()}"
    for st, out in zip(clients, results, strict=True):
        assert isinstance(out, dict)
        assert out["reply"] == {"echo": {"from": st.name}, "by": "auth1"}
    assert len(events.named("client_joined", "auth1")) >= 3
    print("measured:", [{k: round(v, 2) for k, v in r.items() if isinstance(v, float)}
                        for r in results if isinstance(r, dict)],
          "formation failures:", len(events.named("formation_failed")))


async def test_discover_ignores_non_fastpay_devices(stations: Any, events: Any) -> None:
    auth_st, other_st, cli, plain = (stations[n] for n in ("auth1", "auth2", "cli1", "plain"))
    auth = await auth_st.run(start_authority(auth_st, record("auth1"), events.sink("auth1")))
    other = await other_st.run(start_authority(other_st, record("auth2", "other-committee"),
                                               events.sink("auth2")))
    try:
        # The plain device only needs to be discoverable, as any phone in range would be.
        await plain.run(_listen(plain))
        peers = await cli.run(discover(cli, events.sink("cli1"), want=None, timeout=45.0))
    finally:
        await auth_st.run(stop_authority(auth))
        await other_st.run(stop_authority(other))
    assert [p.address for p in peers] == [auth_st.p2p_address]
    found = {e["address"] for e in events.named("peer_found", "cli1")}
    ignored = {e["address"]: e["reason"] for e in events.named("peer_ignored", "cli1")}
    assert plain.p2p_address in found, "the plain device was never found: test proves nothing"
    assert ignored.get(plain.p2p_address) in ("not a FastPay authority", "no service answer")
    assert ignored.get(other_st.p2p_address) == "other committee"


async def _listen(st: Any) -> None:
    from fastpayd.wifidirect import WpaManager

    async with WpaManager(st.ifname, st.bus) as mgr:
        await mgr.listen(120)


def _mac(st: Any) -> str:
    return subprocess.run(["ip", "netns", "exec", st.netns, "cat", "/sys/class/net/wlan0/address"],
                          capture_output=True, text=True, check=True).stdout.strip()


async def _member_serving(st: Any, on_event: Any, go: str, rec: FastPayRecord,
                          joined: threading.Event, done: threading.Event) -> dict[str, Any]:
    """On ``st``: join the GO's group as a P2P client and serve an echo on [::]:port."""
    out: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                msg = msgpack.unpackb(await read_frame(reader))
                await write_frame(writer, msgpack.packb({"echo": msg, "by": rec.name}))
        except (EOFError, ConnectionError):
            pass
        finally:
            writer.close()

    async with WifiDirectClient(COMMITTEE, ifname=st.ifname, bus_address=st.bus,
                                on_event=on_event) as client:
        peers = await client.discover(timeout=90.0, want=1)
        peer = _the(peers, go)
        async with client.membership(peer, timeout=120.0) as member:
            out["ifname"] = member.group.ifname
            server = await asyncio.start_server(handler, host="::", port=rec.port,
                                                family=socket.AF_INET6,
                                                reuse_address=True)
            joined.set()
            await asyncio.to_thread(done.wait, 600)
            server.close()
    return out


async def test_member_authority_is_reachable_through_the_go(stations: Any, events: Any) -> None:
    """Group sharing, radio level: auth2 joins auth1's group as a P2P client; cli1 joins
    the same group once and reaches both auth1 (the GO) and auth2 (a member, at the
    EUI-64 link-local address of its interface) over it."""
    auth_st, member_st, cli = stations["auth1"], stations["auth2"], stations["cli1"]
    auth = await auth_st.run(start_authority(auth_st, record("auth1"), events.sink("auth1"),
                                             echo=True))
    joined, done = threading.Event(), threading.Event()
    member_mac = _mac(member_st)
    member_task = asyncio.ensure_future(member_st.run(_member_serving(
        member_st, events.sink("auth2"), auth_st.p2p_address, record("auth2"),
        joined, done)))
    try:
        assert await asyncio.to_thread(joined.wait, 200), "auth2 never joined auth1's group"

        async def client_side() -> dict[str, Any]:
            res: dict[str, Any] = {}
            async with WifiDirectClient(COMMITTEE, ifname=cli.ifname, bus_address=cli.bus,
                                        on_event=events.sink("cli1")) as client:
                peers = await client.discover(timeout=90.0, want=1)
                peer = _the(peers, auth_st.p2p_address)
                async with client.membership(peer, timeout=120.0) as member:
                    for host in (None, member_mac):
                        t0 = time.monotonic()
                        if host is None:
                            (r, w), _ = await client.open_tcp(
                                member.group, PORT, member.deadline, asyncio.open_connection)
                        else:
                            from fastpayd.wifidirect.radio import link_local_from_mac

                            addr = f"{link_local_from_mac(host)}%{member.group.ifname}"
                            r, w = await asyncio.wait_for(
                                asyncio.open_connection(addr, PORT), 30)
                        await write_frame(w, msgpack.packb({"n": 1}))
                        reply = msgpack.unpackb(await asyncio.wait_for(read_frame(r), 30))
                        res[reply["by"]] = round(time.monotonic() - t0, 3)
                        w.close()
            return res

        res = await cli.run(client_side())
    finally:
        done.set()
        await asyncio.gather(member_task, return_exceptions=True)
        await auth_st.run(stop_authority(auth))
    print("measured: reached", res, "member mac", member_mac)
    assert set(res) == {"auth1", "auth2"}
    assert len(events.named("group_joined", "cli1")) == 1

