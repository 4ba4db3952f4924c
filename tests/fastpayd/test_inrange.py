"""fastpayd.link.inrange: the client's in-range table, fed as the discovery loop feeds it."""

from __future__ import annotations

from fastpayd.config import LinkConfig
from fastpayd.link import PeerEntry
from fastpayd.link.inrange import Entered, InRangeTable
from fastpayd.link.wifidirect import WifiDirectLink
from fastpayd.wifidirect.radio import AuthorityPeer
from fastpayd.wifidirect.service import FastPayRecord

A0, A1 = "02:00:00:00:00:00", "02:00:00:00:01:00"


def peer(name: str, address: str, level: int = -60) -> AuthorityPeer:
    record = FastPayRecord(role="authority", name=name, public_key=bytes(32),
                           committee="c-test", port=7400)
    return AuthorityPeer(address, f"/peers/{address}", record, level, 0.0)


def test_authority_silent_for_stale_rounds_leaves_the_table() -> None:
    table = InRangeTable(stale_rounds=2, fresh_for=10.0)
    assert table.heard("auth0", peer("auth0", A0), 0.0, answered=True) == Entered(
        "auth0", peer("auth0", A0))
    table.heard("auth1", peer("auth1", A1), 0.0, answered=True)
    assert table.round_finished({A0}) == []  # auth1 silent once: still in range
    assert table.round_finished({A0, A1}) == []  # answered: the count starts again
    assert table.round_finished({A0}) == []
    [gone] = table.round_finished(set())  # auth1's second silent round in a row
    assert gone.name == "auth1" and "2 discovery rounds" in gone.reason
    assert table.names == ["auth0"]
    assert [g.name for g in table.round_finished(set())] == ["auth0"]
    assert table.names == []


def test_stale_rounds_zero_keeps_silent_authorities() -> None:
    table = InRangeTable(stale_rounds=0, fresh_for=10.0)
    table.heard("auth0", peer("auth0", A0), 0.0, answered=True)
    for _ in range(5):
        assert table.round_finished(set()) == []
    assert table.names == ["auth0"]


def test_fresh_authorities_first_then_by_signal() -> None:
    table = InRangeTable(stale_rounds=2, fresh_for=10.5)
    table.heard("auth0", peer("auth0", A0, level=-70), 0.0, answered=True)
    table.heard("auth1", peer("auth1", A1, level=-40), 0.0, answered=True)
    assert table.reachable(1.0) == ["auth1", "auth0"]
    table.heard("auth0", peer("auth0", A0, level=-70), 5.0, answered=True)
    rows = table.rows(12.0)  # auth1 last answered 12 s ago: not fresh
    assert [(r["name"], r["fresh"]) for r in rows] == [("auth0", True), ("auth1", False)]
    assert table.reachable(12.0) == ["auth0"]
    table.heard("auth1", peer("auth1", A1, level=-40), 12.0, answered=False)
    assert table.reachable(12.0) == ["auth0"]  # a level refresh is not an answer
    table.heard("auth1", peer("auth1", A1, level=-40), 12.5, answered=True)
    assert table.reachable(13.0) == ["auth1", "auth0"]


def test_removed_by_address_or_name() -> None:
    table = InRangeTable(stale_rounds=2, fresh_for=10.0)
    table.heard("auth0", peer("auth0", A0), 0.0, answered=True)
    table.heard("auth1", peer("auth1", A1), 0.0, answered=True)
    assert [g.name for g in table.remove_address(A1, "lost")] == ["auth1"]
    assert table.remove("auth1", "again") is None
    left = table.remove("auth0", "join failed")
    assert left is not None and left.reason == "join failed" and "auth0" not in table


def test_link_builds_its_table_from_the_link_options() -> None:
    config = LinkConfig(kind="wifidirect",
                        options={"discovery_window": 8.0, "discovery_pause": 0.5})
    directory = {"auth0": PeerEntry("auth0", "authority", bytes(32), None)}
    link = WifiDirectLink(config, directory, None, "client0")  # type: ignore[arg-type]
    assert link.table.fresh_for == 10.5 and link.table.stale_rounds == 2
    assert link.max_parallel == 1 and link.reachable_authorities() == []


def test_in_group_liveness_reports_silence_once_after_misses():
    from fastpayd.link.ingroup import InGroupLiveness

    live = InGroupLiveness(["auth0", "auth1", "auth2"], misses=2)
    assert live.probe_done(["auth0", "auth1", "auth2"], 1.0) == []
    assert live.probe_done(["auth0", "auth2"], 2.0) == []  # one miss is a lost datagram
    assert live.probe_done(["auth0", "auth2", "auth1"], 3.0) == []  # and it answered again
    assert live.probe_done(["auth0"], 4.0) == []
    assert live.probe_done(["auth0"], 5.0) == ["auth1", "auth2"]
    assert live.probe_done([], 6.0) == []  # reported once; auth0 has one miss
    assert live.probe_done([], 7.0) == ["auth0"]
    assert live.expected == [] and live.last_answer["auth0"] == 5.0
