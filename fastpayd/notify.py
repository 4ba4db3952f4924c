"""systemd readiness protocol (sd_notify) with the standard library only.

systemd passes ``$NOTIFY_SOCKET``: a Unix datagram socket path, or an abstract one when it
starts with ``@``.  We send ``READY=1`` once the link and the control socket are up,
``STOPPING=1`` when shutting down, ``RELOADING=1``/``READY=1`` around a SIGHUP reload, and
``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` when the unit has a watchdog.  Without
``$NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams; keeps one socket open for the process's lifetime."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if raw.startswith("@"):
            self._address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self._address = raw
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._watchdog_task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value``) as one datagram; return whether it was sent."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            # A missing supervisor must not take the daemon down.
            log.warning("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *( [f"STATUS={status}"] if status else []))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def start_watchdog(self) -> None:
        """Start keep-alives at half ``$WATCHDOG_USEC`` (nothing if no watchdog)."""
        if self.watchdog_interval is None or self._sock is None or self._watchdog_task:
            return
        self._watchdog_task = asyncio.create_task(self._watchdog(self.watchdog_interval))

    async def _watchdog(self, interval: float) -> None:
        # Runs on the event loop: if the loop hangs, the keep-alives stop and systemd
        # restarts us, which is the point.
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog_task
            self._watchdog_task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
