"""protocol.session, issue 15: the payer's hand-off retries, the payee's direct receipt
and its relay of received certificates to the authorities -- in memory, against real
authority states and real Ed25519 keys."""

from __future__ import annotations

from protocol_helpers import Network, SessionDriver, keypair

from protocol import CertifiedTransferOrder, ClientState, SignedTransferOrder
from protocol.session import (
    DeliverToPayee,
    PaymentReceived,
    PaymentSession,
    RelayDelivered,
    RelayRefused,
    SyncDone,
)

BOB = keypair("client/bob").public_key
CAROL = keypair("client/carol").public_key


def _payer(**kw: object) -> tuple[Network, ClientState, SessionDriver]:
    net = Network()
    alice = net.client("alice", 100)
    return net, alice, SessionDriver(net, PaymentSession(alice, 0.0, **kw))  # type: ignore[arg-type]


def _certificate_confirmed_at(net: Network, payer: ClientState, recipient: bytes, amount: int,
                              confirmed: list[str]) -> CertifiedTransferOrder:
    """The payer's certificate (votes of auth0..auth2), confirmed only at ``confirmed``."""
    order = payer.start_transfer(recipient, amount)
    cert = None
    for vote in net.votes(order, ["auth0", "auth1", "auth2"]):
        cert = payer.handle_vote(vote) or cert
    assert cert is not None
    net.confirm(cert, confirmed)
    return cert


# --- the payer's hand-off ----------------------------------------------------------------


def test_handoff_to_unreachable_payee_is_retried_with_back_off_until_delivered():
    net, alice, d = _payer(retry_after=2.0, max_retry_after=8.0, sync_interval=None)
    d.payee_down = True
    t = d.session.start(BOB, 10, d.clock)
    d.run(until=lambda d: len(d.handoff_attempts) >= 5)
    gaps = [b - a for a, b in zip(d.handoff_attempts, d.handoff_attempts[1:], strict=False)]
    assert gaps == [2.0, 4.0, 8.0, 8.0]
    assert d.session.pending_handoffs == [0]
    assert str(d.session.ticket(t).delivery).startswith("unreachable")
    d.payee_down = False
    d.run(until=lambda d: not d.session.pending_handoffs)
    assert d.session.ticket(t).delivery == "delivered" and len(d.delivered) == 1
    d.run()  # nothing is left: no further attempt, no timer
    assert len(d.handoff_attempts) == 6 and d.session.get_timer() is None


def test_handoff_is_retried_at_once_when_the_link_sees_the_payee():
    net, alice, d = _payer(retry_after=100.0, max_retry_after=100.0, sync_interval=None)
    d.payee_down = True
    d.session.start(BOB, 10, d.clock)
    d.run(until=lambda d: d.handoff_attempts and not d.session.has_work)
    assert d.session.get_timer() == 100.0
    d.clock = 1.0
    d.session.peers_changed(d.clock, payees={CAROL})  # somebody else came into range
    assert not any(isinstance(a, DeliverToPayee) for a in d.session.actions())
    d.session.peers_changed(d.clock, payees={BOB})
    d.payee_down = False
    d.step()
    assert d.handoff_attempts == [0.0, 1.0] and d.session.pending_handoffs == []


def test_handoff_retried_when_a_link_cannot_tell_who_is_in_range():
    net, alice, d = _payer(retry_after=100.0, max_retry_after=100.0, sync_interval=None)
    d.payee_down = True
    d.session.start(BOB, 10, d.clock)
    d.run(until=lambda d: d.handoff_attempts and not d.session.has_work)
    d.clock = 3.0
    d.session.peers_changed(d.clock)
    d.step()
    assert d.handoff_attempts == [0.0, 3.0]


def test_handoff_refused_or_not_attempted_is_not_retried():
    net, alice, d = _payer(retry_after=1.0, sync_interval=None)
    t = d.session.start(BOB, 10, d.clock)
    acts = []
    while not any(isinstance(a, DeliverToPayee) for a in acts):
        d.run(until=lambda d: d.session.ticket(t).certified)
        acts = d.session.actions()
    d.session.payee_answered(0, "refused: WrongRecipient", d.clock)
    assert d.session.pending_handoffs == []
    d.session.peers_changed(d.clock + 5)
    assert not any(isinstance(a, DeliverToPayee) for a in d.session.actions())


# --- the payee: direct receipt, provenance ------------------------------------------------


def test_direct_then_synced_payment_is_credited_once_and_stays_direct():
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob", 0)
    cert = net.pay(alice, bob.address, 30)
    bd = SessionDriver(net, PaymentSession(bob, 0.0, sync_interval=None))
    assert bd.session.receive(cert, "127.0.0.1:4000", 0.0) == 30
    sid = bd.session.sync(0.0)
    bd.run(until=lambda d: any(isinstance(e, SyncDone) and e.sync_id == sid
                               for e in d.events))
    received = bd.of(PaymentReceived)
    assert [(e.channel, e.peer, e.amount) for e in received] == [
        ("direct", "127.0.0.1:4000", 30)]
    assert bob.balance == 30 and bob.record.received_from == ("direct",)


