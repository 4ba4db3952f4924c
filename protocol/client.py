"""The client state machine: sign orders, gather votes, certify, confirm, get paid.

A client owns one account (its key pair) and moves through a simple cycle::

    start_transfer ──► order pending ──handle_vote × quorum──► certificate
         ▲                                                        │
         └──────────── confirmation_delivered (authorities) ◄─────┘

* :meth:`ClientState.start_transfer` signs the next order and stages it in the
  store *before* returning it, so the client can never sign two different
  orders for one sequence number even across a crash (that would lock its
  account forever).
* :meth:`ClientState.handle_vote` verifies a vote (member, signature, the
  transfer we are collecting for), ignores duplicates and votes for anything
  else, and as soon as the votes weigh a quorum, forms the certificate,
  debits the balance and advances the sequence number.
* The certificate must then reach the authorities
  (:meth:`authorities_needing_confirmation` / :meth:`confirmation_delivered`)
  and the recipient, who checks it *alone* against the committee
  (:meth:`receive_certificate`; each (sender, sequence number) is credited once) and
  records where it came from: :data:`SOURCE_DIRECT` (a ConfirmationOrder handed over by
  the payer or anybody) or ``authority:<name>`` (:func:`source_authority`: found in that
  authority's received log).  A payment seen a second time, either way, keeps the source
  it was first credited from.
* Recovery (:meth:`handle_account_info_response`): a client that lost its
  pending order or certificate (e.g. its store was restored from an old
  copy) learns them back from authorities -- a pending vote carries the order
  it signed (its own signature is checked), a confirmed certificate is
  verified like any other -- and ingests received certificates.  It never
  takes a balance on an authority's word: its balance is always genesis +
  verified credits - its own certified debits.

The state lives in an immutable :class:`~protocol.account.ClientRecord`; every
change builds a new record and stages it via the store before anything is
returned.
"""

from __future__ import annotations

from dataclasses import replace

from protocol.account import ClientRecord
from protocol.certificate import verify_certificate, verify_vote
from protocol.committee import Committee
from protocol.crypto import KeyPair, verify_signature
from protocol.errors import (
    BalanceOverflow,
    FastPayError,
    IncorrectTransferAmount,
    InsufficientFunding,
    InvalidSequenceNumber,
    TransferAlreadyPending,
    UnknownSigner,
    WrongRecipient,
)
from protocol.messages import (
    I64_MAX,
    U64_MAX,
    AccountInfoRequest,
    AccountInfoResponse,
    CertifiedTransferOrder,
    ConfirmationOrder,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
)
from protocol.storage import ClientStore

SOURCE_DIRECT = "direct"
"""Provenance of a certificate handed to us directly (by the payer or any client)."""
SOURCE_SELF = "self"
"""Provenance of a payment to ourselves (credited when its certificate formed)."""
SOURCE_UNKNOWN = "unknown"
"""Provenance of a payment recorded before provenance was kept."""
_AUTHORITY_PREFIX = "authority:"


def source_authority(name: str) -> str:
    """Provenance of a certificate found in authority ``name``'s received log."""
    return _AUTHORITY_PREFIX + name


def channel_of(source: str) -> str:
    """The channel of a provenance: ``direct``, ``authority``, ``self`` or ``unknown``."""
    if source.startswith(_AUTHORITY_PREFIX):
        return "authority"
    return source


def authority_of(source: str) -> str | None:
    """The authority named by an ``authority:<name>`` provenance, else None."""
    return source[len(_AUTHORITY_PREFIX):] if source.startswith(_AUTHORITY_PREFIX) else None


