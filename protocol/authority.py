"""The authority state machine: votes on transfer orders, settles confirmations.

Each handler is a pure transition over the store: it loads the records it
needs, runs every check of the FastPay reference *in the reference's order*,
and only then commits -- builds the new records and stages them with
``save_account`` -- in a block that cannot fail.  A refused request raises a
:class:`~protocol.errors.FastPayError` and changes nothing.  Handlers are
idempotent: the same order gets the same vote, a replayed confirmation is a
no-op.

Transfer order (``handle_transfer_order``):

1. the sender's signature (``InvalidSignature``);
2. amount > 0 (``IncorrectTransferAmount``); a sequence number that could never
   be incremented is refused (``InvalidSequenceNumber``);
3. the sender account is known (``UnknownSenderAccount``);
4. a pending vote: for this same transfer -> return that vote again; for
   another -> ``PreviousTransferMustBeConfirmedFirst``;
5. sequence number equal to the account's next one (``UnexpectedSequenceNumber``);
6. balance >= amount (``InsufficientFunding``);

then sign the vote, stage it as the account's pending confirmation, return it.
The daemon must make the staged write durable before sending the vote; that
is what keeps an authority from ever signing two orders for one slot.

Confirmation order (``handle_confirmation_order``): the certificate checks of
:func:`~protocol.certificate.verify_certificate`; then an old sequence number is
a no-op, a future one is ``MissingEarlierConfirmations``; otherwise debit the
sender, bump its sequence number, clear its pending vote, log the certificate,
and credit the recipient (creating its account if new) and log it there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from protocol.account import AccountState, saturate
from protocol.certificate import verify_certificate
from protocol.committee import Committee
from protocol.crypto import KeyPair, verify_signature
from protocol.errors import (
    CertificateNotFound,
    IncorrectTransferAmount,
    InsufficientFunding,
    InvalidSequenceNumber,
    InvalidSignature,
    MissingEarlierConfirmations,
    PreviousTransferMustBeConfirmedFirst,
    UnexpectedSequenceNumber,
    UnknownSenderAccount,
)
from protocol.messages import (
    I64_MAX,
    MAX_RECEIVED_TRANSFERS_PER_RESPONSE,
    U64_MAX,
    AccountInfoRequest,
    AccountInfoResponse,
    CertifiedTransferOrder,
    ConfirmationAck,
    ConfirmationOrder,
    SignedTransferOrder,
    TransferOrder,
)
from protocol.storage import AuthorityStore


@dataclass(frozen=True, slots=True)
class ConfirmationOutcome:
    """What a ConfirmationOrder changed at an authority (applied=False: already known)."""

    sender: bytes
    recipient: bytes
    sequence_number: int
    amount: int
    applied: bool
    sender_state: AccountState

    def to_ack(self) -> ConfirmationAck:
        """Return the message acknowledging the confirmation to its sender."""
        # The fields come from a certificate that was validated when it was decoded (and
        # ``applied`` is a bool we set): validating them again would only cost time.
        return ConfirmationAck.model_construct(
            sender=self.sender, sequence_number=self.sequence_number, applied=self.applied
        )


class AuthorityState:
    """One authority of the committee, over its account store."""

    def __init__(
        self, name: str, keypair: KeyPair, committee: Committee, store: AuthorityStore
    ) -> None:
        if committee.public_key(name) != keypair.public_key:
            raise ValueError(f"{name!r} is not in the committee with this key pair")
        self.name = name
        self.keypair = keypair
        self.committee = committee
        self.store = store

    # --- genesis ---------------------------------------------------------------------

    def init_account(self, address: bytes, balance: int) -> bool:
        """Create ``address`` with ``balance`` if it does not exist yet (genesis).

        Returns True if the account was created, False if it already existed
        (so replaying genesis at every start is harmless).  Raises ValueError
        for an address that is not 32 bytes or a balance outside 0..2**63-1.
        """
        if not isinstance(address, bytes) or len(address) != 32:
            raise ValueError("an address is a 32-byte public key")
        if type(balance) is not int or not 0 <= balance <= I64_MAX:
            raise ValueError("a genesis balance is an integer in 0..2**63-1")
        if self.store.load_account(address) is not None:
            return False
        self.store.save_account(address, AccountState(balance=balance))
        return True

    def init_accounts(self, balances: Mapping[bytes, int]) -> None:
        """Apply a whole genesis; raises ValueError if the total supply exceeds 2**63-1."""
        if sum(balances.values()) > I64_MAX:
            raise ValueError("total supply must fit in a signed 64-bit integer")
        for address, balance in balances.items():
            self.init_account(address, balance)

    # --- handlers --------------------------------------------------------------------

    def handle_transfer_order(self, order: TransferOrder) -> SignedTransferOrder:
        """Vote for ``order``; return the vote (staged as pending before returning).

        Raises InvalidSignature, IncorrectTransferAmount, InvalidSequenceNumber,
        UnknownSenderAccount, PreviousTransferMustBeConfirmedFirst,
        UnexpectedSequenceNumber or InsufficientFunding.
        """
        transfer = order.transfer
        if not verify_signature(transfer.sender, transfer.order_signing_bytes, order.signature):
            raise InvalidSignature("the sender's signature does not verify")
        if transfer.amount == 0:
            raise IncorrectTransferAmount()
        if transfer.sequence_number >= U64_MAX:
            raise InvalidSequenceNumber()
        account = self.store.load_account(transfer.sender)
        if account is None:
            raise UnknownSenderAccount()
        pending = account.pending_confirmation
        if pending is not None:
            if pending.value.transfer == transfer:
                return pending
            raise PreviousTransferMustBeConfirmedFirst(
                f"transfer {pending.value.transfer.sequence_number} is pending",
                pending_sequence_number=pending.value.transfer.sequence_number,
            )
        if transfer.sequence_number != account.next_sequence_number:
            raise UnexpectedSequenceNumber(
                f"expected sequence number {account.next_sequence_number}",
                expected=account.next_sequence_number,
            )
        if account.balance < transfer.amount:
            raise InsufficientFunding(
                f"balance {account.balance} < amount {transfer.amount}",
                current_balance=account.balance,
            )
        # Commit: the vote is staged before it is returned (see module docstring).
        vote = SignedTransferOrder.model_construct(
            value=order,
            authority=self.name,
            signature=self.keypair.sign(transfer.vote_signing_bytes),
        )
        # Direct construction: dataclasses.replace introspects fields on every call.
        self.store.save_account(
            transfer.sender,
            AccountState(
                account.balance,
                account.next_sequence_number,
                vote,
                account.confirmed_log,
                account.received_log,
            ),
        )
        return vote

    def handle_confirmation_order(self, order: ConfirmationOrder) -> ConfirmationOutcome:
        """Settle a certified transfer; return what changed (applied=False if old).

        Raises CertificateAuthorityReuse, UnknownSigner, CertificateRequiresQuorum,
        InvalidSignature or MissingEarlierConfirmations.
        """
        certificate = order.certificate
        verify_certificate(certificate, self.committee)
        transfer = certificate.value.transfer
        sender, recipient = transfer.sender, transfer.recipient
        # A certified sender may be unknown here if this authority missed the
        # payments that created it; the certificate proves the debit is due.
        sender_state = self.store.load_account(sender) or AccountState()
        if sender_state.next_sequence_number > transfer.sequence_number:
            return ConfirmationOutcome(
                sender, recipient, transfer.sequence_number, transfer.amount, False, sender_state
            )
        if sender_state.next_sequence_number < transfer.sequence_number:
            raise MissingEarlierConfirmations(
                f"next sequence number is {sender_state.next_sequence_number}",
                current_sequence_number=sender_state.next_sequence_number,
            )
        # Commit: nothing below can fail.
        new_sender = AccountState(
            balance=saturate(sender_state.balance - transfer.amount),
            next_sequence_number=sender_state.next_sequence_number + 1,
            pending_confirmation=None,
            confirmed_log=(*sender_state.confirmed_log, certificate),
            received_log=sender_state.received_log,
        )
        if recipient == sender:
            new_sender = replace(
                new_sender,
                balance=saturate(new_sender.balance + transfer.amount),
                received_log=(*new_sender.received_log, certificate),
            )
            self.store.save_account(sender, new_sender)
        else:
            recipient_state = self.store.load_account(recipient) or AccountState()
            new_recipient = AccountState(
                saturate(recipient_state.balance + transfer.amount),
                recipient_state.next_sequence_number,
                recipient_state.pending_confirmation,
                recipient_state.confirmed_log,
                (*recipient_state.received_log, certificate),
            )
            self.store.save_account(sender, new_sender)
            self.store.save_account(recipient, new_recipient)
        return ConfirmationOutcome(
            sender, recipient, transfer.sequence_number, transfer.amount, True, new_sender
        )

    def handle_account_info_request(self, request: AccountInfoRequest) -> AccountInfoResponse:
        """Describe an account; optionally a confirmed certificate and received payments.

        Raises UnknownSenderAccount, or CertificateNotFound if the requested
        sequence number has no confirmed certificate here.  At most
        MAX_RECEIVED_TRANSFERS_PER_RESPONSE received certificates are returned;
        ask again from a larger index for more.
        """
        account = self.store.load_account(request.sender)
        if account is None:
            raise UnknownSenderAccount()
        requested = None
        if request.request_sequence_number is not None:
            seq = request.request_sequence_number
            # Confirmations are applied in sequence order from 0, so the log index is the seq.
            if seq >= len(account.confirmed_log):
                raise CertificateNotFound(f"no certificate for sequence number {seq}")
            requested = account.confirmed_log[seq]
        received: tuple[CertifiedTransferOrder, ...] = ()
        start = request.request_received_transfers_excluding_first_nth
        if start is not None:
            received = account.received_log[start : start + MAX_RECEIVED_TRANSFERS_PER_RESPONSE]
        return AccountInfoResponse.model_construct(
            sender=request.sender,
            balance=account.balance,
            next_sequence_number=account.next_sequence_number,
            pending_confirmation=account.pending_confirmation,
            requested_certificate=requested,
            requested_received_transfers=received,
        )
