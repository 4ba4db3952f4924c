"""Plain-stream helpers for the live radio tests: one frame at a time over a P2P group.

The daemon talks through :mod:`fastpayd.link.stream` (its framed protocols); these tests
probe the radio layer beneath it with ``asyncio`` streams instead, so they live here and
not in production code.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastpayd.framing import DEFAULT_MAX_FRAME, FrameDecoder, FramingError, encode_frame
from fastpayd.wifidirect import AuthorityPeer, WifiDirectAuthority, WifiDirectClient


async def read_frame(reader: asyncio.StreamReader, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Read one frame from a stream; EOFError on a clean end, FramingError if cut short."""
    decoder = FrameDecoder(max_frame)
    try:
        header = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError from None
        raise FramingError("truncated frame header") from exc
    frames = decoder.feed(header)
    if not frames:
        size = int.from_bytes(header, "big")
        try:
            frames = decoder.feed(await reader.readexactly(size))
        except asyncio.IncompleteReadError as exc:
            raise FramingError("truncated frame") from exc
    return frames[0]


async def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    """Write one frame holding ``payload`` and wait until it is handed to the kernel."""
    writer.write(encode_frame(payload))
    await writer.drain()


async def serve(auth: WifiDirectAuthority,
                handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                  Awaitable[None]]) -> asyncio.Server:
    """Listen on ``[::]:port`` (the authority's advertised port)."""
    return await asyncio.start_server(handler, host="::", port=auth.record.port,
                                      family=socket.AF_INET6, reuse_address=True)


@contextlib.asynccontextmanager
async def session(client: WifiDirectClient, peer: AuthorityPeer, timeout: float = 90.0
                  ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Join ``peer``'s group, connect to its GO, yield ``(reader, writer)``, then leave."""
    t0 = time.monotonic()
    async with client.membership(peer, timeout) as member:
        streams, host = await client.open_tcp(member.group, peer.record.port,
                                              member.deadline, asyncio.open_connection)
        reader, writer = streams
        member.on_gone.append(writer.close)
        if member.gone.is_set():
            writer.close()
        client.emit("session_opened", address=peer.address, host=host,
                    elapsed=time.monotonic() - t0)
        try:
            yield reader, writer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
