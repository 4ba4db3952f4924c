"""Length-prefixed msgpack frames: 4-byte big-endian length, then the payload.

The link's own copy of the daemon's framing (the package may not import other
fastpayd modules): just enough to move one request and one response over a session.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack  # type: ignore[import-untyped]

MAX_FRAME = 1 << 20


class FrameError(ValueError):
    """A frame was too large, truncated or not msgpack."""


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """Read one frame and return the decoded msgpack value; raise FrameError, EOFError."""
    try:
        header = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("connection closed") from exc
        raise FrameError("truncated frame header") from exc
    (length,) = struct.unpack(">I", header)
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameError("truncated frame") from exc
    try:
        return msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"bad msgpack: {exc}") from exc


def encode_frame(value: Any) -> bytes:
    """Return the bytes of one frame holding ``value``."""
    payload = msgpack.packb(value, use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise FrameError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return struct.pack(">I", len(payload)) + payload


async def write_frame(writer: asyncio.StreamWriter, value: Any) -> None:
    """Write one frame and wait until it is handed to the kernel."""
    writer.write(encode_frame(value))
    await writer.drain()
