"""SQLite implementations of the protocol's storage interfaces.

Both keep the current records in memory (read-your-writes for free, no SQL on the hot
path) and stage every save in the :class:`~fastpayd.database.Database`, whose group commit
makes them durable; the node awaits ``db.durable()`` before any reply leaves.  Records are
serialized with their own ``to_bytes`` by the committer, once per batch.

* :class:`SqliteAuthorityStore`: table ``accounts``, key = the 32-byte address.  All
  accounts are loaded at start (an authority's working set; fine for test networks and
  devices, revisit for millions of accounts).
* :class:`SqliteClientStore`: one row ``meta['client_record']``.
"""

from __future__ import annotations

from fastpayd.database import Database
from protocol import AccountState
from protocol.account import ClientRecord

CLIENT_RECORD_KEY = b"client_record"


class SqliteAuthorityStore:
    """``protocol.AuthorityStore`` over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts: dict[bytes, AccountState] = {}

    async def load(self) -> None:
        """Read every committed account (call once, before serving)."""
        for key, value in await self.db.read_all("accounts"):
            self.accounts[key] = AccountState.from_bytes(value)

    def load_account(self, address: bytes) -> AccountState | None:
        return self.accounts.get(address)

    def save_account(self, address: bytes, state: AccountState) -> None:
        self.accounts[address] = state
        self.db.stage("accounts", address, state)


class SqliteClientStore:
    """``protocol.ClientStore`` over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.record: ClientRecord | None = None

    async def load_from_disk(self) -> None:
        """Read the committed record (call once, before building the ClientState)."""
        for key, value in await self.db.read_all("meta"):
            if key == CLIENT_RECORD_KEY:
                self.record = ClientRecord.from_bytes(value)

    def load(self) -> ClientRecord | None:
        return self.record

    def save(self, record: ClientRecord) -> None:
        self.record = record
        self.db.stage("meta", CLIENT_RECORD_KEY, record)
