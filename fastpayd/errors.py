"""The root of fastpayd's own errors, with stable codes and the exit status each one means.

Protocol refusals are :class:`protocol.FastPayError` (they travel on the wire); what goes
wrong in the daemon itself -- a config or key file, the state lock, the control socket,
the link, storage, the radio -- is a :class:`FastpaydError`.  Each class has a ``code``
that logs, events and the control socket can carry, and the ``exit_status`` ``fastpayd``
ends with when it cannot start or keep running because of it (the table in
docs/config.md): 1 failed while running, 2 a usage or configuration mistake (the message
names the file and the key), 3 the state or control socket is held by another process.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_IN_USE = 3


class FastpaydError(Exception):
    """Root of the daemon's errors; ``code`` is stable, ``exit_status`` what it ends with."""

    code: ClassVar[str] = "FastpaydError"
    exit_status: ClassVar[int] = EXIT_FAILURE