class ClientState:
    """One client account: its key pair, the committee, and its durable record."""

    def __init__(
        self,
        keypair: KeyPair,
        committee: Committee,
        store: ClientStore,
        genesis_balance: int = 0,
    ) -> None:
        """Load the record from ``store``; start from ``genesis_balance`` if there is none."""
        self.keypair = keypair
        self.committee = committee
        self.store = store
        loaded = store.load()
        self._record = loaded if loaded is not None else ClientRecord(balance=genesis_balance)
        self._received = {c.value.transfer.key for c in self._record.received_log}

    # --- read-only views ------------------------------------------------------------

    @property
    def address(self) -> bytes:
        """The account address (our public key)."""
        return self.keypair.public_key

    @property
    def record(self) -> ClientRecord:
        """The current record (as last staged in the store)."""
        return self._record

    @property
    def balance(self) -> int:
        """Genesis + verified credits - certified debits, as far as this client knows."""
        return self._record.balance

    @property
    def next_sequence_number(self) -> int:
        """The sequence number the next order will carry."""
        return self._record.next_sequence_number

    @property
    def pending_order(self) -> TransferOrder | None:
        """The order collecting votes, None if none."""
        return self._record.pending_order

    @property
    def votes(self) -> tuple[SignedTransferOrder, ...]:
        """Verified votes collected so far for the pending order."""
        return self._record.votes

    @property
    def certificate(self) -> CertifiedTransferOrder | None:
        """The certificate of our latest transfer, None before the first one."""
        return self._record.certificate

    @property
    def confirmation_order(self) -> ConfirmationOrder | None:
        """The confirmation order to send for the latest certificate, if any."""
        cert = self._record.certificate
        return None if cert is None else ConfirmationOrder(certificate=cert)

    @property
    def is_transfer_complete(self) -> bool:
        """True when no order is pending and the latest certificate is confirmed by a quorum.

        (Also True before any transfer.)  The certificate alone already makes
        the transfer final; this says it is *settled* at enough authorities
        that the recipient's credit is visible at an honest majority.
        """
        rec = self._record
        if rec.pending_order is not None:
            return False
        if rec.certificate is None:
            return True
        return self.committee.weight_of(rec.confirmed_by) >= self.committee.quorum_threshold

    def authorities_needing_confirmation(self) -> set[str]:
        """Authorities that have not acknowledged the latest certificate yet."""
        if self._record.certificate is None:
            return set()
        return set(self.committee.names - self._record.confirmed_by)

    def certificate_for(self, sequence_number: int) -> CertifiedTransferOrder | None:
        """Our certificate for ``sequence_number`` (to help a lagging authority), if known."""
        for cert in reversed(self._record.sent_log):
            if cert.value.transfer.sequence_number == sequence_number:
                return cert
        return None

    def account_info_request(
        self,
        request_sequence_number: int | None = None,
        received_from: int | None = None,
    ) -> AccountInfoRequest:
        """Return an AccountInfoRequest about our own account."""
        return AccountInfoRequest(
            sender=self.address,
            request_sequence_number=request_sequence_number,
            request_received_transfers_excluding_first_nth=received_from,
        )

    # --- transitions ----------------------------------------------------------------

    def _commit(self, record: ClientRecord) -> None:
        self.store.save(record)
        self._record = record

    def start_transfer(
        self, recipient: bytes, amount: int, user_data: bytes | None = None
    ) -> TransferOrder:
        """Sign and stage the order paying ``amount`` to ``recipient``; return it.

        Raises TransferAlreadyPending, IncorrectTransferAmount, InsufficientFunding
        or InvalidSequenceNumber; ValueError for a malformed recipient/user_data.
        """
        rec = self._record
        if rec.pending_order is not None:
            raise TransferAlreadyPending()
        if amount <= 0:
            raise IncorrectTransferAmount()
        if amount > rec.balance:
            raise InsufficientFunding(
                f"balance {rec.balance} < amount {amount}", current_balance=rec.balance
            )
        if rec.next_sequence_number >= U64_MAX:
            raise InvalidSequenceNumber()
        transfer = Transfer(
            sender=self.address,
            recipient=recipient,
            amount=amount,
            sequence_number=rec.next_sequence_number,
            user_data=user_data,
        )
        order = TransferOrder.sign(transfer, self.keypair)
        self._commit(replace(rec, pending_order=order, votes=()))
        return order

    def handle_vote(self, vote: SignedTransferOrder) -> CertifiedTransferOrder | None:
        """Count a vote; return the certificate when the votes reach a quorum.

        Returns None for a vote that does not (yet) complete a quorum, a
        duplicate, or a vote on another transfer (ignored).  Raises
        UnknownSigner or InvalidSignature for a vote that claims to be for our
        pending transfer but is not a committee member's valid signature.
        """
        rec = self._record
        pending = rec.pending_order
        if pending is None or vote.value.transfer != pending.transfer:
            return None
        if any(v.authority == vote.authority for v in rec.votes):
            return None
        verify_vote(vote, self.committee)
        votes = (*rec.votes, vote)
        weight = self.committee.weight_of(v.authority for v in votes)
        if weight < self.committee.quorum_threshold:
            self._commit(replace(rec, votes=votes))
            return None
        certificate = CertifiedTransferOrder(
            value=pending,
            signatures=tuple(sorted((v.authority, v.signature) for v in votes)),
        )
        self._adopt_own_certificate(certificate, confirmed_by=frozenset())
        return certificate

    def _adopt_own_certificate(
        self, certificate: CertifiedTransferOrder, confirmed_by: frozenset[str]
    ) -> None:
        # Only called for a verified certificate of ours at our next sequence number.
        # A payment to ourselves is debited and credited at once (net zero), so the
        # balance is right without waiting for a sync to bring the credit back.
        rec = self._record
        transfer = certificate.value.transfer
        to_self = transfer.recipient == self.address and transfer.key not in self._received
        self._commit(
            replace(
                rec,
                balance=rec.balance - (0 if to_self else transfer.amount),
                next_sequence_number=rec.next_sequence_number + 1,
                pending_order=None,
                votes=(),
                certificate=certificate,
                confirmed_by=confirmed_by,
                sent_log=(*rec.sent_log, certificate),
                received_log=(*rec.received_log, certificate) if to_self
                else rec.received_log,
                received_from=(*rec.received_from, SOURCE_SELF) if to_self
                else rec.received_from,
            )
        )
        if to_self:
            self._received.add(transfer.key)

    def confirmation_delivered(self, authority: str) -> None:
        """Record that ``authority`` acknowledged the latest certificate."""
        rec = self._record
        if rec.certificate is None or authority not in self.committee:
            return
        if authority in rec.confirmed_by:
            return
        self._commit(replace(rec, confirmed_by=rec.confirmed_by | {authority}))

    def receive_certificate(
        self, cert: CertifiedTransferOrder, source: str = SOURCE_DIRECT
    ) -> int:
        """Accept a payment to us after verifying its certificate alone.

        ``source`` is recorded as where it came from (:data:`SOURCE_DIRECT`, or
        :func:`source_authority`).  Returns the amount credited, 0 if this (sender,
        sequence number) was already credited (its first source stays).  Raises
        WrongRecipient, the certificate's error (CertificateAuthorityReuse, UnknownSigner,
        CertificateRequiresQuorum, InvalidSignature) -- checked before anything else, so
        a forged copy of a payment already credited is refused, not acknowledged -- or
        BalanceOverflow when the credit would take the balance past 2**63-1 (nothing is credited).
        """
        transfer = cert.value.transfer
        if transfer.recipient != self.address:
            raise WrongRecipient()
        verify_certificate(cert, self.committee)
        if transfer.key in self._received:
            return 0
        rec = self._record
        if rec.balance + transfer.amount > I64_MAX:
            raise BalanceOverflow(
                f"balance {rec.balance} + credit {transfer.amount} exceeds {I64_MAX}"
            )
        self._commit(
            replace(
                rec,
                balance=rec.balance + transfer.amount,
                received_log=(*rec.received_log, cert),
                received_from=(*rec.received_from, source),
            )
        )
        self._received.add(transfer.key)
        return transfer.amount

    def handle_account_info_response(
        self, authority: str, response: AccountInfoResponse
    ) -> AccountInfoRequest | None:
        """Learn from an authority's view of our account (recovery); never trusts it blindly.

        Ingests valid received certificates, adopts a valid certificate of ours
        at our next sequence number, adopts a pending order we signed (if we
        have none) and counts its vote.  Returns a follow-up request to send to
        the same authority when it knows of a later sequence number than we do
        (asking for the certificate we are missing), else None.  Raises nothing
        for bad content: a Byzantine response is ignored.
        """
        if response.sender != self.address or authority not in self.committee:
            return None
        for cert in response.requested_received_transfers:
            try:
                self.receive_certificate(cert, source_authority(authority))
            except FastPayError:
                continue
        self._recover_certificate(authority, response.requested_certificate)
        self._recover_pending(authority, response.pending_confirmation)
        if response.next_sequence_number > self.next_sequence_number:
            return self.account_info_request(request_sequence_number=self.next_sequence_number)
        return None

    def _recover_certificate(self, authority: str, cert: CertifiedTransferOrder | None) -> None:
        if cert is None:
            return
        transfer = cert.value.transfer
        if transfer.sender != self.address or transfer.sequence_number != self.next_sequence_number:
            return
        try:
            verify_certificate(cert, self.committee)
        except FastPayError:
            return
        # The authority returned it from its confirmed log: it has settled it.
        self._adopt_own_certificate(cert, confirmed_by=frozenset({authority}))

    def _recover_pending(self, authority: str, vote: SignedTransferOrder | None) -> None:
        if vote is None or vote.authority != authority:
            return
        transfer = vote.value.transfer
        if transfer.sender != self.address or transfer.sequence_number != self.next_sequence_number:
            return
        if self._record.pending_order is None:
            # We lost the order we signed: take it back, but only if we did sign it.
            if not verify_signature(
                self.address, transfer.order_signing_bytes, vote.value.signature
            ):
                return
            self._commit(replace(self._record, pending_order=vote.value, votes=()))
        try:
            self.handle_vote(vote)
        except (UnknownSigner, FastPayError):
            return
