"""Framing robustness against a real authority process: bad input gets typed errors and the
connection closed, and the daemon keeps serving."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
from fastpayd_helpers import Daemon, LocalNet

from protocol import AccountInfoRequest, AccountInfoResponse, Error, decode, encode

MAX_FRAME = 4096
IDLE = 1.0
READ = 0.5
MAX_CONN = 3


@pytest.fixture
async def authority(make_testnet) -> tuple[LocalNet, Daemon]:
    net: LocalNet = make_testnet(authorities=4, clients=1)
    cfg = net.root / "auth0.toml"
    cfg.write_text(cfg.read_text() + f"max_frame = {MAX_FRAME}\nidle_timeout = {IDLE}\n"
                   f"read_timeout = {READ}\nmax_connections = {MAX_CONN}\n")
    daemon = await asyncio.to_thread(net.daemon("auth0").start)
    return net, daemon


async def _open(net: LocalNet) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", net.port("auth0"))


async def _read_frame(reader: asyncio.StreamReader, timeout: float = 10.0) -> object:
    async with asyncio.timeout(timeout):
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        return decode(await reader.readexactly(size))


async def _expect_error_then_close(reader: asyncio.StreamReader, code: str) -> None:
    msg = await _read_frame(reader)
    assert isinstance(msg, Error), msg
    assert msg.code == code, msg
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # closed by the daemon


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def _still_serving(net: LocalNet, daemon: Daemon) -> None:
    assert daemon.alive
    reader, writer = await _open(net)
    writer.write(_frame(encode(AccountInfoRequest(sender=net.committee.clients[0].address))))
    assert isinstance(await _read_frame(reader), AccountInfoResponse)
    writer.close()


async def test_oversized_frame_rejected(authority) -> None:
    net, daemon = authority
    reader, writer = await _open(net)
    writer.write(struct.pack(">I", MAX_FRAME + 1) + b"x" * 100)
    await _expect_error_then_close(reader, "FrameTooLarge")
    writer.close()
    await _still_serving(net, daemon)


async def test_garbage_payload_rejected(authority) -> None:
    net, daemon = authority
    reader, writer = await _open(net)
    writer.write(_frame(os.urandom(200)))
    msg = await _read_frame(reader)
    assert isinstance(msg, Error) and msg.code in {"InvalidMessage", "UnknownMessageType",
                                                   "UnsupportedVersion"}
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()
    # A well-formed message the authority does not serve is an error too.
    reader, writer = await _open(net)
    writer.write(_frame(encode(Error(code="X", message="hello"))))
    msg = await _read_frame(reader)
    assert isinstance(msg, Error) and msg.code == "UnexpectedMessage"
    writer.close()
    await _still_serving(net, daemon)


async def test_truncated_frame_rejected(authority) -> None:
    net, daemon = authority
    reader, writer = await _open(net)
    writer.write(struct.pack(">I", 100) + b"y" * 10)
    writer.write_eof()  # half-close in the middle of a frame
    await _expect_error_then_close(reader, "InvalidMessage")
    writer.close()
    # A frame that stalls half-way hits the read timeout.
    reader, writer = await _open(net)
    writer.write(struct.pack(">I", 100) + b"y" * 10)
    await _expect_error_then_close(reader, "Timeout")
    writer.close()
    await _still_serving(net, daemon)


async def test_idle_connection_closed(authority) -> None:
    net, daemon = authority
    reader, writer = await _open(net)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await _expect_error_then_close(reader, "Timeout")
    assert loop.time() - t0 >= IDLE * 0.9
    writer.close()
    await _still_serving(net, daemon)


async def test_connection_cap(authority) -> None:
    net, daemon = authority
    request = _frame(encode(AccountInfoRequest(sender=net.committee.clients[0].address)))
    held = []
    for _ in range(MAX_CONN):
        reader, writer = await _open(net)
        writer.write(request)  # an answer proves the daemon accepted this connection
        assert isinstance(await _read_frame(reader), AccountInfoResponse)
        held.append((reader, writer))
    reader, writer = await _open(net)
    await _expect_error_then_close(reader, "TooManyConnections")
    writer.close()
    # Freeing a slot lets the next one in.
    held[0][1].close()
    await held[0][1].wait_closed()
    status = await daemon.control("status")
    async with asyncio.timeout(10):
        while status["link"]["inbound_connections"] >= MAX_CONN:
            await asyncio.sleep(0.05)  # polling the daemon's own counter, not a fixed wait
            status = await daemon.control("status")
    await _still_serving(net, daemon)
    for _, w in held[1:]:
        w.close()


async def test_pipelined_requests_answered_in_order(authority) -> None:
    net, daemon = authority
    reader, writer = await _open(net)
    addresses = [c.address for c in net.committee.clients] + [os.urandom(32)]
    writer.write(b"".join(_frame(encode(AccountInfoRequest(sender=a))) for a in addresses))
    answers = [await _read_frame(reader) for _ in addresses]
    assert isinstance(answers[0], AccountInfoResponse) and answers[0].sender == addresses[0]
    assert isinstance(answers[-1], Error) and answers[-1].code == "UnknownSenderAccount"
    writer.close()
    assert daemon.alive
