"""The msgpack wire codec: messages to bytes and back.

A wire message is the msgpack encoding of a three-element array::

    [version, tag, body]

``version`` is :data:`~protocol.messages.PROTOCOL_VERSION` (an unsigned int),
``tag`` the message's type name (a str, e.g. ``"TransferOrder"``), ``body`` an
array of the message's fields in a fixed order.  Nested messages appear as
their bare body arrays (no version or tag); absent optional values are ``nil``;
byte strings use the msgpack ``bin`` family, text the ``str`` family.  The
field order of every body is in :data:`WIRE_FIELDS` and in docs/protocol.md.

:func:`encode` is canonical (msgpack's smallest encodings, arrays only, no
maps), so equal messages give equal bytes.  :func:`decode` accepts any valid
msgpack of the right shape and validates every field through the pydantic
models; on *any* input it either returns a message or raises a
:class:`~protocol.errors.FastPayError` (``InvalidMessage``,
``UnknownMessageType`` or ``UnsupportedVersion``) -- never anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgpack  # type: ignore[import-untyped]
import pydantic

from protocol.errors import (
    FastPayError,
    InvalidMessage,
    UnexpectedMessage,
    UnknownMessageType,
    UnsupportedVersion,
)
from protocol.messages import (
    PROTOCOL_VERSION,
    AccountInfoRequest,
    AccountInfoResponse,
    CertifiedTransferOrder,
    ConfirmationAck,
    ConfirmationOrder,
    Error,
    Message,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
)

_M = TypeVar("_M", bound=Message)

MAX_FRAME_SIZE = 1_048_576
"""Largest encoded message (and TCP frame payload) in bytes: 1 MiB."""

FRAME_HEADER_SIZE = 4
"""A frame is a 4-byte big-endian unsigned length followed by that many bytes."""

WIRE_FIELDS: dict[str, tuple[str, ...]] = {
    "Transfer": ("sender", "recipient", "amount", "sequence_number", "user_data"),
    "TransferOrder": ("transfer", "signature"),
    "SignedTransferOrder": ("value", "authority", "signature"),
    "CertifiedTransferOrder": ("value", "signatures"),
    "ConfirmationOrder": ("certificate",),
    "ConfirmationAck": ("sender", "sequence_number", "applied"),
    "AccountInfoRequest": (
        "sender",
        "request_sequence_number",
        "request_received_transfers_excluding_first_nth",
    ),
    "AccountInfoResponse": (
        "sender",
        "balance",
        "next_sequence_number",
        "pending_confirmation",
        "requested_certificate",
        "requested_received_transfers",
    ),
    "Error": ("code", "message"),
}
"""Body field order of every message type, by type tag."""


# --- model -> body array -------------------------------------------------------------


def _transfer_body(t: Transfer) -> list[Any]:
    return [t.sender, t.recipient, t.amount, t.sequence_number, t.user_data]


def _order_body(o: TransferOrder) -> list[Any]:
    return [_transfer_body(o.transfer), o.signature]


def _vote_body(v: SignedTransferOrder) -> list[Any]:
    return [_order_body(v.value), v.authority, v.signature]


def _cert_body(c: CertifiedTransferOrder) -> list[Any]:
    return [_order_body(c.value), [[name, sig] for name, sig in c.signatures]]


def _body(message: Message) -> tuple[str, list[Any]]:
    if isinstance(message, TransferOrder):
        return "TransferOrder", _order_body(message)
    if isinstance(message, SignedTransferOrder):
        return "SignedTransferOrder", _vote_body(message)
    if isinstance(message, ConfirmationOrder):
        return "ConfirmationOrder", [_cert_body(message.certificate)]
    if isinstance(message, ConfirmationAck):
        return "ConfirmationAck", [message.sender, message.sequence_number, message.applied]
    if isinstance(message, AccountInfoRequest):
        return "AccountInfoRequest", [
            message.sender,
            message.request_sequence_number,
            message.request_received_transfers_excluding_first_nth,
        ]
    if isinstance(message, AccountInfoResponse):
        return "AccountInfoResponse", [
            message.sender,
            message.balance,
            message.next_sequence_number,
            None
            if message.pending_confirmation is None
            else _vote_body(message.pending_confirmation),
            None
            if message.requested_certificate is None
            else _cert_body(message.requested_certificate),
            [_cert_body(c) for c in message.requested_received_transfers],
        ]
    if isinstance(message, Error):
        return "Error", [message.code, message.message]
    if isinstance(message, CertifiedTransferOrder):
        return "CertifiedTransferOrder", _cert_body(message)
    if isinstance(message, Transfer):
        return "Transfer", _transfer_body(message)
    raise TypeError(f"not a FastPay message: {type(message).__name__}")


def encode(message: Message) -> bytes:
    """Return the canonical wire bytes of ``message`` (without the frame header)."""
    tag, body = _body(message)
    packed: bytes = msgpack.packb([PROTOCOL_VERSION, tag, body], use_bin_type=True)
    return packed


def encode_body(message: Message) -> bytes:
    """Return the msgpack encoding of the bare body array (used for storage blobs)."""
    _, body = _body(message)
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


# --- body array -> model -------------------------------------------------------------


def _fields(body: Any, n: int) -> list[Any]:
    if not isinstance(body, list) or len(body) != n:
        raise InvalidMessage(f"expected an array of {n} fields")
    return body


def _transfer(body: Any) -> Transfer:
    f = _fields(body, 5)
    return Transfer(sender=f[0], recipient=f[1], amount=f[2], sequence_number=f[3], user_data=f[4])


def _order(body: Any) -> TransferOrder:
    f = _fields(body, 2)
    return TransferOrder(transfer=_transfer(f[0]), signature=f[1])


def _vote(body: Any) -> SignedTransferOrder:
    f = _fields(body, 3)
    return SignedTransferOrder(value=_order(f[0]), authority=f[1], signature=f[2])


def _cert(body: Any) -> CertifiedTransferOrder:
    f = _fields(body, 2)
    entries = f[1]
    if not isinstance(entries, list):
        raise InvalidMessage("certificate signatures must be an array")
    signatures = tuple(tuple(_fields(e, 2)) for e in entries)
    return CertifiedTransferOrder(value=_order(f[0]), signatures=signatures)


def _optional(parse: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else parse(value)


def _response(body: Any) -> AccountInfoResponse:
    f = _fields(body, 6)
    received = f[5]
    if not isinstance(received, list):
        raise InvalidMessage("requested_received_transfers must be an array")
    return AccountInfoResponse(
        sender=f[0],
        balance=f[1],
        next_sequence_number=f[2],
        pending_confirmation=_optional(_vote, f[3]),
        requested_certificate=_optional(_cert, f[4]),
        requested_received_transfers=tuple(_cert(c) for c in received),
    )


def _request(body: Any) -> AccountInfoRequest:
    f = _fields(body, 3)
    return AccountInfoRequest(
        sender=f[0],
        request_sequence_number=f[1],
        request_received_transfers_excluding_first_nth=f[2],
    )


def _ack(body: Any) -> ConfirmationAck:
    f = _fields(body, 3)
    return ConfirmationAck(sender=f[0], sequence_number=f[1], applied=f[2])


def _error(body: Any) -> Error:
    f = _fields(body, 2)
    return Error(code=f[0], message=f[1])


_PARSERS: dict[str, Callable[[Any], Message]] = {
    "Transfer": _transfer,
    "TransferOrder": _order,
    "SignedTransferOrder": _vote,
    "CertifiedTransferOrder": _cert,
    "ConfirmationOrder": lambda body: ConfirmationOrder(certificate=_cert(_fields(body, 1)[0])),
    "ConfirmationAck": _ack,
    "AccountInfoRequest": _request,
    "AccountInfoResponse": _response,
    "Error": _error,
}


def _unpack(data: bytes) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidMessage("message must be bytes")
    if len(data) > MAX_FRAME_SIZE:
        raise InvalidMessage("message exceeds the maximum frame size")
    try:
        # strict_map_key: maps never appear in valid messages, but a map with
        # unhashable keys must not escape as TypeError.
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise InvalidMessage(f"not valid msgpack: {type(exc).__name__}") from None


def _parse(parser: Callable[[Any], Message], body: Any) -> Message:
    try:
        return parser(body)
    except FastPayError:
        raise
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        if not errors:  # pragma: no cover - pydantic always reports at least one
            raise InvalidMessage("invalid field") from None
        where = ".".join(str(p) for p in errors[0]["loc"])
        raise InvalidMessage(f"invalid field {where}: {errors[0]['msg']}") from None
    except Exception as exc:  # any other shape problem (wrong nesting, odd types)
        raise InvalidMessage(f"malformed body: {type(exc).__name__}") from None


def decode(data: bytes) -> Message:
    """Parse wire bytes into a message.

    Raises InvalidMessage (not msgpack, wrong shape, invalid field),
    UnsupportedVersion or UnknownMessageType; never any other exception.
    """
    envelope = _unpack(data)
    if not isinstance(envelope, list) or len(envelope) != 3:
        raise InvalidMessage("a message is an array [version, tag, body]")
    version, tag, body = envelope
    if type(version) is not int:
        raise InvalidMessage("version must be an integer")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version} is not supported")
    if type(tag) is not str:
        raise InvalidMessage("type tag must be a string")
    parser = _PARSERS.get(tag)
    if parser is None:
        raise UnknownMessageType(f"unknown message type {tag[:64]!r}")
    return _parse(parser, body)


def decode_as(data: bytes, cls: type[_M]) -> _M:
    """Decode ``data`` and require a message of type ``cls``.

    Raises UnexpectedMessage for a valid message of another type, and whatever
    :func:`decode` raises otherwise.
    """
    message = decode(data)
    if not isinstance(message, cls):
        raise UnexpectedMessage(f"expected {cls.__name__}, got {type(message).__name__}")
    return message


def decode_body(data: bytes, cls: type[_M]) -> _M:
    """Parse a bare body produced by :func:`encode_body` for type ``cls``."""
    return parse_body(cls, _unpack(data))


def message_body(message: Message) -> list[Any]:
    """Return the body array of ``message`` (its fields in wire order, nested as arrays)."""
    return _body(message)[1]


def parse_body(cls: type[_M], body: Any) -> _M:
    """Build a ``cls`` from an already-unpacked body array; raises InvalidMessage."""
    parser = _PARSERS[cls.__name__]
    message = _parse(parser, body)
    if not isinstance(message, cls):  # pragma: no cover - parsers return their own type
        raise InvalidMessage(f"expected {cls.__name__}")
    return message
