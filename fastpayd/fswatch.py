"""Wait for a file to appear without polling: Linux inotify, from asyncio.

``fastpay wait-ready`` / ``wait ready`` wait for a daemon that is not there yet, so there
is no daemon to long-poll: the event they wait for is the daemon creating its control
socket (it does so only once it is up).  :class:`PathWatch` watches the socket's
directory -- or, while that does not exist yet, the nearest ancestor that does, adding
watches as the missing directories appear -- and :meth:`PathWatch.changed` returns when
an entry there was created, moved in, removed or changed its attributes.

inotify is reached through ``ctypes`` (the standard library has no binding).  Where it
is missing (not Linux, no libc symbol, out of watches) ``changed`` degrades to waiting
``FALLBACK`` seconds, i.e. to the polling it replaces, and says so in ``available``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from pathlib import Path
from types import TracebackType

IN_ATTRIB = 0x004
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_ATTRIB | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
FALLBACK = 0.1  # s between looks where inotify is not available


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1  # noqa: B018 - raises AttributeError where there is none
        libc.inotify_add_watch  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


class PathWatch:
    """``async with PathWatch(path) as w: ... await w.changed(timeout)``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self._fd = -1
        self._libc = _libc()
        self._event = asyncio.Event()
        self._watched: set[Path] = set()

    @property
    def available(self) -> bool:
        return self._fd >= 0

    async def __aenter__(self) -> PathWatch:
        if self._libc is not None:
            fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                asyncio.get_running_loop().add_reader(fd, self._readable)
                self._arm()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _arm(self) -> None:
        """Watch the path's directory and every ancestor up to the first that exists."""
        assert self._libc is not None
        self._watched = {d for d in self._watched if d.is_dir()}  # a removed one: re-add
        directory = self.path.parent
        for d in (directory, *directory.parents):
            if d not in self._watched:
                wd = self._libc.inotify_add_watch(self._fd, os.fsencode(d), MASK)
                if wd >= 0:
                    self._watched.add(d)
            if d.is_dir():
                break
        if not self._watched:  # nothing could be watched: behave as without inotify
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._fd, 65536):
                pass
        self._event.set()

    async def changed(self, timeout: float) -> bool:
        """Return after the next change near the path (True), or after ``timeout``
        seconds (False; without inotify: after at most ``FALLBACK`` seconds, True)."""
        if self._fd < 0:
            await asyncio.sleep(min(timeout, FALLBACK))
            return True
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        self._arm()  # a directory on the way may have appeared
        return True
