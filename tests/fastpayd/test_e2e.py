"""End to end on loopback: 4 authority + 2 client daemons, a transfer through `fastpay`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from fastpayd_helpers import LocalNet, subprocess_env


def fastpay(net: LocalNet, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastpayd.cli", "--config", str(net.root / f"{node}.toml"),
         *args],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )


@pytest.mark.slow
async def test_transfer_through_cli_settles_everywhere(make_testnet) -> None:
    net: LocalNet = make_testnet(authorities=4, clients=2, balance=1000)
    daemons = [net.daemon(n) for n in ("auth0", "auth1", "auth2", "auth3", "client0", "client1")]
    # Started in parallel; each start waits for its own READY=1.
    await asyncio.gather(*(asyncio.to_thread(d.start) for d in daemons))

    done = await asyncio.to_thread(fastpay, net, "client0", "--json", "transfer", "client1", "250")
    assert done.returncode == 0, done.stderr
    *steps, answer = (json.loads(line) for line in done.stdout.splitlines())
    assert answer["ok"] and answer["amount"] == 250 and answer["sequence_number"] == 0
    assert set(answer["confirmations"].values()) == {"confirmed"}
    assert answer["delivery"] == "delivered"
    # progress was shown, as JSON lines before the answer
    assert "certificate_formed" in [s["progress"]["step"] for s in steps]

    # Every authority settled it: sender debited, recipient credited.
    for name in ("auth0", "auth1", "auth2", "auth3"):
        auth = next(d for d in daemons if d.name == name)
        payer = await auth.control("balance", account="client0")
        payee = await auth.control("balance", account="client1")
        assert (payer["balance"], payer["next_sequence_number"], payer["pending"]) == (750, 1, None)
        assert payee["balance"] == 1250
    # The recipient verified the certificate alone and credited itself.
    out = await asyncio.to_thread(fastpay, net, "client1", "--json", "balance")
    assert json.loads(out.stdout)["balance"] == 1250
    out = await asyncio.to_thread(fastpay, net, "client0", "--json", "balance")
    assert json.loads(out.stdout)["balance"] == 750
    out = await asyncio.to_thread(fastpay, net, "client1", "--json", "history")
    hist = json.loads(out.stdout)
    assert [(r["direction"], r["amount"], r["sender"]) for r in hist["history"]] == [
        ("received", 250, "client0")]
    # The steps a user would time are in the event log, with monotonic timestamps.
    events = (await daemons[4].control("events"))["events"]
    kinds = [e["event"] for e in events]
    for step in ("order_sent", "vote_received", "certificate_formed",
                 "confirmation_delivered", "certificate_delivered", "transfer_completed"):
        assert step in kinds
    stamps = [e["t"] for e in events]
    assert stamps == sorted(stamps)
    received = (await daemons[5].control("events"))["events"]
    assert any(e["event"] == "payment_received" and e["amount"] == 250 for e in received)

    # A refused transfer: clear message, nonzero exit, no traceback.
    bad = await asyncio.to_thread(fastpay, net, "client0", "transfer", "client1", "100000")
    assert bad.returncode == 1
    assert "InsufficientFunding" in bad.stderr and "Traceback" not in bad.stderr

    for d in daemons:
        assert d.stop() == 0


def test_cli_without_daemon_fails_cleanly(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastpayd.cli", "--socket", str(tmp_path / "none.sock"), "status"],
        capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )
    assert out.returncode == 3
    assert "no fastpayd listening" in out.stderr and "Traceback" not in out.stderr


def test_fastpayd_bad_config_fails_cleanly(tmp_path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[node]\nrole = 'banker'\n")
    out = subprocess.run([sys.executable, "-m", "fastpayd", "--config", str(cfg)],
                         capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert out.returncode == 2
    assert "role" in out.stderr and "Traceback" not in out.stderr
