"""Checking votes and certificates against the committee.

A certificate is valid when, in this order (the reference's order, cheapest
checks first so garbage costs no signature verification):

1. no authority appears twice (``CertificateAuthorityReuse``);
2. every signer is a committee member (``UnknownSigner``);
3. the signers' weight reaches the quorum threshold (``CertificateRequiresQuorum``);
4. the sender's own signature on the carried order verifies under the order
   domain, and every authority's signature under the vote domain
   (``InvalidSignature``).

The sender's signature is checked as the reference's
``CertifiedTransferOrder::check`` checks it (in the same batch as the votes):
a certificate is a signed order *and* a quorum of votes on it, so one whose
order signature is garbage is not a certificate, whatever the votes say.  Both
an authority (on a ConfirmationOrder) and a recipient (verifying a payment
alone) use :func:`verify_certificate`.
"""

from __future__ import annotations

from protocol.committee import Committee
from protocol.crypto import verify_signature
from protocol.errors import (
    CertificateAuthorityReuse,
    CertificateRequiresQuorum,
    InvalidSignature,
    UnknownSigner,
)
from protocol.messages import CertifiedTransferOrder, SignedTransferOrder


def verify_certificate(cert: CertifiedTransferOrder, committee: Committee) -> None:
    """Return None if ``cert`` is valid for ``committee``; raise the first failed check."""
    seen: set[str] = set()
    weight = 0
    for name, _ in cert.signatures:
        if name in seen:
            raise CertificateAuthorityReuse(f"authority {name!r} signed twice")
        seen.add(name)
        w = committee.weight(name)
        if w == 0:
            raise UnknownSigner(f"{name!r} is not a committee member")
        weight += w
    if weight < committee.quorum_threshold:
        raise CertificateRequiresQuorum(
            f"signers weigh {weight}, quorum is {committee.quorum_threshold}"
        )
    transfer = cert.value.transfer
    if not verify_signature(transfer.sender, transfer.order_signing_bytes, cert.value.signature):
        raise InvalidSignature("the sender's signature on the order does not verify")
    data = transfer.vote_signing_bytes
    members = committee.members
    for name, signature in cert.signatures:
        if not verify_signature(members[name].public_key, data, signature):
            raise InvalidSignature(f"signature of {name!r} does not verify")


def verify_vote(vote: SignedTransferOrder, committee: Committee) -> None:
    """Return None if ``vote`` is signed by the committee member it names; else raise.

    Raises UnknownSigner or InvalidSignature.  The client's order signature
    inside the vote is not checked here.
    """
    public_key = committee.public_key(vote.authority)
    if public_key is None:
        raise UnknownSigner(f"{vote.authority!r} is not a committee member")
    if not verify_signature(public_key, vote.value.transfer.vote_signing_bytes, vote.signature):
        raise InvalidSignature(f"vote of {vote.authority!r} does not verify")
