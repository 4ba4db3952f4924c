"""Storage interfaces the state machines call, and in-memory versions for tests.

The state machines never touch files.  They read and write records through
these protocols; the daemon supplies a durable implementation (SQLite, in
``fastpayd``).

Writes are *staged*: ``save_*`` may only buffer the record, and the daemon
makes everything staged durable (a group commit) before it sends any reply.
So the safety invariant -- an authority never signs two different orders for
one (sender, sequence number), even across a crash -- holds as long as

* a handler saves the new pending vote *before* returning it, and
* the daemon flushes the store before the vote leaves the process.

A read after a staged write must return the staged value (read-your-writes),
since the next request may arrive before the flush.

Records are replaced whole.  A store that wants to avoid rewriting long logs
can rely on ``confirmed_log``/``received_log``/``sent_log`` only ever growing
by appending, and write just the new tail.
"""

from __future__ import annotations

from typing import Protocol

from protocol.account import AccountState, ClientRecord


class AuthorityStore(Protocol):
    """An authority's account table."""

    def load_account(self, address: bytes) -> AccountState | None:
        """Return the account's state (staged writes included), None if unknown."""
        ...

    def save_account(self, address: bytes, state: AccountState) -> None:
        """Stage ``state`` as the account's new state."""
        ...


class ClientStore(Protocol):
    """A client's record about its own account."""

    def load(self) -> ClientRecord | None:
        """Return the saved record (staged writes included), None if none yet."""
        ...

    def save(self, record: ClientRecord) -> None:
        """Stage ``record`` as the client's new record."""
        ...


class InMemoryAuthorityStore:
    """An AuthorityStore in a dict; every write is immediately 'durable'."""

    def __init__(self) -> None:
        self.accounts: dict[bytes, AccountState] = {}
        self.writes = 0

    def load_account(self, address: bytes) -> AccountState | None:
        """Return the account's state, None if unknown."""
        return self.accounts.get(address)

    def save_account(self, address: bytes, state: AccountState) -> None:
        """Store ``state`` for ``address``."""
        self.accounts[address] = state
        self.writes += 1


class InMemoryClientStore:
    """A ClientStore in a field."""

    def __init__(self, record: ClientRecord | None = None) -> None:
        self.record = record
        self.writes = 0

    def load(self) -> ClientRecord | None:
        """Return the saved record, None if none yet."""
        return self.record

    def save(self, record: ClientRecord) -> None:
        """Keep ``record``."""
        self.record = record
        self.writes += 1
