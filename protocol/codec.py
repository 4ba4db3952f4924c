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
msgpack of the right shape and validates every field; on *any* input it either
returns a message or raises a :class:`~protocol.errors.FastPayError`
(``InvalidMessage``, ``UnknownMessageType`` or ``UnsupportedVersion``) --
never anything else.

Two paths validate the fields.  Most messages go through the pydantic models
(:func:`decode_validated` takes that path for every type).  The two requests an
authority serves at its crypto ceiling -- ``TransferOrder`` and
``ConfirmationOrder`` -- and the ``CertifiedTransferOrder`` a store reloads
take a hand-written strict parser instead: it checks, on the unpacked body,
exactly the rules of docs/protocol.md section 3 that the models enforce
(array lengths, ``bin`` vs ``str``, exact byte lengths, u64 bounds, no bool as
an int, name lengths, at most 256 certificate entries) and then builds the
frozen models *without* validating them a second time.  Validation through
pydantic costs more than the unpacking and the checks together; the tests in
``tests/protocol/test_codec_fast.py`` prove both paths accept the same inputs,
return equal messages and reject the same inputs with the same error code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgpack  # type: ignore[import-untyped]
import pydantic

from protocol.crypto import DOMAIN_TRANSFER_ORDER, DOMAIN_VOTE
from protocol.errors import (
    FastPayError,
    InvalidMessage,
    UnexpectedMessage,
    UnknownMessageType,
    UnsupportedVersion,
)
from protocol.messages import (
    MAX_AUTHORITY_NAME_LENGTH,
    MAX_CERTIFICATE_SIGNATURES,
    MAX_USER_DATA_LENGTH,
    PROTOCOL_VERSION,
    U64_MAX,
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


# --- body array -> model, hand-written (the hot path) --------------------------------

# The slot setters of pydantic's BaseModel (frozen models refuse plain assignment); calling
# them directly is about twice as fast as object.__setattr__ by name.
def _slot_setter(name: str) -> Callable[[object, Any], None]:
    setter: Callable[[object, Any], None] = vars(pydantic.BaseModel)[name].__set__
    return setter


_set_dict = _slot_setter("__dict__")
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")
_new = object.__new__


def _build(cls: type[_M], values: dict[str, Any], fields: frozenset[str] | None = None) -> _M:
    # What pydantic's own validation leaves on a frozen model with every field given:
    # the field values in __dict__, all of them in fields_set, no extra, no private.
    # tests/protocol/test_codec_fast.py compares the whole instance state with it.
    m: _M = _new(cls)
    _set_dict(m, values)
    _set_fields_set(m, set(values if fields is None else fields))
    _set_extra(m, None)
    _set_private(m, None)
    return m


def _array(body: Any, n: int, where: str) -> list[Any]:
    if type(body) is not list or len(body) != n:
        raise InvalidMessage(f"{where}: expected an array of {n} fields")
    return body


def _bin(value: Any, size: int, where: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise InvalidMessage(f"invalid field {where}: expected bin of {size} bytes")
    return value


def _u64(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise InvalidMessage(f"invalid field {where}: expected an integer in 0..2**64-1")
    return value


_TRANSFER_FIELDS = frozenset(WIRE_FIELDS["Transfer"])


def _fast_transfer(body: Any, where: str = "transfer") -> Transfer:
    sender, recipient, amount, sequence_number, user_data = _array(body, 5, where)
    if user_data is not None and (
        type(user_data) is not bytes or len(user_data) > MAX_USER_DATA_LENGTH
    ):
        raise InvalidMessage(
            f"invalid field {where}.user_data: expected nil or bin of at most "
            f"{MAX_USER_DATA_LENGTH} bytes"
        )
    values = {
        "sender": _bin(sender, 32, f"{where}.sender"),
        "recipient": _bin(recipient, 32, f"{where}.recipient"),
        "amount": _u64(amount, f"{where}.amount"),
        "sequence_number": _u64(sequence_number, f"{where}.sequence_number"),
        "user_data": user_data,
    }
    # Every request signs or verifies over these: compute them now, from the decoded
    # values exactly as the Transfer's cached properties do (the properties then find them
    # in __dict__; the tests compare them with a validated Transfer's).
    canonical: bytes = msgpack.packb(body, use_bin_type=True)
    values["canonical_bytes"] = canonical
    values["order_signing_bytes"] = DOMAIN_TRANSFER_ORDER + canonical
    values["vote_signing_bytes"] = DOMAIN_VOTE + canonical
    return _build(Transfer, values, _TRANSFER_FIELDS)


def _fast_order(body: Any, where: str = "order") -> TransferOrder:
    transfer, signature = _array(body, 2, where)
    return _build(
        TransferOrder,
        {
            "transfer": _fast_transfer(transfer, f"{where}.transfer"),
            "signature": _bin(signature, 64, f"{where}.signature"),
        },
    )


def _fast_cert(body: Any, where: str = "certificate") -> CertifiedTransferOrder:
    value, entries = _array(body, 2, where)
    order = _fast_order(value, f"{where}.value")
    if type(entries) is not list:
        raise InvalidMessage(f"invalid field {where}.signatures: expected an array")
    if len(entries) > MAX_CERTIFICATE_SIGNATURES:
        raise InvalidMessage(
            f"invalid field {where}.signatures: at most {MAX_CERTIFICATE_SIGNATURES} entries"
        )
    signatures = []
    for i, entry in enumerate(entries):
        name, signature = _array(entry, 2, f"{where}.signatures.{i}")
        if type(name) is not str or not 1 <= len(name) <= MAX_AUTHORITY_NAME_LENGTH:
            raise InvalidMessage(
                f"invalid field {where}.signatures.{i}.0: expected str of 1.."
                f"{MAX_AUTHORITY_NAME_LENGTH} characters"
            )
        signatures.append((name, _bin(signature, 64, f"{where}.signatures.{i}.1")))
    return _build(CertifiedTransferOrder, {"value": order, "signatures": tuple(signatures)})


def _fast_confirmation(body: Any) -> ConfirmationOrder:
    (certificate,) = _array(body, 1, "confirmation")
    return _build(ConfirmationOrder, {"certificate": _fast_cert(certificate)})


_FAST_PARSERS: dict[str, Callable[[Any], Message]] = {
    "TransferOrder": _fast_order,
    "CertifiedTransferOrder": _fast_cert,
    "ConfirmationOrder": _fast_confirmation,
}
"""The types whose bodies skip pydantic (they raise InvalidMessage and nothing else)."""


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


def _envelope(data: bytes) -> tuple[str, Any]:
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
    if tag not in _PARSERS:
        raise UnknownMessageType(f"unknown message type {tag[:64]!r}")
    return tag, body


def decode(data: bytes) -> Message:
    """Parse wire bytes into a message.

    Raises InvalidMessage (not msgpack, wrong shape, invalid field),
    UnsupportedVersion or UnknownMessageType; never any other exception.
    """
    tag, body = _envelope(data)
    fast = _FAST_PARSERS.get(tag)
    if fast is not None:
        return fast(body)
    return _parse(_PARSERS[tag], body)


def decode_validated(data: bytes) -> Message:
    """Like :func:`decode`, but every type through the pydantic models (the reference path).

    :func:`decode` must agree with it on every input; the tests hold them to that.
    """
    tag, body = _envelope(data)
    return _parse(_PARSERS[tag], body)


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
    fast = _FAST_PARSERS.get(cls.__name__)
    message = fast(body) if fast is not None else _parse(_PARSERS[cls.__name__], body)
    if not isinstance(message, cls):  # pragma: no cover - parsers return their own type
        raise InvalidMessage(f"expected {cls.__name__}")
    return message
