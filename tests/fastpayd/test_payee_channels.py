"""Issue 15 on loopback (IP links, real daemons): where a payee's money came from, the
payer's retried hand-off, the payee's offline verification of a handed-over certificate,
and the payee's relay of a certificate to the authorities that lack it.

Every process is a real ``fastpayd``; crafted certificates are built with the real
protocol classes and signed with the testnet's real Ed25519 keys (votes of the running
authorities, or an authority's own key file), never with made-up bytes.  Nothing waits a
fixed time: the tests long-poll the daemons' event logs or poll their control sockets with
generous deadlines.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import test_liveness as tl
from fastpayd_helpers import Daemon

from protocol import (
    CertifiedTransferOrder,
    ConfirmationAck,
    ConfirmationOrder,
    Error,
    KeyPair,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
)

pytestmark = pytest.mark.slow

AUTHS = tl.AUTHS
DEADLINE = 30.0


async def start(make_testnet: Any, clients: dict[str, dict[str, Any]], balance: int = 1000,
                start: tuple[str, ...] | None = None) -> tl.Net:
    """4 authorities and the named clients, each with its own ``[client]`` keys."""
    net = make_testnet(authorities=4, clients=len(clients), balance=balance)
    for name, table in clients.items():
        net.tune(name, link=tl.CLIENT_LINK, tables={"client": table} if table else None)
    daemons = {n: net.daemon(n) for n in (*AUTHS, *clients)}
    chosen = list(daemons) if start is None else list(start)
    await asyncio.gather(*(asyncio.to_thread(daemons[n].start) for n in chosen))
    return tl.Net(net, daemons)


async def wait_event(d: Daemon, match: Callable[[dict[str, Any]], bool], what: str,
                     timeout: float = DEADLINE) -> dict[str, Any]:
    """Long-poll ``d``'s event log until an event satisfies ``match``; return it."""
    deadline = time.monotonic() + timeout
    since = 0
    while time.monotonic() < deadline:
        a = await d.control("events", since=since, wait=min(5.0, deadline - time.monotonic()))
        for e in a["events"]:
            if match(e):
                return dict(e)
            since = max(since, int(e["seq"]))
    raise AssertionError(f"after {timeout:.0f}s: no event {what} at {d.name}; log tail:\n"
                         f"{d.log()[-3000:]}")


def events_of(d: Daemon, kind: str) -> Callable[[], Any]:
    async def get() -> list[dict[str, Any]]:
        return [e for e in (await d.control("events"))["events"] if e["event"] == kind]
    return get


async def votes_of(n: tl.Net, order: TransferOrder, signers: tuple[str, ...]
                   ) -> CertifiedTransferOrder:
    """A certificate from the votes the running ``signers`` really give for ``order``."""
    votes = [await tl.request(n, a, order) for a in signers]
    assert all(isinstance(v, SignedTransferOrder) for v in votes), votes
    return CertifiedTransferOrder(value=order, signatures=tuple(sorted(
        (v.authority, v.signature) for v in votes)))


def order(n: tl.Net, payer: str, payee: str, amount: int, seq: int = 0) -> TransferOrder:
    kp = tl.key(n, payer)
    return TransferOrder.sign(Transfer(sender=kp.public_key, recipient=tl.address(n, payee),
                                       amount=amount, sequence_number=seq), kp)


async def history(n: tl.Net, client: str) -> list[dict[str, Any]]:
    out = await asyncio.to_thread(n.cli, client, "--json", "history")
    assert out.returncode == 0, tl.shown(out)
    return list(json.loads(out.stdout.splitlines()[-1])["history"])


# -- the payer's hand-off is retried ---------------------------------------------------


