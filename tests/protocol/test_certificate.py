"""verify_certificate / verify_vote: the checks in the reference's order."""

from __future__ import annotations

import pytest
from protocol_helpers import Network, keypair, make_transfer

from protocol import (
    CertificateAuthorityReuse,
    CertificateRequiresQuorum,
    CertifiedTransferOrder,
    InvalidSignature,
    SignedTransferOrder,
    UnknownSigner,
    verify_certificate,
    verify_vote,
)

ALICE = keypair("alice")


def test_verify_certificate_checks_cheap_things_before_signatures():
    net = Network()
    order = make_transfer(ALICE, keypair("bob").public_key, 1)
    sigs = [(n, bytes(64)) for n in ("auth0", "auth1", "auth2")]  # all invalid signatures
    with pytest.raises(InvalidSignature):
        verify_certificate(CertifiedTransferOrder(value=order, signatures=sigs), net.committee)
    # Reuse is reported before membership, membership before weight, weight before signatures.
    with pytest.raises(CertificateAuthorityReuse):
        verify_certificate(
            CertifiedTransferOrder(value=order, signatures=[("auth0", bytes(64))] * 4),
            net.committee,
        )
    with pytest.raises(UnknownSigner):
        verify_certificate(
            CertifiedTransferOrder(value=order, signatures=[("x", bytes(64))]), net.committee
        )
    with pytest.raises(CertificateRequiresQuorum):
        verify_certificate(CertifiedTransferOrder(value=order, signatures=sigs[:2]), net.committee)


def test_verify_certificate_checks_client_signature():
    # As the reference's CertifiedTransferOrder::check: the sender's signature is checked
    # with the votes, so valid votes around a zeroed order signature are no certificate.
    net = Network()
    net.fund(ALICE.public_key, 10)
    order = make_transfer(ALICE, keypair("bob").public_key, 1)
    cert = net.certificate(order)
    tampered = CertifiedTransferOrder(
        value=order.model_copy(update={"signature": bytes(64)}), signatures=cert.signatures
    )
    verify_certificate(cert, net.committee)
    with pytest.raises(InvalidSignature, match="sender"):
        verify_certificate(tampered, net.committee)


def test_verify_vote():
    net = Network()
    order = make_transfer(ALICE, keypair("bob").public_key, 1)
    verify_vote(
        SignedTransferOrder.sign(order, "auth1", net.authority_keys["auth1"]), net.committee
    )
    with pytest.raises(InvalidSignature):
        verify_vote(
            SignedTransferOrder.sign(order, "auth1", net.authority_keys["auth0"]), net.committee
        )
    with pytest.raises(UnknownSigner):
        verify_vote(
            SignedTransferOrder.sign(order, "z", net.authority_keys["auth0"]), net.committee
        )
