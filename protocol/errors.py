"""Errors of the FastPay protocol layer, each with a stable wire code.

Every failure the protocol can report is a subclass of :class:`FastPayError`.
Each subclass carries a class attribute ``code``: a short ASCII string that is
part of the wire format (it travels inside an :class:`~protocol.messages.Error`
message) and therefore never changes once published.  Variants that benefit
from extra data (``InsufficientFunding.current_balance``,
``UnexpectedSequenceNumber.expected``, ...) keep it as attributes for local
callers; on the wire only ``code`` and the human-readable ``message`` travel,
so a remote peer reconstructs the class but not the data
(:func:`error_from_message`).

Errors split, like h11's local/remote protocol errors, into what an authority
refuses (the order is wrong), what the codec refuses (the bytes are wrong) and
what the client state machine refuses (the user asked for something
impossible).  All share the root so a daemon can catch one type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pragma: no cover - import only for type checking (avoids a cycle)
    from protocol.messages import Error


class FastPayError(Exception):
    """Root of every protocol error; ``code`` is stable and travels on the wire."""

    code: ClassVar[str] = "FastPayError"
    default_message: ClassVar[str] = "FastPay error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)

    @property
    def wire_code(self) -> str:
        """The code sent on the wire (an instance may override an unknown remote code)."""
        remote: str | None = self.__dict__.get("_remote_code")
        return self.code if remote is None else remote

    def to_message(self) -> Error:
        """Return the :class:`~protocol.messages.Error` message describing this error."""
        from protocol.messages import MAX_ERROR_MESSAGE_LENGTH, Error

        return Error(code=self.wire_code, message=self.message[:MAX_ERROR_MESSAGE_LENGTH])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# --- Wire / codec errors -------------------------------------------------------------


class InvalidMessage(FastPayError):
    """The bytes are not a well-formed message (bad msgpack, wrong shape, invalid field)."""

    code = "InvalidMessage"
    default_message = "Malformed message"


class UnknownMessageType(FastPayError):
    """The type tag names no message of this protocol version."""

    code = "UnknownMessageType"
    default_message = "Unknown message type"


class UnsupportedVersion(FastPayError):
    """The message carries a protocol version this implementation does not speak."""

    code = "UnsupportedVersion"
    default_message = "Unsupported protocol version"


class FrameTooLarge(FastPayError):
    """A frame's declared length exceeds the maximum frame size (raised by the framer)."""

    code = "FrameTooLarge"
    default_message = "Frame exceeds the maximum frame size"


class UnexpectedMessage(FastPayError):
    """A well-formed message arrived where the receiver does not accept that type."""

    code = "UnexpectedMessage"
    default_message = "Message type not accepted here"


class Timeout(FastPayError):
    """A peer was idle or too slow; the connection is closed (sent by the daemon)."""

    code = "Timeout"
    default_message = "Timed out"


class TooManyConnections(FastPayError):
    """The receiver is at its connection cap; try again later (sent by the daemon)."""

    code = "TooManyConnections"
    default_message = "Too many connections"


class InternalError(FastPayError):
    """The receiver failed for a reason that is not the sender's fault."""

    code = "InternalError"
    default_message = "Internal error"


# --- Transfer order errors (authority) -----------------------------------------------


class InvalidSignature(FastPayError):
    """A signature (client order, vote or certificate entry) does not verify."""

    code = "InvalidSignature"
    default_message = "Signature is not valid"


class IncorrectTransferAmount(FastPayError):
    """The transfer amount is zero."""

    code = "IncorrectTransferAmount"
    default_message = "Transfer amount must be greater than zero"


class InvalidSequenceNumber(FastPayError):
    """The sequence number is the maximum value and could never be incremented."""

    code = "InvalidSequenceNumber"
    default_message = "Sequence number cannot be incremented"


class UnknownSenderAccount(FastPayError):
    """The authority has no account for this sender."""

    code = "UnknownSenderAccount"
    default_message = "Unknown sender account"


