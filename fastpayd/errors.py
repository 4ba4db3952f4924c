"""The root of fastpayd's own errors, with stable codes, and the one exit-status table.

Protocol refusals are :class:`protocol.FastPayError` (they travel on the wire); what goes
wrong in the daemon itself -- a config or key file, the state lock, the control socket,
the link, storage, the radio -- is a :class:`FastpaydError`.  Each class has a ``code``
that logs, events and the control socket can carry, and the ``exit_status`` ``fastpayd``
ends with when it cannot start or keep running because of it.

:data:`EXIT_CODES` is the single exit-status table of both programs, ``fastpayd`` (the
daemon, ``keygen``, ``testnet``) and ``fastpay`` (the control CLI); docs/cli.md shows it
and both programs' ``--help`` print it.  A status means the same thing whichever program
ends with it.  ``systemd/fastpayd@.service`` lists :data:`RESTART_PREVENT` in
``RestartPreventExitStatus=`` (a test keeps the two equal).
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_FAILURE = 1  # refused by the daemon / failed while running
EXIT_REFUSED = EXIT_FAILURE
EXIT_USAGE = 2
EXIT_CONFIG = EXIT_USAGE  # a config mistake is a usage mistake: the message names the key
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_IN_USE = 5
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok (fastpayd: stopped by SIGTERM/SIGINT, or its files written)",
    EXIT_FAILURE: "refused or failed: the daemon refused (its error code is printed, e.g. "
                  "NoQuorum, InsufficientFunding), a wait that can no longer succeed, a "
                  "daemon failure while running, 'testnet status' with a node down; or a "
                  "bug (said so, no traceback)",
    EXIT_USAGE: "usage or configuration: bad arguments or options, unknown command, a "
                "config, committee or key file at fault (the message names the file and "
                "key), a file that would be overwritten",
    EXIT_UNREACHABLE: "unreachable: no daemon answers on the control socket",
    EXIT_TIMEOUT: "timeout: it did not finish in time (--timeout: a wait, sync, "
                  "wait-ready, testnet up)",
    EXIT_IN_USE: "in use: another running fastpayd holds this state directory or control "
                 "socket (fastpayd does not start; testnet --force refuses)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_PIPE: "the output was closed early (e.g. '| head'); nothing on stderr",
}

# Start-up failures that would fail the same way on every restart (systemd unit).
RESTART_PREVENT = (EXIT_USAGE, EXIT_IN_USE)


def exit_epilog() -> str:
    """The table as one paragraph, for ``--help`` epilogs."""
    return "Exit status: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."


class FastpaydError(Exception):
    """Root of the daemon's errors; ``code`` is stable, ``exit_status`` what it ends with."""

    code: ClassVar[str] = "FastpaydError"
    exit_status: ClassVar[int] = EXIT_FAILURE
