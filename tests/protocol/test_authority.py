"""AuthorityState: the reference's transfer-order and confirmation cases, in memory."""

from __future__ import annotations

import pytest
from protocol_helpers import Network, keypair, make_transfer

from protocol import (
    AccountInfoRequest,
    AccountState,
    AuthorityState,
    CertificateAuthorityReuse,
    CertificateNotFound,
    CertificateRequiresQuorum,
    CertifiedTransferOrder,
    ConfirmationOrder,
    IncorrectTransferAmount,
    InsufficientFunding,
    InvalidSequenceNumber,
    InvalidSignature,
    MissingEarlierConfirmations,
    PreviousTransferMustBeConfirmedFirst,
    SignedTransferOrder,
    TransferOrder,
    UnexpectedSequenceNumber,
    UnknownSenderAccount,
    UnknownSigner,
    verify_vote,
)
from protocol.messages import U64_MAX

ALICE = keypair("alice")
BOB = keypair("bob")


@pytest.fixture
def net() -> Network:
    network = Network()
    network.fund(ALICE.public_key, 100)
    return network


@pytest.fixture
def auth(net: Network) -> AuthorityState:
    return net.authorities["auth0"]


def state(auth: AuthorityState, address: bytes) -> AccountState:
    account = auth.store.load_account(address)
    assert account is not None
    return account


# --- handle_transfer_order -----------------------------------------------------------


def test_handle_transfer_order_ok_votes_and_stages_pending(net: Network, auth: AuthorityState):
    order = make_transfer(ALICE, BOB.public_key, 10)
    vote = auth.handle_transfer_order(order)
    assert vote.value == order and vote.authority == "auth0"
    verify_vote(vote, net.committee)
    # The vote is in the store (staged) before it left the handler.
    assert state(auth, ALICE.public_key).pending_confirmation == vote
    # Voting moves no money.
    assert state(auth, ALICE.public_key).balance == 100


def test_handle_transfer_order_bad_signature(auth: AuthorityState):
    order = make_transfer(ALICE, BOB.public_key, 10)
    forged = TransferOrder(transfer=order.transfer, signature=BOB.sign(b"x"))
    with pytest.raises(InvalidSignature):
        auth.handle_transfer_order(forged)
    assert state(auth, ALICE.public_key).pending_confirmation is None


def test_handle_transfer_order_signature_by_other_key(auth: AuthorityState):
    order = make_transfer(ALICE, BOB.public_key, 10)
    by_bob = TransferOrder(
        transfer=order.transfer, signature=BOB.sign(order.transfer.order_signing_bytes)
    )
    with pytest.raises(InvalidSignature):
        auth.handle_transfer_order(by_bob)


def test_handle_transfer_order_vote_signature_is_not_an_order_signature(auth: AuthorityState):
    # The sender signs the transfer under the *vote* domain: must not pass as an order.
    order = make_transfer(ALICE, BOB.public_key, 10)
    wrong_domain = TransferOrder(
        transfer=order.transfer, signature=ALICE.sign(order.transfer.vote_signing_bytes)
    )
    with pytest.raises(InvalidSignature):
        auth.handle_transfer_order(wrong_domain)


def test_handle_transfer_order_zero_amount(auth: AuthorityState):
    with pytest.raises(IncorrectTransferAmount):
        auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 0))
    assert state(auth, ALICE.public_key).pending_confirmation is None


def test_handle_transfer_order_max_sequence_number(auth: AuthorityState):
    with pytest.raises(InvalidSequenceNumber):
        auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 1, U64_MAX))


def test_handle_transfer_order_unknown_sender_account(auth: AuthorityState):
    with pytest.raises(UnknownSenderAccount):
        auth.handle_transfer_order(make_transfer(BOB, ALICE.public_key, 1))
    assert auth.store.load_account(BOB.public_key) is None


def test_handle_transfer_order_unexpected_sequence_number(auth: AuthorityState):
    with pytest.raises(UnexpectedSequenceNumber) as info:
        auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 1, sequence_number=1))
    assert info.value.expected == 0
    assert info.value.code == "UnexpectedSequenceNumber"


def test_handle_transfer_order_insufficient_funding(auth: AuthorityState):
    with pytest.raises(InsufficientFunding) as info:
        auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 101))
    assert info.value.current_balance == 100
    assert state(auth, ALICE.public_key).pending_confirmation is None


def test_handle_transfer_order_whole_balance_is_allowed(auth: AuthorityState):
    vote = auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 100))
    assert vote.value.transfer.amount == 100


