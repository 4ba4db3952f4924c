"""Metrics and the end-of-run table of a FastPay emulation run (its pictures:
:mod:`emulation.plots`).

Everything here is computed from recorded data — the daemons' ``events.jsonl`` lines
(monotonic ``t``; one clock for every namespace of the machine), the FastPay layer's own
timed records (recipient credited, bare join) and its samples of who was in whose range —
so it is unit-tested on recorded events without radios (``tests/emulation/test_report.py``).

Metrics (seconds unless named otherwise):

* ``discovery_time_s`` — per client: the daemon's ``link_up`` → its first
  ``authority_discovered`` (with ``sd_seconds``, the service-discovery part, per authority).
* ``connection_time_s`` — every ``group_joined.elapsed`` (join of an authority's group).
* ``payment_latency_s`` — per transfer, from ``transfer_started``: ``certificate`` (the
  ``certificate_formed``), ``quorum_confirmed`` (the confirmation that brought the
  confirmed weight to a quorum), ``completed`` (every authority confirmed) and
  ``credited`` (the recipient's balance showed the payment); each with p50 and p95.
* ``completion_rate`` — completed / started transfers; ``delivery_success_rate`` —
  credited recipients / completed transfers.
* ``handoff_s`` — per certified transfer: the ``certificate_formed`` at the payer → the
  payee's ``payment_received`` (credited, verified alone), with its ``channel``: ``direct``
  (handed over by the payer over their own P2P group) or ``authority`` (picked up from an
  authority); ``handoff_channels`` counts each.  ``payee_payments`` — transfers started
  by a client after it was credited a payment (it spends what it received).
* ``convergence_time_s`` — after each topology change between a client and an
  authority (the radios come into or leave each other's range), until the client's
  daemon reflects it (``authority_in_range`` / ``authority_out_of_range``).
* ``bare_join_s`` — a plain P2P join between two plain stations (wpa_cli), same run.
* ``payments`` — with a scenario's ``[payments]`` schedule (:func:`payments_summary`):
  scheduled / started / certified / completed payments, the completion rate over every
  scheduled payment and over those whose payer met a quorum of authorities (the
  sampled radio ranges: authorities in range at some time from the payment's time on,
  weighing a quorum), the hand-off channel split, and latency percentiles (p50/p90/p95/
  p99) per stage.
* ``safety`` — from every authority's accounts and certificates at the end of the run
  and the clients' events (:func:`safety`): no two certificates for one (sender,
  sequence number); at every authority the money of all accounts adds up to the
  genesis; every authority's balance of every account is what its own certificates
  make it, so it differs from the most advanced view only by certificates it has not
  been given yet (``behind``), with no gap in a sender's sequence numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Events = dict[str, list[dict[str, Any]]]


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, Any]:
    """{values, n, p50, p95, min, max} rounded to milliseconds."""
    vals = [round(v, 3) for v in values]
    p50, p95 = percentile(vals, 50), percentile(vals, 95)
    return {"n": len(vals), "p50": None if p50 is None else round(p50, 3),
            "p95": None if p95 is None else round(p95, 3),
            "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "values": vals}


def _named(events: list[dict[str, Any]], name: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name
            and all(e.get(k) == v for k, v in match.items())]


def discovery_times(events: Events, clients: list[str]) -> dict[str, Any]:
    """Per client: link_up → first authority_discovered; plus service-discovery seconds."""
    firsts, sd = [], []
    per_client = {}
    for c in clients:
        ev = events.get(c, [])
        up = _named(ev, "link_up")
        found = _named(ev, "authority_discovered")
        sd += [float(e["sd_seconds"]) for e in found if e.get("sd_seconds") is not None]
        if up and found:
            first = min(e["t"] for e in found if e["t"] >= up[0]["t"]) - up[0]["t"] \
                if any(e["t"] >= up[0]["t"] for e in found) else None
            if first is not None:
                firsts.append(first)
                per_client[c] = round(first, 3)
    out = summary(firsts)
    out["per_client"] = per_client
    out["service_discovery_s"] = summary(sd)
    return out


def connection_times(events: Events, clients: list[str]) -> dict[str, Any]:
    """Every client join of an authority's group (``group_joined.elapsed``)."""
    joins = [float(e["elapsed"]) for c in clients for e in _named(events.get(c, []),
                                                                   "group_joined")
             if e.get("elapsed") is not None]
    out = summary(joins)
    out["failures"] = sum(len(_named(events.get(c, []), "join_failed")) for c in clients)
    return out


