"""Property-based (stateful) test: honest clients, a double-spender, one Byzantine authority.

The committee has four authorities of weight 1 (f = 1, quorum 3).  auth3 is
Byzantine, in one of three modes chosen per run: it stays silent, it
equivocates (signs every order it is shown, including conflicting ones), or
it answers with garbage signatures.  Three honest clients pay each other in
random amounts; Mallory signs two conflicting orders for the same sequence
number and shows them to the honest authorities in a random order, and also
tries forged certificates.  Hypothesis picks the schedule: which authority
hears which order or confirmation, when recipients are handed certificates,
when authorities catch up.

Invariants checked after every step:

* never two certificates for one (sender, sequence number) with different transfers;
* every honest authority conserves the total supply, and each of its balances
  equals genesis + the certificates it credited - the certificates it debited;
* every honest client's balance equals genesis + received - sent, and is >= 0.

At the end of every run (teardown), with the 3 honest authorities reachable,
every honest client's pending transfer must complete.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from protocol_helpers import Network, keypair, make_transfer

from protocol import (
    CertifiedTransferOrder,
    ConfirmationOrder,
    FastPayError,
    InsufficientFunding,
    InvalidSignature,
    PreviousTransferMustBeConfirmedFirst,
    SignedTransferOrder,
    TransferAlreadyPending,
    TransferOrder,
    UnexpectedSequenceNumber,
    verify_certificate,
)

HONEST = ("auth0", "auth1", "auth2")
BYZANTINE = "auth3"
ALL = (*HONEST, BYZANTINE)
CLIENTS = {"alice": 100, "bob": 60, "carol": 0}
MALLORY_FUNDS = 50
TOTAL_SUPPLY = sum(CLIENTS.values()) + MALLORY_FUNDS

client_index = st.integers(0, len(CLIENTS) - 1)


class FastPayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Network()
        self.clients = [self.net.client(name, funds) for name, funds in CLIENTS.items()]
        self.by_address = {c.address: c for c in self.clients}
        self.mallory = keypair("client/mallory")
        self.net.fund(self.mallory.public_key, MALLORY_FUNDS)
        self.genesis = {
            c.address: funds for c, funds in zip(self.clients, CLIENTS.values(), strict=True)
        }
        self.genesis[self.mallory.public_key] = MALLORY_FUNDS
        self.mallory_seq = 0
        self.mode = "silent"
        # Every certificate anyone managed to form: slot -> transfers certified for it.
        self.certified: dict[tuple[bytes, int], set[bytes]] = {}
        self.certs: dict[tuple[bytes, int], CertifiedTransferOrder] = {}

    # --- helpers ---------------------------------------------------------------------

    def record(self, cert: CertifiedTransferOrder) -> None:
        verify_certificate(cert, self.net.committee)
        key = cert.value.transfer.key
        self.certified.setdefault(key, set()).add(cert.value.transfer.canonical_bytes)
        self.certs.setdefault(key, cert)

    def byzantine_vote(self, order: TransferOrder) -> SignedTransferOrder | None:
        key = self.net.authority_keys[BYZANTINE]
        if self.mode == "equivocate":
            return SignedTransferOrder.sign(order, BYZANTINE, key)
        if self.mode == "garbage":
            return SignedTransferOrder(
                value=order, authority=BYZANTINE, signature=key.sign(b"garbage")
            )
        return None

    def deliver(self, cert: CertifiedTransferOrder, name: str) -> None:
        """Confirm ``cert`` at honest ``name``, sending the sender's earlier certificates first."""
        authority = self.net.authorities[name]
        sender, seq = cert.value.transfer.key
        account = self.net.stores[name].load_account(sender)
        for earlier in range(account.next_sequence_number if account else 0, seq):
            self.deliver(self.certs[(sender, earlier)], name)
        authority.handle_confirmation_order(ConfirmationOrder(certificate=cert))

    def pay_recipient(self, cert: CertifiedTransferOrder) -> None:
        recipient = self.by_address.get(cert.value.transfer.recipient)
        if recipient is not None:
            recipient.receive_certificate(cert)

    # --- rules -----------------------------------------------------------------------

    @initialize(mode=st.sampled_from(["silent", "equivocate", "garbage"]))
    def choose_byzantine_behaviour(self, mode: str) -> None:
        self.mode = mode

    @rule(c=client_index, r=client_index, amount=st.integers(1, 120))
    def start_transfer(self, c: int, r: int, amount: int) -> None:
        client = self.clients[c]
        if client.pending_order is not None:
            with pytest.raises(TransferAlreadyPending):
                client.start_transfer(self.clients[r].address, amount)
        elif amount > client.balance:
            with pytest.raises(InsufficientFunding):
                client.start_transfer(self.clients[r].address, amount)
        else:
            order = client.start_transfer(self.clients[r].address, amount)
            assert client.pending_order == order

    @rule(c=client_index, name=st.sampled_from(ALL))
    def send_order(self, c: int, name: str) -> None:
        client = self.clients[c]
        order = client.pending_order
        if order is None:
            return
        if name == BYZANTINE:
            vote = self.byzantine_vote(order)
            if vote is None:
                return
            try:
                cert = client.handle_vote(vote)
            except InvalidSignature:
                assert self.mode == "garbage"
                return
        else:
            try:
                vote = self.net.authorities[name].handle_transfer_order(order)
            except (
                PreviousTransferMustBeConfirmedFirst,
                UnexpectedSequenceNumber,
                InsufficientFunding,
            ):
                return  # this authority lags behind; sync rules let it catch up
            cert = client.handle_vote(vote)
        if cert is not None:
            self.record(cert)

    @rule(c=client_index, name=st.sampled_from(HONEST))
    def send_confirmation(self, c: int, name: str) -> None:
        client = self.clients[c]
        if client.certificate is None:
            return
        self.deliver(client.certificate, name)
        client.confirmation_delivered(name)

    @rule(c=client_index)
    def hand_certificate_to_recipient(self, c: int) -> None:
        cert = self.clients[c].certificate
        if cert is None:
            return
        recipient = self.by_address[cert.value.transfer.recipient]
        before = recipient.balance
        credited = recipient.receive_certificate(cert)
        assert recipient.balance == before + credited
        assert recipient.receive_certificate(cert) == 0

    @rule(c=client_index, name=st.sampled_from(HONEST))
    def authority_catches_up(self, c: int, name: str) -> None:
        record = self.clients[c].record
        for cert in (*record.sent_log, *record.received_log):
            self.deliver(cert, name)

    @rule(c=client_index, name=st.sampled_from(HONEST))
    def client_syncs_received_payments(self, c: int, name: str) -> None:
        client = self.clients[c]
        try:
            info = self.net.authorities[name].handle_account_info_request(
                client.account_info_request(received_from=0)
            )
        except FastPayError:
            return
        client.handle_account_info_response(name, info)

    @rule(
        r_a=client_index,
        r_b=client_index,
        amount_a=st.integers(1, 60),
        amount_b=st.integers(1, 60),
        a_first=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    )
    def mallory_double_spends(
        self, r_a: int, r_b: int, amount_a: int, amount_b: int, a_first: tuple[bool, ...]
    ) -> None:
        seq = self.mallory_seq
        order_a = make_transfer(self.mallory, self.clients[r_a].address, amount_a, seq, b"A")
        order_b = make_transfer(self.mallory, self.clients[r_b].address, amount_b, seq, b"B")
        votes: dict[bytes, list[SignedTransferOrder]] = {
            order_a.transfer.canonical_bytes: [],
            order_b.transfer.canonical_bytes: [],
        }
        for name, a_goes_first in zip(HONEST, a_first, strict=True):
            schedule = (order_a, order_b) if a_goes_first else (order_b, order_a)
            for order in schedule:
                try:
                    vote = self.net.authorities[name].handle_transfer_order(order)
                except FastPayError:
                    continue
                votes[vote.value.transfer.canonical_bytes].append(vote)
        for order in (order_a, order_b):
            byzantine = self.byzantine_vote(order)
            if byzantine is not None and self.mode == "equivocate":
                votes[order.transfer.canonical_bytes].append(byzantine)
            these = votes[order.transfer.canonical_bytes]
            if self.net.committee.weight_of(v.authority for v in these) < 3:
                continue
            cert = CertifiedTransferOrder(
                value=order, signatures=tuple((v.authority, v.signature) for v in these)
            )
            self.record(cert)
            for name in HONEST:
                self.deliver(cert, name)
            self.pay_recipient(cert)
            self.mallory_seq = seq + 1

    @rule(
        kind=st.sampled_from(["reuse", "outsider", "light", "bad_signature"]),
        name=st.sampled_from(HONEST),
        r=client_index,
    )
    def mallory_forges_certificate(self, kind: str, name: str, r: int) -> None:
        order = make_transfer(self.mallory, self.clients[r].address, 1_000, self.mallory_seq)
        byz = SignedTransferOrder.sign(order, BYZANTINE, self.net.authority_keys[BYZANTINE])
        entry = (BYZANTINE, byz.signature)
        signatures = {
            "reuse": [entry, entry, entry],
            "outsider": [entry, ("auth9", byz.signature), ("auth8", byz.signature)],
            "light": [entry],
            "bad_signature": [entry, ("auth0", byz.signature), ("auth1", bytes(64))],
        }[kind]
        cert = CertifiedTransferOrder(value=order, signatures=signatures)
        before = dict(self.net.stores[name].accounts)
        with pytest.raises(FastPayError):
            self.net.authorities[name].handle_confirmation_order(
                ConfirmationOrder(certificate=cert)
            )
        assert self.net.stores[name].accounts == before

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def at_most_one_transfer_certified_per_slot(self) -> None:
        for transfers in self.certified.values():
            assert len(transfers) == 1

    @invariant()
    def honest_authorities_are_consistent(self) -> None:
        for name in HONEST:
            accounts = self.net.stores[name].accounts
            assert sum(a.balance for a in accounts.values()) == TOTAL_SUPPLY
            for address, account in accounts.items():
                credited = sum(c.value.transfer.amount for c in account.received_log)
                debited = sum(c.value.transfer.amount for c in account.confirmed_log)
                assert account.balance == self.genesis.get(address, 0) + credited - debited
                assert account.next_sequence_number == len(account.confirmed_log)
                for seq, cert in enumerate(account.confirmed_log):
                    transfer = cert.value.transfer
                    assert transfer.sequence_number == seq
                    assert self.certified[transfer.key] == {transfer.canonical_bytes}
                pending = account.pending_confirmation
                if pending is not None:
                    assert pending.value.transfer.sequence_number == account.next_sequence_number

    @invariant()
    def honest_clients_are_consistent(self) -> None:
        for client in self.clients:
            record = client.record
            received = sum(c.value.transfer.amount for c in record.received_log)
            sent = sum(c.value.transfer.amount for c in record.sent_log)
            assert client.balance == self.genesis[client.address] + received - sent >= 0
            assert client.next_sequence_number == len(record.sent_log)

    def teardown(self) -> None:
        # Liveness: with the three honest authorities reachable, every honest transfer completes.
        for key in sorted(self.certs):
            for name in HONEST:
                self.deliver(self.certs[key], name)
        for client in self.clients:
            order = client.pending_order
            if order is None:
                continue
            cert = None
            for name in HONEST:
                vote = self.net.authorities[name].handle_transfer_order(order)
                cert = client.handle_vote(vote) or cert
            assert cert is not None and cert.value == order
            self.record(cert)
            for name in HONEST:
                self.deliver(cert, name)
                client.confirmation_delivered(name)
            self.pay_recipient(cert)
            assert client.is_transfer_complete
        # Once every certificate reached every honest authority, they agree on every
        # balance and no account is overdrawn (nobody spent money it did not have).
        for key in sorted(self.certs):
            for name in HONEST:
                self.deliver(self.certs[key], name)
        views = [
            {a: s.balance for a, s in self.net.stores[name].accounts.items()} for name in HONEST
        ]
        assert views[0] == views[1] == views[2]
        assert all(balance >= 0 for balance in views[0].values())
        self.at_most_one_transfer_certified_per_slot()
        self.honest_authorities_are_consistent()
        self.honest_clients_are_consistent()


FastPayMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_fastpay_safety_and_liveness = FastPayMachine.TestCase
