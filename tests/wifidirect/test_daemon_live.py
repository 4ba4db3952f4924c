"""Live tests of real ``fastpayd`` daemons over WiFi Direct (real wpa_supplicant, hwsim).

Four authority daemons (weights 1, quorum 3) and two client daemons run as separate
processes (``python -m fastpayd --config ...``), each inside its station's network
namespace with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at the station's own bus; the test
talks to them only through their control sockets (and the ``fastpay`` CLI), like the
emulation does.  Everything waits on events read from the control socket, with generous
timeouts for QEMU/TCG.  The daemons live for the whole module, in test order:
(a) discovery + one AccountInfo exchange over a group, (b) a complete payment,
(d) a client killed with SIGKILL after its first vote and restarted, (c) a double spend
sent over the air by a script holding the client's key, (e) a payment handed from payer
to payee directly over their own P2P group once every authority is gone, and a forged
certificate handed over the same way, refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastpayd.config import load_committee_file
from fastpayd.control import control_request
from fastpayd.keys import read_key
from fastpayd.node import build_committee
from fastpayd.testnet import generate_testnet
from fastpayd.wifidirect import WifiDirectClient
from fastpayd.wifidirect.errors import FormationFailed
from protocol import (
    CertifiedTransferOrder,
    ConfirmationOrder,
    Error,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    decode,
    encode,
)
from tests.wifidirect.streams import read_frame, session, write_frame

pytestmark = [pytest.mark.live, pytest.mark.slow]

STATIONS = ("a0", "a1", "a2", "a3", "c0", "c1")
AUTHS = ("auth0", "auth1", "auth2", "auth3")
STATION_OF = {"auth0": "a0", "auth1": "a1", "auth2": "a2", "auth3": "a3",
              "client0": "c0", "client1": "c1"}
GENESIS = 1000
ROOT = Path(__file__).resolve().parents[2]
WORK = Path("/tmp/fastpay-wd-daemons")
BUS = "unix:abstract=fastpay-wd-bus"

LINK = """
[link]
kind = "wifidirect"
interface = "wlan0"
port = 7400
request_timeout = 30.0
discovery_window = 8.0
linger = 1.0
join_timeout = 90.0
"""


class Daemon:
    """One fastpayd process in its station's namespace."""

    def __init__(self, name: str, config: Path, station: str | None = None,
                 work: Path = WORK) -> None:
        self.name = name
        self.config = config
        self.station = station or STATION_OF[name]
        self.socket = work / "run" / f"{name}.sock"
        self.log = work / f"{name}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=BUS, PYTHONPATH=str(ROOT))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", f"wd-{self.station}", sys.executable, "-m",
                 "fastpayd", "--config", str(self.config)],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def ctl(self, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        answer = await control_request(self.socket, request, timeout)
        assert answer.get("ok"), f"{self.name} {request}: {answer}\n{self.tail()}"
        return answer

    async def ready(self, timeout: float = 180.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n"
                                     f"{self.tail()}")
            try:
                return await self.ctl({"cmd": "status"}, 10.0)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.3)  # poll until the control socket answers
        raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.tail()}")

    async def events(self) -> list[dict[str, Any]]:
        return list((await self.ctl({"cmd": "events"}))["events"])

    async def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float,
                         what: str) -> dict[str, Any]:
        """Read the daemon's events until one matches ``pred``: a long-poll (``wait``) on
        the control socket, so this wakes at the event itself, not on a timer."""
        end = time.monotonic() + timeout
        since = 0
        while (left := end - time.monotonic()) > 0:
            poll = min(left, 20.0)
            answer = await self.ctl({"cmd": "events", "since": since, "wait": poll},
                                    poll + 30.0)
            for e in answer["events"]:
                if pred(e):
                    return e
                since = max(since, int(e["seq"]))
        raise AssertionError(f"{self.name}: no {what} within {timeout}s:\n{self.tail()}")


