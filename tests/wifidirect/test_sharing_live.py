"""Live test of group sharing: three authorities in one room run one P2P group, and a
client pays with one join (real fastpayd daemons, real wpa_supplicant, hwsim radios).

Three authority daemons (weights 1: every vote and every confirmation is needed) start
with ``group_sharing = true``; they choose one GO (the lowest name), the other two join
its group as members and the GO lists them in its FastPay record.  A client daemon then
discovers the GO, joins its group once and collects the three votes and delivers the
three confirmations over it, and a second payment right after reuses the membership
(pooling).  Everything is asserted from the daemons' own events and status (control
sockets), with generous timeouts for QEMU/TCG.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastpayd.testnet import generate_testnet
from tests.wifidirect.test_daemon_live import Daemon, in_order, wait_in_range

pytestmark = [pytest.mark.live, pytest.mark.slow]

STATIONS = ("s0", "s1", "s2", "s3")
AUTHS = ("auth0", "auth1", "auth2")
STATION = {"auth0": "s0", "auth1": "s1", "auth2": "s2", "client0": "s3"}
WORK = Path("/tmp/fastpay-wd-sharing")
GENESIS = 1000

LINK = """
[link]
kind = "wifidirect"
interface = "wlan0"
port = 7400
request_timeout = 30.0
discovery_window = 8.0
join_timeout = 90.0
"""
AUTHORITY_LINK = LINK + "group_sharing = true\nchoose_window = 6.0\n"
CLIENT_LINK = LINK + "linger = 20.0\n"  # pooling: keep a shared group for the next payment


@pytest.fixture(scope="module")
def room(stations: Any) -> Iterator[dict[str, Daemon]]:
    subprocess.run(["rm", "-rf", str(WORK)], check=True)
    WORK.mkdir(parents=True)
    generate_testnet(WORK, authorities=3, clients=2, balance=GENESIS)
    daemons: dict[str, Daemon] = {}
    for name, station in STATION.items():
        cfg = WORK / f"{name}.toml"
        text = cfg.read_text()
        cfg.write_text(text[:text.index("[link]")]
                       + (AUTHORITY_LINK if name in AUTHS else CLIENT_LINK))
        daemons[name] = Daemon(name, cfg, station=station, work=WORK)
    try:
        for name in AUTHS:
            daemons[name].start()
        yield daemons
    finally:
        for d in daemons.values():
            d.kill()


async def _story(room: dict[str, Daemon]) -> str:
    """Each daemon's events, one line each (for a failure message)."""
    noise = {"peer_found", "peer_ignored", "peer_connected", "peer_disconnected"}
    out = []
    for name, d in room.items():
        if d.proc is None:
            continue
        try:
            events = await d.events()
        except (AssertionError, OSError, TimeoutError) as exc:
            out.append(f"{name}: events unavailable: {exc}")
            continue
        for e in events:
            if e["event"] in noise:
                continue
            fields = {k: v for k, v in e.items() if k not in ("event", "t", "seq", "node")}
            out.append(f"{name} {e.get('t', 0):9.2f} {e['event']} {fields}")
        out.append(f"{name} log tail:\n{d.tail(15)}")
    return "\n".join(out)


async def test_three_authorities_one_group_one_join_pays(room: dict[str, Daemon],
                                                          record_property: Any) -> None:
    try:
        await _pays_with_one_join(room, record_property)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- the daemons' events ---\n{await _story(room)}"
                             ) from None


async def _pays_with_one_join(room: dict[str, Daemon], record_property: Any) -> None:
    await asyncio.gather(*(room[n].ready(300) for n in AUTHS))
    go = room["auth0"]
    # The GO lists both others once they answer inside its group.
    listed = await go.wait_event(
        lambda e: e["event"] == "record_updated" and e.get("members") == ["auth1", "auth2"],
        240, "auth0's record listing auth1 and auth2")
    for name in ("auth1", "auth2"):
        choice = await room[name].wait_event(
            lambda e: e["event"] == "group_choice" and e.get("action") == "join", 60,
            "a join choice")
        assert choice["target"] == "auth0"
        state = (await room[name].ctl({"cmd": "status"}))["link"]["group"]
        assert state["role"] == "member" and state["go"] == "auth0", state
    client = room["client0"]
    client.start()
    await client.ready()
    t_in = time.monotonic()
    await wait_in_range(client, 3)
    peers = {p["name"]: p for p in (await client.ctl({"cmd": "peers"}))["peers"]}
    assert peers["auth1"]["via"] == "auth0" and peers["auth2"]["via"] == "auth0", peers
    t0 = time.monotonic()
    first = await client.ctl({"cmd": "transfer", "recipient": "client1", "amount": 10,
                              "wait": True, "timeout": 400}, 420)
    first_s = time.monotonic() - t0
    assert first["accepted"] and first["state"] == "complete", first
    assert sorted(first["confirmed"]) == list(AUTHS)
    events = await client.events()
    joined = [e for e in events if e["event"] == "group_joined"]
    assert len(joined) == 1 and joined[0]["authority"] == "auth0", joined
    votes = {e["authority"] for e in events if e["event"] == "vote_received"}
    confirmations = {e["authority"] for e in events if e["event"] == "confirmation_delivered"}
    assert votes == set(AUTHS) and confirmations == set(AUTHS)
    steps = in_order(events, ["transfer_started", "certificate_formed", "transfer_completed"])
    # The second payment right after: the same membership, no join at all.
    t1 = time.monotonic()
    second = await client.ctl({"cmd": "transfer", "recipient": "client1", "amount": 5,
                               "wait": True, "timeout": 400}, 420)
    repeat_s = time.monotonic() - t1
    assert second["accepted"] and second["state"] == "complete", second
    events = await client.events()
    assert len([e for e in events if e["event"] == "group_joined"]) == 1
    for name in AUTHS:
        bal = await room[name].ctl({"cmd": "balance", "account": "client0"})
        got = bal["balance"] if "balance" in bal else bal["accounts"][0]["balance"]
        assert got == GENESIS - 15, (name, bal)
    join_s = joined[0]["elapsed"]
    record_property("shared_join_s", round(join_s, 3))
    record_property("first_payment_s", round(first_s, 3))
    record_property("first_certificate_s", round(steps[1]["latency"], 3))
    record_property("repeat_payment_s", round(repeat_s, 3))
    record_property("first_over_join", round(first_s / join_s, 2))
    record_property("repeat_over_join", round(repeat_s / join_s, 2))
    record_property("in_range_after_s", round(t0 - t_in, 3))
    record_property("go_listed_members_at", listed.get("t"))
    print(f"[figures] shared group: join {join_s:.2f}s, first payment {first_s:.2f}s "
          f"({first_s / join_s:.2f}x the join), repeat {repeat_s:.2f}s "
          f"({repeat_s / join_s:.2f}x)")
