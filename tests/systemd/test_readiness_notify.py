"""fastpayd speaks systemd's notify protocol the way ``Type=notify`` expects.

The test plays systemd: it binds a real Unix datagram socket, passes it as
``$NOTIFY_SOCKET`` (and a watchdog as ``$WATCHDOG_USEC``) to a real ``fastpayd``
authority on loopback, and reads what arrives. No timed sleeps: every step waits
for a datagram, a reply or the process's exit, each with a generous deadline.

* ``READY=1`` must mean "the control socket answers". When READY arrives the
  test freezes the daemon (SIGSTOP, then waits until the kernel reports it
  stopped), so the daemon cannot catch up behind a premature READY; only then
  does it connect to the control socket and look for the ``node_started`` event.
  A daemon that said READY before listening would fail here every time.
* ``WATCHDOG=1`` keeps arriving, never further apart than ``$WATCHDOG_USEC``.
* SIGHUP → ``RELOADING=1`` then ``READY=1``, and the changed setting is applied.
* SIGTERM → ``STOPPING=1``, exit status 0, control socket removed; the SQLite
  state (a vote the authority gave before the signal) is intact: the database
  passes ``integrity_check`` and a restarted daemon still reports the pending
  order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import (
    TIMEOUT,
    WATCHDOG_USEC,
    Daemon,
    NotifySocket,
    ask_for_vote,
    control,
    make_network,
    started,
)

import protocol
from fastpayd.keys import read_key


def frozen(daemon: Daemon) -> contextlib.AbstractContextManager[None]:
    """Stop the daemon (SIGSTOP) until the block ends; returns once it is really stopped."""

    @contextlib.contextmanager
    def cm() -> Iterator[None]:
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        _, status = os.waitpid(daemon.proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"fastpayd did not stop: status {status}"
        try:
            yield
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)

    return cm()


def events(state_dir: Path) -> list[str]:
    path = state_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["event"] for line in path.read_text().splitlines() if line]


@pytest.fixture
def network(tmp_path: Path) -> tuple[Path, int]:
    return make_network(tmp_path)


def test_ready_after_control_socket_and_sigterm_keeps_state(
    tmp_path: Path, network: tuple[Path, int]
) -> None:
    net, port = network
    config = net / "auth0.toml"
    control_socket = net / "run" / "auth0.sock"
    state_dir = net / "state" / "auth0"
    notify = NotifySocket(tmp_path / "notify.sock")
    log = tmp_path / "fastpayd.log"
    try:
        with started(config, notify, log) as daemon:
            ready = daemon.expect("READY")
            assert notify.received[0] is ready, (
                f"READY was not the first message: {notify.received}"
            )
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                with frozen(daemon):
                    # The daemon cannot run now: what holds was true when it sent READY.
                    assert control_socket.exists(), "READY=1 before the control socket exists"
                    s.connect(str(control_socket))  # refused unless already listening
                    s.sendall(b'{"cmd": "status"}\n')
                    assert "node_started" in events(state_dir), "READY=1 before node_started"
                # Running again, it answers the request queued while it was stopped.
                s.settimeout(TIMEOUT)
                status = json.loads(s.makefile("rb").readline())
            assert status["ok"] is True and status["name"] == "auth0", status
            assert status["pid"] == daemon.proc.pid

            # Watchdog keep-alives come often enough that systemd's watchdog never fires.
            notify.expect("WATCHDOG")
            since = time.monotonic()
            notify.expect("WATCHDOG")
            gap = time.monotonic() - since
            assert gap < WATCHDOG_USEC / 1e6, f"{gap:.2f}s between WATCHDOG=1 keep-alives"

            # Durable state the stop must not lose: the authority votes on an order.
            client = read_key(net / "client0.key")
            recipient = protocol.KeyPair.generate().public_key
            transfer = protocol.Transfer(
                sender=client.public_key, recipient=recipient, amount=7, sequence_number=0
            )
            vote = ask_for_vote(("127.0.0.1", port), protocol.TransferOrder.sign(transfer, client))
            assert isinstance(vote, protocol.SignedTransferOrder), vote

            os.kill(daemon.proc.pid, signal.SIGTERM)
            daemon.expect("STOPPING")
            rc = daemon.wait()
            assert rc == 0, f"fastpayd exited {rc}:\n{daemon.output()}"
            assert not control_socket.exists(), "control socket left behind"
            assert "node_stopping" in events(state_dir)

        db = state_dir / "fastpay.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        # A restart finds the vote it gave: the pending order survived the stop.
        with started(config, notify, log) as daemon:
            daemon.expect("READY")
            answer = control(control_socket, {"cmd": "balance", "account": "client0"})
            assert answer["ok"] is True, answer
            assert answer["balance"] == 100
            assert answer["pending"] == {"sequence_number": 0, "recipient": recipient.hex(),
                                         "amount": 7}, answer  # fmt: skip
            os.kill(daemon.proc.pid, signal.SIGTERM)
            daemon.expect("STOPPING")
            assert daemon.wait() == 0, daemon.output()
    finally:
        notify.close()


def test_sighup_reloads_config_with_reloading_then_ready(
    tmp_path: Path, network: tuple[Path, int]
) -> None:
    net, _ = network
    config = net / "auth0.toml"
    control_socket = net / "run" / "auth0.sock"
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        with started(config, notify, tmp_path / "fastpayd.log") as daemon:
            daemon.expect("READY")
            text = config.read_text()
            assert 'log_level = "info"' in text
            config.write_text(text.replace('log_level = "info"', 'log_level = "debug"'))
            os.kill(daemon.proc.pid, signal.SIGHUP)
            daemon.expect("RELOADING")
            daemon.expect("READY")
            answer = control(control_socket, {"cmd": "events", "since": 0})
            assert answer["ok"] is True, answer
            reloads = [e for e in answer["events"] if e["event"] == "config_reloaded"]  # type: ignore[index, union-attr]
            assert reloads and reloads[-1]["changed"] == ["log_level=debug"], reloads
            os.kill(daemon.proc.pid, signal.SIGTERM)
            daemon.expect("STOPPING")
            assert daemon.wait() == 0, daemon.output()
    finally:
        notify.close()