@pytest.fixture(scope="module")
def network(stations: Any) -> Iterator[dict[str, Daemon]]:
    """Keys, committee and configs for 4 authorities + 2 clients; authorities started."""
    subprocess.run(["rm", "-rf", str(WORK)], check=True)
    WORK.mkdir(parents=True)
    generate_testnet(WORK, authorities=4, clients=2, balance=GENESIS)
    daemons: dict[str, Daemon] = {}
    for name in STATION_OF:
        cfg = WORK / f"{name}.toml"
        text = cfg.read_text()
        cfg.write_text(text[:text.index("[link]")] + LINK)
        daemons[name] = Daemon(name, cfg)
    try:
        for name in AUTHS:
            daemons[name].start()
        yield daemons
    finally:
        for d in daemons.values():
            d.kill()


@pytest.fixture(scope="module")
def authorities(network: dict[str, Daemon]) -> dict[str, Daemon]:
    """The network once every authority's GO is up and its control socket answers."""

    async def all_ready() -> None:
        await asyncio.gather(*(network[n].ready() for n in AUTHS))

    asyncio.run(all_ready())
    return network


async def wait_in_range(client: Daemon, want: int, timeout: float = 180.0) -> list[str]:
    end = time.monotonic() + timeout
    names: list[str] = []
    while time.monotonic() < end:
        peers = (await client.ctl({"cmd": "peers"}))["peers"]
        names = [p["name"] for p in peers if p.get("in_range")]
        if len(names) >= want:
            return names
        await asyncio.sleep(0.5)  # poll the discovery table
    raise AssertionError(f"{client.name}: {names} in range after {timeout}s\n{client.tail()}")


def in_order(events: list[dict[str, Any]], names: list[str], **match: Any
             ) -> list[dict[str, Any]]:
    """The first events named ``names`` (in that order, matching ``match``), t increasing."""
    out: list[dict[str, Any]] = []
    rest = iter(events)
    for name in names:
        e = next((e for e in rest if e["event"] == name
                  and all(e.get(k) == v for k, v in match.items())), None)
        assert e is not None, f"no {name} {match} after {[x['event'] for x in out]}"
        out.append(e)
    assert all(a["t"] <= b["t"] for a, b in zip(out, out[1:], strict=False))
    return out


async def balances_at_authorities(daemons: dict[str, Daemon], account: str) -> dict[str, int]:
    out = {}
    for name in AUTHS:
        a = await daemons[name].ctl({"cmd": "balance", "account": account})
        out[name] = a["balance"] if "balance" in a else a["accounts"][0]["balance"]
    return out


