"""Group commit in a real authority: concurrent orders share transactions, and no vote is
received before a separate SQLite reader can see it on disk."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3

import pytest
from fastpayd_helpers import LocalNet, open_connection

from protocol import AccountState, KeyPair, SignedTransferOrder, Transfer, TransferOrder

ORDERS = 240
CONNECTIONS = 4


def _keys(n: int) -> list[KeyPair]:
    return [KeyPair.from_seed(hashlib.sha256(b"gc-%d" % i).digest()) for i in range(n)]


@pytest.mark.slow
async def test_concurrent_orders_share_commits_and_wait_for_them(make_testnet) -> None:
    keys = _keys(ORDERS)
    net: LocalNet = make_testnet(authorities=4, clients=1,
                                 extra_genesis=[(k.public_key, 100) for k in keys])
    daemon = await asyncio.to_thread(net.daemon("auth0").start)
    recipient = net.committee.clients[0].address
    orders = [TransferOrder.sign(Transfer(sender=k.public_key, recipient=recipient, amount=1,
                                          sequence_number=0), k) for k in keys]
    db = sqlite3.connect(net.root / "state" / "auth0" / "fastpay.sqlite")
    before = (await daemon.control("status"))["storage"]["commits"]

    conns = [await open_connection(net.port("auth0")) for _ in range(CONNECTIONS)]
    # Everything is written at once (pipelined on every connection) before any reply is read.
    futures = [conns[i % CONNECTIONS].send(o) for i, o in enumerate(orders)]
    not_durable = 0
    for fut in asyncio.as_completed(futures, timeout=60):
        vote = await fut
        assert isinstance(vote, SignedTransferOrder)
        row = db.execute("SELECT value FROM accounts WHERE key = ?",
                         (vote.value.transfer.sender,)).fetchone()
        if AccountState.from_bytes(bytes(row[0])).pending_confirmation != vote:
            not_durable += 1
    assert not_durable == 0

    after = (await daemon.control("status"))["storage"]["commits"]
    commits = after - before
    assert 1 <= commits < ORDERS / 4, f"{commits} commits for {ORDERS} orders"
    for c in conns:
        c.close()
    db.close()
    assert daemon.stop() == 0
