"""Fuzz a real authority on loopback (issue 10): a few thousand mutated frames and control
lines, bounded in count and time.  Every reply must be a documented response or error code
(the tables of docs/protocol.md and docs/config.md), the log must hold no traceback, a
valid order must still get the identical vote afterwards, and the RSS must stay bounded.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import struct
import time
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
from fastpayd_helpers import REPO, LocalNet

from fastpayd.keys import read_key
from protocol import (
    AccountInfoRequest,
    AccountInfoResponse,
    ConfirmationAck,
    Error,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    decode,
    encode,
)

FRAMES = 3000
CONTROL_LINES = 1500
DEADLINE = 240.0  # seconds for the whole fuzz run, far more than it takes
RSS_GROWTH = 64 << 20


def documented_wire_codes() -> set[str]:
    text = (REPO / "docs" / "protocol.md").read_text()
    section = text.split("## 7. Error codes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))


def documented_control_codes() -> set[str]:
    text = (REPO / "docs" / "config.md").read_text()
    section = text.split("### Control error codes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random structural or byte-level mutation of an encoded message."""
    buf = bytearray(data)
    choice = rng.randrange(9)
    if choice == 0 and buf:  # flip bits
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif choice == 1 and buf:  # truncate
        del buf[rng.randrange(len(buf)):]
    elif choice == 2:  # insert random bytes
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = rng.randbytes(rng.randint(1, 16))
    elif choice == 3 and len(buf) > 2:  # delete a slice
        at = rng.randrange(len(buf) - 1)
        del buf[at:at + rng.randint(1, 8)]
    elif choice == 4:  # the envelope with another version or tag
        _, tag, body = msgpack.unpackb(data, raw=False)
        version = rng.choice([0, 2, -1, "1", None, 1 << 40])
        tag = rng.choice([tag, "Nope", "", 7, "Error", "Transfer"])
        return bytes(msgpack.packb([version, tag, body], use_bin_type=True))
    elif choice == 5:  # a random msgpack value
        value = rng.choice([None, True, 1 << 63, -5, 1.5, "x" * rng.randint(0, 300),
                            b"\0" * 70, [1, "TransferOrder", []], {"a": 1},
                            [1, "TransferOrder", [[b"", b"", 1, 1, None], b""]]])
        return bytes(msgpack.packb(value, use_bin_type=True))
    elif choice == 6:  # random bytes
        return rng.randbytes(rng.randint(1, 64))
    elif choice == 7:  # a body field swapped for another type
        version, tag, body = msgpack.unpackb(data, raw=False)
        if isinstance(body, list) and body:
            body[rng.randrange(len(body))] = rng.choice([None, -1, "s", b"b", [], 1 << 64 - 1])
        return bytes(msgpack.packb([version, tag, body], use_bin_type=True))
    # else: unchanged (a valid request among the garbage)
    return bytes(buf) if buf else b"\xc0"


async def _fuzz_frames(net: LocalNet, seeds: list[bytes], rng: random.Random,
                       codes: set[str]) -> dict[str, int]:
    """Send FRAMES mutated frames; check every reply; return counts of what came back."""
    seen: dict[str, int] = {}
    port = net.port("auth0")
    reader = writer = None
    sent = 0
    while sent < FRAMES:
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert reader is not None
        payload = mutate(rng, rng.choice(seeds))
        header = struct.pack(">I", len(payload))
        if rng.random() < 0.03:  # now and then a bad length prefix instead
            header = rng.choice([struct.pack(">I", 0), struct.pack(">I", (1 << 20) + 1),
                                 b"\xff\xff\xff\xff"])
        writer.write(header + payload)
        sent += 1
        try:
            async with asyncio.timeout(20):
                (size,) = struct.unpack(">I", await reader.readexactly(4))
                reply = decode(await reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            writer.close()
            reader = writer = None  # closed after an error we could not read: reconnect
            continue
        if isinstance(reply, Error):
            assert reply.code in codes, reply
            key = reply.code
        else:
            assert isinstance(reply, (SignedTransferOrder, ConfirmationAck,
                                      AccountInfoResponse)), reply
            key = type(reply).__name__
        seen[key] = seen.get(key, 0) + 1
        if isinstance(reply, Error) and reply.code not in _KEEPS_OPEN:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()
    return seen


# Errors after which the connection stays open (protocol answers, not framing failures).
_KEEPS_OPEN = {"InvalidSignature", "IncorrectTransferAmount", "InvalidSequenceNumber",
               "UnknownSenderAccount", "PreviousTransferMustBeConfirmedFirst",
               "UnexpectedSequenceNumber", "InsufficientFunding", "CertificateAuthorityReuse",
               "UnknownSigner", "CertificateRequiresQuorum", "MissingEarlierConfirmations",
               "CertificateNotFound", "UnexpectedMessage", "WrongRecipient"}


def _control_value(rng: random.Random) -> Any:
    return rng.choice([None, True, False, 0, -1, 1.5, 1 << 70, "x", "client0", "", [],
                       {}, [[[]]], {"a": {"b": 1}}, "ab" * 32, float("inf")])


def _control_line(rng: random.Random, commands: list[str]) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 80)).replace(b"\n", b" ")
    if kind == 1:
        depth = rng.randint(10, 3000)
        return b'{"cmd":"status","x":' + b"[" * depth + b"]" * depth + b"}"
    request: dict[str, Any] = {"cmd": rng.choice([*commands, "nope", 3, None])}
    for key in rng.sample(["account", "limit", "since", "recipient", "amount", "progress",
                           "timeout", "wait", "other"], rng.randint(0, 4)):
        request[key] = _control_value(rng)
    line = json.dumps(request, allow_nan=True).encode()
    if kind == 2 and len(line) > 2:
        cut = rng.randrange(1, len(line))
        line = line[:cut]  # truncated JSON
    return line


