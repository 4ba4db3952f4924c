"""The hand-written decoder of the hot messages against the pydantic model path.

``decode`` parses TransferOrder, ConfirmationOrder (and CertifiedTransferOrder) bodies by
hand; ``decode_validated`` takes every body through the models.  They must agree on every
input: the same message (down to the models' internal state) or the same error code.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_golden import GOLDEN_CANONICAL_TRANSFER, GOLDEN_HEX

from protocol import (
    PROTOCOL_VERSION,
    CertifiedTransferOrder,
    ConfirmationOrder,
    FastPayError,
    InvalidMessage,
    Message,
    Transfer,
    TransferOrder,
    decode,
    encode,
)
from protocol.codec import decode_body, decode_validated, encode_body, message_body
from protocol.messages import (
    MAX_AUTHORITY_NAME_LENGTH,
    MAX_CERTIFICATE_SIGNATURES,
    MAX_USER_DATA_LENGTH,
    U64_MAX,
)

HOT = ("TransferOrder", "ConfirmationOrder", "CertifiedTransferOrder")
settings.register_profile("codec-fast", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


def state(value: Any) -> Any:
    """A model's whole internal state (dict, fields set, extra, private), recursively."""
    if isinstance(value, (Transfer, TransferOrder, CertifiedTransferOrder, ConfirmationOrder)):
        s = value.__getstate__()
        fields = {k: state(v) for k, v in s["__dict__"].items() if k in type(value).model_fields}
        return (type(value).__name__, fields, s["__pydantic_fields_set__"],
                s["__pydantic_extra__"], s["__pydantic_private__"])
    if isinstance(value, tuple):
        return tuple(state(v) for v in value)
    return value