def transfers(events: Events, clients: list[str], weights: dict[str, int], quorum: int,
              records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per transfer started by a client: stage times from ``transfer_started``."""
    rows = []
    credits = [r for r in records if r.get("event") == "recipient_credited"]
    for c in clients:
        ev = sorted(events.get(c, []), key=lambda e: e["t"])
        starts: dict[int, dict[str, Any]] = {}
        for e in _named(ev, "transfer_started"):
            starts.setdefault(int(e["sequence_number"]), e)  # a resume keeps the first
        for seq, start in sorted(starts.items()):
            t0 = start["t"]
            row: dict[str, Any] = {"sender": c, "recipient": start.get("recipient"),
                                   "amount": start.get("amount"), "sequence_number": seq,
                                   "certificate": None, "quorum_confirmed": None,
                                   "completed": None, "credited": None, "votes": []}
            row["votes"] = [e["authority"] for e in _named(ev, "vote_received",
                                                           sequence_number=seq)]
            cert = _named(ev, "certificate_formed", sequence_number=seq)
            if cert:
                row["certificate"] = round(cert[0]["t"] - t0, 3)
            weight, confirmed = 0, []
            for e in _named(ev, "confirmation_delivered", sequence_number=seq):
                if e["authority"] in confirmed:
                    continue
                confirmed.append(e["authority"])
                weight += weights.get(e["authority"], 1)
                if weight >= quorum and row["quorum_confirmed"] is None:
                    row["quorum_confirmed"] = round(e["t"] - t0, 3)
            row["confirmed"] = confirmed
            done = _named(ev, "transfer_completed", sequence_number=seq)
            if done:
                row["completed"] = round(done[0]["t"] - t0, 3)
            row["handoff"] = None
            if cert:
                got = next((e for e in sorted(events.get(str(row["recipient"]), []),
                                              key=lambda e: e["t"])
                            if e.get("event") == "payment_received" and e.get("sender") == c
                            and e.get("sequence_number") == seq), None)
                if got is not None:
                    row["handoff"] = {"seconds": round(got["t"] - cert[0]["t"], 3),
                                      "channel": got.get("channel")}
                credit = next((r for r in credits if r["recipient"] == row["recipient"]
                               and r["t"] >= cert[0]["t"]), None)
                if credit is not None:
                    credits.remove(credit)  # one credit pays one transfer
                    row["credited"] = round(credit["t"] - t0, 3)
            rows.append(row)
    return rows


def _met_quorum(changes: list[dict[str, Any]], client: str, since: float,
                weights: dict[str, int], quorum: int) -> bool:
    """True if authorities weighing ``quorum`` were in ``client``'s radio range at some
    time from ``since`` on (the layer's sampled range changes)."""
    met: set[str] = set()
    state: dict[str, bool] = {}
    for ch in sorted((c for c in changes if c.get("client") == client),
                     key=lambda c: c["t"]):
        inside = ch["change"] in ("in", "initial")
        if ch["t"] <= since:
            state[ch["authority"]] = inside
        elif inside:
            met.add(ch["authority"])
    met |= {a for a, inside in state.items() if inside}
    return sum(weights.get(a, 1) for a in met) >= quorum


def _percentiles(values: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(values)}
    for q in (50, 90, 95, 99):
        v = percentile(values, q)
        out[f"p{q}"] = None if v is None else round(v, 3)
    return out


def payments_summary(rows: list[dict[str, Any]], scheduled: list[dict[str, Any]],
                     changes: list[dict[str, Any]], weights: dict[str, int], quorum: int,
                     t0: float = 0.0) -> dict[str, Any]:
    """How a ``[payments]`` schedule went (see the module docstring).

    ``scheduled``: ``{at, payer, payee, amount}`` with ``at`` in seconds after ``t0`` (the
    timeline's start on the events' clock).  A payer's k-th scheduled payment is its k-th
    transfer (by sequence number): a payer's transfers are signed in the order asked.
    """
    by_payer: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_payer.setdefault(str(r["sender"]), []).append(r)
    for mine in by_payer.values():
        mine.sort(key=lambda r: r["sequence_number"])
    seen: dict[str, int] = {}
    out_rows = []
    for p in sorted(scheduled, key=lambda p: p["at"]):
        k = seen.get(p["payer"], 0)
        seen[p["payer"]] = k + 1
        mine = by_payer.get(p["payer"], [])
        got = mine[k] if k < len(mine) else None
        state = ("not started" if got is None else "completed" if got["completed"] is not None
                 else "certified" if got["certificate"] is not None else "started")
        out_rows.append({**p, "state": state, "row": got,
                         "met_quorum": _met_quorum(changes, p["payer"], t0 + p["at"],
                                                   weights, quorum)})
    n = len(out_rows)
    done = [x for x in out_rows if x["state"] == "completed"]
    met = [x for x in out_rows if x["met_quorum"]]
    met_done = [x for x in met if x["state"] == "completed"]
    channels: dict[str, int] = {}
    for x in out_rows:
        h = x["row"]["handoff"] if x["row"] is not None else None
        if h is not None:
            channels[str(h["channel"])] = channels.get(str(h["channel"]), 0) + 1
    latency = {stage: _percentiles([x["row"][stage] for x in out_rows if x["row"] is not None
                                    and x["row"][stage] is not None])
               for stage in ("certificate", "completed")}
    latency["handoff"] = _percentiles([float(x["row"]["handoff"]["seconds"]) for x in out_rows
                                       if x["row"] is not None and x["row"]["handoff"]])
    return {
        "scheduled": n,
        "started": sum(x["state"] != "not started" for x in out_rows),
        "certified": sum(x["state"] in ("certified", "completed") for x in out_rows),
        "completed": len(done),
        "completion_rate": round(len(done) / n, 3) if n else None,
        "met_quorum": len(met),
        "completion_rate_met_quorum": round(len(met_done) / len(met), 3) if met else None,
        "handoff_channels": channels,
        # Certified, yet the payee holds no credit for it (it met neither the payer
        # after the certificate nor an authority while syncing).
        "payee_not_credited": sum(1 for x in out_rows if x["row"] is not None
                                  and x["row"]["certificate"] is not None
                                  and not x["row"]["handoff"]),
        "latency_s": latency,
        "not_completed": [{k: x[k] for k in ("at", "payer", "payee", "amount", "state",
                                             "met_quorum")}
                          for x in out_rows if x["state"] != "completed"],
    }


def safety(snapshots: dict[str, dict[str, Any]], genesis: dict[str, int],
           events: Events) -> dict[str, Any]:
    """The run's safety check (see the module docstring); ``ok`` is False with any
    ``violations`` (each ``{kind, ...}``).

    ``snapshots``: authority → ``{"accounts": [{account, balance, ...}], "history":
    [{sender, sequence_number, recipient, amount}]}`` (its ``balance`` and ``history``
    answers); ``genesis``: account → genesis balance; ``events``: the daemons' events
    (a payee's ``payment_received`` and a payer's ``transfer_completed`` name the
    certificate they hold).
    """
    violations: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], dict[tuple[str, int], list[str]]] = {}

    def saw(sender: Any, seq: Any, recipient: Any, amount: Any, where: str) -> None:
        if sender is None or seq is None:
            return
        key = (str(sender), int(seq))
        seen.setdefault(key, {}).setdefault((str(recipient), int(amount)), []).append(where)

    for auth, snap in snapshots.items():
        for c in snap.get("history", []):
            saw(c["sender"], c["sequence_number"], c["recipient"], c["amount"], auth)
    for node, evs in events.items():
        for e in evs:
            if e.get("event") == "payment_received":
                saw(e.get("sender"), e.get("sequence_number"), node, e.get("amount"), node)
            elif e.get("event") == "transfer_completed":
                saw(node, e.get("sequence_number"), e.get("recipient"), e.get("amount"), node)
    for (sender, seq), values in sorted(seen.items()):
        if len(values) > 1:
            violations.append({"kind": "conflicting_certificates", "sender": sender,
                               "sequence_number": seq, "certificates": [
                                   {"recipient": r, "amount": a, "seen_at": sorted(set(w))}
                                   for (r, a), w in sorted(values.items())]})
    # The most advanced view: every certificate any authority holds, once.
    union = {(s, q): next(iter(v)) for (s, q), v in seen.items()
             if any(a in snapshots for w in v.values() for a in w)}
    total = sum(genesis.values())
    behind: dict[str, int] = {}
    for auth, snap in sorted(snapshots.items()):
        balances = {str(a["account"]): int(a["balance"]) for a in snap.get("accounts", [])}
        held = {(str(c["sender"]), int(c["sequence_number"])) for c in snap.get("history", [])}
        if sum(balances.values()) != total:
            violations.append({"kind": "money_not_conserved", "authority": auth,
                               "total": sum(balances.values()), "genesis": total})
        behind[auth] = len(set(union) - held)
        for account, balance in sorted(balances.items()):
            own = genesis.get(account, 0)
            for (sender, seq) in held:
                recipient, amount = union.get((sender, seq), ("", 0))
                own += amount if recipient == account else 0
                own -= amount if sender == account else 0
            if balance != own:
                violations.append({"kind": "balance_disagrees", "authority": auth,
                                   "account": account, "balance": balance,
                                   "by_its_certificates": own})
            seqs = sorted(q for s, q in held if s == account)
            everyone = sorted(q for s, q in union if s == account)
            if seqs != everyone[:len(seqs)]:
                violations.append({"kind": "sequence_gap", "authority": auth,
                                   "account": account, "confirmed": seqs,
                                   "known": everyone})
    return {"ok": not violations and bool(snapshots), "checked": bool(snapshots),
            "authorities": sorted(snapshots), "certificates": len(union),
            "behind": behind, "violations": violations}


