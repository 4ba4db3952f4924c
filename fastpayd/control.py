"""The control socket: a Unix stream socket speaking JSON lines.

Each request is one line holding a JSON object ``{"cmd": "<verb>", ...}``; the answer is
one line ``{"ok": true, ...}`` or ``{"ok": false, "error": {"code": ..., "message": ...}}``.
A request may carry ``"progress": true``: long commands (``transfer``) then send lines
``{"progress": {...}}`` before the final answer, which is always the one with ``"ok"``.
Several requests may follow each other on one connection; they are answered in order.

Input is bounded and checked before any command runs: a request line is at most
``MAX_REQUEST_LINE`` bytes (longer: ``BadRequest``, then the connection closes, since the
stream has lost its place), JSON nesting at most ``MAX_DEPTH`` levels, and the fields
every command shares (``FIELD_TYPES``) must have their documented types; each mistake is
a typed ``BadRequest`` answer, never a traceback, and the socket keeps serving.  At most
``MAX_CLIENTS`` connections are served at once (more get ``Busy`` and are closed), and
a connection that sends no request for ``IDLE_TIMEOUT`` seconds gets ``Timeout`` and is
closed (a command running for longer is not affected).  A long-poll (``wait``) ends as
soon as its caller hangs up (:func:`unless_hung_up`), so it holds no slot for nobody.

Commands are the ``do_<verb>(request, progress)`` coroutines of the node object passed in
(:class:`fastpayd.node.Node` and subclasses), so adding a command is adding a method; its
docstring is what ``help`` returns.  A failing command never breaks the socket: known
failures raise :class:`ControlError` (code + message), anything else becomes
``InternalError`` and is logged.

The socket file is created 0660 (owner and group: the emulation and the CLI run as the
daemon's user or its group) and removed on close.  A socket file left by a crashed run is
replaced only when nothing answers on it: if a daemon is listening there, starting raises
:class:`ControlSocketInUse` instead of stealing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import inspect
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from fastpayd.errors import EXIT_IN_USE, FastpaydError

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # an answer line (events can be long)
MAX_REQUEST_LINE = 64 << 10  # a request line
MAX_DEPTH = 16  # JSON nesting of a request
MAX_CLIENTS = 64  # control connections served at once
IDLE_TIMEOUT = 300.0  # s a connection may wait between requests (not during a command)
LINGER = 2.0  # s a turned-away connection is read (and dropped) before it is closed

# Fields shared by the commands, with the types they must have (None is "absent").
# Checked here so that a command never sees e.g. a string where it slices by an int.
_NUMBER = (int, float)
FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "cmd": ((str,), "a string"),
    "progress": ((bool,), "true or false"),
    "wait": ((bool, int, float, type(None)), "true/false/null, or seconds for events"),
    "force": ((bool,), "true or false"),
    "account": ((str, type(None)), "an account name or hex address"),
    "recipient": ((str,), "an account name or hex address"),
    "amount": ((int,), "a non-negative integer"),
    "since": ((int,), "a non-negative integer"),
    "limit": ((int, type(None)), "a non-negative integer"),
    "timeout": (_NUMBER, "a positive number of seconds"),
}
# A JSON string (an unterminated one runs to the end: no rescan, linear time) or a bracket.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]')

Progress = Callable[[dict[str, Any]], None]


_caller: contextvars.ContextVar[asyncio.StreamReader | None] = contextvars.ContextVar(
    "control_caller", default=None)


class _Reader(asyncio.StreamReader):
    """A connection's reader that also says, as an awaitable, when the caller hung up."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit=limit)
        self.hung_up = asyncio.Event()

    def feed_eof(self) -> None:
        super().feed_eof()
        self.hung_up.set()


def caller_gone() -> bool:
    """Inside a command: True once the client that sent it has closed its connection.

    (Its reader has seen EOF with nothing left unread: a CLI killed mid-command.)  A
    command uses it to tell "answered" from "answered to nobody"."""
    reader = _caller.get()
    return reader is not None and reader.at_eof()


