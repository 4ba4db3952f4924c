"""Genesis files imported once into the database, and the store parsing accounts on use."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastpayd_helpers import Daemon, LocalNet

from fastpayd.config import ConfigError, load_committee_file
from fastpayd.database import Database
from fastpayd.genesis import GENESIS_KEY, account_summary, import_genesis_file, write_genesis
from fastpayd.store import SqliteAuthorityStore
from fastpayd.testnet import generate_testnet
from protocol import (
    AccountState,
    AuthorityInfo,
    AuthorityState,
    Committee,
    KeyPair,
    Transfer,
    TransferOrder,
)
from protocol.messages import I64_MAX

KEY = KeyPair.from_seed(hashlib.sha256(b"genesis-auth0").digest())
COMMITTEE = Committee("genesis-test", {"auth0": AuthorityInfo(KEY.public_key, 1)})


def _addresses(n: int) -> list[bytes]:
    return [hashlib.sha256(b"genesis-%d" % i).digest() for i in range(n)]


def _write(path: Path, entries: list[tuple[bytes, int]]) -> bytes:
    digest, count = write_genesis(path, entries)
    assert count == len(entries)
    return bytes.fromhex(digest)


def _rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM accounts").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("balance", [0, 1, 127, 128, 255, 65536, 2**32, I64_MAX])
def test_account_summary_is_the_protocol_record(balance: int) -> None:
    state = AccountState(balance=balance)
    assert account_summary(balance) == state.summary_bytes()
    assert AccountState.from_bytes(account_summary(balance)) == state


async def test_import_once_then_never_read_again(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.txt"
    entries = [(a, i * 10) for i, a in enumerate(_addresses(1000))]
    digest = _write(genesis, entries)
    db_path = tmp_path / "db.sqlite"
    async with Database(db_path) as db:
        assert await import_genesis_file(db, genesis, digest, {}) == 1000
    genesis.unlink()  # a later start must not need the file
    async with Database(db_path) as db:
        store = SqliteAuthorityStore(db)
        await store.load()
        assert store.accounts == {}  # nothing parsed at start
        assert store.count() == 1000
        assert await import_genesis_file(db, genesis, digest, {}) is None
        address, balance = entries[777]
        state = store.load_account(address)
        assert state == AccountState(balance=balance)
        assert store.accounts == {address: state}
        assert store.load_account(b"\x01" * 32) is None


async def test_import_then_serve_orders_from_imported_accounts(tmp_path: Path) -> None:
    sender = KeyPair.from_seed(b"\x07" * 32)
    genesis = tmp_path / "genesis.txt"
    digest = _write(genesis, [(sender.public_key, 50), *[(a, 1) for a in _addresses(10)]])
    db_path = tmp_path / "db.sqlite"

    order = TransferOrder.sign(Transfer(sender=sender.public_key, recipient=b"\x02" * 32,
                                        amount=5, sequence_number=0), sender)
    async with Database(db_path) as db:
        store = SqliteAuthorityStore(db)
        await store.load()
        await import_genesis_file(db, genesis, digest, {})
        await store.load()  # as the authority does after an import
        state = AuthorityState("auth0", KEY, COMMITTEE, store)
        vote = state.handle_transfer_order(order)
        await db.durable()
    async with Database(db_path) as db:
        store = SqliteAuthorityStore(db)
        await store.load()
        loaded = store.load_account(sender.public_key)
        assert loaded is not None and loaded.pending_confirmation == vote
        assert loaded.balance == 50


@pytest.mark.parametrize("content, message", [
    (b"00" * 32 + b" 5", "expected"),  # no newline at the end
    (b"00" * 32 + b"  5\n", "expected"),
    (b"00" * 32 + b" -5\n", "expected"),
    (b"00" * 32 + b" +5\n", "expected"),
    (b"00" * 32 + b" 1_0\n", "expected"),
    (b"zz" * 32 + b" 5\n", "not hex"),
    (b"00" * 31 + b" 5\n", "expected"),
    (b"00" * 32 + b" 9223372036854775808\n", "beyond"),
    (b"00" * 32 + b" 5\n" + b"00" * 32 + b" 6\n", "twice"),
    (b"00" * 32 + b" 9223372036854775807\n" + b"11" * 32 + b" 1\n", "total supply"),
])
async def test_import_refuses_bad_files_and_imports_nothing(tmp_path: Path, content: bytes,
                                                             message: str) -> None:
    genesis = tmp_path / "genesis.txt"
    genesis.write_bytes(content)
    digest = hashlib.sha256(content).digest()
    async with Database(tmp_path / "db.sqlite") as db:
        with pytest.raises(ConfigError, match=message):
            await import_genesis_file(db, genesis, digest, {})
        assert await db.read_one_async("meta", GENESIS_KEY) is None
    assert _rows(tmp_path / "db.sqlite") == 0


async def test_import_refuses_a_wrong_digest_or_an_address_also_inline(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.txt"
    addresses = _addresses(3)
    digest = _write(genesis, [(a, 1) for a in addresses])
    async with Database(tmp_path / "db.sqlite") as db:
        with pytest.raises(ConfigError, match="SHA-256"):
            await import_genesis_file(db, genesis, b"\x00" * 32, {})
        with pytest.raises(ConfigError, match="inline"):
            await import_genesis_file(db, genesis, digest, {addresses[1]: 5})
        assert await import_genesis_file(db, genesis, digest, {}) == 3
        other = tmp_path / "other.txt"
        other_digest = _write(other, [(addresses[0], 2)])
        with pytest.raises(ConfigError, match="cannot change"):
            await import_genesis_file(db, other, other_digest, {})
    assert _rows(tmp_path / "db.sqlite") == 3


def test_testnet_writes_a_genesis_file_and_keeps_clients_inline(tmp_path: Path) -> None:
    extra = [(a, 7) for a in _addresses(5)]
    generate_testnet(tmp_path, authorities=4, clients=2, balance=100, base_port=30000,
                     extra_genesis=extra, genesis_file=True)
    cf = load_committee_file(tmp_path / "committee.toml")
    assert cf.genesis_file == tmp_path / "genesis.txt"
    assert cf.genesis_sha256 == hashlib.sha256(cf.genesis_file.read_bytes()).digest()
    assert [b for _, b in cf.genesis] == [100, 100]  # the clients
    assert len(cf.genesis_file.read_bytes().splitlines()) == 5


def test_committee_file_genesis_keys_go_together(tmp_path: Path) -> None:
    generate_testnet(tmp_path, authorities=1, clients=0, balance=0, base_port=30000)
    path = tmp_path / "committee.toml"
    text = path.read_text()
    path.write_text('genesis_file = "genesis.txt"\n' + text)
    with pytest.raises(ConfigError, match="together"):
        load_committee_file(path)
    path.write_text('genesis_file = "genesis.txt"\ngenesis_sha256 = "00"\n' + text)
    with pytest.raises(ConfigError, match="32 bytes"):
        load_committee_file(path)


def _state_loaded(net: LocalNet, name: str) -> dict[str, Any]:
    """The fields of the last ``state_loaded`` event ``name`` wrote (its latest start)."""
    lines = (net.root / "state" / name / "events.jsonl").read_text().splitlines()
    events = [e for e in map(json.loads, lines) if e["event"] == "state_loaded"]
    return dict(events[-1])


async def _balances(d: Daemon) -> dict[str, int]:
    answer = await d.control("balance", limit=10_000)
    assert answer["total"] == len(answer["accounts"])
    return {v["address"]: v["balance"] for v in answer["accounts"]}


@pytest.mark.slow
async def test_authority_imports_the_file_once_then_starts_from_the_database(
        make_testnet: Any) -> None:
    """A real authority: the first start imports the file (balances equal the genesis,
    inline clients included); a restart reads only the database, so an edited or missing
    file changes nothing; a committee file naming another genesis is refused."""
    extra = [(a, 10 + i) for i, a in enumerate(_addresses(300))]
    net: LocalNet = make_testnet(authorities=1, clients=2, balance=100, extra_genesis=extra,
                                 genesis_file=True)
    expected = {a.hex(): b for a, b in extra}
    expected |= {c.address.hex(): 100 for c in net.committee.clients}
    assert len(expected) == 302

    d = net.daemon("auth0").start()
    loaded = _state_loaded(net, "auth0")
    assert (loaded["genesis_imported"], loaded["from_disk"], loaded["accounts"]) == (300, 0, 302)
    assert await _balances(d) == expected
    assert d.stop() == 0

    genesis = net.root / "genesis.txt"
    genesis.write_bytes(b"not a genesis line\n")  # after the import the file is not read
    d = net.daemon("auth0").start()
    loaded = _state_loaded(net, "auth0")
    assert (loaded["genesis_imported"], loaded["from_disk"], loaded["accounts"]) == (None, 302,
                                                                                     302)
    assert await _balances(d) == expected
    assert d.stop() == 0
    genesis.unlink()
    d = net.daemon("auth0").start()
    assert await _balances(d) == expected
    assert d.stop() == 0

    # Naming another genesis (another digest) in the committee file is refused, clearly.
    committee = net.root / "committee.toml"
    digest = net.committee.genesis_sha256
    assert digest is not None
    other = _write(genesis, [(a, 1) for a in _addresses(3)])
    committee.write_text(committee.read_text().replace(digest.hex(), other.hex()))
    with pytest.raises(RuntimeError, match="a genesis cannot change"):
        net.daemon("auth0").start()
    assert _rows(net.root / "state" / "auth0" / "fastpay.sqlite") == 302
