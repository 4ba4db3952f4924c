"""An in-memory FastPay network for the protocol tests.

:class:`Network` builds a committee from fixed seeds (so keys and signatures
are deterministic), one :class:`AuthorityState` per member over an in-memory
store, and clients funded at genesis.  Messages pass between objects by plain
method calls -- the tests play the role of the network and choose who hears
what.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from protocol import (
    AuthorityInfo,
    AuthorityState,
    CertifiedTransferOrder,
    ClientState,
    Committee,
    ConfirmationOrder,
    FastPayError,
    InMemoryAuthorityStore,
    InMemoryClientStore,
    KeyPair,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
)


def seed(label: str) -> bytes:
    """A deterministic 32-byte seed for ``label``."""
    return hashlib.sha256(label.encode()).digest()


def keypair(label: str) -> KeyPair:
    """The deterministic key pair for ``label``."""
    return KeyPair.from_seed(seed(label))


class Network:
    """A committee of authorities and some clients, all in memory."""

    def __init__(self, weights: Mapping[str, int] | None = None) -> None:
        weights = weights or {f"auth{i}": 1 for i in range(4)}
        self.authority_keys = {name: keypair(f"authority/{name}") for name in weights}
        self.committee = Committee(
            "test-committee",
            {
                name: AuthorityInfo(self.authority_keys[name].public_key, w)
                for name, w in weights.items()
            },
        )
        self.stores = {name: InMemoryAuthorityStore() for name in weights}
        self.authorities = {
            name: AuthorityState(name, self.authority_keys[name], self.committee, self.stores[name])
            for name in weights
        }

    @property
    def names(self) -> list[str]:
        return sorted(self.authorities)

    def fund(self, address: bytes, balance: int) -> None:
        """Genesis: give ``address`` ``balance`` at every authority."""
        for authority in self.authorities.values():
            authority.init_account(address, balance)

    def client(self, label: str, balance: int = 0) -> ClientState:
        """A client for ``label`` funded with ``balance`` at genesis (and in its own record)."""
        kp = keypair(f"client/{label}")
        if balance:
            self.fund(kp.public_key, balance)
        return ClientState(kp, self.committee, InMemoryClientStore(), genesis_balance=balance)

    def votes(
        self, order: TransferOrder, names: Iterable[str] | None = None
    ) -> list[SignedTransferOrder]:
        """Send ``order`` to ``names`` (default: all); return the votes of those that accept."""
        votes = []
        for name in names if names is not None else self.names:
            try:
                votes.append(self.authorities[name].handle_transfer_order(order))
            except FastPayError:
                pass
        return votes

    def certificate(
        self, order: TransferOrder, names: Iterable[str] | None = None
    ) -> CertifiedTransferOrder:
        """Certificate for ``order`` signed by the votes of ``names`` (no quorum check)."""
        votes = self.votes(order, names)
        return CertifiedTransferOrder(
            value=order, signatures=tuple((v.authority, v.signature) for v in votes)
        )

    def confirm(self, cert: CertifiedTransferOrder, names: Iterable[str] | None = None) -> None:
        """Deliver ``cert`` to ``names`` (default: all authorities)."""
        for name in names if names is not None else self.names:
            self.authorities[name].handle_confirmation_order(ConfirmationOrder(certificate=cert))

    def pay(self, client: ClientState, recipient: bytes, amount: int) -> CertifiedTransferOrder:
        """Run a whole transfer through every authority; return its certificate."""
        order = client.start_transfer(recipient, amount)
        certificate = None
        for vote in self.votes(order):
            certificate = client.handle_vote(vote) or certificate
        assert certificate is not None
        for name in self.names:
            self.authorities[name].handle_confirmation_order(
                ConfirmationOrder(certificate=certificate)
            )
            client.confirmation_delivered(name)
        return certificate

    def balance(self, name: str, address: bytes) -> int | None:
        state = self.stores[name].load_account(address)
        return None if state is None else state.balance


def make_transfer(
    sender: KeyPair,
    recipient: bytes,
    amount: int,
    sequence_number: int = 0,
    user_data: bytes | None = None,
) -> TransferOrder:
    """A signed order from ``sender``."""
    transfer = Transfer(
        sender=sender.public_key,
        recipient=recipient,
        amount=amount,
        sequence_number=sequence_number,
        user_data=user_data,
    )
    return TransferOrder.sign(transfer, sender)


def answer(net: Network, name: str, action: object) -> object:
    """What authority ``name`` of ``net`` answers to a session's action (as the daemon would:
    a refusal becomes its Error message)."""
    from protocol.session import RelayConfirmation, RequestInfo, SendConfirmation, SendOrder

    auth = net.authorities[name]
    try:
        if isinstance(action, SendOrder):
            return auth.handle_transfer_order(action.order)
        if isinstance(action, SendConfirmation | RelayConfirmation):
            return auth.handle_confirmation_order(action.confirmation).to_ack()
        if isinstance(action, RequestInfo):
            return auth.handle_account_info_request(action.request)
    except FastPayError as exc:
        return exc.to_message()
    raise TypeError(f"not an authority action: {action!r}")


class SessionDriver:
    """Pumps a :class:`protocol.session.PaymentSession` against ``net`` in memory.

    ``down`` holds authorities whose requests fail (as a link timeout would); ``clock`` is
    the session's time, advanced to the timer when nothing else is left to do.
    """

    def __init__(self, net: Network, session: object) -> None:
        from protocol.session import PaymentSession

        assert isinstance(session, PaymentSession)
        self.net = net
        self.session = session
        self.down: set[str] = set()
        self.clock = 0.0
        self.events: list[object] = []
        self.released: list[str] = []
        self.delivered: list[CertifiedTransferOrder] = []
        self.payee_down = False  # hand-offs fail as an unreachable payee would
        self.handoff_attempts: list[float] = []  # clock of every DeliverToPayee
        self.max_active = 0

    def step(self) -> bool:
        """Execute the pending actions once; False when there were none."""
        from protocol.session import DeliverToPayee, Release

        s = self.session
        acts = s.actions()
        in_flight = [a for a in acts if not isinstance(a, Release | DeliverToPayee)]
        self.max_active = max(self.max_active, len(in_flight))
        for act in acts:
            if isinstance(act, Release):
                self.released.append(act.authority)
            elif isinstance(act, DeliverToPayee):
                self.handoff_attempts.append(self.clock)
                seq = act.certificate.value.transfer.sequence_number
                if self.payee_down:
                    s.payee_answered(seq, "unreachable: down", self.clock, retry=True)
                else:
                    self.delivered.append(act.certificate)
                    s.payee_answered(seq, "delivered", self.clock)
        for act in in_flight:
            name = act.authority  # type: ignore[attr-defined]
            if name in self.down:
                s.failed(name, "down", self.clock)
            else:
                s.response(name, answer(self.net, name, act), self.clock)  # type: ignore[arg-type]
        self._drain()
        return bool(acts)

    def _drain(self) -> None:
        while (ev := self.session.next_event()) is not None:
            self.events.append(ev)

    def run(self, until: object = None, max_steps: int = 10_000) -> None:
        """Pump until ``until(driver)`` is true (or nothing at all is left to do)."""
        self._drain()
        for _ in range(max_steps):
            if until is not None and until(self):  # type: ignore[operator]
                return
            if self.step():
                continue
            timer = self.session.get_timer()
            if timer is None:
                return
            self.clock = max(self.clock, timer)
            self.session.handle_timer(self.clock)
            self._drain()
        raise AssertionError("session did not settle")

    def of(self, kind: type) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]
