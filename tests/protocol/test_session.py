"""protocol.session: the payment session driven in memory against real authority states."""

from __future__ import annotations

from protocol import ClientState, InMemoryClientStore, InsufficientFunding
from protocol.session import (
    CertificateFormed,
    ConfirmationDelivered,
    Final,
    FullyPropagated,
    NoQuorum,
    OrderSigned,
    PaymentReceived,
    PaymentSession,
    SyncDone,
    TransferQueued,
)
from tests.protocol.protocol_helpers import Network, SessionDriver, keypair


def _setup(balance: int = 100, **kw: object) -> tuple[Network, ClientState, SessionDriver]:
    net = Network()
    alice = net.client("alice", balance)
    session = PaymentSession(alice, 0.0, **kw)  # type: ignore[arg-type]
    return net, alice, SessionDriver(net, session)


BOB = keypair("client/bob").public_key


def test_transfer_reaches_every_authority():
    net, alice, d = _setup()
    t = d.session.start(BOB, 10, d.clock)
    d.run(until=lambda d: d.session.ticket(t).settled)
    state = d.session.ticket(t)
    assert state.certified and state.final and state.fully_propagated
    assert d.of(CertificateFormed) and d.of(Final) and d.of(FullyPropagated)
    assert all(net.balance(n, BOB) == 10 for n in net.names)
    assert alice.balance == 90
    assert len(d.delivered) == 1


def test_previous_certificate_reaches_lagging_authorities_before_the_next_order():
    # The frozen-account reproduction: a certificate confirmed at 2 of 4, the other two
    # holding a pending vote for it; the next transfer must bring them up to date.
    net, alice, d = _setup()
    d.down = {"auth0", "auth1"}
    t1 = d.session.start(BOB, 7, d.clock)
    d.run(until=lambda d: d.session.ticket(t1).no_quorum is not None)
    d.down = {"auth2", "auth3"}
    d.run(until=lambda d: d.session.ticket(t1).certified and d.session.is_stalled)
    assert net.balance("auth0", BOB) == 7 and net.balance("auth2", BOB) is None
    d.down = set()
    t2 = d.session.start(BOB, 7, d.clock, again=True)
    d.run(until=lambda d: d.session.ticket(t2).settled)
    assert d.session.ticket(t2).fully_propagated
    assert all(net.balance(n, BOB) == 14 for n in net.names)


def test_authority_that_missed_a_certificate_is_caught_up():
    # "Weaker than f=1": auth3 missed transfer 0 entirely; with auth2 down, transfer 1
    # needs auth3's vote, which it gives once it has settled transfer 0.
    net, alice, d = _setup(retry_after=1000.0)
    d.down = {"auth3"}
    t1 = d.session.start(BOB, 1, d.clock)
    d.run(until=lambda d: d.session.ticket(t1).settled)
    d.down = {"auth2"}
    t2 = d.session.start(BOB, 2, d.clock)
    d.run(until=lambda d: d.session.ticket(t2).settled)
    assert d.session.ticket(t2).certified
    assert net.balance("auth3", BOB) == 3
    cert = d.of(CertificateFormed)[-1].certificate
    assert "auth3" in {n for n, _ in cert.signatures}
    assert any(e.sequence_number == 0 for e in d.of(ConfirmationDelivered)
               if e.authority == "auth3")


def test_repeating_a_transfer_whose_success_nobody_saw_returns_it():
    net, alice, d = _setup()
    t1 = d.session.start(BOB, 5, d.clock)
    d.run(until=lambda d: d.session.ticket(t1).settled)
    d.clock += 1000.0  # long after: only "nobody saw it" makes it a repeat
    t2 = d.session.start(BOB, 5, d.clock)
    assert d.session.ticket(t2).sequence_number == 0
    d.session.reported(t2)
    t3 = d.session.start(BOB, 5, d.clock)
    d.run(until=lambda d: d.session.ticket(t3).settled)
    assert d.session.ticket(t3).sequence_number == 1
    assert alice.balance == 90


def test_again_pays_once_more_although_nobody_saw_the_first():
    net, alice, d = _setup()
    t1 = d.session.start(BOB, 5, d.clock)
    d.run(until=lambda d: d.session.ticket(t1).settled)
    t2 = d.session.start(BOB, 5, d.clock + 1.0)
    assert d.session.ticket(t2).sequence_number == 0
    t3 = d.session.start(BOB, 5, d.clock + 1.0, again=True)
    d.run(until=lambda d: d.session.ticket(t3).settled)
    assert d.session.ticket(t3).sequence_number == 1 and alice.balance == 90


def test_second_transfer_waits_for_the_first():
    net, alice, d = _setup()
    d.down = set(net.names)
    t1 = d.session.start(BOB, 5, d.clock)
    t2 = d.session.start(BOB, 6, d.clock)
    assert d.of(TransferQueued) or any(isinstance(e, TransferQueued)
                                       for e in iter(d.session.next_event, None))
    assert d.session.ticket(t2).sequence_number is None
    d.down = set()
    d.run(until=lambda d: d.session.ticket(t2).settled)
    assert d.session.ticket(t1).sequence_number == 0
    assert d.session.ticket(t2).sequence_number == 1
    assert all(net.balance(n, BOB) == 11 for n in net.names)