async def _fuzz_control(path: Path, rng: random.Random, codes: set[str]) -> dict[str, int]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 22)
    commands = ["help", "status", "peers", "events", "balance", "history"]
    seen: dict[str, int] = {}
    try:
        for _ in range(CONTROL_LINES):
            line = _control_line(rng, commands)
            if not line.strip():
                continue
            writer.write(line + b"\n")
            async with asyncio.timeout(20):
                answer = json.loads(await reader.readline())
            assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
            if answer["ok"]:
                key = "ok"
            else:
                key = answer["error"]["code"]
                assert key in codes, answer
            seen[key] = seen.get(key, 0) + 1
    finally:
        writer.close()
    return seen


async def test_fuzzed_frames_and_control_lines(make_testnet) -> None:
    net: LocalNet = make_testnet(authorities=4, clients=2)
    cfg = net.root / "auth0.toml"
    cfg.write_text(cfg.read_text().replace("\n[link]\n", "\nevents_max_bytes = 262144\n"
                                           "\n[link]\n"))
    daemon = await asyncio.to_thread(net.daemon("auth0").start)
    assert daemon.proc is not None
    client = read_key(net.root / "client0.key")
    order = TransferOrder.sign(Transfer(sender=client.public_key,
                                        recipient=net.committee.clients[1].address,
                                        amount=7, sequence_number=0), client)
    reader, writer = await asyncio.open_connection("127.0.0.1", net.port("auth0"))
    payload = encode(order)
    writer.write(struct.pack(">I", len(payload)) + payload)
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    vote_bytes = await reader.readexactly(size)
    assert isinstance(decode(vote_bytes), SignedTransferOrder)
    writer.close()

    rss_before = rss(daemon.proc.pid)
    rng = random.Random(10)
    seeds = [payload, vote_bytes,
             encode(AccountInfoRequest(sender=client.public_key, request_sequence_number=0,
                                       request_received_transfers_excluding_first_nth=0)),
             encode(Error(code="X", message="y"))]
    t0 = time.monotonic()
    async with asyncio.timeout(DEADLINE):
        frames = await _fuzz_frames(net, seeds, rng, documented_wire_codes())
        control = await _fuzz_control(daemon.socket_path, rng, documented_control_codes())
    elapsed = time.monotonic() - t0
    print(f"fuzz: {FRAMES} frames + {CONTROL_LINES} control lines in {elapsed:.1f} s; "
          f"replies {frames}; control {control}; RSS {rss_before >> 20} -> "
          f"{rss(daemon.proc.pid) >> 20} MiB")
    assert sum(frames.values()) > FRAMES // 3 and len(frames) >= 3
    assert control.get("BadRequest") and control.get("ok")

    assert daemon.alive
    assert "Traceback" not in daemon.log(), daemon.log()[-4000:]
    assert rss(daemon.proc.pid) < rss_before + RSS_GROWTH
    # The same order still gets the very same vote (bytes), and nothing else changed.
    reader, writer = await asyncio.open_connection("127.0.0.1", net.port("auth0"))
    writer.write(struct.pack(">I", len(payload)) + payload)
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    assert await reader.readexactly(size) == vote_bytes
    writer.close()
    balance = await daemon.control("balance", account="client0")
    assert (balance["balance"], balance["next_sequence_number"]) == (1000, 0)
    assert balance["pending"]["amount"] == 7
    state = net.root / "state" / "auth0"
    assert sum(p.stat().st_size for p in state.glob("events.jsonl*")) < 2 * 262144 + 4096
