"""fastpayd.forkserver and the emulation's client of it (emulation.fastpay.Forkserver):
real daemons forked from one warmed interpreter, on loopback (and in a network namespace
of their own where this machine lets us make one)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulation import fastpay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[fastpay.Forkserver]:
    fs = fastpay.Forkserver.start()
    try:
        fs.ready(120)
        yield fs
    finally:
        fs.stop()


@pytest.fixture
def testnet(tmp_path: Path) -> Path:
    out = tmp_path / "net"
    subprocess.run([sys.executable, "-m", "fastpayd", "testnet", "--authorities", "4",
                    "--clients", "1", "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True, timeout=120)
    return out


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def _wait_ready(sock: socket.socket, proc: fastpay.ForkedProcess, log: Path) -> None:
    while True:
        ready, _, _ = select.select([sock], [], [], 60)
        assert ready, f"no READY=1 in 60 s: {log.read_text()[-800:]}"
        if b"READY=1" in sock.recv(4096).split(b"\n"):
            return
        assert proc.poll() is None, log.read_text()[-800:]


def _spawn(fs: fastpay.Forkserver, net: Path, node: str, log: Path, notify: Path,
           netns: str | None = None) -> fastpay.ForkedProcess:
    env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": str(notify)}
    with open(log, "ab") as out:
        return fs.spawn(["--config", str(net / f"{node}.toml")], env, str(net), netns,
                        out.fileno())


def _status(net: Path, node: str) -> dict:
    import tomllib

    cfg = tomllib.loads((net / f"{node}.toml").read_text())
    path = net / cfg["node"]["control_socket"]
    return fastpay.control_request(path, {"cmd": "status"}, 30)


def test_forked_daemon_serves_and_its_exit_comes_as_an_event(
        server: fastpay.Forkserver, testnet: Path, tmp_path: Path) -> None:
    assert server.preload_s is not None and server.preload_s > 0
    log = tmp_path / "auth0.out"
    sock = _notify_socket(tmp_path / "n0")
    proc = _spawn(server, testnet, "auth0", log, tmp_path / "n0")
    try:
        _wait_ready(sock, proc, log)
        answer = _status(testnet, "auth0")
        assert answer["ok"] and answer["role"] == "authority", answer
        # A session of its own: signals to the emulation's process group never reach it.
        # (READY=1 came on the NOTIFY_SOCKET of the environment we gave it.)
        assert os.getsid(proc.pid) == proc.pid
        assert proc.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.2)
        proc.kill()
        assert proc.wait(30) == -signal.SIGKILL
        assert proc.poll() == -signal.SIGKILL
    finally:
        proc.kill()
        sock.close()


def test_sigterm_is_a_clean_exit_and_two_daemons_start_from_one_server(
        server: fastpay.Forkserver, testnet: Path, tmp_path: Path) -> None:
    procs, socks = [], []
    try:
        for node in ("auth0", "auth1"):
            socks.append(_notify_socket(tmp_path / f"n-{node}"))
            procs.append(_spawn(server, testnet, node, tmp_path / f"{node}.out",
                                tmp_path / f"n-{node}"))
        for proc, sock, node in zip(procs, socks, ("auth0", "auth1"), strict=True):
            _wait_ready(sock, proc, tmp_path / f"{node}.out")
        assert procs[0].pid != procs[1].pid
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(30) == 0
        assert _status(testnet, "auth1")["ok"]  # the other one is untouched
    finally:
        for proc in procs:
            proc.kill()
        for sock in socks:
            sock.close()


def test_a_failing_start_says_why_in_its_log_and_exit_code(
        server: fastpay.Forkserver, tmp_path: Path) -> None:
    log = tmp_path / "bad.out"
    with open(log, "ab") as out:
        proc = server.spawn(["--config", str(tmp_path / "missing.toml")],
                            {"PATH": "/usr/bin:/bin"}, str(tmp_path), None, out.fileno())
    assert proc.wait(30) == 2  # EXIT_CONFIG
    assert "missing.toml" in log.read_text()


def test_bad_requests_get_an_error_and_the_server_keeps_serving(
        server: fastpay.Forkserver, tmp_path: Path) -> None:
    for payload, fds in ((b'{"argv": "x"}\n', True), (b"not json\n", True),
                         (b'{"argv": []}\n', False)):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(30)
        conn.connect(str(server.socket_path))
        with open(os.devnull, "wb") as null:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                    null.fileno().to_bytes(4, sys.byteorder))] if fds else []
            conn.sendmsg([payload], anc)
        answer = json.loads(conn.recv(4096).split(b"\n")[0])
        conn.close()
        assert "error" in answer and "pid" not in answer, answer
    log = tmp_path / "ok.out"
    with open(log, "ab") as out:
        proc = server.spawn(["keygen", str(tmp_path / "k.key")], {"PATH": "/usr/bin:/bin"},
                            str(tmp_path), None, out.fileno())
    assert proc.wait(30) == 0, log.read_text()
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("making a network namespace needs root and iproute2")
    name = f"fpw-test-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"ip netns add: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_the_daemon_runs_in_the_namespace_it_was_given(
        server: fastpay.Forkserver, testnet: Path, tmp_path: Path, netns: str) -> None:
    log = tmp_path / "auth0.out"
    sock = _notify_socket(tmp_path / "n0")
    proc = _spawn(server, testnet, "auth0", log, tmp_path / "n0", netns=netns)
    try:
        _wait_ready(sock, proc, log)
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == os.stat(netns).st_ino
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino != os.stat(
            "/proc/self/ns/net").st_ino
        # Its TCP port is inside that namespace: nothing listens on ours.
        cfg = (testnet / "auth0.toml").read_text()
        port = int(next(line.split(":")[-1].strip(' "') for line in cfg.splitlines()
                        if line.startswith("listen")))
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        proc.kill()
        proc.wait(30)
        sock.close()
