"""Framed request/response connections over any asyncio stream transport (TCP today).

Both link kinds end in a TCP socket (on loopback/LAN for the IP link, on the P2P group
interface for WiFi Direct), so both use the two protocols here.

``ServerConnection`` — one per inbound connection, one pump:
  ``data_received`` feeds the :class:`~fastpayd.framing.FrameDecoder`; each complete frame is
  decoded and handed to the node's synchronous ``handle(message, peer)``, which returns the
  response and, optionally, a future the response must wait for (the storage's "durable"
  future).  Responses queue in request order and are written as soon as the head of the
  queue is releasable, so a client may pipeline many requests on one connection and they
  all ride the same group commit, yet every response leaves only after its writes are on
  disk.  No task is created per request: releasing is a future callback.
  Any bad input (oversized/empty frame, undecodable payload) gets one typed ``Error`` frame,
  after the responses already owed, and the connection is closed.  Errors raised by the
  handler are protocol answers (``Error`` frames) and the connection stays open.
  One timer per connection enforces both the read timeout (a started frame must complete)
  and the idle timeout (no traffic and nothing owed).

``ClientConnection`` — outbound; ``request(message)`` writes a frame and returns a future
  resolved by the matching response (responses come back in request order, so matching is
  a FIFO).  Losing the connection fails every outstanding future with ``LinkError``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from fastpayd import wire
from fastpayd.errors import FastpaydError
from fastpayd.framing import HEADER_SIZE, FrameDecoder, FramingError, encode_frame

log = logging.getLogger(__name__)

# Stop reading from a connection that has this many responses owed (backpressure: a client
# pipelining faster than we commit must not grow our memory without bound).
MAX_OWED = 1024
# Defaults of the [link] settings of the same names (docs/config.md).
DEFAULT_MAX_PER_PEER = 32  # connections from one source address
DEFAULT_WRITE_TIMEOUT = 10.0  # s: a peer whose receive window stays shut this long is dropped
DEFAULT_MAX_UNSENT = 4 << 20  # bytes queued for one peer beyond which it is dropped


class LinkError(FastpaydError):
    """A connection could not be opened, was lost, or a request timed out."""

    code = "LinkError"


class RequestHandler(Protocol):
    """What a node gives a link: answer one decoded request."""

    def handle(self, message: Any, peer: str) -> tuple[Any, asyncio.Future[Any] | None]:
        """Return (response, wait_for) where ``wait_for`` (or None) gates the response."""
        ...


class ConnectionTracker:
    """Counts a server's live connections and enforces the caps (global and per address)."""

    def __init__(self, max_connections: int, max_per_peer: int | None = None) -> None:
        self.max_connections = max_connections
        self.max_per_peer = min(max_connections, max_per_peer or DEFAULT_MAX_PER_PEER)
        self.active: set[ServerConnection] = set()
        self.per_host: collections.Counter[str] = collections.Counter()
        self.accepted = 0
        self.refused = 0
        self.dropped = 0  # closed for not reading (write timeout / unsent-bytes cap)

    def refusal(self, host: str) -> tuple[str, int] | None:
        """Why a new connection from ``host`` must be refused: (reason, limit), or None."""
        if len(self.active) >= self.max_connections:
            return "max_connections", self.max_connections
        if self.per_host[host] >= self.max_per_peer:
            return "max_connections_per_peer", self.max_per_peer
        return None

    def add(self, conn: ServerConnection) -> None:
        self.active.add(conn)
        self.per_host[conn.host] += 1
        self.accepted += 1

    def discard(self, conn: ServerConnection) -> bool:
        """Forget ``conn``; return whether it was counted."""
        if conn not in self.active:
            return False
        self.active.discard(conn)
        self.per_host[conn.host] -= 1
        if self.per_host[conn.host] <= 0:
            del self.per_host[conn.host]
        return True

    async def close_server(self, server: asyncio.Server) -> None:
        """Stop ``server`` listening, drop its live connections, wait (briefly) for it."""
        server.close()
        for conn in list(self.active):
            conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)


