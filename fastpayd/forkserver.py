"""A warmed interpreter that forks fastpayd daemons: import once, start many.

::

    python -m fastpayd.forkserver SOCKET

For a machine that starts many daemons at once on a slow CPU -- the emulation's VM under
TCG, where six interpreters importing pydantic, dbus-fast, asyncio and the protocol at
once spent ~50 s of their ~55 s start in imports. The server imports what a daemon
imports (:data:`PRELOAD`), listens on the Unix stream socket SOCKET and prints one line,
``ready <seconds the imports took>``, on stdout. It never opens an event loop or a
thread, so a fork of it is a clean start.

One connection per daemon. The caller sends one JSON line ``{"argv": [...], "env": {...},
"cwd": DIR, "netns": PATH or null}`` with one file descriptor (SCM_RIGHTS) that becomes the
child's stdout and stderr. The server forks; the child starts a session of its own, enters
the network namespace ``netns`` (a ``/run/netns/NAME`` or ``/proc/PID/ns/net`` path) if
given, takes ``env`` as its whole environment and ``cwd`` as its directory, and runs
``fastpayd``'s ``main(argv)``. The server answers ``{"pid": N}`` (or ``{"error": TEXT}``)
and keeps the connection: when the child ends it writes ``{"exit": CODE}`` (negative: the
signal that killed it, as :class:`subprocess.Popen` says it) and closes. So the caller
learns of the exit as a parent would, by an event on its socket; a caller that closes
early changes nothing for the child. The server ends on SIGTERM, when the process that
started it ends, or when SOCKET's directory goes away; its children live on.

Not for production: a node runs as its own process (systemd/); this only saves the
emulation the same imports paid again per station.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

# What fastpayd imports before READY on any link (the daemon, both links, the WiFi
# Direct driver, the control socket, storage). Everything else comes on demand.
PRELOAD = (
    "fastpayd.__main__", "fastpayd.daemon", "fastpayd.node", "fastpayd.control",
    "fastpayd.link.wifidirect", "fastpayd.link.inrange", "fastpayd.wifidirect.radio",
    "fastpayd.wifidirect.manager", "fastpayd.client", "fastpayd.authority",
    "fastpayd.config", "fastpayd.store", "fastpayd.database", "asyncio", "sqlite3",
)
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
MAX_REQUEST = 1 << 20


def _setns(path: str) -> None:
    """Enter the network namespace at ``path`` (setns(2); needs CAP_SYS_ADMIN)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _child(request: dict[str, Any], out_fd: int, close: list[int]) -> None:
    """In the forked child: become the daemon; never returns."""
    code = 1
    try:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        if request.get("netns"):
            _setns(str(request["netns"]))
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
        os.chdir(str(request.get("cwd") or "/"))
        argv = [str(a) for a in request["argv"]]
        sys.argv = ["fastpayd", *argv]
        from fastpayd.__main__ import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 -- a child must exit, whatever happened
        with contextlib.suppress(Exception):
            os.write(2, f"fastpayd.forkserver: child failed: {type(exc).__name__}: "
                        f"{exc}\n".encode())
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def _recv_request(conn: socket.socket) -> tuple[dict[str, Any], int]:
    """One JSON line and the one fd that came with it."""
    data = b""
    fds = array.array("i")
    conn.settimeout(30.0)
    while not data.endswith(b"\n"):
        msg, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
        if not msg:
            raise ValueError("connection closed before a request")
        data += msg
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    conn.settimeout(None)
    for extra in fds[1:]:
        os.close(extra)
    if not fds:
        raise ValueError("no output file descriptor came with the request")
    request = json.loads(data)
    if not isinstance(request, dict) or not isinstance(request.get("argv"), list):
        os.close(fds[0])
        raise ValueError("request must be an object with an 'argv' list")
    return request, fds[0]


def _send(conn: socket.socket, obj: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(obj).encode() + b"\n")


def serve(path: str) -> int:
    # End with the process that started us (PR_SET_PDEATHSIG), however it ended.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    t0 = time.monotonic()
    for name in PRELOAD:
        importlib.import_module(name)
    preload_s = time.monotonic() - t0
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    stopping = []
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "listen")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, socket.socket] = {}
    print(f"ready {preload_s:.3f}", flush=True)

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = children.pop(pid, None)
            if conn is not None:
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()

    while not stopping:
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            break
        for key, _ in sel.select(timeout=5.0):
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                reap()
            elif key.data == "listen":
                conn, _ = listener.accept()
                try:
                    request, out_fd = _recv_request(conn)
                except (OSError, ValueError) as exc:
                    _send(conn, {"error": f"{type(exc).__name__}: {exc}"})
                    conn.close()
                    continue
                keep = [listener.fileno(), wake_r, wake_w, conn.fileno(),
                        *(c.fileno() for c in children.values())]
                pid = os.fork()
                if pid == 0:
                    _child(request, out_fd, keep)
                os.close(out_fd)
                children[pid] = conn
                _send(conn, {"pid": pid})
        reap()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m fastpayd.forkserver SOCKET\n\n" + (__doc__ or "").split(
            "\n\n")[2], file=sys.stderr)
        return 2
    return serve(argv[0])


if __name__ == "__main__":
    sys.exit(main())
