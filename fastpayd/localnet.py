"""Run a generated test network in the background: ``fastpayd testnet up|status|down DIR``.

``up`` starts one ``python -m fastpayd --config DIR/<name>.toml`` process per node config
in DIR (authorities first), each in its own session, with its pid in ``DIR/run/<name>.pid``
and its output in ``DIR/log/<name>.log``, then waits until every daemon answers ``status``
on its control socket (a daemon opens that socket only once its state, link and session
are up), printing one line per node as it becomes ready.  A node whose pid file names a
live daemon is left alone, so ``up`` is idempotent.  ``down`` sends SIGTERM to every
daemon of a pid file and waits for it to exit (SIGKILL after the timeout).  A pid is
only signalled while ``/proc/<pid>/cmdline`` still names that node's config, so a stale
pid file never hits an unrelated process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastpayd.control import control_request

Say = Callable[[str], None]
Step = Callable[[dict[str, Any]], None]  # the same progress, for --json: {"node", "step", ...}


def _quiet(info: dict[str, Any]) -> None:
    pass


class LocalNetError(Exception):
    """A node of the network could not be started or stopped (the message says which)."""


class LocalNetTimeout(LocalNetError):
    """Nodes still not ready when ``up``'s timeout ran out (exit status 4)."""


@dataclass(frozen=True)
class NodeProc:
    name: str
    config: Path
    pid_file: Path
    log_file: Path
    socket: Path


def nodes_of(out: Path) -> list[NodeProc]:
    """The node configs of a generated network, authorities first (then by name)."""
    from fastpayd.config import ConfigError, load_node_config

    found = []
    for cfg in sorted(out.glob("*.toml")):
        if cfg.name == "committee.toml":
            continue
        try:
            node = load_node_config(cfg)
        except ConfigError as exc:
            raise LocalNetError(str(exc)) from None
        found.append((node.role != "authority", node.name, cfg, node.control_socket))
    found.sort()
    return [NodeProc(name, cfg, out / "run" / f"{name}.pid", out / "log" / f"{name}.log",
                     sock) for _, name, cfg, sock in found]


def running_pid(node: NodeProc) -> int | None:
    """The pid in ``node``'s pid file if that process is still this node's daemon."""
    try:
        pid = int(node.pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if str(node.config.resolve()).encode() not in cmdline:
        return None
    return pid


async def _answers(node: NodeProc, timeout: float = 2.0) -> bool:
    try:
        answer = await control_request(node.socket, {"cmd": "status"}, timeout)
    except (OSError, TimeoutError, ValueError):
        return False
    return bool(answer.get("ok"))


def up(out: Path, timeout: float = 60.0, say: Say = print,
       step: Step = _quiet) -> list[NodeProc]:
    """Start every node not running yet and wait until all answer; LocalNetError if one
    exits, LocalNetTimeout if one is not ready within ``timeout`` seconds (the others
    keep running)."""
    nodes = nodes_of(out)
    if not nodes:
        raise LocalNetError(f"{out}: no node configs (generate one: fastpayd testnet up "
                            f"{out} --authorities 4)")
    (out / "run").mkdir(exist_ok=True)
    (out / "log").mkdir(exist_ok=True)
    started: dict[str, subprocess.Popen[bytes]] = {}
    for node in nodes:
        pid = running_pid(node)
        if pid is not None:
            say(f"{node.name}: already running (pid {pid})")
            step({"node": node.name, "step": "already_running", "pid": pid})
            continue
        with open(node.log_file, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fastpayd", "--config", str(node.config.resolve())],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=out, start_new_session=True)
        node.pid_file.write_text(f"{proc.pid}\n")
        started[node.name] = proc
        say(f"{node.name}: started (pid {proc.pid}, log {node.log_file})")
        step({"node": node.name, "step": "started", "pid": proc.pid})
    asyncio.run(_wait_ready(nodes, started, timeout, say, step))
    return nodes


async def _wait_ready(nodes: list[NodeProc], started: dict[str, subprocess.Popen[bytes]],
                      timeout: float, say: Say, step: Step) -> None:
    deadline = time.monotonic() + timeout
    waiting = {n.name: n for n in nodes}
    while waiting:
        for name, node in list(waiting.items()):
            proc = started.get(name)
            if proc is not None and proc.poll() is not None:
                node.pid_file.unlink(missing_ok=True)
                tail = node.log_file.read_text(errors="replace").strip().splitlines()[-3:]
                raise LocalNetError(f"{name} exited with status {proc.returncode}: "
                                    + " / ".join(tail))
            if await _answers(node):
                del waiting[name]
                say(f"{name}: ready ({len(nodes) - len(waiting)}/{len(nodes)})")
                step({"node": name, "step": "ready", "pid": running_pid(node)})
        if waiting and time.monotonic() > deadline:
            raise LocalNetTimeout(f"not ready within {timeout:g} s: {', '.join(waiting)} "
                                "(see their logs in log/)")
        if waiting:
            await asyncio.sleep(0.1)


def status_rows(out: Path) -> list[dict[str, Any]]:
    """One row per node: ``name``, ``state`` (ready / running, not answering / stopped),
    ``pid`` (int or None), ``socket``, ``config``, ``log``."""

    async def check() -> list[dict[str, Any]]:
        rows = []
        for node in nodes_of(out):
            pid = running_pid(node)
            ok = pid is not None and await _answers(node)
            rows.append({"name": node.name, "state": ("ready" if ok else
                                                      "running, not answering")
                         if pid else "stopped", "pid": pid, "socket": str(node.socket),
                         "config": str(node.config), "log": str(node.log_file)})
        return rows

    return asyncio.run(check())


def status(out: Path, say: Say = print) -> bool:
    """Print one line per node; return whether every node runs and answers."""
    rows = status_rows(out)
    for r in rows:
        say(f"{r['name']:10} {r['state']:24} pid {r['pid'] or '-'}  socket {r['socket']}")
    return all(r["state"] == "ready" for r in rows)


def down(out: Path, timeout: float = 20.0, say: Say = print, step: Step = _quiet) -> None:
    """SIGTERM every running node and wait for it to exit (SIGKILL after ``timeout``)."""
    nodes = nodes_of(out)
    pids = {}
    for node in nodes:
        pid = running_pid(node)
        if pid is None:
            node.pid_file.unlink(missing_ok=True)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        pids[node.name] = (node, pid)
    deadline = time.monotonic() + timeout
    while pids:
        for name, (node, pid) in list(pids.items()):
            if running_pid(node) is None or _is_zombie(pid):
                node.pid_file.unlink(missing_ok=True)
                del pids[name]
                say(f"{name}: stopped")
                step({"node": name, "step": "stopped", "pid": pid})
        if pids and time.monotonic() > deadline:
            for name, (node, pid) in pids.items():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                node.pid_file.unlink(missing_ok=True)
                say(f"{name}: killed (no exit {timeout:g} s after SIGTERM)")
                step({"node": name, "step": "killed", "pid": pid})
            return
        time.sleep(0.05)
    say("all stopped")


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
