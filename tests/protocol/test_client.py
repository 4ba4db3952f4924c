"""ClientState: signing, votes, certificates, confirmations, recovery and receiving."""

from __future__ import annotations

import pytest
from protocol_helpers import Network, keypair, make_transfer

from protocol import (
    AccountInfoResponse,
    CertificateRequiresQuorum,
    CertifiedTransferOrder,
    ClientState,
    ConfirmationOrder,
    IncorrectTransferAmount,
    InMemoryClientStore,
    InsufficientFunding,
    InvalidSignature,
    SignedTransferOrder,
    TransferAlreadyPending,
    TransferOrder,
    UnknownSigner,
    WrongRecipient,
)


@pytest.fixture
def net() -> Network:
    return Network()


@pytest.fixture
def alice(net: Network) -> ClientState:
    return net.client("alice", 100)


@pytest.fixture
def bob(net: Network) -> ClientState:
    return net.client("bob")


# --- start_transfer ------------------------------------------------------------------


def test_start_transfer_signs_and_persists_before_returning(alice: ClientState, bob: ClientState):
    order = alice.start_transfer(bob.address, 10, user_data=b"coffee")
    store = alice.store
    assert isinstance(store, InMemoryClientStore) and store.record is not None
    assert store.record.pending_order == order
    assert order.transfer.sender == alice.address
    assert order.transfer.sequence_number == 0 and order.transfer.user_data == b"coffee"
    assert alice.pending_order == order and alice.balance == 100


def test_start_transfer_refuses_while_pending(alice: ClientState, bob: ClientState):
    alice.start_transfer(bob.address, 10)
    with pytest.raises(TransferAlreadyPending):
        alice.start_transfer(bob.address, 5)


def test_start_transfer_insufficient_balance(alice: ClientState, bob: ClientState):
    with pytest.raises(InsufficientFunding) as info:
        alice.start_transfer(bob.address, 101)
    assert info.value.current_balance == 100
    assert alice.pending_order is None


def test_start_transfer_zero_amount(alice: ClientState, bob: ClientState):
    with pytest.raises(IncorrectTransferAmount):
        alice.start_transfer(bob.address, 0)


# --- handle_vote ---------------------------------------------------------------------


def test_handle_vote_certificate_at_quorum(net: Network, alice: ClientState, bob: ClientState):
    order = alice.start_transfer(bob.address, 10)
    votes = net.votes(order)
    assert alice.handle_vote(votes[0]) is None
    assert alice.handle_vote(votes[1]) is None
    assert len(alice.votes) == 2 and alice.balance == 100
    cert = alice.handle_vote(votes[2])
    assert cert is not None and cert.value == order
    assert [name for name, _ in cert.signatures] == ["auth0", "auth1", "auth2"]
    assert alice.certificate == cert and alice.pending_order is None
    assert alice.balance == 90 and alice.next_sequence_number == 1
    # Late vote after the certificate: ignored.
    assert alice.handle_vote(votes[3]) is None
    assert alice.certificate == cert


def test_handle_vote_self_payment_balance_right_at_once(net: Network, alice: ClientState):
    order = alice.start_transfer(alice.address, 30)
    for vote in net.votes(order)[:3]:
        cert = alice.handle_vote(vote)
    assert cert is not None
    assert alice.balance == 100 and alice.next_sequence_number == 1
    assert alice.record.sent_log == (cert,) and alice.record.received_log == (cert,)
    # The credit coming back (sync, delivery) is not counted twice.
    assert alice.receive_certificate(cert) == 0 and alice.balance == 100


def test_handle_vote_dedups_by_authority(net: Network, alice: ClientState, bob: ClientState):
    order = alice.start_transfer(bob.address, 10)
    vote = net.votes(order, ["auth0"])[0]
    for _ in range(5):
        assert alice.handle_vote(vote) is None
    assert len(alice.votes) == 1


def test_handle_vote_ignores_vote_for_other_order(
    net: Network, alice: ClientState, bob: ClientState
):
    alice.start_transfer(bob.address, 10)
    other = make_transfer(keypair("client/alice"), bob.address, 99)
    # A Byzantine authority signs an order Alice never made; it does not count.
    vote = SignedTransferOrder.sign(other, "auth0", net.authority_keys["auth0"])
    assert alice.handle_vote(vote) is None
    assert alice.votes == ()


