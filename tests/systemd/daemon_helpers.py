"""Running a real ``fastpayd`` the way systemd does: notify socket, signals, control socket.

Used by the notify-protocol and sandbox tests. Nothing here sleeps for a fixed time:
:meth:`NotifySocket.expect` blocks on the datagram socket with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from sd_helpers import REPO, run

import protocol
from fastpayd.framing import HEADER, encode_frame

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

    def expect(
        self,
        key: str,
        value: str = "1",
        timeout: float = TIMEOUT,
        process: subprocess.Popen[bytes] | None = None,
    ) -> dict[str, str]:
        """Read datagrams until one sets ``key=value``; return it (all are kept in order).

        With ``process``, fail as soon as it has exited instead of at the deadline.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} within {timeout}s; got {self.received}")
            # Wake up now and then to notice a dead process; a datagram still ends the wait.
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                # Nothing queued: whatever it sent before dying has been read already.
                if process is not None and process.poll() is not None:
                    raise AssertionError(
                        f"fastpayd exited ({process.returncode}) before {key}={value}; "
                        f"got {self.received}"
                    ) from None
                continue
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.received.append(fields)
            if fields.get(key) == value:
                return fields

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """One ``fastpayd`` process with its notify socket; always killed at the end."""

    def __init__(
        self, config: Path, notify: NotifySocket, log: Path, command: Sequence[str] = ()
    ) -> None:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(notify.path),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "PYTHONPATH": str(REPO),
        }
        env.pop("WATCHDOG_PID", None)
        self.notify = notify
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [*(command or fastpayd_command()), "--config", str(config)],
            env=env,
            cwd=REPO,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def expect(self, key: str, value: str = "1") -> dict[str, str]:
        """Wait for ``key=value`` from this daemon; fails at once if it dies first."""
        try:
            return self.notify.expect(key, value, process=self.proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- fastpayd output ---\n{self.output()}") from None

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


@contextlib.contextmanager
def started(
    config: Path, notify: NotifySocket, log: Path, command: Sequence[str] = ()
) -> Iterator[Daemon]:
    """Run ``COMMAND --config config`` (COMMAND: fastpayd by default); always kill it after."""
    daemon = Daemon(config, notify, log, command)
    try:
        yield daemon
    finally:
        daemon.kill()


def make_network(tmp_path: Path) -> tuple[Path, int]:
    """A one-authority, one-client test network from ``fastpayd testnet``; (dir, port)."""
    out = tmp_path / "net"
    port = free_port()
    proc = run(
        [*fastpayd_command(), "testnet", "--authorities", "1", "--clients", "1",
         "--balance", "100", "--out", str(out), "--base-port", str(port)],
        timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, port


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