def test_synced_then_handed_over_payment_keeps_its_authority_channel():
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob", 0)
    cert = net.pay(alice, bob.address, 30)
    bd = SessionDriver(net, PaymentSession(bob, 0.0, sync_interval=None))
    sid = bd.session.sync(0.0)
    bd.run(until=lambda d: any(isinstance(e, SyncDone) and e.sync_id == sid
                               for e in d.events))
    assert bd.session.receive(cert, "127.0.0.1:4000", bd.clock) == 0
    bd.run()
    assert [e.channel for e in bd.of(PaymentReceived)] == ["authority"]
    assert bob.balance == 30 and bob.record.received_from[0].startswith("authority:")


# --- the payee relays ------------------------------------------------------------------------


def test_payee_relays_a_certificate_confirmed_at_one_authority_and_spends_it():
    # Alice's certificate reached auth0 only; Bob holds it (handed over) and relays it to
    # the others, so they credit him and his own payment, bigger than his genesis, succeeds.
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob", 5)
    cert = _certificate_confirmed_at(net, alice, bob.address, 50, ["auth0"])
    assert [net.balance(n, bob.address) for n in net.names] == [55, 5, 5, 5]
    bd = SessionDriver(net, PaymentSession(bob, 0.0, sync_interval=None))
    assert bd.session.receive(cert, "alice", 0.0) == 50
    bd.run(until=lambda d: all(net.balance(n, bob.address) == 55 for n in net.names))
    relayed = {e.authority: e.applied for e in bd.of(RelayDelivered)}
    assert relayed == {"auth0": False, "auth1": True, "auth2": True, "auth3": True}
    t = bd.session.start(CAROL, 40, bd.clock)
    bd.run(until=lambda d: d.session.ticket(t).settled)
    assert bd.session.ticket(t).certified and bd.session.ticket(t).fully_propagated
    assert all(net.balance(n, CAROL) == 40 for n in net.names)
    assert all(net.balance(n, bob.address) == 15 for n in net.names)
    bd.run()  # nothing relayed twice
    assert len(bd.of(RelayDelivered)) == 4


def test_payee_does_not_relay_to_authorities_that_served_the_certificate():
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob", 5)
    cert = _certificate_confirmed_at(net, alice, bob.address, 50, ["auth0", "auth1"])
    bd = SessionDriver(net, PaymentSession(bob, 0.0, sync_interval=30.0))  # syncs at start
    bd.session.receive(cert, "alice", 0.0)
    bd.run(until=lambda d: all(net.balance(n, bob.address) == 55 for n in net.names))
    assert sorted(e.authority for e in bd.of(RelayDelivered)) == ["auth2", "auth3"]
    assert bob.balance == 55 and len(bd.of(PaymentReceived)) == 1


def test_relay_refused_by_an_authority_is_skipped_not_repeated():
    # Alice's first certificate reached auth0 only, her second one (paying Bob) nobody:
    # auth1..3 cannot settle the second without the first, so they refuse its relay, and
    # Bob's session moves on instead of asking them again and again.
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob", 0)
    _certificate_confirmed_at(net, alice, CAROL, 10, ["auth0"])
    order = alice.start_transfer(bob.address, 20)
    votes = [SignedTransferOrder.sign(order, n, net.authority_keys[n])
             for n in ("auth0", "auth1", "auth2")]
    second = CertifiedTransferOrder(value=order, signatures=tuple(
        sorted((v.authority, v.signature) for v in votes)))
    bd = SessionDriver(net, PaymentSession(bob, 0.0, sync_interval=None))
    assert bd.session.receive(second, "alice", 0.0) == 20
    bd.run()
    assert sorted(e.authority for e in bd.of(RelayRefused)) == ["auth1", "auth2", "auth3"]
    assert [e.authority for e in bd.of(RelayDelivered)] == ["auth0"]
    bd.clock += 1000.0
    bd.session.handle_timer(bd.clock)
    bd.run()
    assert len(bd.of(RelayRefused)) == 3 and bob.balance == 20


def test_mobile_payee_visits_authorities_for_a_direct_certificate_only():
    # On a one-group-at-a-time link, a certificate found at auth0 is not worth joining
    # auth1's group for; one handed over directly is.
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob", 0)
    synced = net.pay(alice, bob.address, 10)
    bd = SessionDriver(net, PaymentSession(bob, 0.0, max_parallel=1, sync_interval=None))
    bd.session.reachable(["auth0"], 0.0)
    sid = bd.session.sync(0.0)
    bd.run(until=lambda d: any(isinstance(e, SyncDone) and e.sync_id == sid
                               for e in d.events))
    assert bob.record.received_log == (synced,)
    bd.session.reachable(["auth1"], bd.clock)
    bd.run()
    assert bd.of(RelayDelivered) == []  # nothing made it worth joining auth1
    direct = _certificate_confirmed_at(net, alice, bob.address, 5, ["auth0"])
    bd.session.receive(direct, "alice", bd.clock)
    bd.run()
    relayed = [(e.authority, e.sequence_number, e.applied) for e in bd.of(RelayDelivered)]
    assert relayed == [("auth1", 0, False), ("auth1", 1, True)]
    assert bd.max_active == 1