class PreviousTransferMustBeConfirmedFirst(FastPayError):
    """A different order is already pending (voted) for this account."""

    code = "PreviousTransferMustBeConfirmedFirst"
    default_message = "A different transfer is pending; confirm it first"

    def __init__(self, message: str | None = None, *, pending_sequence_number: int = -1) -> None:
        super().__init__(message)
        self.pending_sequence_number = pending_sequence_number


class UnexpectedSequenceNumber(FastPayError):
    """The order's sequence number is not the account's next sequence number."""

    code = "UnexpectedSequenceNumber"
    default_message = "Unexpected sequence number"

    def __init__(self, message: str | None = None, *, expected: int = -1) -> None:
        super().__init__(message)
        self.expected = expected


class InsufficientFunding(FastPayError):
    """The sender's balance at this authority is below the amount."""

    code = "InsufficientFunding"
    default_message = "Insufficient funding"

    def __init__(self, message: str | None = None, *, current_balance: int = 0) -> None:
        super().__init__(message)
        self.current_balance = current_balance


# --- Certificate / confirmation errors -----------------------------------------------


class CertificateAuthorityReuse(FastPayError):
    """The same authority appears twice in a certificate."""

    code = "CertificateAuthorityReuse"
    default_message = "An authority signed the certificate more than once"


class UnknownSigner(FastPayError):
    """A signer (of a vote or certificate) is not a committee member."""

    code = "UnknownSigner"
    default_message = "Signer is not a committee member"


class CertificateRequiresQuorum(FastPayError):
    """The certificate's signers do not reach the quorum threshold."""

    code = "CertificateRequiresQuorum"
    default_message = "Certificate signers do not reach a quorum"


class MissingEarlierConfirmations(FastPayError):
    """A confirmation for a future sequence number; earlier ones must come first."""

    code = "MissingEarlierConfirmations"
    default_message = "Earlier confirmations are missing"

    def __init__(self, message: str | None = None, *, current_sequence_number: int = -1) -> None:
        super().__init__(message)
        self.current_sequence_number = current_sequence_number


class CertificateNotFound(FastPayError):
    """An account info request asked for a certificate the authority does not have."""

    code = "CertificateNotFound"
    default_message = "No certificate for that sequence number"


# --- Client-side errors --------------------------------------------------------------


class TransferAlreadyPending(FastPayError):
    """The client already has an order awaiting its certificate."""

    code = "TransferAlreadyPending"
    default_message = "A transfer is already pending"


class WrongRecipient(FastPayError):
    """A certificate handed to a client pays someone else."""

    code = "WrongRecipient"
    default_message = "Certificate is not for this recipient"


class BalanceOverflow(FastPayError):
    """A credit would take the recipient's balance past the signed 64-bit range."""

    code = "BalanceOverflow"
    default_message = "Credit would overflow the balance"


ALL_ERRORS: tuple[type[FastPayError], ...] = (
    InvalidMessage,
    UnknownMessageType,
    UnsupportedVersion,
    FrameTooLarge,
    UnexpectedMessage,
    Timeout,
    TooManyConnections,
    InternalError,
    InvalidSignature,
    IncorrectTransferAmount,
    InvalidSequenceNumber,
    UnknownSenderAccount,
    PreviousTransferMustBeConfirmedFirst,
    UnexpectedSequenceNumber,
    InsufficientFunding,
    CertificateAuthorityReuse,
    UnknownSigner,
    CertificateRequiresQuorum,
    MissingEarlierConfirmations,
    CertificateNotFound,
    TransferAlreadyPending,
    WrongRecipient,
    BalanceOverflow,
)
"""Every error class, in the order docs/protocol.md lists them."""

ERRORS_BY_CODE: dict[str, type[FastPayError]] = {cls.code: cls for cls in ALL_ERRORS}


def error_from_message(message: Error) -> FastPayError:
    """Rebuild the error a peer reported.

    Returns an instance of the class registered for ``message.code``; an unknown
    code yields a plain :class:`FastPayError` whose ``wire_code`` is the remote code.
    """
    cls = ERRORS_BY_CODE.get(message.code)
    if cls is None:
        err = FastPayError(message.message)
        err.__dict__["_remote_code"] = message.code
        return err
    return cls(message.message)
