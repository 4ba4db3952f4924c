"""Helpers for fastpayd tests: generated test networks and real daemon processes.

Daemons are started as ``python -m fastpayd --config ...`` processes.  Readiness is the
real sd_notify ``READY=1`` datagram: each process gets its own ``NOTIFY_SOCKET`` bound by
the test, so waiting for it exercises ``fastpayd.notify`` too.  Every process started is
killed in the fixture's ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastpayd import testnet
from fastpayd.config import load_committee_file
from fastpayd.control import control_request
from fastpayd.testnet import generate_testnet

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


def free_base_port(count: int) -> int:
    """A base port such that base .. base+count-1 and base+100.. are free right now."""
    return testnet.free_base_port(count, count)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(extra)
    return env


class Daemon:
    """A real fastpayd process."""

    def __init__(self, config: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.name = config.stem
        self.workdir = workdir
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"
        self.socket_path = config.parent / "run" / f"{self.name}.sock"

    def start(self, timeout: float = START_TIMEOUT) -> Daemon:
        notify_path = self.workdir / f"notify-{self.name}-{time.monotonic_ns()}"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        try:
            env = subprocess_env(NOTIFY_SOCKET=str(notify_path), **self.extra_env)
            log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns the fd
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastpayd", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
            )
            log.close()
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.name} not ready; log:\n{self.log()}")
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
                notify.settimeout(min(remaining, 0.5))
                try:
                    data = notify.recv(4096)
                except TimeoutError:
                    continue
                if b"READY=1" in data.split(b"\n"):
                    return self
        finally:
            notify.close()
            with contextlib.suppress(FileNotFoundError):
                notify_path.unlink()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit; return the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets (connects succeed) but answers nothing."""
        assert self.alive
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.alive
        os.kill(self.pid, signal.SIGCONT)

    async def control(self, cmd: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        return await control_request(self.socket_path, {"cmd": cmd, **fields}, timeout)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class LocalNet:
    """A generated network directory plus the daemons started from it."""

    def __init__(self, root: Path, authorities: int, clients: int, balance: int,
                 extra_genesis: list[tuple[bytes, int]] | None = None,
                 genesis_file: bool = False) -> None:
        self.root = root
        self.base_port = free_base_port(max(authorities, clients))
        generate_testnet(root, authorities=authorities, clients=clients, balance=balance,
                         base_port=self.base_port, extra_genesis=extra_genesis or (),
                         genesis_file=genesis_file)
        self.committee = load_committee_file(root / "committee.toml")
        self.daemons: list[Daemon] = []

    def daemon(self, name: str, **env: str) -> Daemon:
        d = Daemon(self.root / f"{name}.toml", self.root, env)
        self.daemons.append(d)
        return d

    def tune(self, name: str, link: dict[str, Any] | None = None,
             tables: dict[str, dict[str, Any]] | None = None) -> None:
        """Add keys to ``name``'s config: ``link`` into ``[link]`` (the generated file's
        last table), each of ``tables`` as a new ``[table]`` after it."""
        cfg = self.root / f"{name}.toml"
        lines = [f"{k} = {_toml(v)}" for k, v in (link or {}).items()]
        for table, keys in (tables or {}).items():
            lines += [f"[{table}]", *(f"{k} = {_toml(v)}" for k, v in keys.items())]
        with open(cfg, "a") as fh:
            fh.write("\n".join(lines) + "\n")

    def port(self, name: str) -> int:
        entry = self.committee.authority(name) or self.committee.client_by_name(name)
        assert entry is not None and entry.endpoint is not None
        return entry.endpoint.port

    def close(self) -> None:
        for d in reversed(self.daemons):
            d.kill()


async def open_connection(port: int, max_frame: int = 1 << 20) -> Any:
    """A fastpayd ClientConnection to 127.0.0.1:port."""
    from fastpayd.link.stream import ClientConnection

    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: ClientConnection(max_frame, str(port)), "127.0.0.1", port
    )
    return conn
