"""In-memory stores: read-your-writes, and they satisfy the storage protocols."""

from __future__ import annotations

from protocol import (
    AccountState,
    AuthorityStore,
    ClientRecord,
    ClientStore,
    InMemoryAuthorityStore,
    InMemoryClientStore,
)


def test_in_memory_authority_store_reads_its_writes():
    store: AuthorityStore = InMemoryAuthorityStore()
    assert store.load_account(b"a" * 32) is None
    store.save_account(b"a" * 32, AccountState(balance=3))
    assert store.load_account(b"a" * 32) == AccountState(balance=3)


def test_in_memory_client_store_reads_its_writes():
    store: ClientStore = InMemoryClientStore()
    assert store.load() is None
    store.save(ClientRecord(balance=4))
    assert store.load() == ClientRecord(balance=4)
