"""The daemon's view of the wire: protocol codec plus transport-level errors.

The links speak protocol messages (``protocol.encode`` / ``protocol.decode``).  Errors that
only the transport can detect (oversized or truncated frame, timeout, connection cap) are
sent as ordinary protocol ``Error`` messages with typed codes, so a peer handles them like
any other error.  The protocol layer owns the codes it knows (``FrameTooLarge``,
``InvalidMessage``, ``InternalError``); ``Timeout`` and ``TooManyConnections`` are reserved
for the transport and built here when the protocol does not define them.
"""

from __future__ import annotations

from typing import Any

import protocol
from fastpayd.framing import EmptyFrame, FrameTooLarge, FramingError
from protocol import errors as perrors

ProtocolError = protocol.FastPayError
encode = protocol.encode
decode = protocol.decode

TIMEOUT = "Timeout"
TOO_MANY_CONNECTIONS = "TooManyConnections"


def error_message(exc: protocol.FastPayError) -> Any:
    """The ``Error`` message describing a protocol error."""
    return exc.to_message()


def _error(code: str, message: str) -> Any:
    cls = perrors.ERRORS_BY_CODE.get(code)
    if cls is not None:
        return cls(message).to_message()
    return protocol.Error(code=code, message=message)


def framing_error(exc: FramingError) -> Any:
    if isinstance(exc, FrameTooLarge):
        return perrors.FrameTooLarge(str(exc)).to_message()
    if isinstance(exc, EmptyFrame):
        return perrors.InvalidMessage("empty frame").to_message()
    return perrors.InvalidMessage(str(exc)).to_message()


def truncated_frame() -> Any:
    return perrors.InvalidMessage("truncated frame: connection closed mid-frame").to_message()


def timeout_error(message: str) -> Any:
    return _error(TIMEOUT, message)


def too_many_connections(limit: int, per_peer: bool = False) -> Any:
    what = "per-address connection limit" if per_peer else "connection limit"
    return _error(TOO_MANY_CONNECTIONS, f"{what} of {limit} reached; retry later")


def internal_error(message: str = "internal error") -> Any:
    return perrors.InternalError(message).to_message()


def unexpected_message(message: Any) -> Any:
    return perrors.UnexpectedMessage(
        f"{type(message).__name__} is not accepted here").to_message()


def encode_error(error: Any) -> bytes:
    return protocol.encode(error)


def error_code(error: Any) -> str:
    return str(getattr(error, "code", "?"))


def is_error(message: Any) -> bool:
    return isinstance(message, protocol.Error)