def outcome(decoder: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", state(decoder(data))
    except FastPayError as exc:
        return "error", exc.wire_code


def envelope(tag: str, body: object) -> bytes:
    packed: bytes = msgpack.packb([PROTOCOL_VERSION, tag, body], use_bin_type=True)
    return packed


def assert_same(data: bytes) -> tuple[str, Any]:
    fast, model = outcome(decode, data), outcome(decode_validated, data)
    assert fast == model
    return fast


# --- strategies ----------------------------------------------------------------------

u64 = st.integers(0, U64_MAX)
transfers = st.builds(
    Transfer,
    sender=st.binary(min_size=32, max_size=32),
    recipient=st.binary(min_size=32, max_size=32),
    amount=u64,
    sequence_number=u64,
    user_data=st.none() | st.binary(max_size=MAX_USER_DATA_LENGTH),
)
orders = st.builds(TransferOrder, transfer=transfers,
                   signature=st.binary(min_size=64, max_size=64))
names = st.text(min_size=1, max_size=MAX_AUTHORITY_NAME_LENGTH)
certificates = st.builds(
    CertifiedTransferOrder,
    value=orders,
    signatures=st.lists(st.tuples(names, st.binary(min_size=64, max_size=64)),
                        max_size=8).map(tuple),
)
confirmations = st.builds(ConfirmationOrder, certificate=certificates)
hot_messages = orders | confirmations | certificates

# Values that sit on or just past a rule of docs/protocol.md section 3.
TRICKY = [
    None, True, False, 0, 1, -1, U64_MAX, -(2**63), 1.0, "", "a", "x" * 64, "x" * 65,
    b"", b"\x00" * 31, b"\x00" * 32, b"\x00" * 33, b"\x00" * 63, b"\x00" * 64, b"\x00" * 65,
    b"\x00" * MAX_USER_DATA_LENGTH, b"\x00" * (MAX_USER_DATA_LENGTH + 1), [], [[]], {},
    {"a": 1}, ["auth0", b"\x00" * 64], [b"\x00" * 32] * 5, "é" * 64, "é" * 65,
]
tricky = st.sampled_from(TRICKY)


def _paths(body: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix]
    if isinstance(body, list):
        for i, item in enumerate(body):
            out += _paths(item, (*prefix, i))
    return out


def _replace(body: Any, path: tuple[int, ...], value: Any) -> Any:
    if not path:
        return value
    copy = list(body)
    copy[path[0]] = _replace(copy[path[0]], path[1:], value)
    return copy


# --- golden and hand-picked cases -----------------------------------------------------


@pytest.mark.parametrize("name", [n for n in GOLDEN_HEX if n in HOT])
def test_decode_golden_hot_messages_equal_model_path(name: str):
    data = bytes.fromhex(GOLDEN_HEX[name])
    assert assert_same(data)[0] == "ok"
    assert encode(decode(data)) == data


@pytest.mark.parametrize("name", sorted(GOLDEN_HEX))
def test_decode_golden_every_message_equals_model_path(name: str):
    assert assert_same(bytes.fromhex(GOLDEN_HEX[name]))[0] == "ok"


def test_decode_hot_model_is_usable_like_a_validated_one():
    data = bytes.fromhex(GOLDEN_HEX["ConfirmationOrder"])
    fast, model = decode(data), decode_validated(data)
    assert isinstance(fast, ConfirmationOrder) and isinstance(model, ConfirmationOrder)
    assert fast.model_dump() == model.model_dump()  # before any cached property is read
    assert fast == model and model == fast
    transfer, reference = fast.certificate.value.transfer, model.certificate.value.transfer
    for name in ("canonical_bytes", "order_signing_bytes", "vote_signing_bytes"):
        assert getattr(transfer, name) == getattr(reference, name)
    assert transfer.canonical_bytes.hex() == GOLDEN_CANONICAL_TRANSFER
    copy = transfer.model_copy(update={"amount": 1})
    assert copy.amount == 1 and copy.canonical_bytes != transfer.canonical_bytes
    fresh = Transfer(**{**transfer.model_dump(), "amount": 1})
    assert copy.canonical_bytes == fresh.canonical_bytes
    assert transfer != copy
    with pytest.raises(Exception):  # noqa: B017 - frozen, as validated models are
        transfer.amount = 5  # type: ignore[misc]


def test_decode_accepts_non_canonical_encodings_like_the_model_path():
    order = decode(bytes.fromhex(GOLDEN_HEX["TransferOrder"]))
    assert isinstance(order, TransferOrder)
    t = order.transfer
    body = (
        b"\x92"  # order: fixarray(2)
        + b"\xdc\x00\x05"  # transfer: array16(5)
        + b"\xc5\x00\x20" + t.sender  # bin16
        + b"\xc6\x00\x00\x00\x20" + t.recipient  # bin32
        + b"\xcf" + t.amount.to_bytes(8, "big")  # uint64 for a small amount
        + b"\xd0\x07"  # int8 for sequence number 7
        + b"\xc4\x06coffee"
        + b"\xc4\x40" + order.signature
    )
    data = b"\x93\x01\xd9\x0dTransferOrder" + body  # str8 tag
    assert assert_same(data) == ("ok", state(order))


@pytest.mark.parametrize("body", [
    [],
    [None, None],
    [[b"\x00" * 32] * 2 + [1, 0, None], b"\x00" * 64, b"extra"],
])
def test_decode_rejects_wrong_order_shapes(body: object):
    assert assert_same(envelope("TransferOrder", body)) == ("error", InvalidMessage.code)


def test_decode_certificate_entry_limit_is_the_model_limit():
    order = decode(bytes.fromhex(GOLDEN_HEX["TransferOrder"]))
    assert isinstance(order, TransferOrder)
    entry = ["a", b"\x00" * 64]
    for n, expected in [(MAX_CERTIFICATE_SIGNATURES, "ok"),
                        (MAX_CERTIFICATE_SIGNATURES + 1, "error")]:
        body = [[message_body(order), [entry] * n]]
        assert assert_same(envelope("ConfirmationOrder", body))[0] == expected


@pytest.mark.parametrize("name", HOT)
def test_decode_every_single_field_mutation_same_verdict_as_model_path(name: str):
    message = decode(bytes.fromhex(GOLDEN_HEX[name]))
    body = message_body(message)
    verdicts = set()
    for path in _paths(body):
        for value in TRICKY:
            verdicts.add(assert_same(envelope(name, _replace(body, path, value)))[0])
    assert verdicts == {"ok", "error"}


def test_parse_body_of_a_stored_certificate_takes_the_same_path():
    cert = decode(bytes.fromhex(GOLDEN_HEX["CertifiedTransferOrder"]))
    assert isinstance(cert, CertifiedTransferOrder)
    assert state(decode_body(encode_body(cert), CertifiedTransferOrder)) == state(cert)
    with pytest.raises(InvalidMessage):
        decode_body(msgpack.packb([1, 2]), CertifiedTransferOrder)


# --- properties ------------------------------------------------------------------------


@settings(settings.get_profile("codec-fast"), max_examples=300)
@given(hot_messages)
def test_decode_round_trip_equals_model_path(message: Message):
    data = encode(message)
    assert assert_same(data) == ("ok", state(message))
    decoded = decode(data)
    assert encode(decoded) == data
    transfer = decoded.transfer if isinstance(decoded, TransferOrder) else (
        decoded.certificate if isinstance(decoded, ConfirmationOrder) else decoded).value.transfer
    assert transfer.vote_signing_bytes == Transfer(**transfer.model_dump()).vote_signing_bytes


@settings(settings.get_profile("codec-fast"), max_examples=600)
@given(hot_messages, st.data())
def test_decode_mutated_fields_same_verdict_as_model_path(message: Message,
                                                          data: st.DataObject):
    body = message_body(message)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(body)))
        body = _replace(body, path, data.draw(tricky))
    assert_same(envelope(type(message).__name__, body))


@settings(settings.get_profile("codec-fast"), max_examples=300)
@given(st.sampled_from(HOT), st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), U64_MAX) | st.floats()
    | st.binary(max_size=70) | st.text(max_size=70),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=3), children, max_size=2),
    max_leaves=40,
))
def test_decode_arbitrary_bodies_same_verdict_as_model_path(tag: str, body: object):
    assert_same(envelope(tag, body))


@settings(settings.get_profile("codec-fast"), max_examples=300)
@given(hot_messages, st.data())
def test_decode_mutated_bytes_same_verdict_as_model_path(message: Message,
                                                         data: st.DataObject):
    raw = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    assert_same(bytes(raw))