def test_handle_vote_bad_signature(net: Network, alice: ClientState, bob: ClientState):
    order = alice.start_transfer(bob.address, 10)
    garbage = SignedTransferOrder(value=order, authority="auth1", signature=bytes(64))
    with pytest.raises(InvalidSignature):
        alice.handle_vote(garbage)
    # A vote signed by auth2 but claiming to be auth1's.
    stolen = SignedTransferOrder.sign(order, "auth1", net.authority_keys["auth2"])
    with pytest.raises(InvalidSignature):
        alice.handle_vote(stolen)
    assert alice.votes == ()


def test_handle_vote_non_member(alice: ClientState, bob: ClientState):
    order = alice.start_transfer(bob.address, 10)
    vote = SignedTransferOrder.sign(order, "intruder", keypair("intruder"))
    with pytest.raises(UnknownSigner):
        alice.handle_vote(vote)


def test_handle_vote_without_pending_order(net: Network, alice: ClientState, bob: ClientState):
    order = make_transfer(keypair("client/alice"), bob.address, 10)
    vote = SignedTransferOrder.sign(order, "auth0", net.authority_keys["auth0"])
    assert alice.handle_vote(vote) is None


# --- confirmations -------------------------------------------------------------------


def test_authorities_needing_confirmation_tracks_delivery(
    net: Network, alice: ClientState, bob: ClientState
):
    assert alice.authorities_needing_confirmation() == set()
    assert alice.is_transfer_complete  # nothing outstanding yet
    order = alice.start_transfer(bob.address, 10)
    assert not alice.is_transfer_complete
    for vote in net.votes(order):
        alice.handle_vote(vote)
    assert alice.authorities_needing_confirmation() == set(net.names)
    assert not alice.is_transfer_complete
    confirmation = alice.confirmation_order
    assert confirmation is not None
    for name in ["auth0", "auth1"]:
        net.authorities[name].handle_confirmation_order(confirmation)
        alice.confirmation_delivered(name)
    alice.confirmation_delivered("not-a-member")
    assert alice.authorities_needing_confirmation() == {"auth2", "auth3"}
    assert not alice.is_transfer_complete
    alice.confirmation_delivered("auth2")
    assert alice.is_transfer_complete
    assert alice.certificate_for(0) == alice.certificate
    assert alice.certificate_for(1) is None


# --- receive_certificate -------------------------------------------------------------


def test_receive_certificate_credits_exactly_once(
    net: Network, alice: ClientState, bob: ClientState
):
    cert = net.pay(alice, bob.address, 25)
    assert bob.receive_certificate(cert) == 25
    assert bob.receive_certificate(cert) == 0
    assert bob.balance == 25
    # Bob can spend it.
    net.pay(bob, alice.address, 20)
    assert bob.balance == 5


def test_receive_certificate_wrong_recipient(net: Network, alice: ClientState, bob: ClientState):
    cert = net.pay(alice, bob.address, 25)
    with pytest.raises(WrongRecipient):
        alice.receive_certificate(cert)


def test_receive_certificate_invalid(net: Network, alice: ClientState, bob: ClientState):
    order = alice.start_transfer(bob.address, 25)
    weak = net.certificate(order, ["auth0", "auth1"])
    with pytest.raises(CertificateRequiresQuorum):
        bob.receive_certificate(weak)
    forged = CertifiedTransferOrder(
        value=order, signatures=(*weak.signatures, ("auth2", bytes(64)))
    )
    with pytest.raises(InvalidSignature):
        bob.receive_certificate(forged)
    assert bob.balance == 0


def test_receive_certificate_survives_restart(net: Network, alice: ClientState, bob: ClientState):
    cert = net.pay(alice, bob.address, 25)
    bob.receive_certificate(cert)
    restarted = ClientState(bob.keypair, net.committee, bob.store)
    assert restarted.balance == 25
    assert restarted.receive_certificate(cert) == 0


def test_receive_certificate_keeps_the_first_source(
    net: Network, alice: ClientState, bob: ClientState
):
    # Handed over first, then found at an authority: credited once, still "direct";
    # found at an authority first, then handed over: still "authority:auth1".
    first = net.pay(alice, bob.address, 25)
    second = net.pay(alice, bob.address, 5)
    assert bob.receive_certificate(first) == 25
    info = net.authorities["auth1"].handle_account_info_request(bob.account_info_request(None, 0))
    bob.handle_account_info_response("auth1", info)
    assert bob.receive_certificate(second) == 0
    assert bob.balance == 30
    assert bob.record.received_log == (first, second)
    assert bob.record.received_from == ("direct", "authority:auth1")
    restarted = ClientState(bob.keypair, net.committee, bob.store)
    assert restarted.record.received_from == ("direct", "authority:auth1")


