"""Live test of group sharing: four authorities in one room run one P2P group, and a
client pays with one join (real fastpayd daemons, real wpa_supplicant, hwsim radios).

Four authority daemons (weights 1, quorum 3) start with ``group_sharing = true``; they
choose one GO (the lowest name, or after a merge whichever group survived), the other
three join its group as members and the GO lists them in its FastPay record. A client
daemon then discovers the GO, joins its group once, collects the votes and delivers the
confirmations over it; a second payment right after reuses the membership (pooling);
once the client has left, a third payment re-invokes the stored persistent group (no WPS
provisioning). A bare join between two stations without FastPay is measured in the same
run, and every payment is printed as a ratio over it. Then the GO's daemon is killed: its
members find it silent in its group, choose again among themselves, and the next payment
is final at the three left. Everything is asserted
from the daemons' own events and status (control sockets), with generous timeouts for
QEMU/TCG; the tests of this module run in order on one room.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastpayd.testnet import generate_testnet
from tests.wifidirect.test_daemon_live import Daemon, wait_in_range

pytestmark = [pytest.mark.live, pytest.mark.slow]

STATIONS = ("s0", "s1", "s2", "s3", "s4", "p0", "p1")
AUTHS = ("auth0", "auth1", "auth2", "auth3")
STATION = {"auth0": "s0", "auth1": "s1", "auth2": "s2", "auth3": "s3", "client0": "s4"}
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
AUTHORITY_LINK = LINK + "group_sharing = true\nchoose_window = 8.0\n"
CLIENT_LINK = LINK + "linger = 8.0\n"  # pooling: keep a shared group for the next payment


@pytest.fixture(scope="module")
def room(stations: Any) -> Iterator[dict[str, Daemon]]:
    subprocess.run(["rm", "-rf", str(WORK)], check=True)
    WORK.mkdir(parents=True)
    generate_testnet(WORK, authorities=4, clients=2, balance=GENESIS)
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
    noise = {"peer_found", "peer_ignored", "sd_retry", "peer_connected", "peer_disconnected"}
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


async def test_one_room_one_group_one_join_pays(room: dict[str, Daemon], stations: Any,
                                               record_property: Any) -> None:
    try:
        await _pays_with_one_join(room, stations, record_property)
    except (AssertionError, StopIteration, KeyError, TimeoutError) as exc:
        raise AssertionError(f"{exc!r}\n--- the daemons' events ---\n{await _story(room)}"
                             ) from None


async def _pay(client: Daemon, amount: int, complete: bool = True
               ) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    res = await client.ctl({"cmd": "transfer", "recipient": "client1", "amount": amount,
                            "wait": True, "timeout": 400}, 420)
    assert res["accepted"] and res["final"], res
    if complete:
        assert res["state"] == "complete", res
    return res, time.monotonic() - t0


async def _final_after(client: Daemon, seq: int) -> float:
    """Seconds from the transfer's start to final (a quorum confirmed), from its events
    (``transfer_final``; a transfer confirmed everywhere at once may only say
    ``transfer_completed``, whose time is then the final's too)."""
    events = await client.events()
    start = [e for e in events if e["event"] == "transfer_started"
             and e.get("sequence_number") == seq]
    final = [e for e in events if e["event"] in ("transfer_final", "transfer_completed")
             and e.get("sequence_number") == seq]
    assert start and final, (seq, [(e["event"], e.get("sequence_number")) for e in events
                                   if e["event"].startswith(("transfer", "certificate"))])
    return float(min(e["t"] for e in final) - start[0]["t"])


async def _bare_join(stations: Any) -> float:
    """A WPS join between two stations, no FastPay traffic: p0 runs a plain group as GO
    (not persistent), p1 finds it and joins; Connect → GroupStarted, as group_joined."""
    from fastpayd.wifidirect import FastPayRecord, WifiDirectAuthority, WifiDirectClient

    go_st, cli_st = stations["p0"], stations["p1"]
    rec = FastPayRecord(role="authority", name="bare", public_key=bytes(32),
                        committee="bare-join", port=7401)
    go = WifiDirectAuthority(rec, ifname="wlan0", bus_address=go_st.bus, persistent=False)
    await go_st.run(go.start())

    async def join() -> float:
        async with WifiDirectClient("bare-join", ifname="wlan0", bus_address=cli_st.bus
                                    ) as client:
            client.reinvoke = False
            peers = await client.discover(timeout=90.0, want=1)
            t0 = time.monotonic()
            async with client.membership(peers[0], timeout=120.0) as member:
                return member.group.started_at - t0

    try:
        return await cli_st.run(join())
    finally:
        await go_st.run(go.stop())


async def _settled_go(room: dict[str, Daemon], timeout: float, names: tuple[str, ...] = AUTHS,
                      since: float = 0.0) -> tuple[str, dict[str, Any]]:
    """The authority of ``names`` whose record lists the others as members (in an event
    after monotonic time ``since``), and that event.

    Each authority's events are read with the control socket's long-poll (``since``), so
    this wakes at the event that settles the room, not on a timer."""
    want = {n: sorted(set(names) - {n}) for n in names}

    async def watch(name: str) -> dict[str, Any]:
        return await room[name].wait_event(
            lambda e: (e["event"] == "record_updated" and e.get("members") == want[name]
                       and e.get("t", 0) > since),
            timeout, f"{name}'s record listing {want[name]}")

    tasks = {asyncio.ensure_future(watch(n)): n for n in names}
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is None:
                return tasks[task], task.result()
        raise AssertionError(f"no authority of {names} listed the others within {timeout}s")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pays_with_one_join(room: dict[str, Daemon], stations: Any,
                              record_property: Any) -> None:
    await asyncio.gather(*(room[n].ready(300) for n in AUTHS))
    # Whichever authority the room chose as GO lists the other three once they answer
    # inside its group (the lowest name when all start together; on a loaded VM an
    # authority that heard nobody in its window may go GO first, and the others follow).
    go_name, listed = await _settled_go(room, 300)
    go = room[go_name]
    members = [n for n in AUTHS if n != go_name]
    assert (await go.ctl({"cmd": "status"}))["link"]["group"]["role"] == "GO"
    for name in members:
        # Joined by its choice, or by a merge when the room first split.
        state = (await room[name].ctl({"cmd": "status"}))["link"]["group"]
        assert state["role"] == "member" and state["go"] == go_name, (name, state)
    client = room["client0"]
    client.start()
    await client.ready()
    await wait_in_range(client, 4)
    peers = {p["name"]: p for p in (await client.ctl({"cmd": "peers"}))["peers"]}
    assert all(peers[n]["via"] == go_name for n in members), peers
    first, first_s = await _pay(client, 10)
    assert sorted(first["confirmed"]) == list(AUTHS)
    events = await client.events()
    joined = [e for e in events if e["event"] == "group_joined"]
    assert len(joined) == 1 and joined[0]["authority"] == go_name, joined
    votes = {e["authority"] for e in events if e["event"] == "vote_received"}
    confirmations = {e["authority"] for e in events if e["event"] == "confirmation_delivered"}
    assert len(votes) >= 3 and confirmations == set(AUTHS), (votes, confirmations)
    first_final = await _final_after(client, 0)
    # Pooling: the second payment right after rides on the same membership.
    _, repeat_s = await _pay(client, 5)
    repeat_final = await _final_after(client, 1)
    events = await client.events()
    assert len([e for e in events if e["event"] == "group_joined"]) == 1
    # The client leaves once idle; the next payment re-invokes the stored group.
    await client.wait_event(lambda e: e["event"] == "group_left", 120, "the client leaving")
    _, returning_s = await _pay(client, 3)
    returning_final = await _final_after(client, 2)
    events = await client.events()
    joins = [e for e in events if e["event"] == "group_joined"]
    assert len(joins) == 2 and joins[1]["reinvoked"] is True, joins
    for name in AUTHS:
        bal = await room[name].ctl({"cmd": "balance", "account": "client0"})
        got = bal["balance"] if "balance" in bal else bal["accounts"][0]["balance"]
        assert got == GENESIS - 18, (name, bal)
    bare = await _bare_join(stations)
    ratios = {"first": first_final / bare, "repeat": repeat_final / bare,
              "returning": returning_final / bare}
    for key, value in {"bare_join_s": bare, "shared_join_s": joined[0]["elapsed"],
                       "reinvoked_join_s": joins[1]["elapsed"],
                       "first_final_s": first_final, "first_complete_s": first_s,
                       "repeat_final_s": repeat_final, "repeat_complete_s": repeat_s,
                       "returning_final_s": returning_final,
                       "returning_complete_s": returning_s}.items():
        record_property(key, round(value, 3))
    record_property("versus_bare_join", {k: round(v, 2) for k, v in ratios.items()})
    record_property("go_listed_members_at", listed.get("t"))
    merges = [n for n in AUTHS for e in await room[n].events() if e["event"] == "group_merge"]
    record_property("merges_before_settling", len(merges))
    print(f"[figures] bare join {bare:.2f}s; client join {joined[0]['elapsed']:.2f}s, "
          f"re-invoked {joins[1]['elapsed']:.2f}s")
    for key, value in ratios.items():
        print(f"{key} payment / bare join: {value:.2f}")


async def _status_group(daemon: Daemon) -> dict[str, Any]:
    return dict((await daemon.ctl({"cmd": "status"}))["link"]["group"] or {})


async def _pay_until_final(client: Daemon, amount: int, timeout: float = 400.0
                           ) -> dict[str, Any]:
    """Pay ``amount`` to client1 and wait (a control-socket long-poll) until final: with an
    authority down for good the transfer never completes, so ``transfer wait`` would run
    to its timeout."""
    res = await client.ctl({"cmd": "transfer", "recipient": "client1", "amount": amount,
                            "wait": False}, 60)
    assert res["ok"], res
    done = await client.ctl({"cmd": "wait", "for": "transfer",
                             "sequence_number": res["sequence_number"], "state": "final",
                             "timeout": timeout}, timeout + 30)
    assert done["ok"] and done["state"] in ("final", "completed"), done
    return dict(done)


def _go_of(statuses: dict[str, dict[str, Any]]) -> str:
    gos = [n for n, g in statuses.items() if g.get("role") == "GO"]
    assert len(gos) == 1, statuses
    return gos[0]


async def test_go_killed_the_others_form_a_group_again_and_a_payment_is_final(
        room: dict[str, Daemon], record_property: Any) -> None:
    """The GO's daemon dies (SIGKILL; wpa_supplicant keeps its group up and its records
    answering): its members notice it silent in the group, choose again among themselves,
    and the client pays through the new group (final at the three left, a quorum)."""
    try:
        await _go_lost(room, record_property)
    except (AssertionError, StopIteration, KeyError, TimeoutError) as exc:
        raise AssertionError(f"{exc!r}\n--- the daemons' events ---\n{await _story(room)}"
                             ) from None


async def _go_lost(room: dict[str, Daemon], record_property: Any) -> None:
    client = room["client0"]
    assert client.proc is not None, "needs the first test's room and client"
    last_join = max(e["t"] for e in await client.events() if e["event"] == "group_joined")
    await client.wait_event(lambda e: e["event"] == "group_left" and e["t"] > last_join, 120,
                            "the client leaving the group, idle")
    go_name = _go_of({n: await _status_group(room[n]) for n in AUTHS})
    rest = tuple(n for n in AUTHS if n != go_name)
    t_kill = time.monotonic()
    room[go_name].kill(signal.SIGKILL)
    silent = [await room[n].wait_event(lambda e: e["event"] == "go_silent"
                                       and e.get("go") == go_name, 120, f"{go_name} silent")
              for n in rest]
    new_go, listed = await _settled_go(room, 300, rest, since=t_kill)
    assert new_go != go_name
    t_final = time.monotonic()
    done = await _pay_until_final(client, 4)
    assert set(done["confirmed"]) >= set(rest), done  # final: all three left confirmed
    events = await client.events()
    # The dead GO's stale record may cost one try (its port refuses: NotListening); the
    # payment goes through a group of the three left.
    joined = [e for e in events if e["event"] == "group_joined" and e["t"] > t_final]
    assert any(e["authority"] in rest for e in joined), joined
    for name in rest:
        bal = await room[name].ctl({"cmd": "balance", "account": "client0"})
        got = bal["balance"] if "balance" in bal else bal["accounts"][0]["balance"]
        assert got == GENESIS - 22, (name, bal)
    noticed = max(e["t"] for e in silent) - t_kill
    reformed = float(listed["t"]) - t_kill
    record_property("go_silent_after_kill_s", round(noticed, 2))
    record_property("group_reformed_after_kill_s", round(reformed, 2))
    record_property("payment_final_after_reform_s", round(time.monotonic() - t_final, 2))
    print(f"[figures] GO {go_name} killed: members noticed in {noticed:.1f} s, "
          f"{new_go}'s group lists the others {reformed:.1f} s after the kill")



def _radio(station: Any, blocked: bool) -> None:
    """Soft-block (or unblock) ``station``'s radio, as walking out of everyone's range:
    through rfkill inside its namespace (``ip netns exec`` mounts that namespace's sysfs,
    where /sys/class/ieee80211 lists only its own phy)."""
    value = "1" if blocked else "0"
    subprocess.run(["ip", "netns", "exec", station.netns, "sh", "-c",
                    f"for r in /sys/class/ieee80211/*/rfkill*; do echo {value} > $r/soft; done"],
                   check=True, capture_output=True, timeout=30)


async def test_member_out_of_range_inside_the_group_is_noticed_within_seconds(
        room: dict[str, Daemon], stations: Any, record_property: Any) -> None:
    """A client in a shared group runs no discovery; an authority of that group walking
    away (its radio blocked) must still leave the client's in-range table within a few
    seconds: the in-group presence probe finds it silent (issue target: 5 s; before the
    probe, 26-32 s)."""
    try:
        await _member_walks_away(room, stations, record_property)
    except (AssertionError, StopIteration, KeyError, TimeoutError) as exc:
        raise AssertionError(f"{exc!r}\n--- the daemons' events ---\n{await _story(room)}"
                             ) from None


async def _member_walks_away(room: dict[str, Daemon], stations: Any,
                             record_property: Any) -> None:
    client = room["client0"]
    assert client.proc is not None, "needs the first test's room and client"
    alive = [n for n in AUTHS if (proc := room[n].proc) is not None and proc.poll() is None]
    statuses = {n: await _status_group(room[n]) for n in alive}
    go_name = _go_of(statuses)
    members = [n for n, g in statuses.items() if g.get("role") == "member"
               and g.get("go") == go_name]
    assert members, statuses
    t_pay = time.monotonic()
    await _pay_until_final(client, 1)
    # The payment rode on a membership of go_name's group; the client lingers in it.
    group = (await client.ctl({"cmd": "status"}))["link"]["group"]
    assert group and group.get("joined") == go_name, group
    shared = [n for n in members if n in group.get("shared_with", [])]
    walker = (shared or members)[-1]
    t_block = time.monotonic()
    _radio(stations[STATION[walker]], blocked=True)
    try:
        left = await client.wait_event(
            lambda e: (e["event"] == "authority_out_of_range" and e.get("authority") == walker
                       and e.get("t", 0) > t_block), 120, f"the client noticing {walker} gone")
    finally:
        _radio(stations[STATION[walker]], blocked=False)
    noticed = float(left["t"]) - t_block
    record_property("member_out_of_range_noticed_s", round(noticed, 2))
    print(f"[figures] {walker}'s radio blocked while client0 sat in {go_name}'s group: "
          f"out of range after {noticed:.2f} s ({left.get('reason')})")
    # Noticed inside the group, by its presence probe -- not by a later discovery round.
    assert left.get("reason") == "silent in the group", left
    joined = [e for e in await client.events()
              if e["event"] == "group_joined" and e["t"] > t_pay]
    assert len(joined) <= 1, joined
    # The bound with a margin for a loaded TCG guest (the probe's own cadence: 1 s x 3).
    assert noticed <= 10.0, noticed
