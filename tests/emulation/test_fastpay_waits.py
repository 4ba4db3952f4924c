"""The emulation's long waits against real daemons on loopback (``fastpayd testnet``):
``wait_payment`` and the payment long-poll go through the daemon's ``wait`` command and
show each step as it comes; a wait ends when the emulation stops. The network object is
the real (unstarted) :class:`emulation.network.Network`: these waits only read its
``failed`` event."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulation import fastpay, scenario
from emulation.cli import CommandFailed
from emulation.network import Network

ROOT = Path(__file__).resolve().parents[2]


def _fastpayd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastpayd", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("waits") / "net"
    up = _fastpayd("testnet", "up", str(root), "--authorities", "4", "--clients", "2",
                   "--timeout", "200")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield root
    finally:
        _fastpayd("testnet", "down", str(root))


def _layer(root: Path) -> fastpay.FastPayLayer:
    scen = scenario.load(scenario.DEFAULT_SCENARIO)
    net = Network(scen.stations, run_dir=root / "emu")
    layer = fastpay.FastPayLayer(net, scen, work=root)
    for name in ("client0", "client1"):
        cfg = root / f"{name}.toml"
        node = tomllib.loads(cfg.read_text())["node"]
        layer.daemons[name] = fastpay.Daemon(
            name, "client", None, cfg, root / node["control_socket"],
            root / node["state_dir"], root / "log" / f"{name}.out")
    return layer


def test_wait_payment_shows_the_steps_and_ends_complete(testnet: Path) -> None:
    layer = _layer(testnet)
    staged = layer.daemon("client0").ctl({"cmd": "transfer", "recipient": "client1",
                                          "amount": 3}, 120)
    lines: list[str] = []
    done = layer.wait_payment("client0", 120, lines.append)
    assert done["state"] == "complete"
    assert done["sequence_number"] == staged["sequence_number"]
    assert sorted(done["confirmed"]) == ["auth0", "auth1", "auth2", "auth3"]
    assert lines and lines[0].startswith("  ... ") and "client0: waiting" in lines[0]


def test_payment_long_poll_reports_the_payment_as_it_lands(testnet: Path) -> None:
    layer = _layer(testnet)
    lines: list[str] = []
    result: dict[str, Any] = {}

    def wait() -> None:
        result.update(layer.long_poll("client1", {"for": "payment", "sender": "client0"},
                                      120, lines.append))

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 30
    while not lines and time.monotonic() < deadline:  # the daemon holds the wait now
        time.sleep(0.05)
    layer.daemon("client0").ctl({"cmd": "transfer", "recipient": "client1",
                                 "amount": 2}, 120)
    waiter.join(120)
    assert result["payment"]["amount"] == 2
    assert any("payment received (2 from client0)" in line for line in lines), lines


def test_a_wait_ends_when_the_emulation_stops(testnet: Path) -> None:
    layer = _layer(testnet)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            layer.long_poll("client1", {"for": "payment", "min_amount": 10**9}, 300)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(1.0)
    layer.net.failed.set()
    started = time.monotonic()
    waiter.join(10)
    assert not waiter.is_alive() and time.monotonic() - started < 5
    assert isinstance(errors[0], CommandFailed) and "stopped" in str(errors[0])


def test_describe_wait_step_names_the_authority_and_state() -> None:
    step = {"step": "vote_received", "state": "collecting_votes", "balance": 97,
            "event": {"event": "vote_received", "authority": "auth2", "weight": 1}}
    assert fastpay.describe_wait_step("client0", step, 4.0) == (
        "  ...   4.0 s  client0: vote received (from auth2, weight 1); "
        "state collecting_votes; balance 97")


def test_wait_payments_long_polls_each_payer_and_sums_up(tmp_path: Path) -> None:
    root = tmp_path / "net"
    up = _fastpayd("testnet", "up", str(root), "--authorities", "4", "--clients", "2",
                   "--timeout", "200")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        layer = _layer(root)
        for name in ("auth0", "auth1", "auth2", "auth3"):
            node = tomllib.loads((root / f"{name}.toml").read_text())["node"]
            layer.daemons[name] = fastpay.Daemon(
                name, "authority", None, root / f"{name}.toml", root / node["control_socket"],
                root / node["state_dir"], root / "log" / f"{name}.out")
        layer.quorum, layer.total_weight = 3, 4
        layer.scenario.payments = [scenario.Payment(at=1.0, payer="client0", payee="client1",
                                                    amount=3),
                                   scenario.Payment(at=2.0, payer="client1", payee="client0",
                                                    amount=2)]
        with pytest.raises(CommandFailed, match="not complete: client0->client1 "
                                                r"\(not started\)"):
            layer.wait_payments(5, lambda line: None)  # nobody paid: NoTransfer at once
        for payer, payee, amount in (("client0", "client1", 3), ("client1", "client0", 2)):
            layer.daemon(payer).ctl({"cmd": "transfer", "recipient": payee,
                                     "amount": amount}, 120)
        lines: list[str] = []
        summary = layer.wait_payments(120, lines.append, every=0.5)
        assert summary["scheduled"] == summary["completed"] == 2
        assert summary["completion_rate"] == 1.0
        assert all(line.startswith("wait_payments: ") for line in lines), lines
    finally:
        _fastpayd("testnet", "down", str(root))
