"""Metrics of a FastPay run computed from recorded daemon events (no radios)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emulation import report

AUTHS = ["a0", "a1", "a2", "a3"]


def ev(t: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"t": t, "event": event, **fields}


def mobile_run() -> dict[str, list[dict[str, Any]]]:
    """A recorded-looking mobile transfer: c0 pays c1 10, four authorities, quorum 3."""
    c0 = [
        ev(100.0, "link_up"),
        ev(103.0, "authority_discovered", authority="a0", sd_seconds=0.4),
        ev(103.5, "authority_in_range", authority="a0"),
        ev(104.0, "authority_discovered", authority="a1", sd_seconds=0.6),
        ev(104.2, "authority_in_range", authority="a1"),
        ev(105.0, "transfer_started", recipient="c1", amount=10, sequence_number=0),
        ev(111.0, "group_joined", authority="a0", elapsed=6.0),
        ev(111.5, "order_sent", authority="a0", sequence_number=0),
        ev(112.0, "vote_received", authority="a0", sequence_number=0),
        ev(119.0, "group_joined", authority="a1", elapsed=7.0),
        ev(120.0, "vote_received", authority="a1", sequence_number=0),
        ev(140.0, "authority_in_range", authority="a2"),
        ev(147.0, "group_joined", authority="a2", elapsed=5.0),
        ev(148.0, "vote_received", authority="a2", sequence_number=0),
        ev(148.0, "certificate_formed", sequence_number=0, latency=43.0),
        ev(148.5, "confirmation_delivered", authority="a2", sequence_number=0),
        ev(156.0, "confirmation_delivered", authority="a1", sequence_number=0),
        ev(156.5, "confirmation_delivered", authority="a1", sequence_number=0),  # repeat
        ev(170.0, "authority_out_of_range", authority="a0", reason="lost"),
        ev(180.0, "confirmation_delivered", authority="a3", sequence_number=0),
        ev(200.0, "confirmation_delivered", authority="a0", sequence_number=0),
        ev(200.1, "transfer_completed", sequence_number=0, latency=95.1),
        ev(201.0, "join_failed", authority="a1"),
    ]
    return {"c0": c0, "c1": [ev(100.5, "link_up")], "a0": [ev(99.0, "group_started")]}


def test_compute_payment_latency_stages() -> None:
    records = [{"t": 185.0, "event": "recipient_credited", "recipient": "c1", "credited": 10}]
    m = report.compute(mobile_run(), clients=["c0", "c1"], authorities=AUTHS,
                       records=records)
    (row,) = m["transfers"]
    assert row["votes"] == ["a0", "a1", "a2"]
    assert row["confirmed"] == ["a2", "a1", "a3", "a0"]
    assert (row["certificate"], row["quorum_confirmed"], row["completed"], row["credited"]) \
        == (43.0, 75.0, 95.1, 80.0)
    assert m["payment_latency_s"]["certificate"]["p50"] == 43.0
    assert m["completion_rate"] == 1.0 and m["delivery_success_rate"] == 1.0
    assert m["quorum"] == 3


def test_compute_quorum_follows_weights() -> None:
    weights = {"a0": 1, "a1": 1, "a2": 3, "a3": 1}  # total 6: quorum 5
    m = report.compute(mobile_run(), clients=["c0"], authorities=AUTHS, weights=weights)
    # a2 (3) + a1 (1) = 4, + a3 (1) = 5 at t = 180.
    assert m["transfers"][0]["quorum_confirmed"] == 75.0
    assert m["quorum"] == 5


def test_discovery_and_connection_times() -> None:
    m = report.compute(mobile_run(), clients=["c0", "c1"], authorities=AUTHS)
    d = m["discovery_time_s"]
    assert d["per_client"] == {"c0": 3.0} and d["n"] == 1
    assert d["service_discovery_s"]["values"] == [0.4, 0.6]
    c = m["connection_time_s"]
    assert c["values"] == [6.0, 7.0, 5.0] and c["p50"] == 6.0 and c["failures"] == 1


def test_incomplete_and_undelivered_transfers_count_in_rates() -> None:
    events = mobile_run()
    events["c1"] += [ev(300.0, "transfer_started", recipient="c0", amount=5,
                        sequence_number=0)]
    m = report.compute(events, clients=["c0", "c1"], authorities=AUTHS)
    assert m["transfers_started"] == 2
    assert m["completion_rate"] == 0.5
    assert m["delivery_success_rate"] == 0.0  # c1 was never seen credited
    assert m["payment_latency_s"]["credited"]["n"] == 0


def test_resumed_transfer_keeps_its_first_start() -> None:
    events = mobile_run()
    events["c0"].insert(8, ev(112.5, "transfer_started", recipient="c1", amount=10,
                              sequence_number=0, resumed=True))
    m = report.compute(events, clients=["c0"], authorities=AUTHS)
    assert m["transfers_started"] == 1 and m["transfers"][0]["certificate"] == 43.0


def test_convergence_after_topology_changes() -> None:
    changes = [
        {"t": 100.0, "client": "c0", "authority": "a0", "change": "initial"},
        {"t": 138.0, "client": "c0", "authority": "a2", "change": "in"},
        {"t": 160.0, "client": "c0", "authority": "a0", "change": "out"},
        {"t": 150.0, "client": "c0", "authority": "a3", "change": "in"},  # never seen
    ]
    m = report.compute(mobile_run(), clients=["c0"], authorities=AUTHS, changes=changes)
    conv = m["convergence_time_s"]
    assert conv["into_range"]["values"] == [2.0]
    assert conv["out_of_range"]["values"] == [10.0]
    assert conv["not_followed"] == 1
    assert conv["p50"] == 6.0


def test_bare_join_from_records() -> None:
    records = [{"t": 1.0, "event": "bare_join", "seconds": 4.2345}]
    m = report.compute({}, clients=[], authorities=AUTHS, records=records)
    assert m["bare_join_s"] == 4.234 or m["bare_join_s"] == 4.235
    assert m["completion_rate"] is None


def test_percentile_interpolates() -> None:
    assert report.percentile([], 50) is None
    assert report.percentile([3.0], 95) == 3.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert report.percentile(range(1, 101), 95) == pytest.approx(95.05)


def test_table_prints_with_missing_figures() -> None:
    m = report.compute(mobile_run(), clients=["c0"], authorities=AUTHS)
    report.print_table(m)  # must not raise on None entries


def test_load_events_reads_each_node(tmp_path: Path) -> None:
    (tmp_path / "c0").mkdir()
    (tmp_path / "c0" / "events.jsonl").write_text(
        "\n".join(json.dumps(e) for e in mobile_run()["c0"][:2]) + "\n")
    assert [e["event"] for e in report.load_events(tmp_path)["c0"]] == [
        "link_up", "authority_discovered"]


def test_handoff_time_channel_and_the_payee_spending_it() -> None:
    run = mobile_run()
    # c1 is handed the certificate directly 30 s after it formed, then pays c0 back.
    run["c1"] += [ev(178.0, "payment_received", channel="direct", sender="c0",
                     sequence_number=0, amount=10),
                  ev(190.0, "transfer_started", recipient="c0", amount=4, sequence_number=0),
                  ev(250.0, "certificate_formed", sequence_number=0)]
    run["c0"].append(ev(260.0, "payment_received", channel="authority", sender="c1",
                        sequence_number=0, amount=4))
    m = report.compute(run, clients=["c0", "c1"], authorities=AUTHS)
    first, second = m["transfers"]
    assert first["handoff"] == {"seconds": 30.0, "channel": "direct"}
    assert second["handoff"] == {"seconds": 10.0, "channel": "authority"}
    assert m["handoff_channels"] == {"direct": 1, "authority": 1}
    assert m["handoff_s"]["n"] == 2 and m["handoff_s"]["p50"] == 20.0
    # c1's payment came after it was credited: it spent what it received; c0's did not.
    assert [(p["sender"], p["sequence_number"]) for p in m["payee_payments"]] == [("c1", 0)]


def test_no_handoff_before_the_payee_is_credited() -> None:
    m = report.compute(mobile_run(), clients=["c0", "c1"], authorities=AUTHS)
    assert m["transfers"][0]["handoff"] is None
    assert m["handoff_s"]["n"] == 0 and m["handoff_channels"] == {}
    assert m["payee_payments"] == []