def test_handle_transfer_order_same_order_twice_same_vote(auth: AuthorityState):
    order = make_transfer(ALICE, BOB.public_key, 10)
    first = auth.handle_transfer_order(order)
    writes = auth.store.writes  # type: ignore[attr-defined]
    second = auth.handle_transfer_order(order)
    assert second == first
    assert auth.store.writes == writes  # type: ignore[attr-defined]


def test_handle_transfer_order_conflicting_order_while_pending(auth: AuthorityState):
    first = auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 10))
    carol = keypair("carol").public_key
    for conflicting in (
        make_transfer(ALICE, BOB.public_key, 11),
        make_transfer(ALICE, carol, 10),
        make_transfer(ALICE, BOB.public_key, 10, user_data=b"memo"),
        make_transfer(ALICE, BOB.public_key, 10, sequence_number=1),
    ):
        with pytest.raises(PreviousTransferMustBeConfirmedFirst) as info:
            auth.handle_transfer_order(conflicting)
        assert info.value.pending_sequence_number == 0
    assert state(auth, ALICE.public_key).pending_confirmation == first


def test_handle_transfer_order_survives_restart(net: Network, auth: AuthorityState):
    # A crash loses the object, not the store: the restarted authority keeps its word.
    order = make_transfer(ALICE, BOB.public_key, 10)
    vote = auth.handle_transfer_order(order)
    restarted = AuthorityState("auth0", auth.keypair, net.committee, auth.store)
    assert restarted.handle_transfer_order(order) == vote
    with pytest.raises(PreviousTransferMustBeConfirmedFirst):
        restarted.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 20))


def test_handle_transfer_order_next_sequence_after_confirmation(net: Network):
    order = make_transfer(ALICE, BOB.public_key, 10)
    net.confirm(net.certificate(order))
    auth = net.authorities["auth1"]
    with pytest.raises(UnexpectedSequenceNumber):
        auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 10, sequence_number=0))
    vote = auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 90, sequence_number=1))
    assert vote.value.transfer.sequence_number == 1
    with pytest.raises(PreviousTransferMustBeConfirmedFirst):
        auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 5, sequence_number=1))


# --- handle_confirmation_order -------------------------------------------------------


def test_handle_confirmation_order_ok(net: Network):
    order = make_transfer(ALICE, BOB.public_key, 30)
    cert = net.certificate(order, ["auth0", "auth1", "auth2"])
    outcome = net.authorities["auth0"].handle_confirmation_order(
        ConfirmationOrder(certificate=cert)
    )
    assert outcome.applied
    assert (outcome.sender, outcome.recipient, outcome.sequence_number, outcome.amount) == (
        ALICE.public_key,
        BOB.public_key,
        0,
        30,
    )
    ack = outcome.to_ack()
    assert (ack.sender, ack.sequence_number, ack.applied) == (ALICE.public_key, 0, True)
    alice = state(net.authorities["auth0"], ALICE.public_key)
    assert alice.balance == 70
    assert alice.next_sequence_number == 1
    assert alice.pending_confirmation is None
    assert alice.confirmed_log == (cert,)
    assert outcome.sender_state == alice
    bob = state(net.authorities["auth0"], BOB.public_key)
    assert bob.balance == 30 and bob.received_log == (cert,) and bob.next_sequence_number == 0


def test_handle_confirmation_order_at_authority_that_did_not_vote(net: Network):
    cert = net.certificate(make_transfer(ALICE, BOB.public_key, 30), ["auth0", "auth1", "auth2"])
    outcome = net.authorities["auth3"].handle_confirmation_order(
        ConfirmationOrder(certificate=cert)
    )
    assert outcome.applied
    assert net.balance("auth3", ALICE.public_key) == 70
    assert net.balance("auth3", BOB.public_key) == 30


def test_handle_confirmation_order_too_little_weight(net: Network, auth: AuthorityState):
    cert = net.certificate(make_transfer(ALICE, BOB.public_key, 30), ["auth0", "auth1"])
    with pytest.raises(CertificateRequiresQuorum):
        auth.handle_confirmation_order(ConfirmationOrder(certificate=cert))
    assert state(auth, ALICE.public_key).balance == 100


