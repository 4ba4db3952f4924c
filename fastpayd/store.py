"""SQLite implementations of the protocol's storage interfaces.

Both keep the current records in memory (read-your-writes for free, no SQL on the hot
path) and stage every save in the :class:`~fastpayd.database.Database`, whose group commit
makes them durable; the node awaits ``db.durable()`` before any reply leaves.  Records are
serialized by the committer, once per batch.

* :class:`SqliteAuthorityStore`: an account is split in two, because its logs grow with
  every payment and rewriting them on each write would make every write cost as much as
  the account's whole history:

  - table ``accounts``, key = the 32-byte address, value =
    :meth:`~protocol.AccountState.summary_bytes` (balance, next sequence number, pending
    vote; rewritten on every write, so the pending vote is durable before it is sent);
  - append-only table ``log`` (one row per committed batch, see
    :meth:`~fastpayd.database.Database.append`): each new log entry is two msgpack
    objects, ``[address, kind, index]`` (kind ``"c"`` confirmed, ``"r"`` received) and
    the certificate's body.  Logs only ever grow by appending (see
    :mod:`protocol.storage`), so a save stages just the entries beyond the ones already
    staged.  A save's summary and entries go into the same transaction.

  At start the committed summaries are read into memory as they are stored (one
  ``bytes`` value per address, one ``SELECT`` in C: about a second per million accounts)
  and an account is parsed into an :class:`~protocol.AccountState` the first time it is
  asked for; the accounts that have log entries are rebuilt with their logs (their
  certificates are the working set).  A point read from SQLite per first use was tried
  and cost 10-20 us per order on this machine (more than decoding and staging together),
  so the store keeps the summaries in memory: about 200 bytes per account.  A database
  written before the split (logs inside the ``accounts`` value) is migrated on the first
  load, which then marks the layout in ``meta`` so later loads skip that check.
* :class:`SqliteClientStore`: one row ``meta['client_record']``.
"""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]

from fastpayd.database import Database
from protocol import AccountState, CertifiedTransferOrder
from protocol.account import ClientRecord
from protocol.codec import encode_body, parse_body
from protocol.errors import InvalidMessage

CLIENT_RECORD_KEY = b"client_record"
LAYOUT_KEY = b"authority_store_layout"
LAYOUT = b"split-logs"
CONFIRMED = "c"
RECEIVED = "r"


class _Summary:
    """An account's summary, serialized by the committer (once per batch, not per save)."""

    __slots__ = ("state",)

    def __init__(self, state: AccountState) -> None:
        self.state = state

    def to_bytes(self) -> bytes:
        return summary_bytes(self.state)


_pack = msgpack.Packer(use_bin_type=True).pack


def summary_bytes(state: AccountState) -> bytes:
    """``state.summary_bytes()``, spliced from bytes already at hand (the hot path).

    The pending vote's body is ``[[transfer, client signature], authority, signature]``
    and the transfer's msgpack encoding is its canonical bytes, computed when the order was
    decoded: only the small fields are packed here (tests/fastpayd/test_store.py compares
    the result with the protocol's own encoding).
    """
    vote = state.pending_confirmation
    if vote is None:
        middle = b"\xc0"
    else:
        order = vote.value
        middle = (b"\x93\x92" + order.transfer.canonical_bytes + _pack(order.signature)
                  + _pack(vote.authority) + _pack(vote.signature))
    return b"\x95" + _pack(state.balance) + _pack(state.next_sequence_number) + middle + b"\x90\x90"


class _CertBlob:
    """A certificate's stored body, encoded once although two logs hold it."""

    __slots__ = ("cert", "data")

    def __init__(self, cert: CertifiedTransferOrder) -> None:
        self.cert = cert
        self.data: bytes = encode_body(cert)


def _log_entries(value: bytes) -> list[tuple[bytes, str, int, Any]]:
    """Parse one ``log`` row into (address, kind, index, certificate body) entries."""
    unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True)
    unpacker.feed(value)
    try:
        items = list(unpacker)
    except Exception as exc:
        raise InvalidMessage(f"corrupt log row: {type(exc).__name__}") from None
    if len(items) % 2:
        raise InvalidMessage("corrupt log row: odd number of objects")
    out = []
    for head, body in zip(items[::2], items[1::2], strict=True):
        if (not isinstance(head, list) or len(head) != 3 or not isinstance(head[0], bytes)
                or head[1] not in (CONFIRMED, RECEIVED) or type(head[2]) is not int):
            raise InvalidMessage("corrupt log row: bad entry header")
        out.append((head[0], head[1], head[2], body))
    return out


