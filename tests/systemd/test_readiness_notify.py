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
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sd_helpers import REPO, run

import protocol
from fastpayd.framing import HEADER, encode_frame
from fastpayd.keys import read_key

TIMEOUT = 60.0  # generous: the first start imports the world on a slow CI runner
WATCHDOG_USEC = 2_000_000  # keep-alives every 1 s; systemd would kill after 2 s without one


def fastpayd_command() -> list[str]:
    """The installed console script when there is one, else ``python -m fastpayd``."""
    script = Path(sys.executable).parent / "fastpayd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fastpayd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NotifySocket:
    """The systemd side of sd_notify: a bound datagram socket and what it received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[dict[str, str]] = []

    def expect(self, key: str, value: str = "1", timeout: float = TIMEOUT) -> dict[str, str]:
        """Read datagrams until one sets ``key=value``; return it (all are kept in order)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} within {timeout}s; got {self.received}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.received.append(fields)
            if fields.get(key) == value:
                return fields

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """One ``fastpayd`` process with its notify socket; always killed at the end."""

    def __init__(self, config: Path, notify: NotifySocket, log: Path) -> None:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(notify.path),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "PYTHONPATH": str(REPO),
        }
        env.pop("WATCHDOG_PID", None)
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [*fastpayd_command(), "--config", str(config)],
            env=env,
            cwd=REPO,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


def control(path: Path, request: dict[str, object], timeout: float = TIMEOUT) -> dict[str, object]:
    """One request/answer on the control socket (JSON lines)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        answer: dict[str, object] = json.loads(s.makefile("rb").readline())
        return answer


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the authority closed the connection"
        data += chunk
    return data


def ask_for_vote(endpoint: tuple[str, int], order: protocol.TransferOrder) -> object:
    """Send ``order`` to an authority over its TCP link the way a client does; return the reply."""
    with socket.create_connection(endpoint, timeout=TIMEOUT) as s:
        s.sendall(encode_frame(protocol.encode(order)))
        (size,) = HEADER.unpack(recv_exact(s, HEADER.size))
        return protocol.decode(recv_exact(s, size))


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A one-authority, one-client test network from ``fastpayd testnet``; (dir, port)."""
    out = tmp_path / "net"
    port = free_port()
    proc = run(
        [*fastpayd_command(), "testnet", "--authorities", "1", "--clients", "1",
         "--balance", "100", "--out", str(out), "--base-port", str(port)],
        timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield out, port


@contextlib.contextmanager
def started(config: Path, notify: NotifySocket, log: Path) -> Iterator[Daemon]:
    daemon = Daemon(config, notify, log)
    try:
        yield daemon
    finally:
        daemon.kill()


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
            ready = notify.expect("READY")
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
            notify.expect("STOPPING")
            rc = daemon.wait()
            assert rc == 0, f"fastpayd exited {rc}:\n{daemon.output()}"
            assert not control_socket.exists(), "control socket left behind"
            assert "node_stopping" in events(state_dir)

        db = state_dir / "fastpay.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        # A restart finds the vote it gave: the pending order survived the stop.
        with started(config, notify, log) as daemon:
            notify.expect("READY")
            answer = control(control_socket, {"cmd": "balance", "account": "client0"})
            assert answer["ok"] is True, answer
            assert answer["balance"] == 100
            assert answer["pending"] == {"sequence_number": 0, "recipient": recipient.hex(),
                                         "amount": 7}, answer  # fmt: skip
            os.kill(daemon.proc.pid, signal.SIGTERM)
            notify.expect("STOPPING")
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
            notify.expect("READY")
            text = config.read_text()
            assert 'log_level = "info"' in text
            config.write_text(text.replace('log_level = "info"', 'log_level = "debug"'))
            os.kill(daemon.proc.pid, signal.SIGHUP)
            notify.expect("RELOADING")
            notify.expect("READY")
            answer = control(control_socket, {"cmd": "events", "since": 0})
            assert answer["ok"] is True, answer
            reloads = [e for e in answer["events"] if e["event"] == "config_reloaded"]  # type: ignore[index, union-attr]
            assert reloads and reloads[-1]["changed"] == ["log_level=debug"], reloads
            os.kill(daemon.proc.pid, signal.SIGTERM)
            notify.expect("STOPPING")
            assert daemon.wait() == 0, daemon.output()
    finally:
        notify.close()