def test_handle_confirmation_order_duplicate_signer(net: Network, auth: AuthorityState):
    cert = net.certificate(make_transfer(ALICE, BOB.public_key, 30), ["auth0", "auth1"])
    doubled = CertifiedTransferOrder(
        value=cert.value, signatures=(*cert.signatures, cert.signatures[0])
    )
    with pytest.raises(CertificateAuthorityReuse):
        auth.handle_confirmation_order(ConfirmationOrder(certificate=doubled))
    assert state(auth, ALICE.public_key).next_sequence_number == 0


def test_handle_confirmation_order_non_member(net: Network, auth: AuthorityState):
    order = make_transfer(ALICE, BOB.public_key, 30)
    cert = net.certificate(order, ["auth0", "auth1"])
    outsider = keypair("authority/outsider")
    stranger = SignedTransferOrder.sign(order, "outsider", outsider)
    forged = CertifiedTransferOrder(
        value=order, signatures=(*cert.signatures, ("outsider", stranger.signature))
    )
    with pytest.raises(UnknownSigner):
        auth.handle_confirmation_order(ConfirmationOrder(certificate=forged))


def test_handle_confirmation_order_bad_signature(net: Network, auth: AuthorityState):
    order = make_transfer(ALICE, BOB.public_key, 30)
    cert = net.certificate(order, ["auth0", "auth1"])
    # auth2's "vote" signs something else.
    bogus = ("auth2", net.authority_keys["auth2"].sign(b"not the transfer"))
    forged = CertifiedTransferOrder(value=order, signatures=(*cert.signatures, bogus))
    with pytest.raises(InvalidSignature):
        auth.handle_confirmation_order(ConfirmationOrder(certificate=forged))
    assert state(auth, ALICE.public_key).balance == 100


def test_handle_confirmation_order_client_signature_as_vote(net: Network, auth: AuthorityState):
    # An authority's key signing under the order domain is not a vote.
    order = make_transfer(ALICE, BOB.public_key, 30)
    cert = net.certificate(order, ["auth0", "auth1"])
    wrong_domain = ("auth2", net.authority_keys["auth2"].sign(order.transfer.order_signing_bytes))
    forged = CertifiedTransferOrder(value=order, signatures=(*cert.signatures, wrong_domain))
    with pytest.raises(InvalidSignature):
        auth.handle_confirmation_order(ConfirmationOrder(certificate=forged))


def test_handle_confirmation_order_replayed_is_noop(net: Network, auth: AuthorityState):
    cert = net.certificate(make_transfer(ALICE, BOB.public_key, 30))
    confirmation = ConfirmationOrder(certificate=cert)
    assert auth.handle_confirmation_order(confirmation).applied
    before_alice, before_bob = state(auth, ALICE.public_key), state(auth, BOB.public_key)
    writes = auth.store.writes  # type: ignore[attr-defined]
    replay = auth.handle_confirmation_order(confirmation)
    assert not replay.applied and not replay.to_ack().applied
    assert auth.store.writes == writes  # type: ignore[attr-defined]
    assert state(auth, ALICE.public_key) == before_alice
    assert state(auth, BOB.public_key) == before_bob


def test_handle_confirmation_order_future_sequence(net: Network, auth: AuthorityState):
    first = make_transfer(ALICE, BOB.public_key, 10, sequence_number=0)
    second = make_transfer(ALICE, BOB.public_key, 10, sequence_number=1)
    # Certify both by letting auth1..3 see the first confirmation, but not auth0.
    net.confirm(net.certificate(first), ["auth1", "auth2", "auth3"])
    cert2 = net.certificate(second, ["auth1", "auth2", "auth3"])
    with pytest.raises(MissingEarlierConfirmations) as info:
        auth.handle_confirmation_order(ConfirmationOrder(certificate=cert2))
    assert info.value.current_sequence_number == 0
    assert state(auth, ALICE.public_key).balance == 100


def test_handle_confirmation_order_recipient_credited_exactly_once(
    net: Network, auth: AuthorityState
):
    cert = net.certificate(make_transfer(ALICE, BOB.public_key, 30))
    for _ in range(3):
        auth.handle_confirmation_order(ConfirmationOrder(certificate=cert))
    bob = state(auth, BOB.public_key)
    assert bob.balance == 30
    assert bob.received_log == (cert,)
    assert state(auth, ALICE.public_key).balance == 70


def test_handle_confirmation_order_self_transfer(net: Network, auth: AuthorityState):
    cert = net.certificate(make_transfer(ALICE, ALICE.public_key, 30))
    auth.handle_confirmation_order(ConfirmationOrder(certificate=cert))
    alice = state(auth, ALICE.public_key)
    assert (alice.balance, alice.next_sequence_number) == (100, 1)
    assert alice.confirmed_log == (cert,) and alice.received_log == (cert,)


