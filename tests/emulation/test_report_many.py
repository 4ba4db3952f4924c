"""The many-clients part of the run report: payments summary and safety check, computed
from recorded events and authority snapshots (emulation/report.py)."""

from __future__ import annotations

from typing import Any

from emulation import report

AUTHS = ["a0", "a1", "a2", "a3"]
WEIGHTS = dict.fromkeys(AUTHS, 1)
GENESIS = {"c0": 100, "c1": 100, "c2": 100}


def ev(t: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"t": t, "event": event, **fields}


def cert(sender: str, seq: int, recipient: str, amount: int) -> dict[str, Any]:
    return {"direction": "sent", "sender": sender, "sequence_number": seq,
            "recipient": recipient, "amount": amount}


def accounts(**balances: int) -> list[dict[str, Any]]:
    return [{"account": a, "balance": b, "next_sequence_number": 0, "pending": None}
            for a, b in balances.items()]


def run() -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """c0 pays c1 10 (certified, every authority confirmed, handed over directly); c1
    pays c2 5 (certified, a3 not yet confirmed)."""
    events = {
        "c0": [ev(10, "transfer_started", recipient="c1", amount=10, sequence_number=0),
               ev(30, "certificate_formed", sequence_number=0),
               ev(50, "transfer_completed", sequence_number=0, recipient="c1", amount=10)],
        "c1": [ev(35, "payment_received", sender="c0", sequence_number=0, amount=10,
                  channel="direct"),
               ev(40, "transfer_started", recipient="c2", amount=5, sequence_number=0),
               ev(70, "certificate_formed", sequence_number=0)],
        "c2": [],
    }
    full = [cert("c0", 0, "c1", 10), cert("c1", 0, "c2", 5)]
    snapshots = {a: {"accounts": accounts(c0=90, c1=105, c2=105), "history": full}
                 for a in AUTHS[:3]}
    snapshots["a3"] = {"accounts": accounts(c0=90, c1=110, c2=100), "history": full[:1]}
    return events, snapshots


def test_safety_ok_when_an_authority_is_only_behind() -> None:
    events, snapshots = run()
    s = report.safety(snapshots, GENESIS, events)
    assert s["ok"], s["violations"]
    assert s["behind"] == {"a0": 0, "a1": 0, "a2": 0, "a3": 1}
    assert s["certificates"] == 2


def test_safety_detects_two_certificates_for_one_sender_and_sequence() -> None:
    events, snapshots = run()
    # c0's sequence number 0 shows up a second time, paying c2 instead of c1.
    events["c2"].append(ev(60, "payment_received", sender="c0", sequence_number=0,
                           amount=10, channel="direct"))
    s = report.safety(snapshots, GENESIS, events)
    assert not s["ok"]
    (v,) = [v for v in s["violations"] if v["kind"] == "conflicting_certificates"]
    assert (v["sender"], v["sequence_number"]) == ("c0", 0)
    assert [c["recipient"] for c in v["certificates"]] == ["c1", "c2"]
    assert v["certificates"][1]["seen_at"] == ["c2"]


def test_safety_detects_money_not_conserved() -> None:
    events, snapshots = run()
    snapshots["a1"]["accounts"] = accounts(c0=90, c1=105, c2=115)  # 10 from nowhere
    s = report.safety(snapshots, GENESIS, events)
    kinds = {(v["kind"], v.get("authority")) for v in s["violations"]}
    assert ("money_not_conserved", "a1") in kinds
    assert ("balance_disagrees", "a1") in kinds
    assert not s["ok"]


def test_safety_detects_a_balance_its_certificates_do_not_explain() -> None:
    events, snapshots = run()
    # a3 moved 5 from c1 to c2 without holding the certificate: conserved, yet wrong.
    snapshots["a3"]["accounts"] = accounts(c0=90, c1=105, c2=105)
    s = report.safety(snapshots, GENESIS, events)
    bad = [(v["authority"], v["account"]) for v in s["violations"]
           if v["kind"] == "balance_disagrees"]
    assert bad == [("a3", "c1"), ("a3", "c2")]


def test_safety_detects_a_sequence_gap() -> None:
    events, snapshots = run()
    later = [cert("c0", 0, "c1", 10), cert("c0", 1, "c2", 3)]
    for a in AUTHS[:3]:
        snapshots[a]["history"] = later
        snapshots[a]["accounts"] = accounts(c0=87, c1=110, c2=103)
    snapshots["a3"] = {"accounts": accounts(c0=97, c1=100, c2=103), "history": later[1:]}
    s = report.safety(snapshots, GENESIS, events)
    assert [v["authority"] for v in s["violations"] if v["kind"] == "sequence_gap"] == ["a3"]


def test_safety_without_snapshots_is_not_ok() -> None:
    s = report.safety({}, GENESIS, {})
    assert not s["ok"] and not s["checked"]


def test_payments_summary_completion_and_quorum_met() -> None:
    events, _ = run()
    rows = report.transfers(events, ["c0", "c1", "c2"], WEIGHTS, 3, [])
    scheduled = [{"at": 10, "payer": "c0", "payee": "c1", "amount": 10},
                 {"at": 40, "payer": "c1", "payee": "c2", "amount": 5},
                 {"at": 45, "payer": "c2", "payee": "c0", "amount": 1}]
    changes = [  # c0 meets a0..a2 by t=25, c1 only ever has a0 and a1, c2 all four
        {"t": 0, "client": "c0", "authority": "a0", "change": "initial"},
        {"t": 20, "client": "c0", "authority": "a1", "change": "in"},
        {"t": 21, "client": "c0", "authority": "a0", "change": "out"},
        {"t": 25, "client": "c0", "authority": "a2", "change": "in"},
        {"t": 0, "client": "c1", "authority": "a0", "change": "initial"},
        {"t": 30, "client": "c1", "authority": "a1", "change": "in"},
        {"t": 30, "client": "c1", "authority": "a0", "change": "out"},
        {"t": 45, "client": "c1", "authority": "a0", "change": "in"},
        *({"t": 50, "client": "c2", "authority": a, "change": "in"} for a in AUTHS),
    ]
    p = report.payments_summary(rows, scheduled, changes, WEIGHTS, 3, t0=0.0)
    assert (p["scheduled"], p["started"], p["certified"], p["completed"]) == (3, 2, 2, 1)
    assert p["completion_rate"] == 0.333
    # c0 met a0, a1, a2; c1 only a0 and a1 after t=40; c2 all four but never started.
    assert p["met_quorum"] == 2 and p["completion_rate_met_quorum"] == 0.5
    assert p["handoff_channels"] == {"direct": 1}
    assert p["payee_not_credited"] == 1  # c2 never got c1's certified payment
    assert p["latency_s"]["certificate"]["n"] == 2
    assert p["latency_s"]["certificate"]["p50"] == 25.0
    assert [(x["payer"], x["state"]) for x in p["not_completed"]] == \
        [("c1", "certified"), ("c2", "not started")]


def test_compute_adds_payments_and_safety_to_the_table() -> None:
    events, snapshots = run()
    scheduled = [{"at": 10, "payer": "c0", "payee": "c1", "amount": 10}]
    m = report.compute(events, clients=["c0", "c1", "c2"], authorities=AUTHS,
                       scheduled=scheduled, snapshots=snapshots, genesis=GENESIS)
    assert m["payments"]["completed"] == 1 and m["safety"]["ok"]
    from rich.console import Console

    console = Console(width=140, record=True)
    console.print(report.table(m))
    text = console.export_text()
    assert "completed / scheduled" in text and "safety" in text and "ok" in text
