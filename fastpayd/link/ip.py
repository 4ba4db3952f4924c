"""The IP link: static endpoints from the committee file, framed TCP.

Inbound: one ``asyncio`` server on ``[link] listen``; every accepted socket gets a
:class:`~fastpayd.link.stream.ServerConnection` (cap, timeouts, ordered durable replies).
Outbound: one cached :class:`~fastpayd.link.stream.ClientConnection` per peer, opened on
demand from the peer's ``endpoint`` and reopened after it drops; concurrent callers share
one connect attempt.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastpayd.link import Link
from fastpayd.link.stream import (
    ClientConnection,
    LinkError,
    RequestHandler,
)


class IpLink(Link):
    kind = "ip"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server: asyncio.Server | None = None
        self._tracker = self._tracker_for_config()
        self._out: dict[str, ClientConnection] = {}
        self._connecting: dict[str, asyncio.Future[ClientConnection]] = {}
        self._last_ok: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        self._bound = ""

    async def start(self, handler: RequestHandler | None) -> None:
        listen = self.config.listen
        if handler is None or listen is None:
            return
        loop = asyncio.get_running_loop()
        factory = self._server_factory(handler, self._tracker)

        try:
            self._server = await loop.create_server(
                factory, listen.host, listen.port, reuse_address=True, backlog=512
            )
        except OSError as exc:
            raise LinkError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        sock = self._server.sockets[0].getsockname()
        self._bound = f"{sock[0]}:{sock[1]}"
        self.events.emit("link_up", kind=self.kind, listen=self._bound)

    @property
    def local_address(self) -> str:
        return self._bound or (str(self.config.listen) if self.config.listen else "")

    async def close(self) -> None:
        if self._server is not None:
            await self._tracker.close_server(self._server)
            self._server = None
        for out in self._out.values():
            out.close()
        self._out.clear()

    async def connect(self, peer: str) -> ClientConnection:
        conn = self._out.get(peer)
        if conn is not None and conn.is_open:
            return conn
        pending = self._connecting.get(peer)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[ClientConnection] = asyncio.get_running_loop().create_future()
        self._connecting[peer] = fut
        try:
            conn = await self._open(peer)
        except LinkError as exc:
            self._last_error[peer] = str(exc)
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: other waiters may not exist
            raise
        finally:
            self._connecting.pop(peer, None)
        self._out[peer] = conn
        self._last_ok[peer] = time.monotonic()
        self._last_error.pop(peer, None)
        fut.set_result(conn)
        return conn

    async def _open(self, peer: str) -> ClientConnection:
        entry = self.directory.get(peer)
        if entry is None:
            raise LinkError(f"unknown peer {peer!r}")
        if entry.endpoint is None:
            raise LinkError(f"peer {peer!r} has no IP endpoint")
        loop = asyncio.get_running_loop()
        ep = entry.endpoint
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: ClientConnection(self.config.max_frame, peer), ep.host, ep.port
                ),
                self.config.connect_timeout,
            )
        except TimeoutError:
            raise LinkError(f"connecting to {peer} at {ep}: timed out") from None
        except OSError as exc:
            raise LinkError(f"connecting to {peer} at {ep}: {exc.strerror or exc}") from None
        # asyncio already sets TCP_NODELAY on TCP transports: small requests go out at once.
        self.events.emit("peer_connected", peer=peer, endpoint=str(ep), direction="out")
        return conn

    def peers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for name, entry in sorted(self.directory.items()):
            if name == self.self_name:
                continue
            conn = self._out.get(name)
            last = self._last_ok.get(name)
            out.append({
                "name": name,
                "role": entry.role,
                "key": entry.key.hex(),
                "endpoint": str(entry.endpoint) if entry.endpoint else None,
                "connected": bool(conn and conn.is_open),
                "last_connected_ago": None if last is None else round(now - last, 3),
                "last_error": self._last_error.get(name),
            })
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "inbound_connections": len(self._tracker.active),
            "accepted": self._tracker.accepted,
            "refused": self._tracker.refused,
            "dropped": self._tracker.dropped,
            "outbound_connections": sum(1 for c in self._out.values() if c.is_open),
        }