def test_payment_to_self_is_recorded_as_self(net: Network, alice: ClientState):
    net.pay(alice, alice.address, 10)
    assert alice.record.received_from == ("self",) and alice.balance == 100


# --- handle_account_info_response (recovery) -----------------------------------------


def test_handle_account_info_response_recovers_lost_pending_order(
    net: Network, alice: ClientState, bob: ClientState
):
    order = alice.start_transfer(bob.address, 10)
    net.votes(order, ["auth0", "auth1"])  # two votes were given, then Alice lost everything
    fresh = ClientState(alice.keypair, net.committee, InMemoryClientStore(), genesis_balance=100)
    certificate = None
    for name in net.names:
        info = net.authorities[name].handle_account_info_request(fresh.account_info_request())
        assert fresh.handle_account_info_response(name, info) is None
    assert fresh.pending_order == order and len(fresh.votes) == 2
    # Finish it: the remaining authorities vote for the recovered order.
    for vote in net.votes(order, ["auth2", "auth3"]):
        certificate = fresh.handle_vote(vote) or certificate
    assert certificate is not None and certificate.value == order
    assert fresh.balance == 90


def test_handle_account_info_response_recovers_lost_certificate(
    net: Network, alice: ClientState, bob: ClientState
):
    cert = net.pay(alice, bob.address, 10)
    fresh = ClientState(alice.keypair, net.committee, InMemoryClientStore(), genesis_balance=100)
    info = net.authorities["auth0"].handle_account_info_request(fresh.account_info_request())
    follow_up = fresh.handle_account_info_response("auth0", info)
    assert follow_up is not None and follow_up.request_sequence_number == 0
    info = net.authorities["auth0"].handle_account_info_request(follow_up)
    assert fresh.handle_account_info_response("auth0", info) is None
    assert fresh.certificate == cert
    assert (fresh.next_sequence_number, fresh.balance) == (1, 90)
    assert "auth0" not in fresh.authorities_needing_confirmation()


def test_handle_account_info_response_ingests_received_transfers(
    net: Network, alice: ClientState, bob: ClientState
):
    net.pay(alice, bob.address, 10)
    net.pay(alice, bob.address, 5)
    info = net.authorities["auth2"].handle_account_info_request(bob.account_info_request(None, 0))
    bob.handle_account_info_response("auth2", info)
    assert bob.balance == 15
    bob.handle_account_info_response("auth2", info)
    assert bob.balance == 15


def test_handle_account_info_response_ignores_forgeries(
    net: Network, alice: ClientState, bob: ClientState
):
    # A Byzantine authority invents a pending order in Alice's name, signed by itself.
    invented = make_transfer(keypair("client/bob"), bob.address, 50)
    fake_order = TransferOrder(
        transfer=invented.transfer.model_copy(update={"sender": alice.address}),
        signature=invented.signature,
    )
    vote = SignedTransferOrder.sign(fake_order, "auth3", net.authority_keys["auth3"])
    response = AccountInfoResponse(
        sender=alice.address, balance=10**6, next_sequence_number=0, pending_confirmation=vote
    )
    assert alice.handle_account_info_response("auth3", response) is None
    assert alice.pending_order is None and alice.balance == 100
    # A vote claiming another authority's name is ignored as well.
    assert alice.handle_account_info_response("auth2", response) is None
    # A response about someone else, or from a non-member, is ignored.
    other = AccountInfoResponse(sender=bob.address, balance=1, next_sequence_number=0)
    assert alice.handle_account_info_response("auth0", other) is None
    assert alice.handle_account_info_response("nobody", response) is None
    assert alice.balance == 100


# --- whole flows ---------------------------------------------------------------------


def test_client_payment_chain_between_objects(net: Network, alice: ClientState, bob: ClientState):
    carol = net.client("carol")
    cert = net.pay(alice, bob.address, 60)
    bob.receive_certificate(cert)
    cert2 = net.pay(bob, carol.address, 50)
    assert carol.receive_certificate(ConfirmationOrder(certificate=cert2).certificate) == 50
    for name in net.names:
        assert net.balance(name, alice.address) == 40
        assert net.balance(name, bob.address) == 10
        assert net.balance(name, carol.address) == 50
    assert (alice.balance, bob.balance, carol.balance) == (40, 10, 50)