async def caller_hung_up() -> None:
    """Inside a command: return once the caller closed (or half-closed) its connection.

    (Outside a command, or on a reader of another kind, it never returns.)"""
    reader = _caller.get()
    if isinstance(reader, _Reader):
        await reader.hung_up.wait()
    else:
        await asyncio.Event().wait()


async def unless_hung_up(awaitable: Awaitable[Any]) -> bool:
    """Inside a command: await ``awaitable`` unless the caller hangs up first; return
    True if it did.  Long-polls (``wait``, ``events`` with ``wait``) race their sleep
    against the caller, so a caller killed by Ctrl-C frees its connection slot at once
    instead of at the poll's timeout."""
    tasks = [asyncio.ensure_future(awaitable), asyncio.ensure_future(caller_hung_up())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return tasks[1] in done


class ControlError(FastpaydError):
    """A command failed in a way the caller should see: ``code`` (per instance) is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]
        self.message = message


class ControlSocketInUse(FastpaydError):
    """A live daemon already answers on the control socket's path."""

    code = "ControlSocketInUse"
    exit_status = EXIT_IN_USE

    def __init__(self, path: Path, where: str = "") -> None:
        super().__init__(f"{where + ' = ' if where else ''}{path}: control socket in use by "
                         "a running daemon (refusing to take it over)")
        self.path = path


def socket_answers(path: Path, timeout: float = 1.0) -> bool:
    """True if something accepts connections on the Unix socket ``path``.

    A refused connection (nobody listening: the file is left over) is False; any other
    failure (e.g. permission denied: someone else's socket) counts as in use.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except ConnectionRefusedError:
            return False
        except FileNotFoundError:
            return False
        except OSError as exc:
            return exc.errno != errno.ECONNREFUSED
    return True


def check_request(request: Any) -> str | None:
    """What is wrong with a decoded request, or None if its shared fields are well typed."""
    if not isinstance(request, dict):
        return "expected a JSON object with a string 'cmd'"
    if not isinstance(request.get("cmd"), str):
        return "expected an object with a string 'cmd'"
    for key, (types, what) in FIELD_TYPES.items():
        if key not in request:
            continue
        value = request[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and isinstance(value, int | float) and not isinstance(value, bool):
            ok = value > 0 if key == "timeout" else value >= 0
            ok = ok and value == value and value < 2**64  # not NaN, not inf, fits a u64
        if not ok:
            return f"field {key!r} must be {what}, got {json.dumps(value)[:40]}"
    return None


def nesting_depth(line: bytes, stop_at: int) -> int:
    """The JSON nesting depth of ``line`` (strings skipped), counting at most to ``stop_at``."""
    depth = deepest = 0
    for match in _TOKEN.finditer(line):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_at:
                    break
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def commands_of(target: object) -> dict[str, Callable[..., Awaitable[dict[str, Any]]]]:
    """Return verb → bound ``do_<verb>`` coroutine method of ``target``."""
    out = {}
    for name in dir(target):
        if name.startswith("do_"):
            fn = getattr(target, name)
            if inspect.iscoroutinefunction(fn):
                out[name[3:]] = fn
    return out


class ControlServer:
    """Serves ``target``'s ``do_*`` commands on ``path``.  Use as ``async with``."""

    def __init__(self, path: Path, target: object) -> None:
        self.path = path
        self.target = target
        self._commands = commands_of(target)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen; raises ControlSocketInUse if a daemon answers there, OSError otherwise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            mode = os.lstat(self.path).st_mode
            if not stat.S_ISSOCK(mode):
                raise FileExistsError(errno.EEXIST, "exists and is not a socket")
            if socket_answers(self.path):
                raise ControlSocketInUse(self.path)
            os.unlink(self.path)  # left by a killed run: nobody listens on it
        old = os.umask(0o117)
        try:
            loop = asyncio.get_running_loop()

            def protocol() -> asyncio.StreamReaderProtocol:  # start_unix_server's, own reader
                return asyncio.StreamReaderProtocol(_Reader(MAX_REQUEST_LINE), self._serve)

            self._server = await loop.create_unix_server(protocol, path=str(self.path))
        finally:
            os.umask(old)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= MAX_CLIENTS:
            await _send(writer, _error("Busy", f"{MAX_CLIENTS} control connections are "
                                       "open; retry later"))
            await _linger(reader, writer)
            return
        self._clients.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        line = await reader.readline()
                except TimeoutError:
                    await _send(writer, _error("Timeout", f"no request within {IDLE_TIMEOUT:g} "
                                               "s; closing"))
                    return
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, _error("BadRequest", "request line longer than "
                                               f"{MAX_REQUEST_LINE} bytes"))
                    await _linger(reader, writer)  # the rest of the line is still coming
                    return
                except ConnectionError:
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                _caller.set(reader)
                answer = await self._dispatch(line, writer)
                if not await _send(writer, answer):
                    return
        except asyncio.CancelledError:
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes, writer: asyncio.StreamWriter) -> dict[str, Any]:
        if nesting_depth(line, MAX_DEPTH) > MAX_DEPTH:
            return _error("BadRequest", f"JSON nested deeper than {MAX_DEPTH} levels")
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _error("BadRequest", "not a JSON object")
        problem = check_request(request)
        if problem is not None:
            return _error("BadRequest", problem)
        cmd = request["cmd"]
        if cmd == "help":
            return {"ok": True, "commands": {
                "help": "List the commands.",
                **{k: inspect.getdoc(v) or "" for k, v in sorted(self._commands.items())},
            }}
        fn = self._commands.get(cmd)
        if fn is None:
            return _error("UnknownCommand", f"unknown command {cmd!r}; try 'help'")

        def progress(info: dict[str, Any]) -> None:
            if request.get("progress") and not writer.is_closing():
                writer.write(_dump({"progress": info}))

        try:
            result = await fn(request, progress)
        except ControlError as exc:
            return _error(exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a command failure must not kill the socket
            code = getattr(exc, "code", None)
            if isinstance(code, str) and hasattr(exc, "to_message"):
                return _error(code, str(exc))  # a protocol error: typed already
            log.exception("control command %s failed", cmd)
            return _error("InternalError", f"{type(exc).__name__}: {exc}")
        return {"ok": True, **result}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _dump(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, default=_json_default, separators=(",", ":")) + "\n").encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close a connection that was answered without being read, once its request is in.

    Closed at once, the caller's request would meet EPIPE (or the close, its unread
    request: ECONNRESET), and the caller's stream reader would raise that error in place
    of the answer it already holds.  So: end our side, take in (and drop) what the caller
    sends for up to ``LINGER`` seconds or ``MAX_REQUEST_LINE`` bytes, then close."""
    with contextlib.suppress(OSError, RuntimeError):
        writer.write_eof()
    with contextlib.suppress(OSError, TimeoutError, RuntimeError):
        async with asyncio.timeout(LINGER):
            taken = 0
            while taken < MAX_REQUEST_LINE and (chunk := await reader.read(4096)):
                taken += len(chunk)
    writer.close()


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> bool:
    try:
        writer.write(_dump(obj))
        await writer.drain()
    except (ConnectionError, RuntimeError):
        return False
    return True


async def control_request(
    path: Path | str,
    request: dict[str, Any],
    timeout: float = 60.0,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Send one request to a control socket and return the final answer.

    Raises OSError if the socket cannot be reached, TimeoutError if no answer comes.
    """
    reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    try:
        if on_progress is not None:
            request = {**request, "progress": True}
        writer.write(_dump(request))
        await writer.drain()
        async with asyncio.timeout(timeout):
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("control socket closed without an answer")
                answer = json.loads(line)
                if "progress" in answer and "ok" not in answer:
                    if on_progress is not None:
                        on_progress(answer["progress"])
                    continue
                return dict(answer)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
