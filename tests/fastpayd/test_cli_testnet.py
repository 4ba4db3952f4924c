"""``fastpayd testnet up|status|down`` and ``fastpay wait-ready`` against real daemons
(issue 16, 2): one command starts a network and waits until every node answers, one
stops it; ports are free ones, not 9100+."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli_helpers import DEADLINE, fastpay, fastpayd, network_up, pids
from fastpayd_helpers import REPO, subprocess_env


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def test_testnet_up_status_down(tmp_path: Path) -> None:
    net = tmp_path / "net"
    with network_up(net, "--authorities", "4", "--clients", "2") as up:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "ready (6/6)" in up.stdout and up.stderr == ""
        running = pids(net)
        assert len(running) == 6 and all(_alive(p) for p in running)
        assert all((net / "log" / f"{n}.log").exists() for n in ("auth0", "client1"))
        committee = (net / "committee.toml").read_text()
        assert ":91" not in committee  # free ports, not the 9100+ default of old
        # Right after `up`, the CLI works at once (no "no fastpayd listening").
        ready = fastpay("--config", str(net / "client0.toml"), "wait-ready")
        assert ready.returncode == 0 and "client0 (client) ready" in ready.stdout
        st = fastpayd("testnet", "status", str(net))
        assert st.returncode == 0 and st.stdout.count(" ready ") == 6, st.stdout
        again = fastpayd("testnet", "up", str(net))
        assert again.returncode == 0 and again.stdout.count("already running") == 6
        down = fastpayd("testnet", "down", str(net))
        assert down.returncode == 0 and "all stopped" in down.stdout, down
        assert not any(_alive(p) for p in running)
        assert not list((net / "run").glob("*.pid"))
        st = fastpayd("testnet", "status", str(net))
        assert st.returncode == 1 and st.stdout.count("stopped") == 6


def test_wait_ready_times_out_without_daemon(tmp_path: Path) -> None:
    out = fastpay("--socket", str(tmp_path / "none.sock"), "wait-ready", "--timeout", "0.5")
    assert out.returncode == 4 and "within 0.5 s" in out.stderr
    assert "Traceback" not in out.stderr and os.path.exists(tmp_path)


def test_wait_ready_started_before_the_network(tmp_path: Path) -> None:
    """`wait-ready` and `wait ready` typed before the daemons exist (their run/ directory
    neither) return once `testnet up` has started them: woken by the socket's creation."""
    net = tmp_path / "net"
    made = fastpayd("testnet", "--authorities", "1", "--clients", "1", "--out", str(net))
    assert made.returncode == 0 and not (net / "run").exists(), made
    waiters = [subprocess.Popen(
        [sys.executable, "-m", "fastpayd.cli", *args, "--config", str(net / "client0.toml"),
         "--timeout", str(DEADLINE)], cwd=REPO, env=subprocess_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in (("wait-ready",), ("wait", "ready"))]
    try:
        with network_up(net) as up:
            assert up.returncode == 0, up.stdout + up.stderr
            for waiter in waiters:
                out, err = waiter.communicate(timeout=DEADLINE)
                assert waiter.returncode == 0, err
                assert "client0 (client) ready" in out and err == ""
    finally:
        for waiter in waiters:
            if waiter.poll() is None:
                waiter.kill()
                waiter.communicate()