def test_refusal_at_validity_threshold_stops_early():
    net = Network()
    kp = keypair("client/poor")
    net.fund(kp.public_key, 1)
    client = ClientState(kp, net.committee, InMemoryClientStore(), genesis_balance=100)
    d = SessionDriver(net, PaymentSession(client, 0.0))
    t = d.session.start(BOB, 50, 0.0)
    d.run(until=lambda d: d.session.ticket(t).settled)
    nq = d.session.ticket(t).no_quorum
    assert nq is not None and isinstance(nq.early_stop, InsufficientFunding)
    assert len(nq.refused) == net.committee.validity_threshold  # did not ask the rest


def test_payee_credited_by_certificate_identity():
    net, alice, d = _setup()
    bob = ClientState(keypair("client/bob"), net.committee, InMemoryClientStore())
    carol = net.client("carol", 50)
    net.pay(alice, bob.address, 10)
    net.pay(carol, bob.address, 5)
    bd = SessionDriver(net, PaymentSession(bob, 0.0))
    sid = bd.session.sync(0.0)
    bd.run(until=lambda d: any(isinstance(e, SyncDone) and e.sync_id == sid
                               for e in d.events))
    assert bob.balance == 15
    assert len({(e.sender, e.sequence_number) for e in bd.of(PaymentReceived)}) == 2
    net.pay(alice, bob.address, 1)
    sid = bd.session.sync(bd.clock)
    bd.run(until=lambda d: any(isinstance(e, SyncDone) and e.sync_id == sid
                               for e in d.events))
    assert bob.balance == 16


def test_mobile_session_works_one_authority_at_a_time():
    net, alice, d = _setup(max_parallel=1, sync_interval=None)
    d.session.reachable(["auth2"], 0.0)
    t = d.session.start(BOB, 3, 0.0)
    d.run(until=lambda d: d.session.is_stalled)
    d.step()  # the Release that came with the stall
    assert d.max_active == 1 and d.released == ["auth2"]
    assert not d.session.ticket(t).certified
    d.session.reachable(["auth0", "auth1", "auth3"], d.clock)
    d.run(until=lambda d: d.session.ticket(t).fully_propagated or d.session.is_stalled)
    assert d.max_active == 1
    assert d.session.ticket(t).certified
    assert not d.session.ticket(t).fully_propagated  # auth2 is out of reach now
    d.session.reachable(["auth2"], d.clock)
    d.run(until=lambda d: d.session.ticket(t).fully_propagated)
    assert all(net.balance(n, BOB) == 3 for n in net.names)


def test_authorities_sharing_a_group_take_one_slot():
    # WiFi Direct group sharing: three authorities behind one GO are one visit; the
    # fourth, in a group of its own, waits for the slot like any other.
    net, alice, d = _setup(max_parallel=1, sync_interval=None)
    groups = {"auth0": "go-a", "auth1": "go-a", "auth2": "go-a", "auth3": "go-b"}
    d.session.reachable(["auth0", "auth1", "auth2", "auth3"], 0.0, groups)
    t = d.session.start(BOB, 5, 0.0)
    d.run(until=lambda d: d.session.ticket(t).final)
    assert d.max_active == 3  # all of go-a's group at once, never auth3 beside them
    assert d.session.ticket(t).certified
    assert all(net.balance(n, BOB) == 5 for n in ("auth0", "auth1", "auth2"))
    d.run(until=lambda d: d.session.ticket(t).fully_propagated)
    assert net.balance("auth3", BOB) == 5


def test_restarted_session_resumes_unfinished_work():
    net, alice, d = _setup()
    d.down = {"auth3"}
    t = d.session.start(BOB, 4, d.clock)
    d.run(until=lambda d: d.session.ticket(t).settled)
    assert net.balance("auth3", BOB) is None
    # The daemon restarts: a new session over the same client record.
    d2 = SessionDriver(net, PaymentSession(alice, 0.0))
    d2.run(until=lambda d: net.balance("auth3", BOB) == 4)
    assert d2.of(FullyPropagated)
    assert not any(isinstance(e, OrderSigned) for e in d2.events)
    assert not d2.of(NoQuorum)


def test_restarted_session_does_not_announce_what_was_already_done():
    net, alice, d = _setup()
    t = d.session.start(BOB, 4, d.clock)
    d.run(until=lambda d: d.session.ticket(t).settled)
    assert d.of(FullyPropagated)
    d2 = SessionDriver(net, PaymentSession(alice, 0.0))
    for _ in range(5):  # the start-up sync round trips
        d2.step()
    assert not d2.of(Final) and not d2.of(FullyPropagated)


def test_session_is_told_only_once_its_events_and_actions_are_taken_out():
    # A driver answering from ticket() must not run ahead of what it has logged: once
    # the last confirmation is answered the ticket says fully propagated while the
    # FullyPropagated event is still queued.  ``told`` says so.
    _, _, d = _setup()
    assert not d.session.told  # the start-up sync is queued
    d.run(until=lambda d: d.session.told)  # the driver takes it all out
    assert d.session.told
    t = d.session.start(BOB, 10, d.clock)
    assert not d.session.told  # the order to sign and send, TransferQueued
    d._drain = lambda: None  # type: ignore[method-assign]  # the driver logs nothing
    d.run(until=lambda d: d.session.ticket(t).fully_propagated)
    assert not d.session.told and not d.of(FullyPropagated)
    SessionDriver._drain(d)
    while d.session.actions():  # e.g. a Release of the last authority
        SessionDriver._drain(d)
    assert d.session.told and d.of(FullyPropagated)
