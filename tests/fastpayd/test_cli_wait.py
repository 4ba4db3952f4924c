"""``fastpay wait`` against real daemons on loopback (issue 16, 3): a long-poll on the
control socket for readiness, a payment (from a sender, of an amount, up to a balance)
and a transfer's state, answered when the daemon's own events say so.  Timeouts exit
4, what can no longer happen exits 1, Ctrl-C exits 130 with no traceback, and a caller
that hangs up frees its connection at once."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import DEADLINE, fastpay, fastpayd, network_up
from fastpayd_helpers import REPO, subprocess_env

from fastpayd.control import MAX_CLIENTS, control_request
from fastpayd.errors import EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_USAGE


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("wait") / "net"
    with network_up(root, "--authorities", "4", "--clients", "2") as up:
        assert up.returncode == 0, up.stdout + up.stderr
        yield root


def cfg(net: Path, name: str) -> str:
    return str(net / f"{name}.toml")


class Waiter:
    """``fastpay wait ... --json`` running in the background, read line by line."""

    def __init__(self, net: Path, node: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastpayd.cli", "wait", *args, "--json",
             "--config", cfg(net, node)],
            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], DEADLINE)
        assert ready, "no line from fastpay wait"
        text = self.proc.stdout.readline()
        assert text, self.proc.stderr.read() if self.proc.stderr else ""
        return dict(json.loads(text))

    def waiting(self) -> dict[str, Any]:
        """The first progress line: the daemon has the wait (nothing can be missed now)."""
        first = self.line()
        assert first["progress"]["step"] == "waiting", first
        return dict(first["progress"])

    def until(self, step: str) -> dict[str, Any]:
        while True:
            line = self.line()
            if line.get("progress", {}).get("step") == step:
                return dict(line["progress"])

    def result(self) -> tuple[int, list[dict[str, Any]], str]:
        out, err = self.proc.communicate(timeout=DEADLINE)
        return (self.proc.returncode, [json.loads(x) for x in out.splitlines()], err)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def pay(net: Path, payer: str, payee: str, amount: int) -> dict[str, Any]:
    out = fastpay("--config", cfg(net, payer), "--json", "transfer", payee, str(amount))
    assert out.returncode == 0, out
    return dict(json.loads(out.stdout.splitlines()[-1]))


def balance(net: Path, node: str) -> int:
    out = fastpay("--config", cfg(net, node), "--json", "balance")
    assert out.returncode == 0, out
    return int(json.loads(out.stdout)["balance"])


def test_wait_payment_from_sender_of_at_least_an_amount(net: Path) -> None:
    waiter = Waiter(net, "client1", "payment", "--from", "client0", "--amount", "5")
    try:
        waiter.waiting()
        pay(net, "client0", "client1", 3)  # too small: seen, but the wait goes on
        seen = waiter.until("payment_received")
        assert seen["event"]["amount"] == 3 and waiter.proc.poll() is None
        pay(net, "client0", "client1", 6)
        status, lines, err = waiter.result()
    finally:
        waiter.close()
    assert status == 0, err
    answer = lines[-1]
    assert answer["ok"] and answer["for"] == "payment"
    assert answer["payment"]["sender"] == "client0" and answer["payment"]["amount"] == 6
    assert answer["balance"] == balance(net, "client1")
    assert all("progress" in line for line in lines[:-1]) and err == ""


def test_wait_payment_until_a_balance_text_output(net: Path) -> None:
    now = balance(net, "client1")
    out = fastpay("--config", cfg(net, "client1"), "wait", "payment", "--balance", str(now))
    assert out.returncode == 0 and f"balance {now}" in out.stdout, out  # holds already
    waiter = Waiter(net, "client1", "payment", "--balance", str(now + 4))
    try:
        waiter.waiting()
        pay(net, "client0", "client1", 4)
        status, lines, err = waiter.result()
    finally:
        waiter.close()
    assert status == 0, err
    assert lines[-1]["balance"] >= now + 4 and lines[-1]["payment"]["amount"] == 4


def test_wait_transfer_states(net: Path) -> None:
    answer = pay(net, "client0", "client1", 2)
    seq, ticket = answer["sequence_number"], answer["ticket"]
    client0 = cfg(net, "client0")
    for args in ((str(seq), "--state", "completed"), ("--ticket", str(ticket)), ()):
        out = fastpay("--config", client0, "--json", "wait", "transfer", *args)
        assert out.returncode == 0, (args, out)
        done = json.loads(out.stdout.splitlines()[-1])
        assert done["sequence_number"] == seq and done["state"] in ("final", "completed")
    out = fastpay("--config", client0, "wait", "transfer", str(seq), "--state", "failed")
    assert out.returncode == EXIT_REFUSED and "TransferCertified" in out.stderr, out
    out = fastpay("--config", client0, "wait", "transfer", "--ticket", "999")
    assert out.returncode == EXIT_REFUSED and "UnknownTicket" in out.stderr, out
    text = fastpay("--config", client0, "wait", "transfer", str(seq))
    assert text.returncode == 0 and f"transfer #{seq}: " in text.stdout, text


def test_wait_timeout_usage_and_role(net: Path) -> None:
    out = fastpay("--config", cfg(net, "client1"), "--json", "wait", "payment",
                  "--from", "client1", "--timeout", "0.5")
    assert out.returncode == EXIT_TIMEOUT and "Timeout" in out.stderr, out
    assert json.loads(out.stdout.splitlines()[-1])["error"]["code"] == "Timeout"
    for bad in (("payment", "3"), ("transfer", "--from", "client0"),
                ("ready", "--balance", "3"), ("transfer", "1", "--ticket", "1"),
                ("nothing",), ("transfer", "--timeout", "-1")):
        out = fastpay("--config", cfg(net, "client0"), "wait", *bad)
        assert out.returncode == EXIT_USAGE and "Traceback" not in out.stderr, (bad, out)
    out = fastpay("--config", cfg(net, "auth0"), "wait", "payment")
    assert out.returncode == EXIT_REFUSED and "NotAClient" in out.stderr, out
    out = fastpay("--config", cfg(net, "client1"), "wait", "payment", "--from", "fp1qqqq")
    assert out.returncode == EXIT_REFUSED and "Traceback" not in out.stderr, out
    ready = fastpay("--config", cfg(net, "auth0"), "--json", "wait", "ready")
    assert ready.returncode == 0 and json.loads(ready.stdout)["status"]["name"] == "auth0"


def test_wait_interrupted_exits_130_and_frees_the_daemon(net: Path) -> None:
    waiter = Waiter(net, "client1", "payment", "--timeout", "600")
    try:
        waiter.waiting()
        waiter.proc.send_signal(signal.SIGINT)
        status, _, err = waiter.result()
    finally:
        waiter.close()
    assert status == EXIT_INTERRUPTED and "Traceback" not in err, err

    async def hang_up_every_slot() -> int:
        sock = net / "run" / "client1.sock"
        writers = []
        for _ in range(MAX_CLIENTS // 2):  # every control slot in a long wait ...
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(json.dumps({"cmd": "wait", "for": "payment", "timeout": 600,
                                     "progress": True}).encode() + b"\n")
            assert b'"waiting"' in await reader.readline()
            writers.append(writer)
        last = (await control_request(sock, {"cmd": "events", "limit": 0}, 30))["last_seq"]
        for _ in range(MAX_CLIENTS - len(writers)):  # ... or an events --follow long-poll
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(json.dumps({"cmd": "events", "since": last, "wait": 600}
                                    ).encode() + b"\n")
            writers.append(writer)
        busy = await control_request(sock, {"cmd": "status"}, 30)
        assert busy["error"]["code"] == "Busy", busy
        for writer in writers:  # ... then every caller hangs up (Ctrl-C)
            writer.close()
        # The daemon ends each long-poll as its caller hangs up, not at the 600 s
        # timeout: every slot can be taken again (a connection that got its status
        # answer stays open, holding its slot).
        held = []
        deadline = time.monotonic() + DEADLINE
        while len(held) < MAX_CLIENTS and time.monotonic() < deadline:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(b'{"cmd":"status"}\n')
            try:
                line = await reader.readline()
            except ConnectionError:  # Busy: answered and closed before our request went
                line = b""
            if b'"ok":true' in line:
                held.append(writer)
            else:
                writer.close()
        for writer in held:
            writer.close()
        return len(held)

    assert asyncio.run(hang_up_every_slot()) == MAX_CLIENTS, "slots kept for callers gone"


def _stop(net: Path, name: str) -> None:
    """SIGTERM one node and wait (on its pidfd, no polling) until it has exited."""
    pid = int((net / "run" / f"{name}.pid").read_text())
    fd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGTERM)
        assert select.select([fd], [], [], DEADLINE)[0], f"{name} did not exit"
    finally:
        os.close(fd)


def test_wait_transfer_final_after_unreachable_authorities_return(tmp_path: Path) -> None:
    root = tmp_path / "net"
    with network_up(root, "--authorities", "4", "--clients", "2") as up:
        assert up.returncode == 0, up.stdout + up.stderr
        for name in ("auth2", "auth3"):
            _stop(root, name)
        out = fastpay("--config", cfg(root, "client0"), "transfer", "client1", "9")
        assert out.returncode == EXIT_REFUSED and "NoQuorum" in out.stderr, out
        failed = fastpay("--config", cfg(root, "client0"), "--json", "wait", "transfer",
                         "--state", "failed")
        assert failed.returncode == 0, failed
        assert "unreachable" in json.loads(failed.stdout.splitlines()[-1])["failure"]
        # Waiting for the payment to be final goes on: the daemon retries the two.
        waiter = Waiter(root, "client0", "transfer", "--state", "final", "--timeout", "300")
        try:
            assert waiter.waiting()["state"] == "failed"
            again = fastpayd("testnet", "up", str(root))
            assert again.returncode == 0 and "ready (6/6)" in again.stdout, again
            status, lines, err = waiter.result()
        finally:
            waiter.close()
        assert status == 0, (lines, err)
        assert lines[-1]["state"] in ("final", "completed") and len(lines[-1]["confirmed"]) >= 3
        steps = {line["progress"]["step"] for line in lines[:-1]}
        assert "certificate_formed" in steps, steps


def test_wait_payment_since_misses_nothing_between_waits(net: Path) -> None:
    """A loop of `wait payment --since LAST_SEQ` sees every payment, also those that
    landed while no wait was running."""
    client1 = cfg(net, "client1")
    first = fastpay("--config", client1, "--json", "wait", "payment", "--balance", "0")
    cursor = json.loads(first.stdout.splitlines()[-1])["last_seq"]
    pay(net, "client0", "client1", 11)  # nobody waits now
    pay(net, "client0", "client1", 12)
    seen = []
    for _ in range(2):
        out = fastpay("--config", client1, "--json", "wait", "payment", "--since",
                      str(cursor), "--from", "client0", "--timeout", "30")
        assert out.returncode == 0, out
        answer = json.loads(out.stdout.splitlines()[-1])
        seen.append(answer["payment"]["amount"])
        assert answer["last_seq"] == answer["payment"]["event_seq"]
        cursor = answer["last_seq"]
    assert seen == [11, 12]
