"""A real authority process: durable votes, crash between commit and reply, restart."""

from __future__ import annotations

import signal
import sqlite3

import pytest
from fastpayd_helpers import LocalNet, open_connection

from fastpayd.authority import CRASH_ENV
from fastpayd.keys import read_key
from fastpayd.link.stream import LinkError
from protocol import (
    AccountState,
    Error,
    KeyPair,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    verify_vote,
)
from protocol.committee import AuthorityInfo, Committee


def _committee(net: LocalNet) -> Committee:
    cf = net.committee
    return Committee(cf.committee_id,
                     {a.name: AuthorityInfo(a.public_key, a.weight) for a in cf.authorities})


def _order(net: LocalNet, amount: int, seq: int = 0) -> tuple[KeyPair, TransferOrder]:
    sender = read_key(net.root / "client0.key")
    recipient = net.committee.client_by_name("client1")
    assert recipient is not None
    transfer = Transfer(sender=sender.public_key, recipient=recipient.address, amount=amount,
                        sequence_number=seq)
    return sender, TransferOrder.sign(transfer, sender)


def _pending_on_disk(net: LocalNet, name: str, address: bytes) -> SignedTransferOrder | None:
    conn = sqlite3.connect(net.root / "state" / name / "fastpay.sqlite")
    try:
        row = conn.execute("SELECT value FROM accounts WHERE key = ?", (address,)).fetchone()
    finally:
        conn.close()
    assert row is not None
    return AccountState.from_bytes(bytes(row[0])).pending_confirmation


@pytest.mark.slow
async def test_crash_after_vote_commit_then_restart_same_vote(make_testnet) -> None:
    net: LocalNet = make_testnet(authorities=4, clients=2)
    sender, order = _order(net, amount=10)
    _, conflicting = _order(net, amount=11)

    # 1. The daemon SIGKILLs itself after the vote's COMMIT, before writing the reply.
    crashing = net.daemon("auth0", **{CRASH_ENV: "1"}).start()
    conn = await open_connection(net.port("auth0"))
    with pytest.raises(LinkError):
        await conn.request(order, timeout=20)
    assert crashing.wait() == -signal.SIGKILL
    # The reply never left, but the vote is on disk.
    on_disk = _pending_on_disk(net, "auth0", sender.public_key)
    assert on_disk is not None and on_disk.value == order

    # 2. Restarted from its database: the same order gets the same vote...
    restarted = net.daemon("auth0").start()
    conn = await open_connection(net.port("auth0"))
    vote = await conn.request(order, timeout=10)
    assert isinstance(vote, SignedTransferOrder)
    assert vote.value == order and vote.authority == "auth0"
    verify_vote(vote, _committee(net))
    assert vote == on_disk
    # ...and a conflicting order for the same (sender, seq) is refused.
    refused = await conn.request(conflicting, timeout=10)
    assert isinstance(refused, Error)
    assert refused.code == "PreviousTransferMustBeConfirmedFirst"
    conn.close()
    assert restarted.stop() == 0


@pytest.mark.slow
async def test_reply_only_after_durable(make_testnet) -> None:
    """Every vote received is already committed: a separate reader sees it on disk."""
    net: LocalNet = make_testnet(authorities=4, clients=2)
    net.daemon("auth1").start()
    sender, order = _order(net, amount=5)
    conn = await open_connection(net.port("auth1"))
    vote = await conn.request(order, timeout=10)
    assert isinstance(vote, SignedTransferOrder)
    assert _pending_on_disk(net, "auth1", sender.public_key) == vote
    conn.close()