def convergence_times(events: Events, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """Topology change (radios in/out of range) → the client daemon's table follows."""
    ins: list[float] = []
    outs: list[float] = []
    missed = 0
    for ch in changes:
        if ch["change"] not in ("in", "out"):
            continue
        name = "authority_in_range" if ch["change"] == "in" else "authority_out_of_range"
        nxt = next((e for e in sorted(events.get(ch["client"], []), key=lambda e: e["t"])
                    if e.get("event") == name and e.get("authority") == ch["authority"]
                    and e["t"] >= ch["t"]), None)
        # A later opposite change first means the daemon never saw this one: a miss.
        back = next((c for c in changes if c["client"] == ch["client"]
                     and c["authority"] == ch["authority"] and c["t"] > ch["t"]), None)
        if nxt is None or (back is not None and nxt["t"] > back["t"]):
            missed += 1
            continue
        (ins if ch["change"] == "in" else outs).append(nxt["t"] - ch["t"])
    out = summary(ins + outs)
    out["into_range"] = summary(ins)
    out["out_of_range"] = summary(outs)
    out["not_followed"] = missed
    return out


def compute(events: Events, *, clients: list[str], authorities: list[str],
            weights: dict[str, int] | None = None, quorum: int | None = None,
            records: list[dict[str, Any]] | None = None,
            changes: list[dict[str, Any]] | None = None,
            scheduled: list[dict[str, Any]] | None = None, t0: float = 0.0,
            snapshots: dict[str, dict[str, Any]] | None = None,
            genesis: dict[str, int] | None = None) -> dict[str, Any]:
    """Every metric of the run (see the module docstring); ``payments`` with a
    ``scheduled`` list (times after ``t0``), ``safety`` with the authorities'
    ``snapshots`` and the ``genesis``."""
    weights = weights or dict.fromkeys(authorities, 1)
    total = sum(weights.values())
    quorum = quorum or 2 * total // 3 + 1
    records = records or []
    rows = transfers(events, clients, weights, quorum, records)
    completed = [r for r in rows if r["completed"] is not None]
    credited = [r for r in completed if r["credited"] is not None]
    bare = [float(r["seconds"]) for r in records if r.get("event") == "bare_join"]
    handed = [r["handoff"] for r in rows if r["handoff"] is not None]
    channels: dict[str, int] = {}
    for h in handed:
        channels[str(h["channel"])] = channels.get(str(h["channel"]), 0) + 1
    first_credit = {}
    for c in clients:
        got = [e["t"] for e in events.get(c, []) if e.get("event") == "payment_received"]
        if got:
            first_credit[c] = min(got)
    spent = []
    for r in rows:
        start = next((e["t"] for e in events.get(r["sender"], [])
                      if e.get("event") == "transfer_started"
                      and e.get("sequence_number") == r["sequence_number"]), None)
        if start is not None and r["sender"] in first_credit \
                and start >= first_credit[r["sender"]]:
            spent.append({"sender": r["sender"], "sequence_number": r["sequence_number"],
                          "recipient": r["recipient"], "completed": r["completed"]})
    out: dict[str, Any] = {}
    if scheduled:
        out["payments"] = payments_summary(rows, scheduled, changes or [], weights, quorum, t0)
    if snapshots is not None:
        out["safety"] = safety(snapshots, genesis or {}, events)
    return {
        **out,
        "discovery_time_s": discovery_times(events, clients),
        "connection_time_s": connection_times(events, clients),
        "payment_latency_s": {
            stage: summary([r[stage] for r in rows if r[stage] is not None])
            for stage in ("certificate", "quorum_confirmed", "completed", "credited")},
        "transfers": rows,
        "transfers_started": len(rows),
        "completion_rate": round(len(completed) / len(rows), 3) if rows else None,
        "delivery_success_rate": round(len(credited) / len(completed), 3)
        if completed else None,
        "handoff_s": summary([float(h["seconds"]) for h in handed]),
        "handoff_channels": channels,
        "payee_payments": spent,
        "convergence_time_s": convergence_times(events, changes or []),
        "bare_join_s": round(bare[0], 3) if bare else None,
        "quorum": quorum,
    }


def table(metrics: dict[str, Any]) -> Any:
    """A rich Table of the headline metrics."""
    from rich.table import Table

    t = Table(title="FastPay over WiFi Direct — run metrics")
    t.add_column("metric")
    t.add_column("n", justify="right")
    t.add_column("p50 (s)", justify="right")
    t.add_column("p95 (s)", justify="right")

    def row(label: str, s: dict[str, Any]) -> None:
        fmt = (lambda v: "-" if v is None else f"{v:.2f}")  # noqa: E731
        t.add_row(label, str(s["n"]), fmt(s["p50"]), fmt(s["p95"]))

    row("discovery (link up → first authority)", metrics["discovery_time_s"])
    row("connection (group join)", metrics["connection_time_s"])
    for stage, s in metrics["payment_latency_s"].items():
        row(f"payment: transfer → {stage.replace('_', ' ')}", s)
    if "handoff_s" in metrics:
        split = ", ".join(f"{k} {v}" for k, v in sorted(metrics["handoff_channels"].items()))
        row(f"hand-off: certificate → payee credited ({split or 'none'})",
            metrics["handoff_s"])
    row("convergence after topology change", metrics["convergence_time_s"])
    bare = metrics["bare_join_s"]
    t.add_row("bare P2P join (wpa_cli)", "1" if bare is not None else "0",
              "-" if bare is None else f"{bare:.2f}", "")
    t.add_row("completion rate", str(metrics["transfers_started"]),
              str(metrics["completion_rate"]), "")
    t.add_row("delivery success rate", "", str(metrics["delivery_success_rate"]), "")
    spent = metrics.get("payee_payments") or []
    if spent:
        done = sum(1 for p in spent if p["completed"] is not None)
        t.add_row("payee's own later payments (completed)", str(len(spent)), str(done), "")
    pay = metrics.get("payments")
    if pay:
        t.add_row("scheduled payments: completed / scheduled",
                  f"{pay['completed']}/{pay['scheduled']}", str(pay["completion_rate"]), "")
        t.add_row("  among payers that met a quorum", str(pay["met_quorum"]),
                  str(pay["completion_rate_met_quorum"]), "")
        split = ", ".join(f"{k} {v}" for k, v in sorted(pay["handoff_channels"].items()))
        t.add_row(f"  hand-off channels: {split or 'none'}; payee not credited yet",
                  str(pay["payee_not_credited"]), "", "")
        for stage, q in pay["latency_s"].items():
            fmt = (lambda v: "-" if v is None else f"{v:.2f}")  # noqa: E731
            t.add_row(f"  {stage} p90 {fmt(q['p90'])}, p99 {fmt(q['p99'])}", str(q["n"]),
                      fmt(q["p50"]), fmt(q["p95"]))
    safe = metrics.get("safety")
    if safe is not None:
        kinds = sorted({v["kind"] for v in safe["violations"]})
        verdict = ("ok" if safe["ok"] else "not checked" if not safe["checked"]
                   else "VIOLATED: " + ", ".join(kinds))
        behind = sum(safe["behind"].values())
        t.add_row(f"safety ({safe['certificates']} certificates; {behind} yet to reach "
                  "an authority)", str(len(safe["authorities"])), verdict, "")
    return t


def print_table(metrics: dict[str, Any]) -> None:
    """Print the metrics table on stdout."""
    from rich.console import Console

    Console(width=100).print(table(metrics))


def load_events(state_root: Path) -> Events:
    """Read ``<state_root>/<node>/events.jsonl`` for every node."""
    out: Events = {}
    for path in sorted(state_root.glob("*/events.jsonl")):
        out[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines()
                                 if line.strip()]
    return out