async def test_handoff_to_a_payee_that_did_not_answer_is_retried_and_credited_direct(
        make_testnet: Any) -> None:
    """client1 is frozen (SIGSTOP) while client0 pays it: the hand-off times out.  Once
    client1 runs again, client0's session hands the certificate over by itself (back-off),
    and client1 -- which does not sync in this test's time (sync_interval 3600 s, its
    start-up sync was before the payment) -- is credited with channel ``direct``; a later
    ``sync`` finds the same payment at the authorities and credits nothing more."""
    n = await start(make_testnet, {"client0": {"retry_after": 0.5, "max_retry_after": 2.0},
                                   "client1": {"sync_interval": 3600.0}})
    payer, payee = n.d["client0"], n.d["client1"]
    synced = await asyncio.to_thread(n.cli, "client1", "--json", "sync")  # nothing yet
    assert synced.returncode == 0, tl.shown(synced)
    payee.pause()
    try:
        out = await n.pay("client0", "client1", 10)
        assert out.returncode == 0, tl.shown(out)
        answer = json.loads(out.stdout.splitlines()[-1])
        assert str(answer["delivery"]).startswith("unreachable"), answer
        await wait_event(payer, lambda e: e["event"] == "certificate_delivery_failed",
                         "certificate_delivery_failed")
    finally:
        payee.resume()
    delivered = await wait_event(payer, lambda e: e["event"] == "certificate_delivered",
                                 "certificate_delivered (the retried hand-off)")
    assert delivered["recipient"] == "client1" and delivered["sequence_number"] == 0
    got = await wait_event(payee, lambda e: e["event"] == "payment_received",
                           "payment_received")
    assert (got["channel"], got["sender"], got["amount"]) == ("direct", "client0", 10), got
    assert got["peer"].startswith("127.0.0.1"), got
    view = await n.client_view("client1")
    assert view["balance"] == 1010
    assert view["received"]["direct"] == {"payments": 1, "amount": 10}, view
    assert view["received"]["authority"] == {"payments": 0, "amount": 0}, view

    sync = await asyncio.to_thread(n.cli, "client1", "--json", "sync")
    assert sync.returncode == 0, tl.shown(sync)
    assert json.loads(sync.stdout.splitlines()[-1])["credited"] == 0
    assert await n.client_balance("client1") == 1010
    rows = [r for r in await history(n, "client1") if r["direction"] == "received"]
    assert [(r["sender"], r["amount"], r["source"]) for r in rows] == [
        ("client0", 10, "direct")]
    assert len(await events_of(payee, "payment_received")()) == 1
    text = await asyncio.to_thread(n.cli, "client1", "balance")
    assert "received: direct 1 (10), authority 0 (0)" in text.stdout, tl.shown(text)
    text = await asyncio.to_thread(n.cli, "client1", "history")
    assert "[direct]" in text.stdout, tl.shown(text)


async def test_payment_found_at_an_authority_first_keeps_that_channel(make_testnet: Any
                                                                      ) -> None:
    """The reverse order: client1 syncs the payment from the authorities, then the same
    certificate is handed over directly: acknowledged (applied = false), not credited
    again, and its source stays ``authority:NAME``."""
    n = await start(make_testnet, {"client0": {}, "client1": {"sync_interval": 0.5}},
                    start=(*AUTHS, "client1"))
    cert = await votes_of(n, order(n, "client0", "client1", 42), ("auth0", "auth1", "auth2"))
    for a in AUTHS:
        ack = await tl.request(n, a, ConfirmationOrder(certificate=cert))
        assert isinstance(ack, ConfirmationAck) and ack.applied, ack
    got = await wait_event(n.d["client1"], lambda e: e["event"] == "payment_received",
                           "payment_received (by sync)")
    assert got["channel"] == "authority" and got["peer"] in AUTHS, got
    again = await tl.request(n, "client1", ConfirmationOrder(certificate=cert))
    assert isinstance(again, ConfirmationAck) and not again.applied, again
    assert await n.client_balance("client1") == 1042
    rows = [r for r in await history(n, "client1") if r["direction"] == "received"]
    assert [r["source"] for r in rows] == [f"authority:{got['peer']}"], rows
    view = await n.client_view("client1")
    assert view["received"]["authority"] == {"payments": 1, "amount": 42}, view
    assert view["received"]["direct"] == {"payments": 0, "amount": 0}, view


