"""The mobile client's driver (fastpayd.client) on loopback: authorities come into range.

The client node runs in-process on :class:`RangeLink`, an IP link that also answers the
mobile interface (``in_range``, ``wait_for_change``, ``release``) from a set the test
controls, so the driver sees authorities "come into range" exactly when the test says.
The authorities are real in-process nodes on loopback.  No radios: the WiFi Direct side
of the same driver is exercised live in tests/wifidirect/test_daemon_live.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import fastpayd.link
from fastpayd.authority import AuthorityNode
from fastpayd.client import ClientNode
from fastpayd.config import load_node_config
from fastpayd.link.ip import IpLink
from fastpayd.link.stream import ClientConnection, LinkError
from fastpayd.testnet import generate_testnet
from tests.fastpayd.fastpayd_helpers import free_base_port

AUTHS = ("auth0", "auth1", "auth2", "auth3")


class RangeLink(IpLink):
    """IP link with a test-controlled 'in range' set (class-level, shared by the test)."""

    reachable: set[str] = set()
    stale: set[str] = set()  # in the table but silent in the latest discovery round
    idle_waits = 0  # times the driver found nobody to visit and waited for a change
    changed = asyncio.Event()

    def in_range(self) -> list[dict[str, Any]]:
        return [{"name": n, "address": n, "level": -40, "seen_ago": 0.0,
                 "fresh": n not in self.stale} for n in sorted(self.reachable)]

    async def wait_for_change(self, timeout: float) -> None:
        RangeLink.idle_waits += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(RangeLink.changed.wait(), timeout)

    def release(self, peer: str) -> None:
        conn = self._out.pop(peer, None)
        if conn is not None:
            conn.close()

    async def connect(self, peer: str) -> ClientConnection:
        if peer not in self.reachable:
            raise LinkError(f"{peer} is not in range")
        return await super().connect(peer)


def come_into_range(*names: str) -> None:
    RangeLink.reachable.update(names)
    RangeLink.changed.set()
    RangeLink.changed = asyncio.Event()


@pytest.fixture
async def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    generate_testnet(tmp_path, authorities=4, clients=2, balance=1000,
                     base_port=free_base_port(4))
    monkeypatch.setitem(fastpayd.link._KINDS, "ip", f"{__name__}:RangeLink")
    RangeLink.reachable = set()
    RangeLink.stale = set()
    RangeLink.idle_waits = 0
    RangeLink.changed = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        for name in AUTHS:
            await stack.enter_async_context(AuthorityNode.open(
                load_node_config(tmp_path / f"{name}.toml")))
        yield tmp_path


async def until(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)  # in-process: poll the node's state


def names_of(node: ClientNode, event: str) -> list[dict[str, Any]]:
    return [e for e in node.events.since(0) if e["event"] == event]


async def test_transfer_progresses_as_authorities_come_into_range(net: Path) -> None:
    config = load_node_config(net / "client0.toml")
    async with ClientNode.open(config) as node:
        assert isinstance(node, ClientNode) and node.mobile
        res = await node.do_transfer({"cmd": "transfer", "recipient": "client1",
                                      "amount": 7}, lambda p: None)
        assert res["accepted"] and res["state"] == "collecting_votes" and res["votes"] == []
        come_into_range("auth0", "auth1")
        await until(lambda: len(node.transfer_progress()["votes"]) == 2)
        assert node.transfer_progress()["certificate"] is False
        come_into_range("auth2")
        await until(lambda: node.transfer_progress().get("confirmed") == list(AUTHS[:3]))
        prog = node.transfer_progress()
        assert prog["state"] == "confirming" and prog["confirmations_needed"] == ["auth3"]
        assert len(names_of(node, "certificate_formed")) == 1
        come_into_range("auth3")
        await until(lambda: node.transfer_progress()["state"] == "complete")
        assert node.state.balance == 993
        done = names_of(node, "transfer_completed")
        assert len(done) == 1 and done[0]["latency"] > 0


async def test_authority_silent_in_the_latest_round_is_not_visited(net: Path) -> None:
    # A join to an authority that may have walked out of range costs join_timeout: the
    # driver waits for the next round to hear it again instead.
    config = load_node_config(net / "client0.toml")
    async with ClientNode.open(config) as node:
        await node.do_transfer({"cmd": "transfer", "recipient": "client1", "amount": 5},
                               lambda p: None)
        RangeLink.stale = {"auth2"}
        come_into_range("auth0", "auth1", "auth2")
        await until(lambda: len(node.transfer_progress()["votes"]) == 2)
        waits = RangeLink.idle_waits
        await until(lambda: RangeLink.idle_waits > waits)  # nobody else worth a visit
        assert [e["authority"] for e in names_of(node, "order_sent")] == ["auth0", "auth1"]
        assert node.transfer_progress()["certificate"] is False
        RangeLink.stale = set()  # the next round heard it
        come_into_range()
        await until(lambda: node.transfer_progress()["certificate"] is True)


async def test_restart_resumes_after_first_vote(net: Path) -> None:
    config = load_node_config(net / "client0.toml")
    async with ClientNode.open(config) as node:
        assert isinstance(node, ClientNode)
        await node.do_transfer({"cmd": "transfer", "recipient": "client1", "amount": 3},
                               lambda p: None)
        come_into_range("auth0")
        await until(lambda: len(node.transfer_progress()["votes"]) == 1)
    come_into_range(*AUTHS)
    async with ClientNode.open(config) as node:
        assert isinstance(node, ClientNode)
        assert names_of(node, "transfer_resumed")
        await until(lambda: node.transfer_progress()["state"] == "complete")
        assert node.transfer_progress()["sequence_number"] == 0
        # A different transfer while one is pending is refused; the same one resumes.
        assert node.state.balance == 997


async def test_wait_follows_until_complete(net: Path) -> None:
    config = load_node_config(net / "client0.toml")
    come_into_range(*AUTHS)
    seen: list[dict[str, Any]] = []
    async with ClientNode.open(config) as node:
        assert isinstance(node, ClientNode)
        res = await node.do_transfer({"cmd": "transfer", "recipient": "client1", "amount": 5,
                                      "wait": True, "timeout": 30}, seen.append)
        assert res["state"] == "complete" and res["confirmed"] == list(AUTHS)
        steps = [p["step"] for p in seen]
        assert steps[0] == "order_signed" and "certificate_formed" in steps
        assert steps[-1] == "transfer_completed"
