"""Codec: round trips, envelope checks, and decode never raising anything but FastPayError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_helpers import Network, keypair, make_transfer

from protocol import (
    PROTOCOL_VERSION,
    AccountInfoRequest,
    AccountInfoResponse,
    ConfirmationAck,
    ConfirmationOrder,
    Error,
    FastPayError,
    InvalidMessage,
    Message,
    TransferOrder,
    UnexpectedMessage,
    UnknownMessageType,
    UnsupportedVersion,
    decode,
    decode_as,
    encode,
)
from protocol.codec import MAX_FRAME_SIZE, WIRE_FIELDS, decode_body, encode_body, message_body

ALICE = keypair("alice")
BOB = keypair("bob")


def sample_messages() -> list[Message]:
    net = Network()
    net.fund(ALICE.public_key, 100)
    order = make_transfer(ALICE, BOB.public_key, 7, user_data=b"memo")
    vote = net.authorities["auth0"].handle_transfer_order(order)
    cert = net.certificate(order)
    net.confirm(cert)
    response = net.authorities["auth1"].handle_account_info_request(
        AccountInfoRequest(
            sender=BOB.public_key,
            request_sequence_number=None,
            request_received_transfers_excluding_first_nth=0,
        )
    )
    return [
        order.transfer,
        order,
        vote,
        cert,
        ConfirmationOrder(certificate=cert),
        ConfirmationAck(sender=ALICE.public_key, sequence_number=0, applied=True),
        AccountInfoRequest(sender=ALICE.public_key, request_sequence_number=3),
        response,
        AccountInfoResponse(
            sender=ALICE.public_key, balance=-5, next_sequence_number=1, pending_confirmation=vote
        ),
        Error(code="InvalidSignature", message="nope"),
    ]


MESSAGES = sample_messages()


def envelope(tag: str, body: object, version: object = PROTOCOL_VERSION) -> bytes:
    packed: bytes = msgpack.packb([version, tag, body], use_bin_type=True)
    return packed


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_encode_decode_round_trip(message: Message):
    data = encode(message)
    assert decode(data) == message
    assert encode(decode(data)) == data
    unpacked = msgpack.unpackb(data, raw=False)
    assert unpacked[0] == PROTOCOL_VERSION and unpacked[1] == type(message).__name__
    assert len(unpacked[2]) == len(WIRE_FIELDS[type(message).__name__])
    assert decode_body(encode_body(message), type(message)) == message
    assert message_body(message) == unpacked[2]


def test_decode_as_checks_type():
    order = MESSAGES[1]
    assert decode_as(encode(order), TransferOrder) == order
    with pytest.raises(UnexpectedMessage):
        decode_as(encode(order), ConfirmationOrder)


def test_decode_wrong_version():
    body = message_body(MESSAGES[1])
    with pytest.raises(UnsupportedVersion):
        decode(envelope("TransferOrder", body, version=2))
    with pytest.raises(InvalidMessage):
        decode(envelope("TransferOrder", body, version="1"))
    with pytest.raises(InvalidMessage):
        decode(envelope("TransferOrder", body, version=True))


def test_decode_unknown_tag():
    with pytest.raises(UnknownMessageType):
        decode(envelope("Transfr", []))
    with pytest.raises(InvalidMessage):
        decode(envelope(b"TransferOrder", []))  # type: ignore[arg-type]


def test_decode_rejects_invalid_fields():
    good = message_body(MESSAGES[0])  # Transfer body
    cases = [
        [good[0][:31], *good[1:]],  # short address
        [good[0], good[1], -1, *good[3:]],  # negative amount
        [good[0], good[1], True, *good[3:]],  # bool is not an int
        [good[0], good[1], 1.0, *good[3:]],  # float is not an int
        [good[0], good[1], 1, 2**64 - 1, b"x" * 257],  # user_data too long
        [good[0].hex(), *good[1:]],  # str where bytes are required
        good[:4],  # missing field
        [*good, None],  # extra field
        {"sender": good[0]},  # map instead of array
    ]
    for body in cases:
        with pytest.raises(InvalidMessage):
            decode(envelope("Transfer", body))


def test_decode_rejects_garbage_shapes():
    for data in [b"", b"\xc1", b"\x93\x01", msgpack.packb([1, "Error"]), msgpack.packb(42)]:
        with pytest.raises(InvalidMessage):
            decode(data)
    with pytest.raises(InvalidMessage):
        decode(encode(MESSAGES[1]) + b"\x00")  # trailing bytes
    with pytest.raises(InvalidMessage):
        decode(b"\x00" * (MAX_FRAME_SIZE + 1))
    with pytest.raises(InvalidMessage):
        decode("not bytes")  # type: ignore[arg-type]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=512))
def test_decode_arbitrary_bytes_raises_only_fastpay_errors(data: bytes):
    try:
        decode(data)
    except FastPayError:
        pass


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=70)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(sorted(WIRE_FIELDS)), msgpack_values)
def test_decode_arbitrary_bodies_raise_only_fastpay_errors(tag: str, body: object):
    try:
        decode(envelope(tag, body))
    except FastPayError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MESSAGES), st.data())
def test_decode_mutated_messages_raise_only_fastpay_errors(message: Message, data: st.DataObject):
    raw = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(raw))
    except FastPayError:
        return
    assert isinstance(decoded, type(decoded))