class SqliteAuthorityStore:
    """``protocol.AuthorityStore`` over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Every account parsed or written since start (read-your-writes).
        self.accounts: dict[bytes, AccountState] = {}
        # Committed summaries not parsed yet; disjoint from ``accounts``.
        self._raw: dict[bytes, bytes] = {}
        # The certificate most recently staged: a confirmation appends the same one to the
        # sender's and the recipient's log, so its body is encoded once.
        self._last_blob: _CertBlob | None = None

    async def load(self) -> None:
        """Read the committed accounts (call before serving; again after a bulk import)."""
        if await self.db.read_one_async("meta", LAYOUT_KEY) != LAYOUT:
            await self._migrate()
        logs: dict[tuple[bytes, str], dict[int, Any]] = {}
        for _, value in sorted(await self.db.read_all("log")):
            for address, kind, index, body in _log_entries(value):
                logs.setdefault((address, kind), {})[index] = body

        def rebuild(address: bytes, kind: str) -> tuple[CertifiedTransferOrder, ...]:
            entries = logs.pop((address, kind), {})
            if sorted(entries) != list(range(len(entries))):
                raise InvalidMessage(f"log of {address.hex()} has gaps")
            return tuple(parse_body(CertifiedTransferOrder, entries[i])
                         for i in range(len(entries)))

        raw = await self.db.read_dict("accounts")
        accounts: dict[bytes, AccountState] = {}
        for address in sorted({address for address, _ in logs}):
            summary = raw.pop(address, None)
            if summary is None:
                raise InvalidMessage(f"log entries of an unknown account {address.hex()}")
            accounts[address] = AccountState.from_bytes(summary).with_logs(
                rebuild(address, CONFIRMED), rebuild(address, RECEIVED)
            )
        self.accounts, self._raw = accounts, raw

    async def _migrate(self) -> None:
        # Written before the split: the logs are in the value.  Re-stage them as log entries
        # (and the summary over the old blob) in the first commit, with the layout mark.
        for address, value in await self.db.read_all("accounts"):
            state = AccountState.from_bytes(value)
            if state.confirmed_log or state.received_log:
                self.save_account(address, state)
        self.db.stage("meta", LAYOUT_KEY, LAYOUT)
        await self.db.durable()

    def load_account(self, address: bytes) -> AccountState | None:
        state = self.accounts.get(address)
        if state is None:
            summary = self._raw.pop(address, None)
            if summary is None:
                return None
            state = self.accounts[address] = AccountState.from_bytes(summary)
        return state

    def count(self) -> int:
        """How many accounts this authority knows (staged ones included)."""
        return len(self.accounts) + len(self._raw)

    def addresses(self, limit: int) -> list[bytes]:
        """Up to ``limit`` known addresses: the committed ones in key order (call after
        ``db.durable()`` for a complete view)."""
        return self.db.keys("accounts", limit)

    def save_account(self, address: bytes, state: AccountState) -> None:
        old = self.accounts.get(address)
        if old is None:
            self._raw.pop(address, None)  # never keep a summary older than ``state``
        self.accounts[address] = state
        db = self.db
        db.stage("accounts", address, _Summary(state))
        n_confirmed = len(old.confirmed_log) if old is not None else 0
        n_received = len(old.received_log) if old is not None else 0
        # Logs only grow by appending: stage just the new tail of each.
        for i in range(n_confirmed, len(state.confirmed_log)):
            db.append("log", self._entry(address, CONFIRMED, i, state.confirmed_log[i]))
        for i in range(n_received, len(state.received_log)):
            db.append("log", self._entry(address, RECEIVED, i, state.received_log[i]))

    def _entry(self, address: bytes, kind: str, index: int,
               cert: CertifiedTransferOrder) -> bytes:
        blob = self._last_blob
        if blob is None or blob.cert is not cert:
            blob = self._last_blob = _CertBlob(cert)
        head: bytes = msgpack.packb([address, kind, index], use_bin_type=True)
        return head + blob.data


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
