"""One process per state directory: an exclusive ``flock`` on ``<state_dir>/lock``.

Two processes serving one authority's state would each keep the accounts in memory and
each sign a vote for a different transfer of the same (sender, sequence number): the one
thing FastPay's safety forbids.  So a node takes this lock before it reads its state and
holds it until it exits; a second process on the same ``state_dir`` is refused with the
holder's pid.  The lock belongs to the open file description, so the kernel releases it
when the holder dies, however it dies (SIGKILL included): no stale-lock cleanup, and a
``lock`` file left behind by a dead process never blocks a restart.

The file holds the holder's pid (one line, for people and for the refusal message); it is
informational only, the lock is the ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from fastpayd.errors import EXIT_IN_USE, FastpaydError

LOCK_NAME = "lock"


class StateLocked(FastpaydError):
    """Another live process holds the state directory's lock."""

    code = "StateLocked"
    exit_status = EXIT_IN_USE

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "another process (pid unknown)"
        super().__init__(f"{path.parent}: state directory in use by {holder} "
                         f"(lock {path}); stop that node first")
        self.path = path
        self.pid = pid


def holder_pid(path: Path) -> int | None:
    """The pid written in a lock file, or None."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


class StateLock:
    """``with StateLock(state_dir):`` holds the lock; raises StateLocked or OSError."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateLocked(self.path, holder_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
