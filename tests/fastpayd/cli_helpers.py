"""Helpers for the CLI tests: ``fastpay``/``fastpayd`` run as a user types them, and a
network started with ``fastpayd testnet up`` (stopped with ``down``, killed if need be)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from fastpayd_helpers import REPO, subprocess_env

DEADLINE = 120.0


def fastpay(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``fastpay ARGS``; return the finished process (text stdout/stderr)."""
    return subprocess.run([sys.executable, "-m", "fastpayd.cli", *args], cwd=cwd or REPO,
                          env=subprocess_env(), capture_output=True, text=True,
                          timeout=DEADLINE)


def fastpayd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``fastpayd ARGS``; return the finished process."""
    return subprocess.run([sys.executable, "-m", "fastpayd", *args], cwd=cwd or REPO,
                          env=subprocess_env(), capture_output=True, text=True,
                          timeout=DEADLINE)


def pids(net: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((net / "run").glob("*.pid"))]


@contextlib.contextmanager
def network_up(net: Path, *extra: str) -> Iterator[subprocess.CompletedProcess[str]]:
    """``fastpayd testnet up NET``; on exit ``down``, and SIGKILL whatever is left."""
    started: list[int] = []
    try:
        up = fastpayd("testnet", "up", str(net), "--timeout", str(DEADLINE), *extra)
        started = pids(net) if (net / "run").exists() else []
        yield up
    finally:
        fastpayd("testnet", "down", str(net))
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