def test_handle_confirmation_order_unknown_sender_goes_negative(net: Network):
    # auth3 missed the payment that funded Bob; Bob's certified spend still applies there.
    net.confirm(
        net.certificate(make_transfer(ALICE, BOB.public_key, 30)), ["auth0", "auth1", "auth2"]
    )
    bob_pays = make_transfer(BOB, ALICE.public_key, 20)
    cert = net.certificate(bob_pays, ["auth0", "auth1", "auth2"])
    net.confirm(cert, ["auth3"])
    assert net.balance("auth3", BOB.public_key) == -20
    assert net.balance("auth3", ALICE.public_key) == 120
    # The missing credit then brings Bob back to the true balance.
    net.confirm(state(net.authorities["auth0"], ALICE.public_key).confirmed_log[0], ["auth3"])
    assert net.balance("auth3", BOB.public_key) == 10
    assert net.balance("auth3", ALICE.public_key) == 90


def test_handle_confirmation_order_weighted_committee():
    net = Network({"big": 3, "s1": 1, "s2": 1, "s3": 1})
    assert net.committee.quorum_threshold == 5
    net.fund(ALICE.public_key, 100)
    order = make_transfer(ALICE, BOB.public_key, 5)
    small = net.certificate(order, ["s1", "s2", "s3"])
    with pytest.raises(CertificateRequiresQuorum):
        net.authorities["s1"].handle_confirmation_order(ConfirmationOrder(certificate=small))
    enough = net.certificate(order, ["big", "s1", "s2"])
    assert (
        net.authorities["s3"]
        .handle_confirmation_order(ConfirmationOrder(certificate=enough))
        .applied
    )


# --- handle_account_info_request -----------------------------------------------------


def test_handle_account_info_request_ok(net: Network, auth: AuthorityState):
    vote = auth.handle_transfer_order(make_transfer(ALICE, BOB.public_key, 10))
    info = auth.handle_account_info_request(AccountInfoRequest(sender=ALICE.public_key))
    assert (info.sender, info.balance, info.next_sequence_number) == (ALICE.public_key, 100, 0)
    assert info.pending_confirmation == vote
    assert info.requested_certificate is None and info.requested_received_transfers == ()


def test_handle_account_info_request_unknown_account(auth: AuthorityState):
    with pytest.raises(UnknownSenderAccount):
        auth.handle_account_info_request(AccountInfoRequest(sender=BOB.public_key))


def test_handle_account_info_request_certificate(net: Network, auth: AuthorityState):
    cert = net.certificate(make_transfer(ALICE, BOB.public_key, 10))
    net.confirm(cert)
    info = auth.handle_account_info_request(
        AccountInfoRequest(sender=ALICE.public_key, request_sequence_number=0)
    )
    assert info.requested_certificate == cert
    with pytest.raises(CertificateNotFound):
        auth.handle_account_info_request(
            AccountInfoRequest(sender=ALICE.public_key, request_sequence_number=1)
        )


def test_handle_account_info_request_received_transfers_paging(net: Network, auth: AuthorityState):
    certs = []
    for seq in range(3):
        cert = net.certificate(make_transfer(ALICE, BOB.public_key, 1, sequence_number=seq))
        net.confirm(cert)
        certs.append(cert)
    info = auth.handle_account_info_request(
        AccountInfoRequest(sender=BOB.public_key, request_received_transfers_excluding_first_nth=1)
    )
    assert info.requested_received_transfers == tuple(certs[1:])
    assert info.balance == 3


# --- genesis -------------------------------------------------------------------------


def test_init_account_is_idempotent(auth: AuthorityState):
    assert not auth.init_account(ALICE.public_key, 5)
    assert state(auth, ALICE.public_key).balance == 100
    assert auth.init_account(BOB.public_key, 5)


def test_init_accounts_rejects_oversized_supply(auth: AuthorityState):
    with pytest.raises(ValueError):
        auth.init_accounts({BOB.public_key: 2**62, keypair("c").public_key: 2**62})
    with pytest.raises(ValueError):
        auth.init_account(b"short", 1)
    with pytest.raises(ValueError):
        auth.init_account(BOB.public_key, -1)


def test_authority_state_rejects_foreign_key(net: Network):
    with pytest.raises(ValueError):
        AuthorityState("auth0", keypair("someone"), net.committee, net.stores["auth0"])
