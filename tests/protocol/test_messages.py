"""Messages: validation at construction, immutability, signing bytes."""

from __future__ import annotations

import msgpack
import pydantic
import pytest
from protocol_helpers import keypair, make_transfer

from protocol import (
    DOMAIN_TRANSFER_ORDER,
    DOMAIN_VOTE,
    U64_MAX,
    AccountInfoResponse,
    CertifiedTransferOrder,
    Error,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    verify_signature,
)

ALICE = keypair("alice")
BOB = keypair("bob")


def transfer(**changes: object) -> Transfer:
    fields: dict[str, object] = {
        "sender": ALICE.public_key,
        "recipient": BOB.public_key,
        "amount": 5,
        "sequence_number": 0,
    }
    fields.update(changes)
    return Transfer(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": -1},
        {"amount": U64_MAX + 1},
        {"amount": True},
        {"amount": "5"},
        {"sequence_number": -1},
        {"sequence_number": U64_MAX + 1},
        {"sender": b"\x00" * 31},
        {"recipient": "00" * 32},
        {"user_data": b"x" * 257},
        {"unexpected": 1},
    ],
)
def test_transfer_rejects_invalid_fields(changes: dict[str, object]):
    with pytest.raises(pydantic.ValidationError):
        transfer(**changes)


def test_transfer_bounds_accepted():
    t = transfer(amount=U64_MAX, sequence_number=U64_MAX, user_data=b"x" * 256)
    assert t.amount == U64_MAX


def test_messages_are_frozen():
    t = transfer()
    with pytest.raises(pydantic.ValidationError):
        t.amount = 6  # type: ignore[misc]


def test_transfer_canonical_bytes_and_domains():
    t = transfer(user_data=b"hi")
    assert t.canonical_bytes == msgpack.packb(
        [ALICE.public_key, BOB.public_key, 5, 0, b"hi"], use_bin_type=True
    )
    assert t.order_signing_bytes == DOMAIN_TRANSFER_ORDER + t.canonical_bytes
    assert t.vote_signing_bytes == DOMAIN_VOTE + t.canonical_bytes
    assert t.key == (ALICE.public_key, 0)


def test_transfer_model_copy_drops_cached_signing_bytes():
    t = transfer()
    stale = t.vote_signing_bytes
    changed = t.model_copy(update={"amount": 6})
    assert changed.vote_signing_bytes != stale
    assert changed.vote_signing_bytes == transfer(amount=6).vote_signing_bytes


def test_transfer_order_sign_verifies_under_order_domain_only():
    order = TransferOrder.sign(transfer(), ALICE)
    t = order.transfer
    assert verify_signature(ALICE.public_key, t.order_signing_bytes, order.signature)
    assert not verify_signature(ALICE.public_key, t.vote_signing_bytes, order.signature)


def test_signed_transfer_order_sign_verifies_under_vote_domain_only():
    authority = keypair("authority/auth0")
    vote = SignedTransferOrder.sign(make_transfer(ALICE, BOB.public_key, 5), "auth0", authority)
    t = vote.value.transfer
    assert verify_signature(authority.public_key, t.vote_signing_bytes, vote.signature)
    assert not verify_signature(authority.public_key, t.order_signing_bytes, vote.signature)


def test_certificate_accepts_lists_but_stays_strict():
    order = make_transfer(ALICE, BOB.public_key, 5)
    cert = CertifiedTransferOrder(value=order, signatures=[["a", bytes(64)]])  # type: ignore[list-item]
    assert cert.signatures == (("a", bytes(64)),)
    with pytest.raises(pydantic.ValidationError):
        CertifiedTransferOrder(value=order, signatures=[("a", "00" * 64)])  # type: ignore[list-item]
    with pytest.raises(pydantic.ValidationError):
        CertifiedTransferOrder(value=order, signatures=[("", bytes(64))])
    with pytest.raises(pydantic.ValidationError):
        CertifiedTransferOrder(value=order, signatures=[("a", bytes(64))] * 257)


def test_account_info_response_bounds():
    with pytest.raises(pydantic.ValidationError):
        AccountInfoResponse(sender=ALICE.public_key, balance=2**63, next_sequence_number=0)
    r = AccountInfoResponse(sender=ALICE.public_key, balance=-(2**63), next_sequence_number=0)
    assert r.requested_received_transfers == ()


def test_error_bounds():
    with pytest.raises(pydantic.ValidationError):
        Error(code="", message="x")
    with pytest.raises(pydantic.ValidationError):
        Error(code="X", message="x" * 1025)