# -- the payee verifies a handed-over certificate alone ------------------------------------


async def test_payee_offline_refuses_bad_certificates_and_accepts_a_good_one(
        make_testnet: Any) -> None:
    """No authority runs: client1 checks each handed-over certificate against the
    committee's public keys alone.  A forged vote (signed with another real key), an
    under-quorum certificate, one paying somebody else, one from another committee (right
    names, other keys; or unknown names) and one whose order another key signed are each
    refused with their error code, logged as ``payment_refused`` and never credited; a
    genuine one is then credited at once."""
    n = await start(make_testnet, {"client0": {}, "client1": {"sync_interval": 3600.0}},
                    start=("client1",))
    good_order = order(n, "client0", "client1", 25)
    genuine = tl.certify(n, good_order)  # auth0..auth2's own keys
    signature_of = dict(genuine.signatures)

    def with_signatures(o: TransferOrder, sigs: list[tuple[str, bytes]]
                        ) -> CertifiedTransferOrder:
        return CertifiedTransferOrder(value=o, signatures=tuple(sorted(sigs)))

    auth3 = tl.key(n, "auth3")
    forged_vote = SignedTransferOrder.sign(good_order, "auth2", auth3)  # auth3's key as auth2
    other = {name: KeyPair.from_seed(bytes([i + 7]) * 32)
             for i, name in enumerate(("auth0", "auth1", "auth2"))}
    impostor = tl.key(n, "client1")  # signs an order in client0's name
    stolen = TransferOrder(transfer=good_order.transfer,
                           signature=TransferOrder.sign(good_order.transfer, impostor).signature)
    cases: dict[str, tuple[CertifiedTransferOrder, str]] = {
        "forged vote": (with_signatures(good_order, [
            ("auth0", signature_of["auth0"]), ("auth1", signature_of["auth1"]),
            ("auth2", forged_vote.signature)]), "InvalidSignature"),
        "under quorum": (with_signatures(good_order, [
            ("auth0", signature_of["auth0"]), ("auth1", signature_of["auth1"])]),
            "CertificateRequiresQuorum"),
        "other recipient": (tl.certify(n, order(n, "client0", "client0", 25)),
                            "WrongRecipient"),
        "other committee, same names": (with_signatures(good_order, [
            (name, SignedTransferOrder.sign(good_order, name, kp).signature)
            for name, kp in other.items()]), "InvalidSignature"),
        "other committee, its names": (with_signatures(good_order, [
            (f"evil{i}", SignedTransferOrder.sign(good_order, f"evil{i}", kp).signature)
            for i, kp in enumerate(other.values())]), "UnknownSigner"),
        "order signed by another key": (tl.certify(n, stolen), "InvalidSignature"),
    }
    payee = n.d["client1"]
    for label, (cert, code) in cases.items():
        answer = await tl.request(n, "client1", ConfirmationOrder(certificate=cert))
        assert isinstance(answer, Error) and answer.code == code, (label, answer)
        assert await n.client_balance("client1") == 1000, label
    refused = await events_of(payee, "payment_refused")()
    assert [e["code"] for e in refused] == [code for _, code in cases.values()], refused
    assert await history(n, "client1") == []
    assert await events_of(payee, "payment_received")() == []

    ack = await tl.request(n, "client1", ConfirmationOrder(certificate=genuine))
    assert isinstance(ack, ConfirmationAck) and ack.applied, ack
    assert await n.client_balance("client1") == 1025
    [got] = await events_of(payee, "payment_received")()
    assert got["channel"] == "direct" and got["amount"] == 25


# -- the payee relays --------------------------------------------------------------------