class ServerConnection(asyncio.Protocol):
    """One inbound connection (see module docstring)."""

    def __init__(
        self,
        handler: RequestHandler,
        tracker: ConnectionTracker,
        *,
        max_frame: int,
        idle_timeout: float,
        read_timeout: float,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_unsent: int | None = None,
        on_event: Callable[..., object] | None = None,
    ) -> None:
        self._handler = handler
        self._tracker = tracker
        self._max_frame = max_frame
        self._idle_timeout = idle_timeout
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        # At least one whole reply must fit, whatever the caller asked for.
        self._max_unsent = max(max_unsent or DEFAULT_MAX_UNSENT, max_frame + HEADER_SIZE)
        self._on_event = on_event
        self._decoder = FrameDecoder(max_frame)
        self._transport: asyncio.Transport | None = None
        self._owed: collections.deque[list[Any]] = collections.deque()  # [bytes|None, fut]
        self._last_gate: asyncio.Future[Any] | None = None
        self._closing = False
        self._closing_since: float | None = None
        self._paused = False
        self._write_blocked = False
        self._last_activity = 0.0
        self._partial_since: float | None = None  # first byte of the frame being read
        self._stalled_since: float | None = None  # our writes blocked (peer not reading)
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_event_loop()
        self.peer = "?"
        self.host = "?"
        self.requests = 0

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peername = transport.get_extra_info("peername")
        self.peer = _format_peer(peername)
        self.host = str(peername[0]) if isinstance(peername, tuple) and peername else self.peer
        tracker = self._tracker
        refusal = tracker.refusal(self.host)
        if refusal is not None:
            reason, limit = refusal
            tracker.refused += 1
            self._closing = True
            transport.write(encode_frame(wire.encode_error(wire.too_many_connections(
                limit, per_peer=reason != "max_connections"))))
            transport.close()
            self._emit("connection_refused", reason=reason)
            return
        tracker.add(self)
        self._last_activity = self._loop.time()
        self._arm_timer(self._last_activity + self._idle_timeout)
        self._emit("peer_connected")

    def connection_lost(self, exc: Exception | None) -> None:
        was_active = self._tracker.discard(self)
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._owed.clear()
        self._transport = None
        if was_active:
            self._emit("peer_disconnected", requests=self.requests)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        now = self._loop.time()
        self._last_activity = now
        try:
            frames = self._decoder.feed(data)
        except FramingError as exc:
            # Complete requests before the bad header are answered first, in order.
            for frame in exc.frames:
                if self._closing:
                    return
                self._handle_frame(frame)
            self._fail(wire.framing_error(exc))
            return
        for frame in frames:
            if self._closing:
                return
            self._handle_frame(frame)
        # The read timeout counts from the first byte of the frame being read: a read that
        # completed frames and left a partial one started that one now.
        if frames or self._partial_since is None:
            if self._decoder.pending:
                self._partial_since = now
                self._arm_timer(now + self._read_timeout)
            else:
                self._partial_since = None

    def eof_received(self) -> bool | None:
        # A half-close with a partial frame is a truncated frame: answer, then close.
        if self._decoder.pending and not self._closing:
            self._fail(wire.truncated_frame())
            return True
        # Let owed responses go out, then close (keep the transport open for writing).
        self._start_closing()
        self._close_when_drained()
        return True

    def pause_writing(self) -> None:
        # The peer is not reading what we send: it has write_timeout to start again.
        self._write_blocked = True
        if self._stalled_since is None:
            self._stalled_since = self._loop.time()
            self._arm_timer(self._stalled_since + self._write_timeout)
        self._set_paused(True)

    def resume_writing(self) -> None:
        self._write_blocked = False
        self._stalled_since = None
        if len(self._owed) < MAX_OWED // 2:
            self._set_paused(False)

    # -- request handling -----------------------------------------------------------------

    def _handle_frame(self, frame: bytes) -> None:
        self.requests += 1
        try:
            message = wire.decode(frame)
        except wire.ProtocolError as exc:
            self._fail(wire.error_message(exc))
            return
        try:
            response, wait_for = self._handler.handle(message, self.peer)
        except wire.ProtocolError as exc:
            response, wait_for = wire.error_message(exc), None
        except Exception:  # noqa: BLE001 - the daemon never dies of input
            log.exception("handler failed on a request from %s", self.peer)
            response, wait_for = wire.internal_error(), None
        try:
            data = encode_frame(wire.encode(response), self._max_frame)
        except Exception:  # noqa: BLE001
            log.exception("cannot encode a response for %s", self.peer)
            data = encode_frame(wire.encode_error(wire.internal_error()))
        if wait_for is None and not self._owed:
            assert self._transport is not None
            self._transport.write(data)
            self._check_unsent()
            return
        self._owed.append([data, wait_for])
        if wait_for is None:
            self._release(None)
        elif wait_for is not self._last_gate:
            # Requests of one batch share the gate: one callback releases them all.
            self._last_gate = wait_for
            wait_for.add_done_callback(self._release)
        if len(self._owed) >= MAX_OWED and not self._paused:
            self._set_paused(True)

    def _release(self, _fut: object) -> None:
        """Write every response at the head of the queue whose gate is open."""
        transport = self._transport
        owed = self._owed
        if transport is None or transport.is_closing() and not owed:
            return
        out: list[bytes] = []
        while owed:
            data, gate = owed[0]
            if gate is not None:
                if not gate.done():
                    break
                if gate.cancelled() or gate.exception() is not None:
                    # Storage failed: the response may not be durable, never send it.
                    log.error("dropping responses to %s: storage failure", self.peer)
                    self._closing = True
                    owed.clear()
                    transport.abort()
                    return
            owed.popleft()
            if data is not None:
                out.append(data)
        if out:
            # One write (one send syscall) for every response the batch released.
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if not self._check_unsent():
                return
        if self._paused and not self._write_blocked and len(owed) < MAX_OWED // 2:
            self._set_paused(False)
        if not owed and self._closing:
            transport.close()

    def _check_unsent(self) -> bool:
        """Drop the peer if our unsent bytes to it exceed the cap; return False if dropped."""
        transport = self._transport
        if transport is None or transport.get_write_buffer_size() <= self._max_unsent:
            return True
        self._drop("unsent_cap")
        return False

    def _drop(self, reason: str) -> None:
        """Abort a peer that does not read what we send: no error frame, it would not read it."""
        transport = self._transport
        self._closing = True
        self._owed.clear()
        self._tracker.dropped += 1
        self._emit("peer_dropped", reason=reason,
                   unsent=transport.get_write_buffer_size() if transport else 0)
        if transport is not None:
            transport.abort()

    def _fail(self, error: Any) -> None:
        """Answer a bad frame with ``error`` after what is owed, then close."""
        if self._closing:
            return
        self._emit("bad_frame", code=wire.error_code(error))
        data = encode_frame(wire.encode_error(error))
        self._start_closing()
        self._owed.append([data, None])
        self._release(None)

    def _start_closing(self) -> None:
        if self._closing_since is None:
            self._closing_since = self._loop.time()
            # What is still unsent then has write_timeout to leave (close() waits for it).
            self._arm_timer(self._closing_since + self._write_timeout)
        self._closing = True

    def _close_when_drained(self) -> None:
        if not self._owed and self._transport is not None:
            self._transport.close()

    def _set_paused(self, paused: bool) -> None:
        if self._transport is None or paused == self._paused:
            return
        self._paused = paused
        try:
            if paused:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()
        except RuntimeError:
            pass

    # -- timers ---------------------------------------------------------------------------

    def _arm_timer(self, when: float) -> None:
        """Make sure the timer fires no later than ``when`` (loop time).

        One timer re-armed lazily: it is moved only when a deadline comes earlier than the
        one it is set for, which is cheaper than cancelling a timer on every packet.
        """
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        now = self._loop.time()
        if self._closing:
            # Closing, and what we owe the peer has not left within write_timeout.
            since = self._closing_since
            if since is None:
                return
            if now >= since + self._write_timeout:
                self._drop("write_timeout")
            else:
                self._arm_timer(since + self._write_timeout)
            return
        deadlines: list[float] = []
        if self._stalled_since is not None:
            deadline = self._stalled_since + self._write_timeout
            if now >= deadline:
                self._drop("write_timeout")
                return
            deadlines.append(deadline)
        if self._partial_since is not None:
            deadline = self._partial_since + self._read_timeout
            if now >= deadline:
                self._fail(wire.timeout_error(
                    f"read timeout: frame incomplete after {self._read_timeout:g} s"))
                return
            deadlines.append(deadline)
        deadline = self._last_activity + self._idle_timeout
        if now >= deadline and not self._owed and self._stalled_since is None:
            self._fail(wire.timeout_error(f"idle timeout: nothing received for "
                                          f"{self._idle_timeout:g} s"))
            return
        deadlines.append(max(deadline, now + min(self._read_timeout, self._idle_timeout)))
        self._arm_timer(min(deadlines))

    def _emit(self, event: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(event, peer=self.peer, **fields)

    def close(self) -> None:
        """Close after the owed responses are written (at most write_timeout from now)."""
        if self._transport is None:
            return
        self._start_closing()
        self._release(None)
        self._close_when_drained()


class ClientConnection(asyncio.Protocol):
    """One outbound connection with pipelined requests (see module docstring)."""

    def __init__(self, max_frame: int, name: str = "") -> None:
        self.name = name
        self._max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._transport: asyncio.Transport | None = None
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.closed = asyncio.get_event_loop().create_future()
        self.connected_at = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FramingError as exc:
            self._abort(LinkError(f"bad frame from {self.name}: {exc}"))
            return
        for frame in frames:
            if not self._waiting:
                self._abort(LinkError(f"unsolicited frame from {self.name}"))
                return
            fut = self._waiting.popleft()
            if fut.done():
                continue  # the caller gave up (timeout); the FIFO still advances
            try:
                fut.set_result(wire.decode(frame))
            except wire.ProtocolError as exc:
                fut.set_exception(LinkError(f"undecodable response from {self.name}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        err = LinkError(f"connection to {self.name} lost" + (f": {exc}" if exc else ""))
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(err)
        if not self.closed.done():
            self.closed.set_result(None)

    def _abort(self, exc: LinkError) -> None:
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def send(self, message: Any) -> asyncio.Future[Any]:
        """Write ``message``; return the future of its response (no timeout here)."""
        return self.send_raw(wire.encode(message))

    def send_raw(self, payload: bytes) -> asyncio.Future[Any]:
        """Like :meth:`send` with an already-encoded message."""
        fut: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
        if self._transport is None or self._transport.is_closing():
            fut.set_exception(LinkError(f"connection to {self.name} is closed"))
            return fut
        self._transport.write(encode_frame(payload, self._max_frame))
        self._waiting.append(fut)
        return fut

    async def request(self, message: Any, timeout: float) -> Any:
        """Send ``message`` and return its response; LinkError on loss or timeout."""
        fut = self.send(message)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            # The stream may now be out of step for this request; drop it.
            self.close()
            raise LinkError(f"no response from {self.name} within {timeout:.1f}s") from None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _format_peer(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername) if peername else "?"
