"""The client's in-range table on the WiFi Direct link ages out silent authorities.

No radio here: the table is fed the way the discovery loop feeds it (the addresses that
answered a whole round's service queries), and the events it emits are checked.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fastpayd.config import LinkConfig
from fastpayd.link import PeerEntry
from fastpayd.link.wifidirect import WifiDirectLink
from fastpayd.wifidirect.radio import AuthorityPeer
from fastpayd.wifidirect.service import FastPayRecord


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def emit(self, name: str, **fields: Any) -> None:
        self.seen.append((name, fields))

    def names(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.seen if n == name]


def make_link(**options: Any) -> tuple[WifiDirectLink, Events]:
    events = Events()
    config = LinkConfig(kind="wifidirect", options=options)
    directory = {n: PeerEntry(n, "authority", bytes(32), None) for n in ("auth0", "auth1")}
    link = WifiDirectLink(config, directory, events, "client0")  # type: ignore[arg-type]
    return link, events


def peer(name: str, address: str, level: int = -60) -> AuthorityPeer:
    record = FastPayRecord(role="authority", name=name, public_key=bytes(32),
                           committee="c-test", port=7400)
    return AuthorityPeer(address, f"/peers/{address}", record, level, 0.0)


def test_authority_silent_for_stale_rounds_leaves_the_table() -> None:
    link, events = make_link()
    assert link.stale_rounds == 2
    link._in_range = {"auth0": peer("auth0", "02:00:00:00:00:00"),
                      "auth1": peer("auth1", "02:00:00:00:01:00")}
    link._age_table({"02:00:00:00:00:00"})  # auth1 silent once: still in range
    assert set(link._in_range) == {"auth0", "auth1"}
    link._age_table({"02:00:00:00:00:00", "02:00:00:00:01:00"})  # answered: count resets
    link._age_table({"02:00:00:00:00:00"})
    assert set(link._in_range) == {"auth0", "auth1"}
    link._age_table(set())  # auth1's second silent round in a row, auth0's first
    assert set(link._in_range) == {"auth0"}
    [gone] = events.names("authority_out_of_range")
    assert gone["authority"] == "auth1" and "2 discovery rounds" in gone["reason"]
    link._age_table(set())
    assert link._in_range == {}


def test_stale_rounds_zero_keeps_silent_authorities() -> None:
    link, events = make_link(stale_rounds=0)
    link._in_range = {"auth0": peer("auth0", "02:00:00:00:00:00")}
    for _ in range(5):
        link._age_table(set())
    assert set(link._in_range) == {"auth0"}
    assert events.names("authority_out_of_range") == []


def test_in_range_lists_recently_heard_authorities_first() -> None:
    link, _ = make_link(discovery_window=8.0, discovery_pause=0.5)
    assert link.fresh_for == 10.5
    quiet = peer("auth0", "02:00:00:00:00:00", level=-70)
    loud = peer("auth1", "02:00:00:00:01:00", level=-40)
    link._client = SimpleNamespace(  # type: ignore[assignment]
        authorities={quiet.address: quiet, loud.address: loud})
    link._table_add(quiet.address, heard=True)
    link._table_add(loud.address, heard=True)
    assert [(r["name"], r["fresh"]) for r in link.in_range()] == [("auth1", True),
                                                                  ("auth0", True)]
    link._heard_at["auth1"] -= 11.0  # the louder one has not answered for a round
    assert [(r["name"], r["fresh"]) for r in link.in_range()] == [("auth0", True),
                                                                  ("auth1", False)]
    link._table_add(loud.address)  # a level refresh after a round is not an answer
    assert [r["fresh"] for r in link.in_range()] == [True, False]
    link._table_add(loud.address, heard=True)  # its service answer arrives
    assert [(r["name"], r["fresh"]) for r in link.in_range()] == [("auth1", True),
                                                                  ("auth0", True)]