async def test_payee_relays_a_certificate_only_one_authority_has_then_spends_it(
        make_testnet: Any) -> None:
    """The payer (the test, with client0's real key) gets real votes from auth0..auth2,
    confirms at auth0 only and hands the certificate to client1 directly.  auth1..auth3
    cannot credit client1 without it; client1 relays it to them, and then pays client2
    more than its own genesis -- which needs a quorum that credited the payment."""
    n = await start(make_testnet, {"client0": {}, "client1": {}, "client2": {}},
                    balance=100, start=(*AUTHS, "client1", "client2"))
    cert = await votes_of(n, order(n, "client0", "client1", 50), ("auth0", "auth1", "auth2"))
    ack = await tl.request(n, "auth0", ConfirmationOrder(certificate=cert))
    assert isinstance(ack, ConfirmationAck) and ack.applied, ack
    views = await n.authority_views("client1")
    assert views == {"auth0": (150, 0), "auth1": (100, 0), "auth2": (100, 0),
                     "auth3": (100, 0)}, views

    handed = await tl.request(n, "client1", ConfirmationOrder(certificate=cert))
    assert isinstance(handed, ConfirmationAck) and handed.applied, handed
    await tl.settled(n, {"client1": (150, 0), "client0": (50, 1)}, timeout=DEADLINE)
    relayed = await events_of(n.d["client1"], "certificate_relayed")()
    assert {e["authority"] for e in relayed if e["applied"]} >= {"auth1", "auth2", "auth3"}

    out = await n.pay("client1", "client2", 120)
    assert out.returncode == 0, tl.shown(out) + n.logs("client1")
    answer = json.loads(out.stdout.splitlines()[-1])
    assert answer["certificate"] is True, answer
    await tl.settled(n, {"client1": (30, 1), "client2": (220, 0)}, timeout=DEADLINE)
    await tl.until_equal(lambda: n.client_balance("client2"), 220,
                         "client2 to be credited the payee's own payment")


# -- an old database ------------------------------------------------------------------------


async def test_client_database_from_before_provenance_is_read_and_kept(make_testnet: Any
                                                                       ) -> None:
    """A client whose SQLite record was written before sources were kept (the eight-field
    record) starts, shows that payment as ``unknown``, credits new ones with their source,
    and keeps both across another restart."""
    n = await start(make_testnet, {"client0": {}, "client1": {"sync_interval": 3600.0}},
                    start=("client1",))
    first = tl.certify(n, order(n, "client0", "client1", 25))
    ack = await tl.request(n, "client1", ConfirmationOrder(certificate=first))
    assert isinstance(ack, ConfirmationAck) and ack.applied, ack
    payee = n.d["client1"]
    assert payee.stop() == 0
    db = n.net.root / "state" / "client1" / "fastpay.sqlite"
    conn = sqlite3.connect(db)
    try:
        (blob,) = conn.execute("SELECT value FROM meta WHERE key = ?",
                               (b"client_record",)).fetchone()
        fields = msgpack.unpackb(bytes(blob), raw=False)
        assert len(fields) == 9 and fields[8] == ["direct"]
        conn.execute("UPDATE meta SET value = ? WHERE key = ?",
                     (msgpack.packb(fields[:8], use_bin_type=True), b"client_record"))
        conn.commit()
    finally:
        conn.close()

    await asyncio.to_thread(payee.start)
    view = await n.client_view("client1")
    assert view["balance"] == 1025
    assert view["received"]["unknown"] == {"payments": 1, "amount": 25}, view
    second = tl.certify(n, order(n, "client0", "client1", 5, seq=1))
    ack = await tl.request(n, "client1", ConfirmationOrder(certificate=second))
    assert isinstance(ack, ConfirmationAck) and ack.applied, ack
    await n.restart("client1")
    rows = [r for r in await history(n, "client1") if r["direction"] == "received"]
    assert [(r["amount"], r["source"]) for r in rows] == [(25, "unknown"), (5, "direct")]
    assert await n.client_balance("client1") == 1030
