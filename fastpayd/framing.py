"""Length-prefixed frames: a 4-byte big-endian length, then that many bytes of payload.

The payload is one encoded protocol message (see :func:`protocol.encode`).  This module is
sans-I/O: :class:`FrameDecoder` is fed whatever bytes arrived and hands back the complete
frames it now holds, so the same code serves the asyncio transports, the tests and the
benchmark's load generator.

The length prefix is checked *before* the payload is buffered, so a peer announcing a
4 GiB frame costs us four bytes, not four gigabytes.  A zero-length frame is refused too:
no protocol message encodes to nothing, and accepting it would let a peer spin us with
four bytes per iteration.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB, the agreed hard ceiling


class FramingError(Exception):
    """Raised by :class:`FrameDecoder` when the byte stream cannot be a valid frame sequence.

    After it the stream is unusable: the caller answers with an error and closes.
    ``frames`` holds the complete frames that came before the bad header in the same
    ``feed`` call: they are valid requests and are owed their answers first.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.frames: list[bytes] = []


class FrameTooLarge(FramingError):
    """Raised when a frame header announces more than ``max_frame`` bytes."""

    def __init__(self, size: int, max_frame: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the maximum of {max_frame}")
        self.size = size
        self.max_frame = max_frame


class EmptyFrame(FramingError):
    """Raised when a frame header announces zero bytes."""

    def __init__(self) -> None:
        super().__init__("empty frame")


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return ``payload`` with its length prefix; raises FrameTooLarge if it cannot be sent."""
    size = len(payload)
    if size > max_frame:
        raise FrameTooLarge(size, max_frame)
    return HEADER.pack(size) + payload


class FrameDecoder:
    """Incremental decoder: ``feed(data)`` returns the list of frames completed by ``data``.

    ``pending`` tells whether a partial frame is buffered (a clean EOF has none).
    """

    __slots__ = ("_buf", "_need", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        # Payload size of the frame being assembled, or -1 while reading a header.
        self._need = -1

    @property
    def pending(self) -> bool:
        """True when some bytes of an incomplete frame are buffered."""
        return bool(self._buf) or self._need >= 0

    def feed(self, data: bytes) -> list[bytes]:
        """Buffer ``data`` and return every frame it completes, in order.

        Raises FrameTooLarge / EmptyFrame on a bad header; the frames completed before the
        bad header in the same ``data`` travel on the exception (``exc.frames``), so the
        caller can answer them before it answers the error.
        """
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        need = self._need
        while True:
            if need < 0:
                if end - pos < HEADER_SIZE:
                    break
                (need,) = HEADER.unpack_from(buf, pos)
                pos += HEADER_SIZE
                if need > self.max_frame or need == 0:
                    exc: FramingError = (FrameTooLarge(need, self.max_frame) if need
                                         else EmptyFrame())
                    exc.frames = frames
                    # The stream is dead: nothing buffered is worth keeping.
                    buf.clear()
                    self._need = -1
                    raise exc
            if end - pos < need:
                break
            frames.append(bytes(buf[pos : pos + need]))
            pos += need
            need = -1
        self._need = need
        if pos:
            del buf[:pos]
        return frames
