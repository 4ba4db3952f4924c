"""The client's in-range table, sans-I/O: which authorities of our committee are in range.

The WiFi Direct link feeds it what discovery sees and asks it whom to visit; every input
carries ``now`` and every change comes back as a value, so the rules are tested without a
radio (tests/fastpayd/test_inrange.py):

* :meth:`InRangeTable.heard` -- an authority answered a service query (``answered``) or
  was only seen again (a level refresh after a round): it enters (or stays in) the table;
* :meth:`InRangeTable.round_finished` -- after a whole discovery round, an authority that
  answered no query in ``stale_rounds`` rounds in a row leaves (wpa_supplicant's
  ``DeviceLost`` only comes when its peer entry expires, about a minute later);
  ``stale_rounds = 0`` keeps silent ones;
* :meth:`InRangeTable.remove` / :meth:`InRangeTable.remove_address` -- lost, a failed
  join, the group ended;
* :meth:`InRangeTable.rows` -- the table, *fresh* ones (a service answer within
  ``fresh_for`` seconds, about one discovery round) first, then by signal.  Only fresh
  ones are worth a join: one not heard for longer may have been walked away from, and a
  join to it could only fail after the join timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastpayd.wifidirect import AuthorityPeer


@dataclass(frozen=True, slots=True)
class Entered:
    """Returned when an authority enters the table."""

    name: str
    peer: AuthorityPeer


@dataclass(frozen=True, slots=True)
class Left:
    """Returned when an authority leaves the table, with why."""

    name: str
    peer: AuthorityPeer
    reason: str


class InRangeTable:
    """Authority name → what discovery last saw of it (see module docstring)."""

    def __init__(self, stale_rounds: int, fresh_for: float) -> None:
        self.stale_rounds = stale_rounds
        self.fresh_for = fresh_for
        self._peers: dict[str, AuthorityPeer] = {}
        self._missed: dict[str, int] = {}  # name → whole rounds in a row it did not answer
        self._heard_at: dict[str, float] = {}  # name → its latest service answer

    def __contains__(self, name: object) -> bool:
        return name in self._peers

    def get(self, name: str) -> AuthorityPeer | None:
        """The authority's entry, None if it is not in range."""
        return self._peers.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._peers)

    def heard(self, name: str, peer: AuthorityPeer, now: float, answered: bool) -> Entered | None:
        """Discovery saw ``name``; returns :class:`Entered` if it was not in the table."""
        entering = name not in self._peers
        self._peers[name] = peer
        if answered:
            self._missed.pop(name, None)
            self._heard_at[name] = now
        return Entered(name, peer) if entering else None

    def round_finished(self, answered: Iterable[str]) -> list[Left]:
        """A whole round is over; ``answered``: the addresses that answered its queries."""
        heard = set(answered)
        gone: list[Left] = []
        for name, peer in list(self._peers.items()):
            if peer.address in heard:
                self._missed.pop(name, None)
                continue
            missed = self._missed.get(name, 0) + 1
            if self.stale_rounds and missed >= self.stale_rounds:
                left = self.remove(name, f"no answer in {missed} discovery rounds")
                if left is not None:
                    gone.append(left)
            else:
                self._missed[name] = missed
        return gone

    def remove(self, name: str, reason: str) -> Left | None:
        """Take ``name`` out; returns :class:`Left`, None if it was not in."""
        self._missed.pop(name, None)
        self._heard_at.pop(name, None)
        peer = self._peers.pop(name, None)
        return None if peer is None else Left(name, peer, reason)

    def remove_address(self, address: str, reason: str) -> list[Left]:
        """Take out whoever is at ``address``."""
        return [left for name, p in list(self._peers.items()) if p.address == address
                if (left := self.remove(name, reason)) is not None]

    def is_fresh(self, name: str, now: float) -> bool:
        return now - self._heard_at.get(name, -1e18) <= self.fresh_for

    def rows(self, now: float) -> list[dict[str, Any]]:
        """The table for people and for the session: fresh first, then by signal."""
        peers = sorted(self._peers.items(),
                       key=lambda kv: (not self.is_fresh(kv[0], now),
                                       -(kv[1].level if kv[1].level is not None else -999)))
        return [{"name": n, "address": p.address, "level": p.level,
                 "seen_ago": round(now - p.discovered_at, 3), "fresh": self.is_fresh(n, now)}
                for n, p in peers]

    def reachable(self, now: float) -> list[str]:
        """Fresh authorities, best first: those worth a join now."""
        return [r["name"] for r in self.rows(now) if r["fresh"]]
