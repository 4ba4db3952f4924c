"""SqliteAuthorityStore: account summaries and append-only logs, rebuilt on load."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from fastpayd.database import Database
from fastpayd.store import SqliteAuthorityStore
from protocol import (
    AccountState,
    AuthorityInfo,
    AuthorityState,
    CertifiedTransferOrder,
    Committee,
    ConfirmationOrder,
    KeyPair,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
)

KEYS = {f"auth{i}": KeyPair.from_seed(hashlib.sha256(b"store-auth%d" % i).digest())
        for i in range(4)}
COMMITTEE = Committee("store-test", {n: AuthorityInfo(k.public_key, 1) for n, k in KEYS.items()})
ALICE = KeyPair.from_seed(hashlib.sha256(b"store-alice").digest())
BOB = KeyPair.from_seed(hashlib.sha256(b"store-bob").digest())


def _pay(state: AuthorityState, sender: KeyPair, recipient: bytes, seq: int) -> None:
    """Vote at ``state`` and settle the certificate (votes of auth1..auth3)."""
    order = TransferOrder.sign(Transfer(sender=sender.public_key, recipient=recipient,
                                        amount=1, sequence_number=seq), sender)
    state.handle_transfer_order(order)
    votes = [SignedTransferOrder.sign(order, n, KEYS[n]) for n in ("auth1", "auth2", "auth3")]
    cert = CertifiedTransferOrder(value=order,
                                  signatures=tuple((v.authority, v.signature) for v in votes))
    assert state.handle_confirmation_order(ConfirmationOrder(certificate=cert)).applied


def _rows(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def _reload(path: Path) -> dict[bytes, AccountState]:
    async with Database(path) as db:
        store = SqliteAuthorityStore(db)
        await store.load()
        return store.accounts


async def test_logs_are_appended_and_rebuilt_on_load(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with Database(path) as db:
        store = SqliteAuthorityStore(db)
        await store.load()
        state = AuthorityState("auth0", KEYS["auth0"], COMMITTEE, store)
        state.init_accounts({ALICE.public_key: 100, BOB.public_key: 100})
        await db.durable()
        for seq in range(5):
            _pay(state, ALICE, BOB.public_key, seq)
            _pay(state, BOB, ALICE.public_key, seq)
            before = db.committed_writes
            await db.durable()
            # Two confirmations: two summaries per account touched (coalesced in the batch)
            # plus one new log entry per log that grew -- never the history again.
            assert db.committed_writes - before == 2 + 4
        _pay(state, ALICE, ALICE.public_key, 5)  # to oneself: both logs of one account
        # A pending vote is in the summary.
        state.handle_transfer_order(TransferOrder.sign(
            Transfer(sender=BOB.public_key, recipient=ALICE.public_key, amount=3,
                     sequence_number=5), BOB))
        expected = dict(store.accounts)
    assert _rows(path, "log") >= 6  # one row per batch, not per entry
    loaded = await _reload(path)
    assert loaded == expected
    alice = loaded[ALICE.public_key]
    assert len(alice.confirmed_log) == 6 and len(alice.received_log) == 6
    assert loaded[BOB.public_key].pending_confirmation is not None


async def test_database_with_logs_in_the_account_value_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with Database(path) as db:
        store = SqliteAuthorityStore(db)
        state = AuthorityState("auth0", KEYS["auth0"], COMMITTEE, store)
        state.init_accounts({ALICE.public_key: 100})
        for seq in range(3):
            _pay(state, ALICE, BOB.public_key, seq)
        expected = dict(store.accounts)
        # The layout before the split: whole records, logs included, and no log table rows.
        for address, account in expected.items():
            db.stage("accounts", address, account.to_bytes())
        await db.durable()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM log")
    conn.commit()
    conn.close()

    async with Database(path) as db:
        store = SqliteAuthorityStore(db)
        await store.load()
        assert store.accounts == expected
        await db.durable()  # the migration rides the first commit
    assert _rows(path, "log") == 1  # all entries in the first batch
    conn = sqlite3.connect(path)
    try:
        for (value,) in conn.execute("SELECT value FROM accounts"):
            assert not AccountState.from_bytes(bytes(value)).confirmed_log
    finally:
        conn.close()
    assert await _reload(path) == expected
