"""Group sharing: authorities in range of each other run one P2P group between them.

A client's join is the slow part of a WiFi Direct payment (seconds; the messages take
milliseconds).  When authorities stand in one room they therefore share a group: one of
them is its GO, the others join it as P2P clients and keep serving on ``[::]:port``, and
a client that joins that one group reaches every authority in it over the group (the
GO forwards frames between its members).  Two parts, kept apart:

* the **choice** (:func:`choose`, pure): an authority that starts with sharing on
  advertises ``group=""`` (still choosing) and listens one discovery window; then it
  joins the lowest-named GO it heard (an existing group wins, so a restarted authority
  does not split its room) unless an authority still choosing has a lower name than that
  GO, or becomes GO if no lower-named authority is still choosing; otherwise (or when it
  heard nobody yet) it waits another window (at most ``max_waits``, then it decides with
  what it has).  Deterministic, so a room settles on one GO; a chain of authorities that
  do not all hear each other settles on more than one group, which only costs a client
  another join.  When the GO goes away its members choose again, and a GO without
  clients in its group looks for a better group now and then (more members, or as many
  and a lower name) and moves into it, its members following: a room split by missed
  answers heals.
* **presence** (:class:`PresenceResponder`, :func:`probe`): the GO must say in its
  record which authorities are in its group and at which address, and members are not
  discoverable while they are clients of the group.  Every sharing authority answers a
  one-datagram UDP query on its FastPay port; the GO multicasts it to ``ff02::1`` on
  its group interface when a peer joins or leaves (and every ``probe_every`` seconds)
  and lists whoever answers.  The answer is a hint, not a credential: whoever lies about
  a name gets requests whose votes do not verify under that authority's key.

Wire form (msgpack maps): query ``{"q": "fastpay-presence", "committee": c}``, answer
``{"name": n, "pk": bytes32, "committee": c, "port": p}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import msgpack  # type: ignore[import-untyped]

QUERY = "fastpay-presence"
MAX_DATAGRAM = 512


@dataclass(frozen=True, slots=True)
class Choice:
    """What an authority does next: ``go`` (start its group), ``join`` ``target``'s,
    or ``wait`` one more window."""

    action: str
    target: str | None = None


def choose(me: str, heard: Mapping[str, str | None], waited: int, max_waits: int) -> Choice:
    """The group choice (module docstring); ``heard``: authority name → its advertised
    ``group`` (its own name: a GO; ``""``: choosing; another name: a member; None: not
    sharing, a GO of its own group that will not join anyone)."""
    may_wait = waited < max_waits
    gos = sorted(n for n, g in heard.items() if n != me and (g == n or g is None))
    choosing = [n for n, g in heard.items() if n != me and g == ""]
    if gos:
        # One still choosing with a lower name than that GO may be about to become the
        # room's GO (its answer predates its group): give it a window.
        if may_wait and any(n < gos[0] for n in choosing):
            return Choice("wait")
        return Choice("join", gos[0])
    if may_wait and (not heard or any(n < me for n in choosing)):
        return Choice("wait")  # nobody heard yet (a slow machine), or a lower one choosing
    return Choice("go")


def encode_query(committee: str) -> bytes:
    return msgpack.packb({"q": QUERY, "committee": committee})  # type: ignore[no-any-return]


def decode_query(data: bytes) -> str | None:
    """The committee a presence query asks about, None if it is none."""
    try:
        msg = msgpack.unpackb(data)
    except Exception:
        return None
    if not isinstance(msg, dict) or msg.get("q") != QUERY:
        return None
    committee = msg.get("committee")
    return committee if isinstance(committee, str) else None


@dataclass(frozen=True, slots=True)
class Presence:
    """An authority that answered a presence query."""

    name: str
    public_key: bytes
    committee: str
    port: int
    host: str  # its link-local address, as the answer came from (no scope)


def encode_answer(name: str, public_key: bytes, committee: str, port: int) -> bytes:
    return msgpack.packb({"name": name, "pk": public_key, "committee": committee,  # type: ignore[no-any-return]
                          "port": port})


def decode_answer(data: bytes, host: str) -> Presence | None:
    try:
        msg = msgpack.unpackb(data)
        p = Presence(str(msg["name"]), bytes(msg["pk"]), str(msg["committee"]),
                     int(msg["port"]), host.split("%", 1)[0])
    except Exception:
        return None
    if len(p.public_key) != 32 or not 0 < p.port < 65536 or not p.name:
        return None
    return p


class PresenceResponder(asyncio.DatagramProtocol):
    """Answers presence queries for our committee on ``[::]:port`` (UDP)."""

    def __init__(self, name: str, public_key: bytes, committee: str, port: int) -> None:
        self.answer = encode_answer(name, public_key, committee, port)
        self.committee = committee
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is not None and decode_query(data) == self.committee:
            self.transport.sendto(self.answer, addr)

    @classmethod
    async def serve(cls, name: str, public_key: bytes, committee: str, port: int
                    ) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: cls(name, public_key, committee, port), local_addr=("::", port),
            family=socket.AF_INET6, reuse_port=True)
        return transport


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: dict[str, Presence] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        p = decode_answer(data, str(addr[0]))
        if p is not None:
            self.answers.setdefault(p.name, p)


async def probe(ifname: str, port: int, committee: str, wait: float = 1.0,
                repeats: int = 3) -> dict[str, Presence]:
    """Ask every node on ``ifname``'s link who is a FastPay authority of ``committee``;
    return the answers by name.  The query goes out ``repeats`` times over ``wait``
    seconds (a datagram can be lost; a fresh link-local address may still be tentative)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Collector, local_addr=("::", 0), family=socket.AF_INET6)
    try:
        query = encode_query(committee)
        for _ in range(max(1, repeats)):
            with contextlib.suppress(OSError):
                transport.sendto(query, (f"ff02::1%{ifname}", port))
            await asyncio.sleep(wait / max(1, repeats))  # answers arrive meanwhile
    finally:
        transport.close()
    return proto.answers
