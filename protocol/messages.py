"""FastPay messages: immutable pydantic v2 models, validated at construction.

Each model is frozen and strict (no silent coercion: bytes must be bytes, ints
must be ints and never bools) and rejects unknown fields.  Bounds that are part
of the protocol are checked here: amounts and sequence numbers are unsigned
64-bit, addresses are 32 bytes, signatures 64 bytes, authority names 1..64
characters, ``user_data`` at most :data:`MAX_USER_DATA_LENGTH` bytes.

The bytes that get *signed* are defined here too, because they are a property
of the value, not of the transport: a :class:`Transfer`'s canonical bytes are
the msgpack encoding of ``[sender, recipient, amount, sequence_number,
user_data]`` (the same array the wire uses for a transfer body), computed once
and cached on the frozen instance.  A client signs ``DOMAIN_TRANSFER_ORDER +
canonical``; an authority votes by signing ``DOMAIN_VOTE + canonical``.
Because a vote and a certificate cover only the transfer, checking a
certificate never needs the client's signature again (as in the reference).

How the models become bytes (type tags, versions, field order) is the job of
:mod:`protocol.codec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Self

import msgpack  # type: ignore[import-untyped]
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from protocol.crypto import DOMAIN_TRANSFER_ORDER, DOMAIN_VOTE, KeyPair

PROTOCOL_VERSION = 1
"""Version number carried by every wire message."""

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
MAX_USER_DATA_LENGTH = 256
MAX_AUTHORITY_NAME_LENGTH = 64
MAX_CERTIFICATE_SIGNATURES = 256
MAX_RECEIVED_TRANSFERS_PER_RESPONSE = 256
MAX_ERROR_CODE_LENGTH = 64
MAX_ERROR_MESSAGE_LENGTH = 1024

Amount = Annotated[int, Field(ge=0, le=U64_MAX)]
SequenceNumber = Annotated[int, Field(ge=0, le=U64_MAX)]
Balance = Annotated[int, Field(ge=I64_MIN, le=I64_MAX)]
AddressBytes = Annotated[bytes, Field(min_length=32, max_length=32)]
SignatureBytes = Annotated[bytes, Field(min_length=64, max_length=64)]
AuthorityName = Annotated[str, Field(min_length=1, max_length=MAX_AUTHORITY_NAME_LENGTH)]
UserData = Annotated[bytes, Field(max_length=MAX_USER_DATA_LENGTH)]


def _tuple_of_pairs(value: object) -> object:
    # Accept a list of [name, signature] lists (natural in Python code) while the
    # elements themselves stay strictly typed.
    if isinstance(value, list):
        return tuple(tuple(e) if isinstance(e, list) else e for e in value)
    return value


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


class _Message(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="forbid",
        revalidate_instances="never",
    )


_CACHED = ("canonical_bytes", "order_signing_bytes", "vote_signing_bytes")


class Transfer(_Message):
    """The payment a sender authorises: sent inside every order, vote and certificate."""

    sender: AddressBytes
    recipient: AddressBytes
    amount: Amount
    sequence_number: SequenceNumber
    user_data: UserData | None = None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Copy, dropping the cached signing bytes (an ``update`` would make them stale)."""
        copy = super().model_copy(update=update, deep=deep)
        for name in _CACHED:
            copy.__dict__.pop(name, None)
        return copy

    @cached_property
    def canonical_bytes(self) -> bytes:
        """The msgpack encoding of the transfer's fields in wire order (signed content)."""
        packed: bytes = msgpack.packb(
            [self.sender, self.recipient, self.amount, self.sequence_number, self.user_data],
            use_bin_type=True,
        )
        return packed

    @cached_property
    def order_signing_bytes(self) -> bytes:
        """The bytes the sender signs to authorise this transfer."""
        return DOMAIN_TRANSFER_ORDER + self.canonical_bytes

    @cached_property
    def vote_signing_bytes(self) -> bytes:
        """The bytes an authority signs to vote for this transfer."""
        return DOMAIN_VOTE + self.canonical_bytes

    @property
    def key(self) -> tuple[bytes, int]:
        """(sender, sequence_number): the slot at most one transfer may be certified for."""
        return (self.sender, self.sequence_number)


class TransferOrder(_Message):
    """Sent by a client to every authority to ask for a vote on a transfer it signed."""

    transfer: Transfer
    signature: SignatureBytes

    @classmethod
    def sign(cls, transfer: Transfer, keypair: KeyPair) -> TransferOrder:
        """Return the order for ``transfer`` signed by ``keypair`` (the sender's key)."""
        return cls(transfer=transfer, signature=keypair.sign(transfer.order_signing_bytes))


class SignedTransferOrder(_Message):
    """Sent by an authority in reply to a valid TransferOrder: its vote locking the transfer."""

    value: TransferOrder
    authority: AuthorityName
    signature: SignatureBytes

    @classmethod
    def sign(cls, value: TransferOrder, authority: str, keypair: KeyPair) -> SignedTransferOrder:
        """Return the vote of ``authority`` (signing with ``keypair``) for ``value``."""
        return cls(
            value=value,
            authority=authority,
            signature=keypair.sign(value.transfer.vote_signing_bytes),
        )


class CertifiedTransferOrder(_Message):
    """Sent inside a ConfirmationOrder: a transfer order with a quorum of votes."""

    value: TransferOrder
    signatures: Annotated[
        tuple[tuple[AuthorityName, SignatureBytes], ...],
        Field(max_length=MAX_CERTIFICATE_SIGNATURES),
        BeforeValidator(_tuple_of_pairs),
    ]


class ConfirmationOrder(_Message):
    """Sent by anyone holding a certificate to authorities (and the recipient) to settle it."""

    certificate: CertifiedTransferOrder


class ConfirmationAck(_Message):
    """Sent in reply to a ConfirmationOrder once it is settled; applied=False if already known."""

    sender: AddressBytes
    sequence_number: SequenceNumber
    applied: bool


class AccountInfoRequest(_Message):
    """Sent by a client to learn an account's state, a past certificate or received payments."""

    sender: AddressBytes
    request_sequence_number: SequenceNumber | None = None
    request_received_transfers_excluding_first_nth: SequenceNumber | None = None


class AccountInfoResponse(_Message):
    """Sent by an authority in reply to an AccountInfoRequest."""

    sender: AddressBytes
    balance: Balance
    next_sequence_number: SequenceNumber
    pending_confirmation: SignedTransferOrder | None = None
    requested_certificate: CertifiedTransferOrder | None = None
    requested_received_transfers: Annotated[
        tuple[CertifiedTransferOrder, ...],
        Field(max_length=MAX_RECEIVED_TRANSFERS_PER_RESPONSE),
        BeforeValidator(_tuple),
    ] = ()


class Error(_Message):
    """Sent instead of the normal reply when a request is refused; code is stable."""

    code: Annotated[str, Field(min_length=1, max_length=MAX_ERROR_CODE_LENGTH)]
    message: Annotated[str, Field(max_length=MAX_ERROR_MESSAGE_LENGTH)]


Message = (
    Transfer
    | TransferOrder
    | SignedTransferOrder
    | CertifiedTransferOrder
    | ConfirmationOrder
    | ConfirmationAck
    | AccountInfoRequest
    | AccountInfoResponse
    | Error
)
"""Any message that can be encoded on the wire."""
