"""Account records: what an authority keeps per account, what a client keeps about itself.

Both are plain frozen values.  The state machines never mutate them; they
build a new record with :func:`dataclasses.replace` and hand it to the store,
which makes "validate everything, then commit" natural: nothing is visible
until the store is called.

:class:`AccountState` is an authority's view of one account (as in the
reference's ``AccountOffchainState``).  Its balance is a *signed* integer: an
authority that has not yet seen some incoming payments of an account may
apply that account's later, already certified, debits and go below zero; the
missing credits bring it back.  It is kept within the signed 64-bit range by
saturation, as the reference saturates credits.

:class:`ClientRecord` is a client's durable knowledge about its own account:
balance, next sequence number, the order it signed and is collecting votes
for, the votes so far, its latest certificate and which authorities have
confirmed it, the logs of sent and received certificates, and where each received
certificate came from (``received_from``, aligned with ``received_log``: ``direct``,
``authority:<name>``, ``self``; ``unknown`` for payments recorded before provenance was --
a record written then has eight fields and is read with ``unknown`` for each).

``to_bytes``/``from_bytes`` give each record a compact msgpack form (nested
messages as their wire bodies) so a store can keep it as one blob.  An
authority's logs grow with every payment, so a store should not rewrite them on
every write: :meth:`AccountState.summary_bytes` is the same form with the logs
left out (``from_bytes`` reads it as a record with empty logs), and
:meth:`AccountState.with_logs` puts logs kept elsewhere back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]

from protocol.codec import message_body, parse_body
from protocol.errors import InvalidMessage
from protocol.messages import (
    I64_MAX,
    I64_MIN,
    CertifiedTransferOrder,
    SignedTransferOrder,
    TransferOrder,
)


def saturate(balance: int) -> int:
    """Clamp ``balance`` to the signed 64-bit range every balance lives in."""
    return max(I64_MIN, min(I64_MAX, balance))


def _unpack_list(data: bytes, n: int | tuple[int, ...]) -> list[Any]:
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise InvalidMessage(f"corrupt record: {type(exc).__name__}") from None
    if not isinstance(fields, list) or len(fields) not in (n if isinstance(n, tuple) else (n,)):
        raise InvalidMessage("corrupt record: wrong shape")
    return fields


def _ints(*values: Any) -> None:
    for v in values:
        if type(v) is not int:
            raise InvalidMessage("corrupt record: expected an integer")


def _certs(body: Any) -> tuple[CertifiedTransferOrder, ...]:
    if not isinstance(body, list):
        raise InvalidMessage("corrupt record: expected an array")
    return tuple(parse_body(CertifiedTransferOrder, b) for b in body)


@dataclass(frozen=True, slots=True)
class AccountState:
    """An authority's state for one account."""

    balance: int = 0
    next_sequence_number: int = 0
    pending_confirmation: SignedTransferOrder | None = None
    confirmed_log: tuple[CertifiedTransferOrder, ...] = ()
    received_log: tuple[CertifiedTransferOrder, ...] = ()

    def to_bytes(self) -> bytes:
        """Return the record's msgpack blob."""
        packed: bytes = msgpack.packb(
            [
                self.balance,
                self.next_sequence_number,
                None
                if self.pending_confirmation is None
                else message_body(self.pending_confirmation),
                [message_body(c) for c in self.confirmed_log],
                [message_body(c) for c in self.received_log],
            ],
            use_bin_type=True,
        )
        return packed

    def summary_bytes(self) -> bytes:
        """Return the record's blob without its logs (balance, sequence number, pending vote).

        This is what changes on every write; the logs only grow and can be stored as
        separate entries.  ``from_bytes`` parses it into a record with empty logs.
        """
        packed: bytes = msgpack.packb(
            [
                self.balance,
                self.next_sequence_number,
                None
                if self.pending_confirmation is None
                else message_body(self.pending_confirmation),
                [],
                [],
            ],
            use_bin_type=True,
        )
        return packed

    def with_logs(
        self,
        confirmed_log: tuple[CertifiedTransferOrder, ...],
        received_log: tuple[CertifiedTransferOrder, ...],
    ) -> AccountState:
        """Return this record with the given logs (a store rebuilding what it split)."""
        return AccountState(
            self.balance,
            self.next_sequence_number,
            self.pending_confirmation,
            confirmed_log,
            received_log,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountState:
        """Parse a blob made by :meth:`to_bytes`; raises InvalidMessage if corrupt."""
        f = _unpack_list(data, 5)
        _ints(f[0], f[1])
        return cls(
            balance=f[0],
            next_sequence_number=f[1],
            pending_confirmation=None if f[2] is None else parse_body(SignedTransferOrder, f[2]),
            confirmed_log=_certs(f[3]),
            received_log=_certs(f[4]),
        )


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A client's durable state about its own account."""

    balance: int = 0
    next_sequence_number: int = 0
    pending_order: TransferOrder | None = None
    votes: tuple[SignedTransferOrder, ...] = ()
    certificate: CertifiedTransferOrder | None = None
    confirmed_by: frozenset[str] = field(default_factory=frozenset)
    sent_log: tuple[CertifiedTransferOrder, ...] = ()
    received_log: tuple[CertifiedTransferOrder, ...] = ()
    received_from: tuple[str, ...] = ()  # where each received_log entry came from

    def __post_init__(self) -> None:
        if len(self.received_from) != len(self.received_log):
            raise ValueError("received_from must have one entry per received certificate")

    def to_bytes(self) -> bytes:
        """Return the record's msgpack blob."""
        packed: bytes = msgpack.packb(
            [
                self.balance,
                self.next_sequence_number,
                None if self.pending_order is None else message_body(self.pending_order),
                [message_body(v) for v in self.votes],
                None if self.certificate is None else message_body(self.certificate),
                sorted(self.confirmed_by),
                [message_body(c) for c in self.sent_log],
                [message_body(c) for c in self.received_log],
                list(self.received_from),
            ],
            use_bin_type=True,
        )
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientRecord:
        """Parse a blob made by :meth:`to_bytes` (or by a version without provenance:
        eight fields, each received certificate's source ``unknown``); raises
        InvalidMessage if corrupt."""
        f = _unpack_list(data, (8, 9))
        _ints(f[0], f[1])
        if not isinstance(f[3], list) or not isinstance(f[5], list):
            raise InvalidMessage("corrupt record: expected an array")
        if not all(isinstance(n, str) for n in f[5]):
            raise InvalidMessage("corrupt record: authority names are strings")
        received = _certs(f[7])
        if len(f) == 8:
            sources: tuple[str, ...] = ("unknown",) * len(received)
        elif (not isinstance(f[8], list) or len(f[8]) != len(received)
              or not all(isinstance(x, str) for x in f[8])):
            raise InvalidMessage("corrupt record: one source string per received certificate")
        else:
            sources = tuple(f[8])
        return cls(
            balance=f[0],
            next_sequence_number=f[1],
            pending_order=None if f[2] is None else parse_body(TransferOrder, f[2]),
            votes=tuple(parse_body(SignedTransferOrder, v) for v in f[3]),
            certificate=None if f[4] is None else parse_body(CertifiedTransferOrder, f[4]),
            confirmed_by=frozenset(f[5]),
            sent_log=_certs(f[6]),
            received_log=received,
            received_from=sources,
        )