async def test_a_client_discovers_joins_exchanges_and_leaves(
        authorities: dict[str, Daemon], record_property: Any) -> None:
    client = authorities["client0"]
    client.start()
    status = await client.ready()
    assert status["link"]["kind"] == "wifidirect" and status["mobile"] is True
    names = await wait_in_range(client, 1)
    peers = {p["name"]: p for p in (await client.ctl({"cmd": "peers"}))["peers"]}
    first = peers[names[0]]
    assert first["level"] is not None and first["address"]
    # One AccountInfoRequest/Response per authority in range, over the group, via the CLI.
    out = subprocess.run(
        [sys.executable, "-m", "fastpayd.cli", "--socket", str(client.socket), "--json",
         "sync", "--timeout", "300"], capture_output=True, text=True, timeout=330,
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["ok"] and answer["reached"], answer
    assert answer["balance"] == GENESIS
    who = answer["reached"][0]
    events = await client.events()
    up = next(e for e in events if e["event"] == "link_up")
    seq = in_order(events, ["authority_discovered", "group_joined", "session_opened",
                            "group_left"], authority=who)
    assert seq[3]["reason"] == "done"
    assert up["t"] <= seq[0]["t"]
    # The authority saw the client join its group, then leave it.
    auth_events = await authorities[who].events()
    in_order(auth_events, ["client_joined", "client_left"])
    discovery = seq[0]["t"] - up["t"]
    join = seq[1]["elapsed"]
    session = seq[2]["t"] - seq[1]["t"]
    record_property("discovery_s", round(discovery, 3))
    record_property("join_s", round(join, 3))
    record_property("join_to_socket_s", round(session, 3))
    print(f"[figures] discovery {discovery:.2f}s, join {join:.2f}s, "
          f"socket after join {session:.2f}s")


async def test_b_complete_payment_over_wifi_direct(
        authorities: dict[str, Daemon], record_property: Any) -> None:
    payer, payee = authorities["client0"], authorities["client1"]
    payee.start()
    await payee.ready()
    await wait_in_range(payer, 4)
    t0 = time.monotonic()
    res = await payer.ctl({"cmd": "transfer", "recipient": "client1", "amount": 10,
                           "wait": True, "timeout": 500}, 520)
    elapsed = time.monotonic() - t0
    assert res["accepted"] and res["state"] == "complete", res
    assert res["weight"] >= res["quorum"] == 3
    assert sorted(res["confirmed"]) == list(AUTHS)
    assert res["balance"] == GENESIS - 10
    assert await balances_at_authorities(authorities, "client0") == dict.fromkeys(AUTHS, 990)
    assert await balances_at_authorities(authorities, "client1") == dict.fromkeys(AUTHS, 1010)
    events = await payer.events()
    steps = in_order(events, ["transfer_started", "order_sent", "vote_received",
                              "certificate_formed", "confirmation_delivered",
                              "transfer_completed"])
    cert_latency = steps[3]["latency"]
    total = steps[5]["latency"]
    joins = [e["elapsed"] for e in events if e["event"] == "group_joined"]
    visits = [b["t"] - a["t"] for a, b in zip(
        (e for e in events if e["event"] == "order_sent"),
        (e for e in events if e["event"] == "vote_received"), strict=False)]
    record_property("join_s_all", [round(j, 3) for j in joins])
    record_property("order_to_vote_s", [round(v, 3) for v in visits])
    # The recipient has it: handed over directly by the payer (both in range), or picked
    # up from the authorities in range -- whichever came first, credited once.
    await wait_in_range(payee, 1)
    synced = await payee.ctl({"cmd": "sync"}, 400)
    assert synced["balance"] == GENESIS + 10, synced
    received = [e for e in await payee.events() if e["event"] == "payment_received"]
    assert len(received) == 1 and received[0]["amount"] == 10, received
    record_property("certificate_latency_s", round(cert_latency, 3))
    record_property("payment_latency_s", round(total, 3))
    print(f"[figures] certificate after {cert_latency:.2f}s, all 4 confirmations after "
          f"{total:.2f}s (control call {elapsed:.2f}s)")


async def test_d_client_killed_after_first_vote_resumes(
        authorities: dict[str, Daemon], record_property: Any) -> None:
    payer = authorities["client0"]
    before = payer.proc
    res = await payer.ctl({"cmd": "transfer", "recipient": "client1", "amount": 5})
    assert res["accepted"] and res["state"] == "collecting_votes" and res["sequence_number"] == 1
    await payer.wait_event(lambda e: e["event"] == "vote_received"
                           and e.get("sequence_number") == 1, 300, "first vote")
    payer.kill(signal.SIGKILL)
    assert before is not None and before.returncode == -signal.SIGKILL
    t0 = time.monotonic()
    payer.start()
    await payer.ready()
    await payer.wait_event(lambda e: e["event"] == "transfer_resumed", 60, "transfer_resumed")
    done = await payer.wait_event(lambda e: e["event"] == "transfer_completed"
                                  and e.get("sequence_number") == 1, 500, "completion")
    progress = (await payer.ctl({"cmd": "progress"}))["transfer"]
    assert progress["state"] == "complete" and progress["sequence_number"] == 1
    assert (await payer.ctl({"cmd": "balance"}))["balance"] == GENESIS - 15
    assert await balances_at_authorities(authorities, "client0") == dict.fromkeys(AUTHS, 985)
    record_property("resume_to_complete_s", round(done["t"] - t0, 3))
    keep = ("node_started", "link_up", "authority_in_range", "group_joined", "join_failed",
            "formation_failed", "vote_received", "confirmation_delivered", "group_left",
            "transfer_completed", "authority_out_of_range")
    record_property("after_restart", [
        (e["event"], round(e["t"] - t0, 2), e.get("authority") or e.get("reason"))
        for e in await payer.events() if e["event"] in keep])


async def _send_order(client: WifiDirectClient, peer: Any, order: TransferOrder) -> Any:
    async with session(client, peer, timeout=120.0) as (reader, writer):
        await write_frame(writer, encode(order))
        return decode(await asyncio.wait_for(read_frame(reader), 60))


async def _double_spend(committee_id: str, station: Any, a: TransferOrder, b: TransferOrder
                        ) -> dict[str, list[Any]]:
    """Run in the payee's station: A to auth0/auth1, B to auth2/auth3, then cross attempts."""
    async with WifiDirectClient(committee_id, ifname=station.ifname,
                                bus_address=station.bus) as client:
        peers: dict[str, Any] = {}
        for _ in range(3):  # a service answer lost on a loaded TCG guest costs a round
            found = await client.discover(timeout=120.0, want=4)
            peers.update({p.record.name: p for p in found})
            if len(peers) == len(AUTHS):
                break
        assert sorted(peers) == list(AUTHS), sorted(peers)
        plan = [("auth0", a), ("auth1", a), ("auth2", b), ("auth3", b),
                ("auth0", b), ("auth2", a)]  # the last two: conflicting third attempts
        out: dict[str, list[Any]] = {n: [] for n in AUTHS}
        for name, order in plan:
            out[name].append((order, await _send_order(client, peers[name], order)))
        return out


async def test_c_double_spend_over_the_air(authorities: dict[str, Daemon],
                                           stations: Any) -> None:
    payee = authorities["client1"]
    payee.kill()  # its station's radio is ours now; it has never sent anything
    cf = load_committee_file(WORK / "committee.toml")
    committee = build_committee(cf)
    key = read_key(WORK / "client1.key")
    client0 = cf.client_by_name("client0")
    assert client0 is not None

    def order(amount: int) -> TransferOrder:
        return TransferOrder.sign(Transfer(sender=key.public_key, recipient=client0.address,
                                           amount=amount, sequence_number=0), key)

    a, b = order(100), order(200)
    results = await stations["c1"].run(_double_spend(cf.committee_id, stations["c1"], a, b))
    voted: dict[str, set[str]] = {"A": set(), "B": set()}
    for name, attempts in results.items():
        votes = [(o, r) for o, r in attempts if isinstance(r, SignedTransferOrder)]
        # Each authority voted for exactly one of the two orders...
        assert len(votes) == 1, (name, attempts)
        o, vote = votes[0]
        assert vote.value == o and vote.authority == name
        voted["A" if o == a else "B"].add(name)
        # ...and refused the conflicting one.
        for o2, r in attempts:
            if o2 != o:
                assert isinstance(r, Error) and r.code == "PreviousTransferMustBeConfirmedFirst"
    assert voted == {"A": {"auth0", "auth1"}, "B": {"auth2", "auth3"}}
    quorum = committee.quorum_threshold
    assert committee.weight_of(voted["A"]) < quorum and committee.weight_of(voted["B"]) < quorum
    # Nothing moved at any authority.
    assert await balances_at_authorities(authorities, "client1") == dict.fromkeys(AUTHS, 1015)


async def _hand_over(committee_id: str, station: Any, payee: str, cert: Any) -> Any:
    """From ``station``: find the client ``payee`` by its service record, form a group
    with it (GO negotiation, the payee GO) and hand it ``cert``; return its answer."""
    async with WifiDirectClient(committee_id, ifname=station.ifname,
                                bus_address=station.bus) as client:
        found = None
        for _ in range(4):  # a service answer lost on a loaded TCG guest costs a round
            await client.discover(timeout=60.0)
            found = next((p for p in client.clients.values() if p.record.name == payee), None)
            if found is not None:
                break
        assert found is not None, f"{payee} not discovered"
        # A payee still busy (its previous group, a discovery round) declines or misses
        # one negotiation; the daemon's payer retries, and so does this one.
        deadline = time.monotonic() + 180.0
        while True:
            try:
                async with session(client, found, timeout=120.0) as (reader, writer):
                    await write_frame(writer, encode(ConfirmationOrder(certificate=cert)))
                    return decode(await asyncio.wait_for(read_frame(reader), 60))
            except FormationFailed:
                if time.monotonic() > deadline:
                    raise


async def test_e_direct_handoff_with_no_authority_in_range(
        authorities: dict[str, Daemon], stations: Any, record_property: Any) -> None:
    payer, payee = authorities["client0"], authorities["client1"]
    payee.kill()  # test_c's script is done with its station: the payee is away
    res = await payer.ctl({"cmd": "transfer", "recipient": "client1", "amount": 7,
                           "wait": True, "timeout": 500}, 520)
    assert res["accepted"] and res["state"] == "complete", res
    seq = res["sequence_number"]
    # Every authority goes: from here on only the two clients are on the air.
    for name in AUTHS:
        authorities[name].kill()
    payee.start()
    await payee.ready()
    got = await payee.wait_event(lambda e: e["event"] == "payment_received"
                                 and e.get("sequence_number") == seq, 400,
                                 "the direct hand-off")
    assert got["channel"] == "direct" and got["amount"] == 7, got
    history = (await payee.ctl({"cmd": "history"}))["history"]
    mine = [h for h in history if h["direction"] == "received"
            and h["sender"] == "client0" and h["sequence_number"] == seq]
    assert [h["source"] for h in mine] == ["direct"], history
    sent = await payer.wait_event(lambda e: e["event"] == "certificate_delivered"
                                  and e.get("sequence_number") == seq, 120, "delivery ack")
    assert sent["recipient"] == "client1"
    hosted = await payee.wait_event(lambda e: e["event"] == "handoff_hosted", 10,
                                    "the payee's group")
    record_property("handoff_group_s", round(hosted["elapsed"], 3))
    record_property("credited_after_start_s", round(got["t"] - hosted["t"], 3))

    # A certificate with too few votes, handed over the same way: refused, nothing credited.
    # First the payee's group with the payer must be over (the killed payer's station
    # leaves it, or the payee ends it after handoff_hold): a payee hosting declines.
    payer.kill()
    await payee.wait_event(lambda e: e["event"] == "handoff_ended", 120,
                           "the end of the payee's first hand-off group")
    cf = load_committee_file(WORK / "committee.toml")
    key = read_key(WORK / "client0.key")
    client1 = cf.client_by_name("client1")
    assert client1 is not None
    transfer = Transfer(sender=key.public_key, recipient=client1.address, amount=50,
                        sequence_number=seq + 1, user_data=None)
    order = TransferOrder.sign(transfer, key)
    votes = [SignedTransferOrder.sign(order, name, read_key(WORK / f"{name}.key"))
             for name in ("auth0", "auth1")]
    forged = CertifiedTransferOrder(value=order, signatures=[(v.authority, v.signature)
                                                             for v in votes])
    answer = await stations["c0"].run(_hand_over(cf.committee_id, stations["c0"],
                                                 "client1", forged))
    assert isinstance(answer, Error), answer
    refused = await payee.wait_event(lambda e: e["event"] == "payment_refused", 60, "refusal")
    assert refused["sequence_number"] == seq + 1
    balance = (await payee.ctl({"cmd": "balance"}))["balance"]
    assert balance == got["balance"], (balance, got)
