#!/usr/bin/env python3
"""Chaos run on loopback: concurrent transfers while authorities and clients are SIGKILLed.

::

    .venv/bin/python scripts/chaos.py --transfers 300 --clients 4 --seed 1

A testnet (4 authorities, ``--clients`` clients) is generated in a temporary directory and
every node runs as a real ``fastpayd`` process on 127.0.0.1.  One worker per client pays
random amounts to random other clients through the client daemon's control socket (the
socket the ``fastpay`` CLI talks to) until ``--transfers`` transfers were attempted; all
clients pay at once.  Meanwhile ``--kills`` times, spread over the run, a random node is
SIGKILLed and restarted after a short random pause: an authority or a client, one node
at a time, so never more than f = 1 authority is down and liveness is owed.

Then the **settle** phase: every node up, ``sync`` typed twice on every client (what a
user would do), and a wait until nothing changes any more at any node (``--settle``
seconds at most).  Then the **checks**, each failure a violation:

* every paid transfer (a transfer the daemon answered ``ok``) is in its recipient's
  history and in every authority's confirmed log of the sender;
* every client's own balance equals every authority's view of it;
* the supply (sum of every account's balance) is conserved at every authority;
* no equivocation: no authority voted for two different orders for one (sender, seq)
  (its ``vote_issued`` events, ``log_requests = true``), and no two authorities hold
  different certificates for one (sender, seq) (their histories);
* no frozen account: every client can still pay 1 unit to the next one, and it completes;
* no transfer of the run was refused for anything but InsufficientFunding (one node down
  at a time leaves 3 of 4 authorities: a quorum always answers).

It prints a summary table and the violations, and exits 1 if there is any (0 otherwise,
2 on a usage or set-up error).  Bounded: ``--max-seconds`` for the transfer phase,
``--settle`` for settling, every request with a timeout; every process started is
killed at the end; the directory is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fastpayd.control import control_request  # noqa: E402
from fastpayd.testnet import free_base_port, generate_testnet  # noqa: E402

AUTHORITIES = 4
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 60.0  # control-socket answer to one transfer
CLIENT_LINK = "request_timeout = 2.0\nconnect_timeout = 1.0\n"
SYNC_INTERVAL = 1.0


# -- processes ------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(extra)
    return env


class Node:
    """One fastpayd process; ``start`` waits for its sd_notify READY=1."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.config = root / f"{name}.toml"
        self.socket = root / "run" / f"{name}.sock"
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False  # READY=1 received and not killed since
        self.starts = 0

    @property
    def authority(self) -> bool:
        return self.name.startswith("auth")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        notify_path = self.root / f".notify-{self.name}-{time.monotonic_ns()}"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        try:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "fastpayd", "--config", str(self.config)],
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                    env=_env(NOTIFY_SOCKET=str(notify_path)),
                )
            self.starts += 1
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"{self.name} not ready within {START_TIMEOUT:.0f}s")
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode} at start; "
                                       f"see {self.log}")
                notify.settimeout(min(remaining, 0.5))
                try:
                    data = notify.recv(4096)
                except TimeoutError:
                    continue
                if b"READY=1" in data.split(b"\n"):
                    self.ready = True
                    return
        finally:
            notify.close()
            with contextlib.suppress(FileNotFoundError):
                notify_path.unlink()

    def kill(self) -> None:
        self.ready = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    async def control(self, cmd: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        return await control_request(self.socket, {"cmd": cmd, **fields}, timeout)


# -- the run --------------------------------------------------------------------------------


@dataclass
class Figures:
    attempted: int = 0
    paid: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    interrupted: int = 0  # the client daemon died (or went silent) during the transfer
    client_down: int = 0  # not attempted: the client daemon was down at that moment
    kills: Counter[str] = field(default_factory=Counter)
    run_seconds: float = 0.0
    settle_seconds: float = 0.0
    settled: bool = False
    frozen_probes_ok: int = 0
    frozen_probes: int = 0
    paid_log: list[tuple[str, int, str, int]] = field(default_factory=list)


class Chaos:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.rng = random.Random(args.seed)
        self.fig = Figures()
        self.violations: list[str] = []
        self.auths = [f"auth{i}" for i in range(AUTHORITIES)]
        self.clients = [f"client{j}" for j in range(args.clients)]
        self.nodes = {n: Node(root, n) for n in (*self.auths, *self.clients)}
        self.done = asyncio.Event()
        # Transfers are released in steps so that every planned kill lands during the run:
        # kill i happens once threshold(i) transfers were attempted, and no transfer past
        # threshold(i + 1) starts before kill i happened.
        self.allowed = self._threshold(0)
        self.step = asyncio.Condition()

    def _threshold(self, i: int) -> int:
        kills = self.args.kills
        return self.args.transfers if i >= kills else (i + 1) * self.args.transfers // (kills + 1)

    # -- set-up ------------------------------------------------------------------------

    def generate(self) -> None:
        base = free_base_port(AUTHORITIES, self.args.clients)
        seed = self.args.seed.to_bytes(8, "big")
        generate_testnet(self.root, authorities=AUTHORITIES, clients=self.args.clients,
                         balance=self.args.balance, base_port=base, seed=seed)
        for node in self.nodes.values():
            text = node.config.read_text()
            if node.authority:  # one vote_issued event per vote: the equivocation check
                text = text.replace('log_level = "info"\n',
                                    'log_level = "info"\nlog_requests = true\n')
                node.config.write_text(text)
            else:  # [link] is the generated file's last table
                node.config.write_text(text + CLIENT_LINK
                                       + f"[client]\nsync_interval = {SYNC_INTERVAL}\n")

    async def start_all(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(n.start) for n in self.nodes.values()
                               if not n.alive))

    # -- transfers and kills ---------------------------------------------------------------

    async def worker(self, me: str, deadline: float) -> None:
        node = self.nodes[me]
        others = [c for c in self.clients if c != me]
        while self.fig.attempted < self.args.transfers and time.monotonic() < deadline:
            if not node.ready:
                await asyncio.sleep(0.1)
                continue
            if self.fig.attempted >= self.allowed:
                async with self.step:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.step.wait(), 1.0)
                continue
            payee = self.rng.choice(others)
            amount = self.rng.randint(1, self.args.max_amount)
            self.fig.attempted += 1  # reserved before any await: never more than asked
            try:
                _, probe = await asyncio.open_unix_connection(str(node.socket))
            except OSError:
                self.fig.attempted -= 1
                self.fig.client_down += 1  # killed (or restarting) right now
                await asyncio.sleep(0.1)
                continue
            probe.close()
            try:
                answer = await node.control("transfer", timeout=REQUEST_TIMEOUT,
                                            recipient=payee, amount=amount)
            except (OSError, ConnectionError, TimeoutError, ValueError):
                self.fig.interrupted += 1
                continue
            if answer.get("ok"):
                self.fig.paid += 1
                self.fig.paid_log.append((me, int(answer["sequence_number"]), payee,
                                          int(answer["amount"])))
            else:
                self.fig.refused[(answer.get("error") or {}).get("code", "?")] += 1
                await asyncio.sleep(0.05)  # a refusal costs nothing: do not spin on it

    async def chaos(self) -> None:
        for i in range(self.args.kills):
            while self.fig.attempted < self._threshold(i) and not self.done.is_set():
                await asyncio.sleep(0.02)
            if self.done.is_set():
                return
            pool = self.auths if self.rng.random() < 0.5 else self.clients
            victim = self.nodes[self.rng.choice(pool)]
            victim.kill()  # one node down at a time: at most f = 1 authority
            self.fig.kills["authority" if victim.authority else "client"] += 1
            async with self.step:
                self.allowed = self._threshold(i + 1)
                self.step.notify_all()
            print(f"  [{self.fig.attempted:4}/{self.args.transfers}] SIGKILL {victim.name}",
                  flush=True)
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))
            await asyncio.to_thread(victim.start)

    async def run_transfers(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.args.max_seconds
        chaos = asyncio.create_task(self.chaos())
        try:
            await asyncio.gather(*(self.worker(c, deadline) for c in self.clients))
        finally:
            self.done.set()
            await chaos
        self.fig.run_seconds = time.monotonic() - t0

    # -- settle ----------------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        """Every client's own (balance, seq) and every authority's view of every client."""
        snap: dict[str, Any] = {}
        for c in self.clients:
            v = await self.nodes[c].control("balance")
            snap[c] = (v["balance"], v["next_sequence_number"])
        for a in self.auths:
            v = await self.nodes[a].control("balance")
            snap[a] = sorted((x["account"], x["balance"], x["next_sequence_number"],
                              x["pending"] is not None) for x in v["accounts"])
        return snap

    async def settle(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.args.settle
        await self.start_all()
        for _ in range(2):
            for c in self.clients:
                with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                    await self.nodes[c].control("sync", timeout=30.0)
        last: Any = None
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                snap: Any = await self.snapshot()
            except (OSError, TimeoutError, ConnectionError, KeyError) as exc:
                snap = f"unreadable: {exc}"
            now = time.monotonic()
            if snap != last:
                last, quiet_since = snap, now
            elif now - quiet_since >= self.args.quiet:
                self.fig.settled = True
                break
            await asyncio.sleep(0.25)
        self.fig.settle_seconds = time.monotonic() - t0
        if not self.fig.settled:
            self.violations.append(f"not quiet within --settle {self.args.settle:.0f}s")

    # -- checks ----------------------------------------------------------------------------

    async def check_balances_and_credits(self) -> None:
        auth_hist: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
        for a in self.auths:
            for c in self.clients:
                h = await self.nodes[a].control("history", account=c)
                auth_hist[a][c] = h["history"]
        own_hist = {c: (await self.nodes[c].control("history"))["history"]
                    for c in self.clients}
        # Every client's own balance equals every authority's view.
        for c in self.clients:
            own = (await self.nodes[c].control("balance"))["balance"]
            views = {a: (await self.nodes[a].control("balance", account=c))["balance"]
                     for a in self.auths}
            differ = {a: b for a, b in views.items() if b != own}
            if differ:
                self.violations.append(f"{c}: own balance {own}, authorities say {differ}")
        # Every paid transfer credited at its recipient and confirmed at every authority.
        missing_at_recipient = []
        missing_at = Counter[str]()
        for sender, seq, payee, amount in self.fig.paid_log:
            got = [r for r in own_hist[payee] if r["direction"] == "received"
                   and r["sender"] == sender and r["sequence_number"] == seq]
            if not got:
                missing_at_recipient.append(f"{sender}#{seq}→{payee} ({amount})")
            elif got[0]["amount"] != amount:
                self.violations.append(f"{sender}#{seq}: {payee} credited {got[0]['amount']}, "
                                       f"paid {amount}")
            for a in self.auths:
                if not any(r["direction"] == "sent" and r["sequence_number"] == seq
                           for r in auth_hist[a][sender]):
                    missing_at[a] += 1
        if missing_at_recipient:
            self.violations.append(
                f"{len(missing_at_recipient)} of {self.fig.paid} paid transfers not credited "
                f"at their recipient: {', '.join(missing_at_recipient[:10])}"
                + (" ..." if len(missing_at_recipient) > 10 else ""))
        for a, k in sorted(missing_at.items()):
            self.violations.append(f"{k} paid transfers not confirmed at {a}")
        # No two different certificates for one (sender, seq) across authorities.
        certs: dict[tuple[str, int], set[tuple[str, int]]] = defaultdict(set)
        for a in self.auths:
            for c in self.clients:
                for r in auth_hist[a][c]:
                    if r["direction"] == "sent":
                        certs[(c, r["sequence_number"])].add((r["recipient"], r["amount"]))
        for (c, seq), variants in sorted(certs.items()):
            if len(variants) > 1:
                self.violations.append(f"two certificates for ({c}, {seq}): {sorted(variants)}")

    async def check_supply(self, when: str) -> None:
        total = self.args.balance * self.args.clients
        for a in self.auths:
            v = await self.nodes[a].control("balance")
            supply = sum(x["balance"] for x in v["accounts"])
            if supply != total:
                self.violations.append(f"{when}: supply at {a} is {supply}, genesis {total}")

    def check_votes(self) -> None:
        """No authority voted for two different orders for one (sender, seq), and no client
        signed two (votes of different authorities for different amounts).  The events
        carry (sender, seq, amount): orders differing only in recipient are caught by the
        certificates check instead."""
        everyone: dict[tuple[str, int], set[int]] = defaultdict(set)
        for a in self.auths:
            seen: dict[tuple[str, int], set[int]] = defaultdict(set)
            path = self.root / "state" / a / "events.jsonl"
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue  # a line cut by SIGKILL
                    if e.get("event") == "vote_issued":
                        seen[(e["sender"], e["sequence_number"])].add(e["amount"])
            for (sender, seq), amounts in seen.items():
                everyone[(sender, seq)] |= amounts
                if len(amounts) > 1:
                    self.violations.append(f"{a} voted twice for ({sender[:8]}…, {seq}): "
                                           f"amounts {sorted(amounts)}")
        for (sender, seq), amounts in sorted(everyone.items()):
            if len(amounts) > 1:
                self.violations.append(f"two orders signed for ({sender[:8]}…, {seq}): "
                                       f"amounts {sorted(amounts)} (votes of different "
                                       "authorities)")

    async def check_not_frozen(self) -> None:
        for i, c in enumerate(self.clients):
            payee = self.clients[(i + 1) % len(self.clients)]
            self.fig.frozen_probes += 1
            try:
                answer = await self.nodes[c].control("transfer", timeout=REQUEST_TIMEOUT,
                                                     recipient=payee, amount=1)
            except (OSError, TimeoutError, ConnectionError) as exc:
                self.violations.append(f"frozen: {c} → {payee} 1: {type(exc).__name__} {exc}")
                continue
            if answer.get("ok"):
                self.fig.frozen_probes_ok += 1
            else:
                err = answer.get("error") or {}
                self.violations.append(f"frozen: {c} cannot pay 1 to {payee}: "
                                       f"{err.get('code')}: {err.get('message', '')[:160]}")

    async def check_alive(self, when: str) -> None:
        for n in self.nodes.values():
            if not n.alive:
                self.violations.append(f"{when}: {n.name} is not running "
                                       f"(exit {n.proc and n.proc.returncode}; see {n.log})")

    # -- report ----------------------------------------------------------------------------

    def report(self) -> None:
        f = self.fig
        refused = ", ".join(f"{k} {v}" for k, v in f.refused.most_common()) or "none"
        rows = [
            ("transfers attempted", f"{f.attempted}"),
            ("  paid (ok)", f"{f.paid}"),
            ("  refused", f"{sum(f.refused.values())} ({refused})"),
            ("  interrupted (client killed)", f"{f.interrupted}"),
            ("kills", f"{sum(f.kills.values())} (authorities {f.kills['authority']}, "
                      f"clients {f.kills['client']})"),
            ("transfer phase", f"{f.run_seconds:.1f} s"),
            ("settle", f"{f.settle_seconds:.1f} s" + ("" if f.settled else " (not quiet)")),
            ("frozen-account probes", f"{f.frozen_probes_ok}/{f.frozen_probes} completed"),
            ("violations", f"{len(self.violations)}"),
        ]
        width = max(len(k) for k, _ in rows)
        print(f"\nchaos run: {AUTHORITIES} authorities, {self.args.clients} clients, "
              f"seed {self.args.seed}, {self.root}")
        for k, v in rows:
            print(f"  {k:<{width}}  {v}")
        if self.violations:
            print("\nviolations:")
            for v in self.violations:
                print(f"  - {v}")
        else:
            print("\nno violations")

    async def run(self) -> int:
        self.generate()
        try:
            await self.start_all()
            print(f"testnet up in {self.root}: {', '.join(self.nodes)}", flush=True)
            await self.run_transfers()
            print(f"transfer phase over ({self.fig.attempted} attempted, {self.fig.paid} "
                  f"paid); settling", flush=True)
            owed = {k: v for k, v in self.fig.refused.items() if k != "InsufficientFunding"}
            if owed:  # one node down at a time: 3 of 4 authorities always answer
                self.violations.append(
                    "refused although at most one node was down: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(owed.items())))
            await self.settle()
            await self.check_alive("after settling")
            await self.check_balances_and_credits()
            await self.check_supply("after settling")
            self.check_votes()
            await self.check_not_frozen()
            await self.check_supply("after the frozen-account probes")
            await self.check_alive("at the end")
        finally:
            for n in self.nodes.values():
                n.kill()
        self.report()
        return 1 if self.violations else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transfers", type=int, default=300, help="transfers to attempt (300)")
    p.add_argument("--clients", type=int, default=4, help="client daemons (4, at least 2)")
    p.add_argument("--seed", type=int, default=1, help="seed of keys, payments and kills (1)")
    p.add_argument("--kills", type=int, default=None,
                   help="SIGKILLs during the run (default transfers/25, at least 2)")
    p.add_argument("--balance", type=int, default=1000, help="genesis balance per client")
    p.add_argument("--max-amount", type=int, default=5, help="largest amount paid (5)")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="stop issuing transfers after this long (600)")
    p.add_argument("--settle", type=float, default=90.0,
                   help="seconds the settle phase may take (90)")
    p.add_argument("--quiet", type=float, default=4.0,
                   help="settled once nothing changed for this long (4 s)")
    p.add_argument("--dir", type=Path, help="run here (kept) instead of a temp dir")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    args = p.parse_args(argv)
    if args.clients < 2 or args.transfers < 1 or args.balance < 1 or args.max_amount < 1:
        p.error("need --clients >= 2, --transfers >= 1, --balance >= 1, --max-amount >= 1")
    if args.kills is None:
        args.kills = max(2, args.transfers // 25)
    root = args.dir if args.dir is not None else Path(tempfile.mkdtemp(prefix="fastpay-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(Chaos(args, root).run())
    except (RuntimeError, OSError) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


if __name__ == "__main__":
    sys.exit(main())
