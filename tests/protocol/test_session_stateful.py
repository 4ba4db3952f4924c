"""The payment session under a hypothesis state machine: Byzantine authorities, authorities
coming and going, clients crashing between any two steps, repeated and concurrent transfers.

Each client runs a :class:`~protocol.session.PaymentSession` over a store that models the
daemon's durability exactly: what the session staged becomes durable when the daemon pulls
the actions it must perform (it flushes before anything leaves), and a crash throws away
whatever was staged since, together with every request in flight.  Hypothesis picks which
outstanding request is answered or lost next, who is reachable, when time passes and when
a client crashes.  One authority (f = 1 of 4) is Byzantine: silent, garbage or
equivocating (it votes for anything, without locking).

Invariants, after every step: at most one certificate per (sender, sequence number)
anywhere; no honest authority voted for two different orders of one (sender, seq); the
supply is conserved at every honest authority.  At the end, every honest authority is
reachable again and the sessions run until quiet: every transfer a client signed is
certified and confirmed at every honest authority, every payee is credited exactly once
for each certificate paying it (its own balance equals the honest authorities' view), and
every account can still pay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol import (
    ClientRecord,
    ClientState,
    ConfirmationAck,
    Error,
    SignedTransferOrder,
)
from protocol.session import (
    DeliverToPayee,
    PaymentSession,
    Release,
    SendConfirmation,
    SendOrder,
    ToAuthority,
)
from tests.protocol.protocol_helpers import Network, answer, keypair

CLIENTS = ("alice", "bob", "carol")
GENESIS = 20
BYZANTINE = "auth3"
HONEST = ("auth0", "auth1", "auth2")


class DurableStore:
    """A ClientStore whose writes are staged until :meth:`flush` (the daemon's group commit)."""

    def __init__(self) -> None:
        self.staged: ClientRecord | None = None
        self.durable: ClientRecord | None = None

    def load(self) -> ClientRecord | None:
        return self.staged

    def save(self, record: ClientRecord) -> None:
        self.staged = record

    def flush(self) -> None:
        self.durable = self.staged

    def crash(self) -> None:
        self.staged = self.durable


@dataclass
class Node:
    name: str
    store: DurableStore
    state: ClientState
    session: PaymentSession
    outstanding: list[ToAuthority] = field(default_factory=list)
    signed: set[int] = field(default_factory=set)


class SessionMachine(RuleBasedStateMachine):
    """See module docstring."""

    @initialize(mode=st.sampled_from(["silent", "garbage", "equivocate"]))
    def setup(self, mode: str) -> None:
        self.net = Network()
        self.mode = mode
        self.now = 0.0
        self.down: set[str] = set()
        self.votes_seen: dict[tuple[str, bytes, int], object] = {}
        self.nodes: dict[str, Node] = {}
        for name in CLIENTS:
            kp = keypair(f"client/{name}")
            self.net.fund(kp.public_key, GENESIS)
            store = DurableStore()
            state = ClientState(kp, self.net.committee, store, genesis_balance=GENESIS)
            store.flush()
            self.nodes[name] = Node(name, store, state, self._session(state))
        self.supply = GENESIS * len(CLIENTS)

    def _session(self, state: ClientState) -> PaymentSession:
        return PaymentSession(state, self.now, retry_after=1.0, max_retry_after=4.0,
                              sync_interval=5.0)

    # --- the network ------------------------------------------------------------------

    def _byzantine(self, action: ToAuthority) -> object | None:
        """auth3's answer (None: it stays silent)."""
        if self.mode == "silent":
            return None
        if self.mode == "garbage":
            if isinstance(action, SendOrder):
                return SignedTransferOrder(value=action.order, authority=BYZANTINE,
                                           signature=bytes(64))
            return Error(code="InvalidMessage", message="garbage")
        if isinstance(action, SendOrder):  # equivocate: vote for anything, lock nothing
            return SignedTransferOrder.sign(action.order, BYZANTINE,
                                            self.net.authority_keys[BYZANTINE])
        if isinstance(action, SendConfirmation):
            t = action.confirmation.certificate.value.transfer
            return ConfirmationAck(sender=t.sender, sequence_number=t.sequence_number,
                                   applied=False)
        return answer(self.net, BYZANTINE, action)

    def _pull(self, node: Node) -> None:
        """The daemon's flush-then-send: durable first, then the actions leave."""
        actions = node.session.actions()
        node.store.flush()
        for act in actions:
            if isinstance(act, Release):
                continue
            if isinstance(act, DeliverToPayee):
                node.session.payee_answered(act.certificate.value.transfer.sequence_number,
                                            "not attempted", self.now)
                continue
            node.outstanding.append(act)
        while (ev := node.session.next_event()) is not None:
            seq = getattr(ev, "sequence_number", None)
            if type(ev).__name__ == "OrderSigned" and seq is not None:
                node.signed.add(seq)
        node.store.flush()

    def _execute(self, node: Node, action: ToAuthority, lose: bool) -> None:
        name = action.authority
        if lose or name in self.down:
            node.session.failed(name, "lost", self.now)
        else:
            reply = self._byzantine(action) if name == BYZANTINE else answer(
                self.net, name, action)
            if reply is None:
                node.session.failed(name, "silent", self.now)
            else:
                if isinstance(reply, SignedTransferOrder) and name != BYZANTINE:
                    t = reply.value.transfer
                    key = (name, t.sender, t.sequence_number)
                    assert self.votes_seen.setdefault(key, t) == t, "honest equivocation"
                node.session.response(name, reply, self.now)  # type: ignore[arg-type]
        self._pull(node)

    # --- rules ------------------------------------------------------------------------

    @rule(sender=st.sampled_from(CLIENTS), recipient=st.sampled_from(CLIENTS),
          amount=st.integers(1, 8), again=st.booleans())
    def start_transfer(self, sender: str, recipient: str, amount: int, again: bool) -> None:
        node = self.nodes[sender]
        node.session.start(self.nodes[recipient].state.address, amount, self.now, again=again)
        self._pull(node)

    @rule(client=st.sampled_from(CLIENTS), pick=st.integers(0, 20), lose=st.booleans())
    def deliver(self, client: str, pick: int, lose: bool) -> None:
        node = self.nodes[client]
        if node.outstanding:
            self._execute(node, node.outstanding.pop(pick % len(node.outstanding)), lose)

    @rule(authority=st.sampled_from(HONEST))
    def toggle(self, authority: str) -> None:
        if authority in self.down:
            self.down.discard(authority)
        elif not self.down:  # at most f = 1 honest authority down besides the Byzantine one?
            self.down.add(authority)
        for node in self.nodes.values():
            node.session.handle_timer(self.now)
            self._pull(node)

    @rule(dt=st.floats(0.5, 6.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        for node in self.nodes.values():
            node.session.handle_timer(self.now)
            self._pull(node)

    @rule(client=st.sampled_from(CLIENTS))
    def crash_and_restart(self, client: str) -> None:
        node = self.nodes[client]
        node.store.crash()
        state = ClientState(node.state.keypair, self.net.committee, node.store,
                            genesis_balance=GENESIS)
        self.nodes[client] = Node(client, node.store, state, self._session(state),
                                  signed=node.signed)
        self._pull(self.nodes[client])

    # --- invariants -------------------------------------------------------------------

    def _certificates(self) -> dict[tuple[bytes, int], set[bytes]]:
        seen: dict[tuple[bytes, int], set[bytes]] = {}
        logs = [n.state.record.sent_log for n in self.nodes.values()]
        logs += [n.state.record.received_log for n in self.nodes.values()]
        for store in self.net.stores.values():
            for acct in store.accounts.values():
                logs += [acct.confirmed_log, acct.received_log]
        for log in logs:
            for cert in log:
                t = cert.value.transfer
                seen.setdefault(t.key, set()).add(t.order_signing_bytes)
        return seen

    @invariant()
    def one_certificate_per_slot(self) -> None:
        if hasattr(self, "net"):
            assert all(len(v) == 1 for v in self._certificates().values())

    @invariant()
    def supply_conserved_at_honest_authorities(self) -> None:
        if hasattr(self, "net"):
            for name in HONEST:
                total = sum(a.balance for a in self.net.stores[name].accounts.values())
                assert total == self.supply

    # --- the end: everything settles ----------------------------------------------------

    def _quiet(self) -> bool:
        """Every order certified and confirmed at every honest authority."""
        return all(n.state.pending_order is None
                   and n.state.authorities_needing_confirmation() <= {BYZANTINE}
                   for n in self.nodes.values())

    def _settle(self, rounds: int = 400) -> None:
        self.down.clear()
        for _ in range(rounds):
            moved = False
            for node in self.nodes.values():
                while node.outstanding:
                    self._execute(node, node.outstanding.pop(0), lose=False)
                    moved = True
            if not moved:
                if self._quiet():
                    return
                self.now += 5.0
                for node in self.nodes.values():
                    node.session.handle_timer(self.now)
                    self._pull(node)
        raise AssertionError("sessions did not settle with every honest authority up")

    def _sync_all(self) -> None:
        for node in self.nodes.values():
            node.session.sync(self.now)
            self._pull(node)
        self._settle()

    def teardown(self) -> None:
        if not hasattr(self, "net"):
            return
        self._settle()
        self._sync_all()
        for node in self.nodes.values():
            rec = node.state.record
            assert rec.pending_order is None, f"{node.name}: an order never certified"
            for seq in node.signed:
                assert seq < rec.next_sequence_number
            addr = node.state.address
            for name in HONEST:
                acct = self.net.stores[name].load_account(addr)
                assert acct is not None and acct.next_sequence_number == rec.next_sequence_number
                assert acct.balance == rec.balance, f"{node.name} at {name}"
            received = [c.value.transfer.key for c in rec.received_log]
            assert len(received) == len(set(received))
        for node in self.nodes.values():  # nobody is left unable to pay
            if node.state.balance > 0:
                other = self.nodes[CLIENTS[(CLIENTS.index(node.name) + 1) % len(CLIENTS)]]
                t = node.session.start(other.state.address, 1, self.now, again=True)
                self._pull(node)
                self._settle()
                assert node.session.ticket(t).certified


SessionMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_session_state_machine = SessionMachine.TestCase
