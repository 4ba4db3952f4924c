"""FastPay's layer of the emulation: one ``fastpayd`` per authority/client station.

A scenario gives stations a ``role`` ("authority", "client", "plain"); this layer

1. makes the test network's keys with ``fastpayd testnet`` (a process: the emulation never
   imports the daemon) and writes the committee file (weights from a station's
   ``weight``, genesis from its ``balance`` or the scenario's ``[fastpay] balance``) and
   one node file per station with a ``[link] kind = "wifidirect"`` section;
2. starts every daemon at once inside its station (``Station.popen``: the station's
   namespace and ``DBUS_SYSTEM_BUS_ADDRESS``) and waits for each one's sd_notify
   ``READY=1`` on a datagram socket of ours (``NOTIFY_SOCKET``, as systemd would): the
   daemon sends it once its link is up (an authority's group too) and its control socket
   answers. A line every 10 s says which daemon still waits on what (its latest event);
   each runs under ``python -X importtime`` so the report can say what its imports cost
   (:mod:`emulation.startup`);
3. holds the mobility clock at 0 while the daemons start, then restarts it with the
   timeline, so tracks begin once the payment network is up;
4. samples who is in whose range (for convergence metrics and track plots), and every
   daemon's CPU time and resident memory from ``/proc`` (:mod:`emulation.cost`);
5. registers the CLI commands (``discover``, ``mobile_transfer``, ``pay``,
   ``show_peers``, ``connection_status``, ``balances``, ``wait_payment``,
   ``wait_payments``, ``receive``, ``expect_balance``, ``expect_in_range``, ``daemon``,
   ``bare_join``, ``plot``);
6. at the end asks every authority for its accounts and certificates (the report's
   safety check), stops the daemons (reverse order) before the stations go down, and
   hands the daemons' ``events.jsonl`` to :mod:`emulation.report`.

It talks to the daemons only through their control sockets (JSON lines; path sockets are
reachable from every namespace), like the ``fastpay`` CLI does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulation import cost, startup
from emulation.cli import CommandFailed, EmulationCLI, register_command
from emulation.network import grouped
from emulation.scenario import DEFAULT_BALANCE

ROOT = Path(__file__).resolve().parent.parent
# A tmpfs (SQLite WAL failed with "disk I/O error" on the VM's /tmp overlay).
WORK_DIR = Path("/run/fastpay-pay")

# TCG is slow: raise the link's timeouts (docs/config.md advises ~30 s requests).
LINK_DEFAULTS: dict[str, Any] = {
    "port": 7400,
    "request_timeout": 30.0,
    "discovery_window": 8.0,
    "linger": 1.0,
    "join_timeout": 90.0,
}


class ControlError(RuntimeError):
    """A daemon refused a request or could not be reached (``code``: the daemon's error
    code, None when it was not reached)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


Progress = Callable[[dict[str, Any]], None]


def control_request(path: Path, request: dict[str, Any], timeout: float = 60.0,
                    on_progress: Progress | None = None,
                    tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Send one JSON line to a daemon's control socket; return its final answer.

    With ``on_progress`` the request asks for progress lines (``{"progress": ...}``) and
    each one's content is passed to it; without, they are skipped. ``tick`` is called
    about once a second while no line comes (it may raise to give up: the connection
    then closes, which ends a daemon's long-poll). Raises OSError/TimeoutError when the
    daemon is unreachable or no answer comes within ``timeout``.
    """
    if on_progress is not None:
        request = {**request, "progress": True}
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{path}: no answer within {timeout:g} s")
            sock.settimeout(min(left, 1.0) if tick is not None else left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if tick is not None:
                    tick()
                continue
            if not chunk:
                raise OSError(f"{path}: connection closed without an answer")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                answer = json.loads(line)
                if "progress" not in answer or "ok" in answer:
                    return dict(answer)
                if on_progress is not None:
                    on_progress(dict(answer["progress"]))


def describe_wait_step(who: str, step: dict[str, Any], elapsed: float) -> str:
    """One progress line of a ``wait`` long-poll (a ``{"step", "state", "balance",
    "event"}`` line from the daemon) as the CLI shows it."""
    event = step.get("event") or {}
    what = str(step.get("step"))
    detail = []
    if event.get("authority"):
        detail.append(f"from {event['authority']}" if what.startswith("vote")
                      else f"at {event['authority']}")
    if event.get("weight") is not None:
        detail.append(f"weight {event['weight']}")
    if event.get("amount") is not None:
        detail.append(f"{event['amount']} from {event.get('sender')}")
    state = step.get("state")
    tail = f"; state {state}" if state else ""
    return (f"  ... {elapsed:5.1f} s  {who}: {what.replace('_', ' ')}"
            + (f" ({', '.join(detail)})" if detail else "")
            + f"{tail}; balance {step.get('balance')}")


def _q(value: str) -> str:
    return json.dumps(value)  # JSON strings are valid TOML basic strings


_Socket = socket.socket  # Daemon's field ``socket`` (a path) shadows the module there


@dataclass
class Daemon:
    """One fastpayd process inside a station."""

    name: str
    role: str
    station: Any
    config: Path
    socket: Path
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    ready_at: float | None = None
    notify: _Socket | None = None  # where its sd_notify datagrams come
    log_offset: int = 0  # where this start's output begins in ``log``
    forkserver: Forkserver | None = None  # forks it from a warmed interpreter if set

    @property
    def notify_path(self) -> Path:
        """The datagram socket passed as ``NOTIFY_SOCKET`` (next to the control socket)."""
        return self.socket.with_suffix(".notify")

    def start(self) -> None:
        """Start the daemon in its station (namespace + the station's bus)."""
        self._open_notify()
        env = dict(self.station.env(), PYTHONPATH=str(ROOT),
                   NOTIFY_SOCKET=str(self.notify_path))
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            if self.forkserver is not None:  # imported once already: a fork, no imports
                self.proc = self.forkserver.spawn(  # type: ignore[assignment]
                    ["--config", str(self.config)], env, str(ROOT),
                    self.station.netns_path, out.fileno())
                self.started_at = time.monotonic()
                self.ready_at = None
                return
            # -X importtime: stderr gets what each import cost (emulation.startup).
            self.proc = self.station.popen(
                [sys.executable, "-X", "importtime", "-m", "fastpayd",
                 "--config", str(self.config)],
                env=env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        self.started_at = time.monotonic()
        self.ready_at = None

    def _open_notify(self) -> None:
        self._close_notify()
        self.notify_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.notify_path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(str(self.notify_path))
        sock.setblocking(False)
        self.notify = sock

    def _close_notify(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def read_notify(self) -> bool:
        """Drain the sd_notify datagrams that came; True if one said ``READY=1``."""
        ready = False
        while self.notify is not None:
            try:
                data = self.notify.recv(4096)
            except BlockingIOError:
                break
            if "READY=1" in data.decode(errors="replace").split("\n"):
                ready = True
        return ready

    def import_seconds(self) -> float | None:
        """What this start's imports took (its ``-X importtime`` output)."""
        if not self.log.exists():
            return None
        with open(self.log, "rb") as fh:
            fh.seek(self.log_offset)
            return startup.import_seconds(fh.read().decode(errors="replace"))

    def breakdown(self) -> dict[str, float | None]:
        """This start's phases (:func:`emulation.startup.daemon_breakdown`)."""
        if self.started_at is None:
            return {}
        return startup.daemon_breakdown(spawned=self.started_at, ready=self.ready_at,
                                        events=self.events(), imports=self.import_seconds(),
                                        role=self.role)

    def waiting_on(self) -> str:
        """What a daemon that is not ready yet is doing (its latest event)."""
        if not self.alive():
            return "exited"
        last = self.events()[-1:] if self.started_at is not None else []
        if not last or last[0].get("t", 0) < (self.started_at or 0):
            return "its start (interpreter, imports, config)"
        return f"what follows {last[0].get('event')}"

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_notify()
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._close_notify()

    def ctl(self, request: dict[str, Any], timeout: float = 60.0,
            on_progress: Progress | None = None,
            tick: Callable[[], None] | None = None) -> dict[str, Any]:
        """A control request that must succeed (ControlError otherwise); ``on_progress``
        and ``tick`` as in :func:`control_request`."""
        try:
            answer = control_request(self.socket, request, timeout, on_progress, tick)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ControlError(f"{self.name}: daemon unreachable: {exc}") from exc
        if not answer.get("ok"):
            err = answer.get("error") or {}
            raise ControlError(f"{self.name}: {err.get('code', '?')}: "
                               f"{err.get('message', answer)}", str(err.get("code", "?")))
        return answer

    def tail(self, lines: int = 20) -> str:
        """The end of the daemon's output."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def events(self) -> list[dict[str, Any]]:
        """Every event the daemon logged so far (its events.jsonl)."""
        path = self.state_dir / "events.jsonl"
        out = []
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


class ForkedProcess:
    """A daemon forked by ``fastpayd.forkserver``, seen as a :class:`subprocess.Popen`
    (``pid``, ``poll``, ``wait``, ``send_signal``, ``kill``, ``returncode``).

    Not our child: its exit comes as ``{"exit": CODE}`` on the connection the server
    keeps open for it, so waiting is waiting for that socket, never a sleep."""

    def __init__(self, conn: _Socket, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._conn = conn
        self._buf = b""
        self._lock = threading.Lock()  # the sampler thread polls too

    def _parse(self) -> None:
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and isinstance(msg.get("exit"), int):
                    self.returncode = msg["exit"]
        if self.returncode is not None and self._conn.fileno() >= 0:
            self._conn.close()

    def _gone(self) -> bool:
        return not Path(f"/proc/{self.pid}").exists()

    def _read(self, timeout: float | None) -> None:
        with self._lock:
            self._parse()
        if self.returncode is not None:
            return
        if self._conn.fileno() < 0:
            # The server went before the daemon: wait on a pidfd (exit status unknown).
            try:
                fd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                self.returncode = -1
                return
            try:
                if select.select([fd], [], [], timeout)[0]:
                    self.returncode = -1
            finally:
                os.close(fd)
            return
        with contextlib.suppress(ValueError, OSError):  # closed by the other thread
            if not select.select([self._conn], [], [], timeout)[0]:
                return
        with self._lock:
            if self.returncode is not None or self._conn.fileno() < 0:
                return
            try:
                data = self._conn.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:  # the other thread read it first
                return
            if not data:  # the server went away; /proc says whether the daemon did too
                self._conn.close()
                if self._gone():
                    self.returncode = -1
                return
            self._buf += data
            self._parse()

    def poll(self) -> int | None:
        self._read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._read(left)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Forkserver:
    """One ``python -m fastpayd.forkserver``: imports the daemon once, then forks every
    fastpayd of the emulation into its station's network namespace (a process of the
    daemon's package, reached through its socket: the emulation still imports nothing of
    fastpayd). Started early (:func:`start_forkserver`), its imports overlap the
    stations' start; ``FASTPAY_EMU_FORKSERVER=0`` turns it off (each daemon its own
    interpreter, as before)."""

    proc: subprocess.Popen[str]
    socket_path: Path
    preload_s: float | None = None

    @classmethod
    def start(cls) -> Forkserver:
        tmp = Path(tempfile.mkdtemp(prefix="fastpay-forkserver-"))
        path = tmp / "fork.sock"
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastpayd.forkserver", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, cwd=str(ROOT), env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            start_new_session=True)
        return cls(proc, path)

    def ready(self, timeout: float = 300.0) -> None:
        """Wait for its ``ready`` line (RuntimeError if it failed)."""
        if self.preload_s is not None:
            return
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            rest = "" if self.proc.poll() is None else self.proc.stdout.read()
            self.stop()
            said = (line + rest).strip() or f"no answer in {timeout:g} s"
            raise RuntimeError(f"fastpayd.forkserver did not start: {said}")
        self.preload_s = float(line.split()[1])

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, netns: str | None,
              out: int) -> ForkedProcess:
        """Fork ``fastpayd argv`` (``out``: its stdout and stderr) in ``netns``."""
        self.ready()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            conn.settimeout(60.0)
            conn.connect(str(self.socket_path))
            request = json.dumps({"argv": argv, "env": env, "cwd": cwd, "netns": netns})
            conn.sendmsg([request.encode() + b"\n"],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, out.to_bytes(4, sys.byteorder))])
            line = b""
            while not line.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    raise RuntimeError("fastpayd.forkserver closed the connection")
                line += chunk
            conn.settimeout(None)
            answer = json.loads(line.split(b"\n", 1)[0])
            if "pid" not in answer:
                raise RuntimeError(f"fastpayd.forkserver: {answer.get('error', answer)}")
        except BaseException:
            conn.close()
            raise
        proc = ForkedProcess(conn, int(answer["pid"]), ["fastpayd", *argv])
        proc._buf = line.split(b"\n", 1)[1]  # its exit, if it came already
        return proc

    def stop(self) -> None:
        """End the server (its daemons live on: the layer stops them)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.socket_path.parent, ignore_errors=True)


def start_forkserver() -> Forkserver | None:
    """Start the fork server (None if ``FASTPAY_EMU_FORKSERVER=0``); pass it to
    :func:`attach`. Started before the stations, its imports overlap theirs."""
    if os.environ.get("FASTPAY_EMU_FORKSERVER", "1") == "0":
        return None
    return Forkserver.start()


@dataclass
class Keygen:
    """A running ``fastpayd testnet`` that makes every key of the payment network.

    A process of its own (the emulation never imports the daemon), so it can start
    before the stations and make the keys while they come up (:func:`start_keygen`).
    """

    proc: subprocess.Popen[str]
    out: Path
    authorities: int
    clients: int

    @classmethod
    def start(cls, authorities: int, clients: int) -> Keygen:
        """Start the process; :meth:`wait` for its directory."""
        tmp = Path(tempfile.mkdtemp(prefix="fastpay-keygen-"))
        out = tmp / "testnet"
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastpayd", "testnet", "--authorities", str(authorities),
             "--clients", str(clients), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, cwd=str(ROOT), env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        return cls(proc, out, authorities, clients)

    def wait(self, timeout: float = 300.0) -> Path:
        """The generated network's directory; RuntimeError if the process failed."""
        try:
            output, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
            raise RuntimeError(f"fastpayd testnet: no keys after {timeout:.0f} s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"fastpayd testnet: {output.strip()}")
        return self.out

    def discard(self) -> None:
        """Stop the process if it still runs and remove its files."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.out.parent, ignore_errors=True)


def start_keygen(scenario: Any) -> Keygen | None:
    """Start making the keys of ``scenario``'s payment network (None: it has none).

    Pass the result to :func:`attach`, which waits for it; started before the stations,
    its interpreter start and key generation overlap theirs.
    """
    specs = [s for s in scenario.stations if s.role in ("authority", "client")]
    if not specs:
        return None
    return Keygen.start(sum(s.role == "authority" for s in specs),
                        sum(s.role == "client" for s in specs))


@dataclass
class FastPayLayer:
    """The payment network on top of a running emulation network."""

    net: Any
    scenario: Any
    work: Path = WORK_DIR
    daemons: dict[str, Daemon] = field(default_factory=dict)
    quorum: int = 0
    total_weight: int = 0
    genesis: dict[str, int] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # our own timed records
    changes: list[dict[str, Any]] = field(default_factory=list)  # topology changes
    tracks: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    t0: float = 0.0
    report_path: str | None = None  # the run's --report: mid-run pictures go next to it
    keygen: Keygen | None = None  # started early by start_keygen(); prepare() uses it
    forkserver: Forkserver | None = None  # start_forkserver()'s; forks every daemon
    timings: dict[str, float] = field(default_factory=dict)  # attach()'s phases
    proc_samples: dict[str, list[cost.Sample]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_wait_line: dict[str, str] = field(default_factory=dict)  # per daemon, long_poll

    # -- set-up --

    @property
    def authorities(self) -> list[str]:
        """Authority station names, in scenario order."""
        return [n for n, d in self.daemons.items() if d.role == "authority"]

    @property
    def clients(self) -> list[str]:
        """Client station names, in scenario order."""
        return [n for n, d in self.daemons.items() if d.role == "client"]

    def daemon(self, name: str) -> Daemon:
        """The daemon of station ``name``."""
        try:
            return self.daemons[name]
        except KeyError:
            raise CommandFailed(f"{name!r} runs no fastpayd (FastPay stations: "
                                f"{', '.join(self.daemons)})") from None

    def prepare(self) -> None:
        """Keys, committee file and node files for every authority/client station."""
        subprocess.run(["rm", "-rf", str(self.work)], check=True)
        (self.work / "run").mkdir(parents=True)
        (self.work / "state").mkdir()
        settings = dict(self.scenario.extra.get("fastpay", {}))
        link = dict(LINK_DEFAULTS, **settings.get("link", {}))
        default_balance = int(settings.get("balance", DEFAULT_BALANCE))
        committee_id = str(settings.get("committee_id", f"emulation-{self.scenario.seed}"))
        specs = [s for s in self.scenario.stations if s.role in ("authority", "client")]
        keys = self._make_keys([s.name for s in specs if s.role == "authority"],
                               [s.name for s in specs if s.role == "client"])
        lines = ["# Written by emulation/fastpay.py; see docs/config.md.",
                 f"committee_id = {_q(committee_id)}", ""]
        for spec in specs:
            if spec.role == "authority":
                weight = int(spec.extra.get("weight", 1))
                self.total_weight += weight
                lines += ["[[authorities]]", f"name = {_q(spec.name)}",
                          f"public_key = {_q(keys[spec.name])}", f"weight = {weight}", ""]
        for spec in specs:
            if spec.role == "client":
                lines += ["[[clients]]", f"name = {_q(spec.name)}",
                          f"address = {_q(keys[spec.name])}", ""]
        for spec in specs:
            if spec.role == "client":
                balance = int(spec.extra.get("balance", default_balance))
                self.genesis[spec.name] = balance
                lines += ["[[genesis]]", f"address = {_q(keys[spec.name])}",
                          f"balance = {balance}", ""]
        (self.work / "committee.toml").write_text("\n".join(lines))
        self.quorum = 2 * self.total_weight // 3 + 1
        for spec in specs:
            cfg = self.work / f"{spec.name}.toml"
            link_lines = [f"{k} = {json.dumps(v)}" for k, v in link.items()]
            cfg.write_text("\n".join([
                "# Written by emulation/fastpay.py; see docs/config.md.",
                "[node]", f"role = {_q(spec.role)}", f"name = {_q(spec.name)}",
                f"key_file = {_q(spec.name + '.key')}",
                f"state_dir = {_q('state/' + spec.name)}",
                f"control_socket = {_q('run/' + spec.name + '.sock')}",
                'committee_file = "committee.toml"', 'log_level = "info"', "",
                "[link]", 'kind = "wifidirect"',
                f"interface = {_q(self.net.station(spec.name).iface)}", *link_lines, ""]))
            self.daemons[spec.name] = Daemon(
                spec.name, spec.role, self.net.station(spec.name), cfg,
                self.work / "run" / f"{spec.name}.sock", self.work / "state" / spec.name,
                self.work / f"{spec.name}.out", forkserver=self.forkserver)

    def _make_keys(self, authorities: list[str], clients: list[str]) -> dict[str, str]:
        """Every key, from ``self.keygen`` (started early) or a new ``fastpayd testnet``
        process; return station → public key. Its node names (auth0.., client0..) become
        the stations' names here."""
        keygen = self.keygen or Keygen.start(len(authorities), len(clients))
        self.keygen = None
        gen = keygen.wait()
        try:
            made = tomllib.loads((gen / "committee.toml").read_text())
            public = {a["name"]: a["public_key"] for a in made.get("authorities", [])}
            public.update({c["name"]: c["address"] for c in made.get("clients", [])})
            names = {f"auth{i}": n for i, n in enumerate(authorities)}
            names.update({f"client{j}": n for j, n in enumerate(clients)})
            keys = {}
            for generated, station in names.items():
                shutil.copy2(gen / f"{generated}.key", self.work / f"{station}.key")
                keys[station] = public[generated]
        finally:
            keygen.discard()
        return keys

    def start(self, timeout: float = 600.0, progress: Any = None) -> None:
        """Start every daemon at once and wait until all are ready (authorities: GO up).

        ``progress`` (a callable) gets a line every 10 s naming who still waits on what.
        """
        for d in self.daemons.values():
            d.start()
        self.wait_all(list(self.daemons.values()), timeout, progress)

    def wait_ready(self, d: Daemon, timeout: float) -> None:
        """Wait until the daemon says ``READY=1`` and its control socket answers."""
        self.wait_all([d], timeout)

    def wait_all(self, daemons: list[Daemon], timeout: float, progress: Any = None) -> None:
        """Wait for every daemon's ``READY=1`` (sd_notify): it comes once the link is up
        (an authority's GO: ``WifiDirectAuthority.start`` returns then) and the control
        socket listens. Raises RuntimeError if one exits or the time runs out."""
        t0 = time.monotonic()
        deadline = t0 + max(timeout, 1.0)
        shown = t0
        waiting = {d.name: d for d in daemons}
        while waiting:
            socks = {d.notify.fileno(): d for d in waiting.values() if d.notify is not None}
            wait = min(1.0, max(0.0, deadline - time.monotonic()))
            ready, _, _ = select.select(list(socks), [], [], wait)
            for fd in ready:
                d = socks[fd]
                if d.read_notify():
                    d.ready_at = time.monotonic()
                    self._check_ready(d)
                    del waiting[d.name]
            for d in list(waiting.values()):
                if not d.alive():
                    raise RuntimeError(f"fastpayd {d.name} exited "
                                       f"{d.proc.returncode if d.proc else '?'}:\n{d.tail()}")
            now = time.monotonic()
            if waiting and now >= deadline:
                names = ", ".join(f"{d.name} ({d.waiting_on()})" for d in waiting.values())
                raise RuntimeError(f"fastpayd not ready within {timeout:.0f} s: {names}\n"
                                   + "\n".join(d.tail() for d in waiting.values()))
            if waiting and progress is not None and now - shown >= 10.0:
                shown = now
                progress(f"  ... {now - t0:.0f} s, {len(daemons) - len(waiting)}/"
                         f"{len(daemons)} fastpayd ready; waiting on " + grouped(
                             {d.name: d.waiting_on() for d in waiting.values()}))

    def _check_ready(self, d: Daemon) -> None:
        """READY=1 means the link is up; one status request shows it really answers."""
        status = d.ctl({"cmd": "status"}, 30.0)
        link = status.get("link") or {}
        group = link.get("group") or {}
        if d.role == "authority" and link.get("kind") == "wifidirect" and not group.get("up"):
            raise RuntimeError(f"fastpayd {d.name} said READY=1 without its group up: "
                               f"{json.dumps(group)}")

    def startup_breakdown(self) -> dict[str, dict[str, float | None]]:
        """Each daemon's start-up phases (:meth:`Daemon.breakdown`)."""
        return {name: d.breakdown() for name, d in self.daemons.items()}

    def restart_clock(self) -> None:
        """Start mobility and timeline time now that the payment network is up.

        The platform starts that clock once the stations are up; :func:`attach` holds it
        at 0 while the daemons start (tens of seconds under TCG): a client must not walk
        its route -- nor its daemon hear authorities from it -- before they answer.
        """
        self.net.restart_clock()
        self.t0 = time.monotonic()

    def start_sampler(self, period: float = 0.5) -> None:
        """Record positions and client–authority range changes every ``period`` s."""
        self._sampler = threading.Thread(target=self._sample, args=(period,),
                                         name="fastpay-sampler", daemon=True)
        self._sampler.start()

    def in_range_pairs(self) -> set[tuple[str, str]]:
        """(client, authority) pairs whose radios reach each other now."""
        pos = self.net.positions()
        out = set()
        for c in self.clients:
            for a in self.authorities:
                (x1, y1), (x2, y2) = pos[c], pos[a]
                d = math.hypot(x1 - x2, y1 - y2)
                rc = self.net.station(c).spec.range
                ra = self.net.station(a).spec.range
                if d <= min(rc, ra):  # both directions: discovery needs replies
                    out.add((c, a))
        return out

    def sample_procs(self) -> None:
        """Record every running daemon's CPU ticks and RSS (``/proc``) now."""
        for name, d in self.daemons.items():
            if d.proc is not None and d.proc.poll() is None:
                ticks, rss = cost.read_proc(d.proc.pid)
                with self._lock:
                    self.proc_samples.setdefault(name, []).append(
                        (time.monotonic(), ticks, rss))

    def daemon_costs(self) -> dict[str, dict[str, Any]]:
        """Each daemon's cost over the run (:func:`emulation.cost.daemon_cost`)."""
        tck = cost.clock_ticks()
        return {name: cost.daemon_cost(self.proc_samples.get(name, []), tck)
                for name in self.daemons}

    def _sample(self, period: float, proc_every: float = 5.0) -> None:
        previous: set[tuple[str, str]] | None = None
        procs_at = 0.0
        while not self._stop.wait(period):
            if not self.net.running:
                return
            now = time.monotonic()
            if now - procs_at >= proc_every:
                procs_at = now
                self.sample_procs()
            with self._lock:
                for name, (x, y) in self.net.positions().items():
                    self.tracks.setdefault(name, []).append((now, x, y))
                pairs = self.in_range_pairs()
                if previous is not None:
                    for c, a in sorted(pairs - previous):
                        self.changes.append({"t": now, "client": c, "authority": a,
                                             "change": "in"})
                    for c, a in sorted(previous - pairs):
                        self.changes.append({"t": now, "client": c, "authority": a,
                                             "change": "out"})
                else:
                    for c, a in sorted(pairs):
                        self.changes.append({"t": now, "client": c, "authority": a,
                                             "change": "initial"})
                previous = pairs

    def record(self, kind: str, **fields: Any) -> None:
        """Keep a timed record of something the layer did (e.g. a recipient credited)."""
        with self._lock:
            self.records.append({"t": time.monotonic(), "event": kind, **fields})

    def stop(self) -> None:
        """Stop the sampler and every daemon, in reverse order."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(5)
        for d in reversed(list(self.daemons.values())):
            with contextlib.suppress(Exception):
                d.stop()
        if self.forkserver is not None:
            self.forkserver.stop()

    def all_events(self) -> dict[str, list[dict[str, Any]]]:
        """Every daemon's events (read from the events.jsonl files)."""
        return {name: d.events() for name, d in self.daemons.items()}

    def finish(self, report_path: str | None) -> dict[str, Any]:
        """Stop the daemons, compute the metrics; with a report path, keep the events
        next to it and draw the plots. Prints the metrics table."""
        from emulation import report

        topology = self.topology()
        self.sample_procs()  # the last CPU/RSS sample, before the daemons go
        snapshots = self.authority_snapshots()
        self.stop()
        events = self.all_events()
        weights = self.weights()
        scheduled = [{"at": p.at, "payer": p.payer, "payee": p.payee, "amount": p.amount}
                     for p in getattr(self.scenario, "payments", [])]
        metrics = report.compute(events, clients=self.clients, authorities=self.authorities,
                                 weights=weights, quorum=self.quorum, records=self.records,
                                 changes=self.changes, scheduled=scheduled, t0=self.t0,
                                 snapshots=snapshots, genesis=self.genesis)
        out: dict[str, Any] = {"fastpay": {
            "metrics": metrics, "genesis": self.genesis, "records": self.records,
            "authority_snapshots": snapshots,
            "topology_changes": [dict(c, t=round(c["t"] - self.t0, 3)) for c in self.changes],
            "daemons": {n: {"role": d.role, "exit": d.proc.returncode if d.proc else None}
                        for n, d in self.daemons.items()}}}
        out.update({k: metrics[k] for k in (
            "discovery_time_s", "connection_time_s", "payment_latency_s", "completion_rate",
            "delivery_success_rate", "convergence_time_s", "bare_join_s")})
        out.update({k: metrics[k] for k in ("payments", "safety") if k in metrics})
        if report_path:
            path = Path(report_path)
            keep = path.with_name(path.stem + "-events")
            keep.mkdir(parents=True, exist_ok=True)
            for name, d in self.daemons.items():
                src = d.state_dir / "events.jsonl"
                if src.exists():
                    (keep / name).mkdir(exist_ok=True)
                    shutil.copy2(src, keep / name / "events.jsonl")
            (keep / "layer.json").write_text(json.dumps(
                {"records": self.records, "changes": self.changes, "t0": self.t0,
                 "quorum": self.quorum, "weights": weights, "clients": self.clients,
                 "authorities": self.authorities, "scheduled": scheduled,
                 "snapshots": snapshots, "genesis": self.genesis,
                 "proc_samples": self.proc_samples}, indent=1))
            try:
                out["fastpay"]["plots"] = self.draw(path.with_suffix(""), metrics=metrics,
                                                    events=events, topology=topology)
            except Exception as exc:  # a plot must not cost the run its report
                out["fastpay"]["plots_error"] = f"{type(exc).__name__}: {exc}"
        report.print_table(metrics)
        return out

    def topology(self) -> dict[str, dict[str, Any]]:
        """Station → ``{role, position (now), range}``, as the plots take it."""
        return {n: {"role": s.spec.role, "position": list(s.position),
                    "range": s.spec.range} for n, s in self.net.stations.items()}

    def weights(self) -> dict[str, int]:
        """Authority → its voting weight (the station's ``weight``, 1 by default)."""
        return {a: int(self.scenario.station(a).extra.get("weight", 1))
                for a in self.authorities}

    def draw(self, stem: Path, *, metrics: dict[str, Any] | None = None,
             events: dict[str, list[dict[str, Any]]] | None = None,
             topology: dict[str, dict[str, Any]] | None = None) -> list[str]:
        """Write the run's pictures (:func:`emulation.plots.write`) at ``stem`` from what
        is known now -- by default the daemons' events so far, the metrics on them, the
        positions now -- and return their paths."""
        from emulation import plots, report

        events = self.all_events() if events is None else events
        with self._lock:
            tracks = {name: list(track) for name, track in self.tracks.items()}
            changes, records = list(self.changes), list(self.records)
        if metrics is None:
            metrics = report.compute(events, clients=self.clients,
                                     authorities=self.authorities, weights=self.weights(),
                                     quorum=self.quorum or None, records=records,
                                     changes=changes, t0=self.t0)
        # While the network runs, what is still open (in range, in a group) lasts until now.
        end = time.monotonic() if getattr(self.net, "running", False) else None
        return plots.write(stem, metrics, self.topology() if topology is None else topology,
                           tracks, events, t0=self.t0, end=end, changes=changes)

    def authority_snapshots(self) -> dict[str, dict[str, Any]]:
        """Every answering authority's accounts and certificates (``balance`` and
        ``history`` of every account), for the safety check; one that does not answer
        is left out (the check lists the authorities it covered)."""
        out: dict[str, dict[str, Any]] = {}
        for a in self.authorities:
            d = self.daemons[a]
            if not d.alive():
                continue
            try:
                accounts = d.ctl({"cmd": "balance", "limit": 100000}, 60.0)["accounts"]
                history = d.ctl({"cmd": "history"}, 60.0)["history"]
            except (ControlError, KeyError):
                continue
            out[a] = {"accounts": accounts, "history": history}
        return out

    # -- queries shared by commands and tests --

    def peers(self, name: str) -> list[dict[str, Any]]:
        """The daemon's peer table (``fastpay peers``)."""
        return list(self.daemon(name).ctl({"cmd": "peers"}).get("peers", []))

    def in_range(self, name: str) -> dict[str, Any]:
        """Authorities the client daemon has in range now: name → level (dBm)."""
        return {p["name"]: p.get("level") for p in self.peers(name)
                if p.get("in_range") and p.get("role") == "authority"}

    def balance_at(self, authority: str, account: str) -> int:
        """An account's balance as one authority sees it."""
        a = self.daemon(authority).ctl({"cmd": "balance", "account": account})
        if "balance" in a:
            return int(a["balance"])
        return int(a["accounts"][0]["balance"])

    def balances(self) -> dict[str, dict[str, int | None]]:
        """{account: {authority or 'own': balance}} for every client account."""
        out: dict[str, dict[str, int | None]] = {}
        for c in self.clients:
            row: dict[str, int | None] = {}
            for a in self.authorities:
                try:
                    row[a] = self.balance_at(a, c)
                except ControlError:
                    row[a] = None
            try:
                row["own"] = int(self.daemon(c).ctl({"cmd": "balance"})["balance"])
            except ControlError:
                row["own"] = None
            out[c] = row
        return out

    def transfer(self, sender: str, recipient: str, amount: int, again: bool = False,
                 queue_for: float | None = None) -> dict[str, Any]:
        """Stage a mobile transfer; the sender's daemon drives it in the background.

        ``again``: a new payment even if it equals the one under way (a schedule may pay
        the same twice).  ``queue_for``: behind an unfinished transfer the daemon holds
        the answer until that one is certified; return after this many seconds instead
        (the payment stays queued in the daemon; ``sequence_number`` is then None).
        """
        if self.daemon(sender).role != "client" or self.daemon(recipient).role != "client":
            raise CommandFailed("mobile_transfer: sender and recipient must be clients")
        request: dict[str, Any] = {"cmd": "transfer", "recipient": recipient,
                                   "amount": amount}
        if again:
            request["again"] = True
        if queue_for is not None:
            request.update(wait=False, timeout=queue_for)
        answer = self.daemon(sender).ctl(request, 120.0)
        self.record("transfer_requested", sender=sender, recipient=recipient, amount=amount,
                    sequence_number=answer.get("sequence_number"))
        return answer

    def progress(self, name: str) -> dict[str, Any]:
        """The client's latest transfer (``fastpay progress``)."""
        return self.daemon(name).ctl({"cmd": "progress"})

    def long_poll(self, name: str, request: dict[str, Any], timeout: float,
                  say: Callable[[str], None] | None = None,
                  since: float | None = None) -> dict[str, Any]:
        """One ``wait`` request on ``name``'s daemon (a long-poll: the daemon answers when
        its events say so). Every progress line goes to ``say`` with the seconds elapsed,
        and a line every 15 s without news says it still waits; the wait ends if the
        emulation stops (CommandFailed) or on Ctrl-C (the connection closes, which ends
        the daemon's side too). A daemon ``Timeout`` is a ControlError with that code.
        ``since`` (monotonic) is when the caller's wait began: elapsed seconds count from
        it, and a caller that long-polls again and again sees no repeated opening line."""
        t0 = time.monotonic() if since is None else since
        shown = time.monotonic()
        state: list[Any] = [None]

        def on_progress(step: dict[str, Any]) -> None:
            nonlocal shown
            shown = time.monotonic()
            state[0] = step.get("state")
            if say is not None:
                line = describe_wait_step(name, step, shown - t0)
                if since is not None and step.get("step") == "waiting" and (
                        self._last_wait_line.get(name) == line.split("s  ", 1)[-1]):
                    return  # the same "waiting" as the previous poll's: nothing new
                self._last_wait_line[name] = line.split("s  ", 1)[-1]
                say(line)

        def tick() -> None:
            nonlocal shown
            if self.net.failed.is_set():
                raise CommandFailed(f"the emulation has stopped: {self.net.error}")
            now = time.monotonic()
            if say is not None and now - shown >= 15.0:
                shown = now
                say(f"  ... {now - t0:5.1f} s  {name}: still waiting"
                    + (f" (state {state[0]})" if state[0] else ""))

        return self.daemon(name).ctl({"cmd": "wait", "timeout": timeout, **request},
                                     timeout + 30.0, on_progress, tick)

    def wait_payment(self, sender: str, timeout: float,
                     say: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Wait until the sender's latest transfer is complete (every authority confirmed),
        by the daemon's long-poll ``wait for transfer``; progress lines go to ``say``."""
        try:
            self.long_poll(sender, {"for": "transfer", "state": "completed"}, timeout, say)
            # The caller gets the transfer's progress, as `progress` shows it (state
            # "complete", who confirmed), not the wait's own answer.
            return dict(self.progress(sender).get("transfer") or {})
        except ControlError as exc:
            if exc.code != "Timeout":
                raise
            last = (self.progress(sender).get("transfer") or {})
            raise CommandFailed(f"{sender}: transfer not complete after {timeout:g} s: "
                                f"{_short_progress(last)}") from None

    def payments_progress(self) -> dict[str, Any]:
        """How the scenario's ``[payments]`` stand now (:func:`emulation.report.
        payments_summary` on the events so far)."""
        from emulation import report

        scheduled = [{"at": p.at, "payer": p.payer, "payee": p.payee, "amount": p.amount}
                     for p in getattr(self.scenario, "payments", [])]
        events = self.all_events()
        weights = self.weights()
        with self._lock:
            records, changes = list(self.records), list(self.changes)
        rows = report.transfers(events, self.clients, weights, self.quorum, records)
        return report.payments_summary(rows, scheduled, changes, weights, self.quorum,
                                       self.t0)

    def wait_payments(self, timeout: float, say: Any = print,
                      every: float = 30.0) -> dict[str, Any]:
        """Wait until every scheduled payment is complete (certified, every authority
        confirmed); ``say`` gets a progress line every ``every`` s.  Returns the
        summary; raises CommandFailed on timeout, if a payment can no longer complete
        or if the emulation stopped.

        Each payer's daemon is long-polled in turn (``wait for transfer completed``: it
        answers when its latest transfer is; one already complete answers at once), so
        nothing here reads the event logs until the end; the progress line asks each
        payer's ``progress`` (one small answer per payer)."""
        scheduled = getattr(self.scenario, "payments", [])
        if not scheduled:
            raise CommandFailed("wait_payments: the scenario schedules no [payments]")
        t0 = time.monotonic()
        deadline, shown = t0 + timeout, t0
        pending = list(dict.fromkeys(p.payer for p in scheduled))
        stuck: dict[str, str] = {}  # payer -> why its payment cannot complete
        while pending:
            if self.net.failed.is_set():
                raise CommandFailed(f"the emulation has stopped: {self.net.error}")
            now = time.monotonic()
            if now >= deadline:
                break
            payer = pending[0]
            try:
                self.long_poll(payer, {"for": "transfer", "state": "completed"},
                               max(1.0, min(deadline - now, shown + every - now)))
                pending.pop(0)
            except ControlError as exc:
                if exc.code in ("NoTransfer", "TransferFailed"):
                    stuck[payer] = str(exc)
                    pending.pop(0)
                elif exc.code != "Timeout":
                    raise
            now = time.monotonic()
            if pending and now - shown >= every:
                shown = now
                say(self._payers_line(pending, len(scheduled), now - t0))
        summary = self.payments_progress()
        if summary["completed"] == summary["scheduled"]:
            return summary
        late = ", ".join(f"{x['payer']}->{x['payee']} ({x['state']})"
                         for x in summary["not_completed"][:6])
        more = len(summary["not_completed"]) - 6
        why = "; ".join(stuck.values())
        raise CommandFailed(
            f"wait_payments: {time.monotonic() - t0:.0f} s: complete {summary['completed']} "
            f"of {summary['scheduled']}; not complete: {late}"
            + (f" and {more} more" if more > 0 else "")
            + (f" -- {why}" if why else f" -- gave up after {timeout:g} s"))

    def _payers_line(self, pending: list[str], scheduled: int, elapsed: float) -> str:
        """``wait_payments``' progress line: how the payers not yet complete stand."""
        states: dict[str, list[str]] = {}
        for payer in pending:
            try:
                state = str((self.progress(payer).get("transfer") or {}).get("state"))
            except ControlError:
                state = "unreachable"
            states.setdefault(state, []).append(payer)
        parts = [f"{state} {len(who)} ({', '.join(who[:4])}{', ...' if len(who) > 4 else ''})"
                 for state, who in sorted(states.items())]
        return (f"wait_payments: {elapsed:.0f} s: {scheduled - len(pending)} of {scheduled} "
                f"payers done; waiting: {'; '.join(parts)}")

    def receive(self, recipient: str, expect: int | None, timeout: float,
                say: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Sync the recipient with authorities in range until its balance reaches ``expect``.

        Between syncs it long-polls the daemon for a payment (one delivered to it
        directly ends the wait at once) for up to 10 s, instead of sleeping; each sync's
        outcome and each payment go to ``say``.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        last: dict[str, Any] = {}
        while True:
            if self.net.failed.is_set():
                raise CommandFailed(f"the emulation has stopped: {self.net.error}")
            left = deadline - time.monotonic()
            if left <= 0:
                break
            in_range = self.in_range(recipient)
            if in_range:
                last = self.daemon(recipient).ctl({"cmd": "sync"}, max(30.0, left))
                if say is not None:
                    say(f"  ... {time.monotonic() - t0:5.1f} s  {recipient}: synced with "
                        f"{', '.join(last.get('reached') or []) or 'nobody'}: balance "
                        f"{last.get('balance')} (credited {last.get('credited')})")
                if last.get("credited"):
                    self.record("recipient_credited", recipient=recipient,
                                credited=last["credited"], balance=last["balance"],
                                via=last.get("reached"))
                if expect is None or last.get("balance") == expect:
                    return last
            elif say is not None:
                say(f"  ... {time.monotonic() - t0:5.1f} s  {recipient}: no authority in "
                    "range")
            poll = {"for": "payment"} if expect is None else {"for": "payment",
                                                              "balance": expect}
            try:
                got = self.long_poll(recipient, poll,
                                     max(1.0, min(10.0, deadline - time.monotonic())), say,
                                     since=t0)
            except ControlError as exc:
                if exc.code != "Timeout":
                    raise
                continue
            if expect is not None and got.get("balance") == expect:
                paid = got.get("payment") or {}
                self.record("recipient_credited", recipient=recipient,
                            credited=paid.get("amount"), balance=got["balance"],
                            via=paid.get("channel") or paid.get("peer"))
                return {"balance": got["balance"], "credited": (got.get("payment") or {})
                        .get("amount"), "reached": [(got.get("payment") or {}).get("peer")]}
        raise CommandFailed(f"{recipient}: balance {last.get('balance')} (want {expect}) "
                            f"after {timeout:g} s")

    def bare_join(self, go: str, joiner: str, timeout: float = 120.0) -> float:
        """Time a bare P2P join (wpa_cli, no FastPay) of ``joiner`` to a GO on ``go``.

        ``go`` starts an autonomous group and accepts a WPS PIN; ``joiner`` finds it and
        joins. Measured from ``p2p_connect ... join`` to ``wpa_state=COMPLETED``, which is
        what fastpayd's ``group_joined.elapsed`` measures for its own joins.
        """
        pin = "12345670"
        g, j = self.net.station(go), self.net.station(joiner)
        _wpa(g, "p2p_group_add", "freq=2437")
        deadline = time.monotonic() + timeout
        while "wpa_state=COMPLETED" not in _wpa(g, "status", dev=False):
            _deadline(deadline, f"{go}: GO not up")
            time.sleep(0.2)
        _wpa(g, "wps_pin", "any", pin, dev=False)
        _wpa(j, "p2p_find")
        while g.p2p_device_address not in _wpa(j, "p2p_peers", check=False):
            _deadline(deadline, f"{joiner} did not find {go}")
            time.sleep(0.2)
        t0 = time.monotonic()
        _wpa(j, "p2p_connect", g.p2p_device_address, pin, "join")
        while "wpa_state=COMPLETED" not in _wpa(j, "status", dev=False):
            _deadline(deadline, f"{joiner} did not join {go}'s group")
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        self.record("bare_join", go=go, joiner=joiner, seconds=elapsed)
        for st in (j, g):
            _wpa(st, "p2p_group_remove", st.iface, check=False)
            _wpa(st, "p2p_stop_find", check=False)
        return elapsed


def _deadline(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise CommandFailed(f"bare_join: {what} in time")


def _wpa(station: Any, *args: str, dev: bool = True, check: bool = True) -> str:
    iface = station.p2p_ctrl_iface if dev else station.iface
    result = station.run(["wpa_cli", "-p", str(station.ctrl_dir), "-i", iface, *args],
                         timeout=30)
    out = result.stdout
    if check and (result.returncode != 0 or out.strip().startswith("FAIL")):
        raise CommandFailed(f"{station.name}: wpa_cli {shlex.join(args)}: "
                            f"{(out + result.stderr).strip()}")
    return out


def _short_progress(p: dict[str, Any]) -> str:
    if not p:
        return "no transfer"
    return (f"state {p.get('state')}, weight {p.get('weight')}/{p.get('quorum')}, "
            f"confirmed {p.get('confirmed')}")


def attach(net: Any, scenario: Any, log: Any = print, keygen: Keygen | None = None,
           forkserver: Forkserver | None | bool = True) -> FastPayLayer | None:
    """Start the payment network if the scenario has authority/client stations
    (``keygen``: the keys' process from :func:`start_keygen`, started earlier;
    ``forkserver``: :func:`start_forkserver`'s, or True to start one now, or None)."""
    if forkserver is True:
        forkserver = start_forkserver()
    server = forkserver if isinstance(forkserver, Forkserver) else None
    if not any(s.role in ("authority", "client") for s in scenario.stations):
        if keygen is not None:
            keygen.discard()
        if server is not None:
            server.stop()
        return None
    layer = FastPayLayer(net, scenario, keygen=keygen, forkserver=server)
    net.fastpay = layer
    net.hold_clock()  # nobody walks before the daemons answer (restart_clock below)
    t = time.monotonic()
    layer.prepare()
    layer.timings["keys_and_configs_s"] = time.monotonic() - t
    if server is not None:
        try:
            server.ready()
        except RuntimeError:
            layer.stop()
            raise
        layer.timings["forkserver_imports_s"] = server.preload_s or 0.0
        layer.timings["forkserver_wait_s"] = time.monotonic() - t - layer.timings[
            "keys_and_configs_s"]
    log(f"emulation: starting fastpayd on {len(layer.daemons)} station(s) "
        f"({len(layer.authorities)} authorities, quorum {layer.quorum}) ...")
    try:
        layer.start(progress=log)
    except Exception:
        layer.stop()
        raise
    layer.timings["daemons_ready_s"] = time.monotonic() - t - layer.timings["keys_and_configs_s"]
    log(f"emulation: fastpayd ready in {time.monotonic() - t:.1f} s")
    layer.restart_clock()
    layer.start_sampler()
    return layer


# -- CLI commands -----------------------------------------------------------------------


def _layer(cli: EmulationCLI) -> FastPayLayer:
    layer = getattr(cli.net, "fastpay", None)
    if layer is None:
        raise CommandFailed("no FastPay network in this scenario (no authority/client roles)")
    return layer


def _args(line: str, usage: str, low: int, high: int) -> list[str]:
    parts = line.split()
    if not low <= len(parts) <= high:
        raise CommandFailed(f"usage: {usage}")
    return parts


@register_command("discover")
def discover(cli: EmulationCLI, line: str) -> None:
    """discover [NODE...]: authorities and other clients each client's daemon has in range
    (signal, dBm), and the FastPay stations each node's radio reaches (the medium's view)."""
    layer = _layer(cli)
    names = line.split() or layer.clients
    links = {(k["from"], k["to"]): k for k in cli.net.links()}
    for name in names:
        d = layer.daemon(name)
        if d.role == "client":
            table = layer.in_range(name)
            shown = ", ".join(f"{a} ({lvl} dBm)" for a, lvl in sorted(table.items())) or "none"
            cli.say(f"{name}: authorities in range (discovered): {shown}")
            payees = {p["name"]: p.get("level") for p in layer.peers(name)
                      if p.get("in_range") and p.get("role") == "client"}
            shown = ", ".join(f"{c} ({lvl} dBm)" for c, lvl in sorted(payees.items())) or "none"
            cli.say(f"{name}: clients in range (discovered, for hand-offs): {shown}")
        reach = [f"{o} ({links[(o, name)]['signal']} dBm)" for o in layer.daemons
                 if o != name and links.get((o, name), {}).get("in_range")
                 and links.get((name, o), {}).get("in_range")]
        cli.say(f"{name}: FastPay stations in radio range: {', '.join(reach) or 'none'}")


@register_command("expect_in_range")
def expect_in_range(cli: EmulationCLI, line: str) -> bool:
    """expect_in_range CLIENT [AUTHORITY...]: succeed if the client's daemon has exactly
    these authorities in range (none given: exactly none)."""
    parts = _args(line, "expect_in_range CLIENT [AUTHORITY...]", 1, 64)
    got = sorted(_layer(cli).in_range(parts[0]))
    if got != sorted(parts[1:]):
        cli.say(f"*** {parts[0]} has {got or 'none'} in range, want {sorted(parts[1:])}")
        return False
    cli.say(f"ok: {parts[0]} has {got or 'none'} in range")
    return True


@register_command("wait_in_range")
def wait_in_range(cli: EmulationCLI, line: str) -> bool:
    """wait_in_range CLIENT AUTHORITY... : succeed if the client's daemon has (at least)
    these authorities in range (use retry_for in a timeline to wait for discovery)."""
    parts = _args(line, "wait_in_range CLIENT AUTHORITY...", 2, 64)
    got = _layer(cli).in_range(parts[0])
    missing = sorted(set(parts[1:]) - set(got))
    if missing:
        cli.say(f"*** {parts[0]} does not have {missing} in range (has {sorted(got)})")
        return False
    cli.say(f"ok: {parts[0]} has " + ", ".join(f"{a} ({got[a]} dBm)" for a in parts[1:]))
    return True


@register_command("mobile_transfer")
def mobile_transfer(cli: EmulationCLI, line: str) -> None:
    """mobile_transfer SENDER RECIPIENT AMOUNT: stage a transfer; the sender's daemon
    visits authorities as they come into range (see wait_payment, progress)."""
    sender, recipient, amount = _args(line, "mobile_transfer SENDER RECIPIENT AMOUNT", 3, 3)
    a = _layer(cli).transfer(sender, recipient, int(amount))
    cli.say(f"{sender}: transfer #{a.get('sequence_number')} of {amount} to {recipient} "
            f"staged ({a.get('state')}, quorum {a.get('quorum')})")


@register_command("pay")
def pay(cli: EmulationCLI, line: str) -> None:
    """pay SENDER RECIPIENT AMOUNT: a scheduled payment (what [payments] schedules): like
    mobile_transfer, but always a new payment and queued behind an unfinished one."""
    sender, recipient, amount = _args(line, "pay SENDER RECIPIENT AMOUNT", 3, 3)
    a = _layer(cli).transfer(sender, recipient, int(amount), again=True, queue_for=1.0)
    seq = a.get("sequence_number")
    cli.say(f"{sender}: pays {recipient} {amount}: "
            + (f"transfer #{seq} staged" if seq is not None
               else "queued behind its unfinished transfer"))


@register_command("wait_payments")
def wait_payments(cli: EmulationCLI, line: str) -> None:
    """wait_payments [TIMEOUT [PER_PAYMENT]]: wait until every payment the scenario's
    [payments] schedules is complete (certified, every authority confirmed), with a
    progress line every 30 s; fail after TIMEOUT s (900) plus PER_PAYMENT s (0) for each
    scheduled payment (one file then fits a small and a large crowd)."""
    parts = _args(line, "wait_payments [TIMEOUT [PER_PAYMENT]]", 0, 2)
    layer = _layer(cli)
    timeout = float(parts[0]) if parts else 900.0
    if len(parts) > 1:
        timeout += float(parts[1]) * len(getattr(layer.scenario, "payments", []))
    s = layer.wait_payments(timeout, say=cli.say)
    cli.say(f"wait_payments: all {s['scheduled']} payments complete "
            f"(hand-offs {s['handoff_channels'] or 'none'})")


@register_command("progress")
def progress(cli: EmulationCLI, line: str) -> None:
    """progress CLIENT: the client's latest transfer (votes, certificate, confirmations)."""
    (name,) = _args(line, "progress CLIENT", 1, 1)
    p = _layer(cli).progress(name)
    cli.say(f"{name}: {_short_progress(p.get('transfer') or {})}; "
            f"in range {p.get('in_range')}")


@register_command("wait_payment")
def wait_payment(cli: EmulationCLI, line: str) -> None:
    """wait_payment SENDER [TIMEOUT]: wait until the sender's latest transfer is complete
    (certificate formed, every authority confirmed); fail after TIMEOUT s (600). Each
    vote, the certificate and each confirmation are shown as they come (the daemon's
    long-poll); Ctrl-C stops waiting (the transfer goes on)."""
    parts = _args(line, "wait_payment SENDER [TIMEOUT]", 1, 2)
    p = _layer(cli).wait_payment(parts[0], float(parts[1]) if len(parts) > 1 else 600.0,
                                 cli.say)
    cli.say(f"{parts[0]}: transfer #{p.get('sequence_number')} complete, "
            f"confirmed by {p.get('confirmed')}")


@register_command("receive")
def receive(cli: EmulationCLI, line: str) -> None:
    """receive RECIPIENT [BALANCE [TIMEOUT]]: sync the recipient with the authorities in
    its range (until its balance is BALANCE; fail after TIMEOUT s, default 300). Each
    sync and each payment that comes is shown; Ctrl-C stops waiting."""
    parts = _args(line, "receive RECIPIENT [BALANCE [TIMEOUT]]", 1, 3)
    want = int(parts[1]) if len(parts) > 1 else None
    a = _layer(cli).receive(parts[0], want, float(parts[2]) if len(parts) > 2 else 300.0,
                            cli.say)
    cli.say(f"{parts[0]}: balance {a.get('balance')} (credited {a.get('credited')} via "
            f"{a.get('reached')})")


@register_command("show_peers")
def show_peers(cli: EmulationCLI, line: str) -> None:
    """show_peers NODE: the daemon's peer table (in range, P2P address, signal, last error)."""
    (name,) = _args(line, "show_peers NODE", 1, 1)
    rows = _layer(cli).peers(name)
    if not rows:
        cli.say(f"{name}: no peers")
    for p in rows:
        cli.say(f"{p.get('name', '?'):10} {'in range' if p.get('in_range') else 'gone':9} "
                f"{p.get('address') or '-':18} {str(p.get('level')):>5} dBm  "
                f"seen {p.get('seen_ago')} s ago  connected={p.get('connected')}"
                + (f"  error: {p['last_error']}" if p.get("last_error") else ""))


@register_command("connection_status")
def connection_status(cli: EmulationCLI, line: str) -> None:
    """connection_status NODE: the daemon's link state (group, members, counters)."""
    (name,) = _args(line, "connection_status NODE", 1, 1)
    status = _layer(cli).daemon(name).ctl({"cmd": "status"})
    link = status.get("link") or {}
    cli.say(f"{name}: link {link.get('kind')} group {json.dumps(link.get('group'))}")
    cli.say(f"{name}: in range {link.get('in_range')}")
    counters = {k: link.get(k, status.get(k)) for k in
                ("discovery_rounds", "joins", "join_failures")}
    cli.say(f"{name}: {json.dumps(counters)}")
    if status.get("transfer"):
        cli.say(f"{name}: transfer {_short_progress(status['transfer'])}")


@register_command("balances")
def balances(cli: EmulationCLI, line: str) -> None:
    """balances: every client's balance at every authority, and as the client sees it."""
    layer = _layer(cli)
    table = layer.balances()
    cli.say(f"{'account':10} " + " ".join(f"{a:>8}" for a in layer.authorities) + "      own")
    for account, row in table.items():
        cli.say(f"{account:10} " + " ".join(f"{str(row[a]):>8}" for a in layer.authorities)
                + f" {str(row['own']):>8}")


@register_command("expect_balance")
def expect_balance(cli: EmulationCLI, line: str) -> bool:
    """expect_balance ACCOUNT AMOUNT: succeed if every authority and the client itself
    hold AMOUNT for ACCOUNT."""
    account, amount = _args(line, "expect_balance ACCOUNT AMOUNT", 2, 2)
    row = _layer(cli).balances().get(account)
    if row is None:
        raise CommandFailed(f"no client account {account!r}")
    wrong = {k: v for k, v in row.items() if v != int(amount)}
    if wrong:
        cli.say(f"*** {account}: {wrong} (want {amount} everywhere)")
        return False
    cli.say(f"ok: {account} has {amount} at {', '.join(row)}")
    return True


@register_command("plot")
def plot(cli: EmulationCLI, line: str) -> None:
    """plot [PREFIX]: draw the report's pictures now, from what is known so far (the
    daemons' events, the tracks, the range samples): PREFIX-topology.png,
    PREFIX-latency.png and PREFIX-timeline.png. Default PREFIX: next to the run's
    --report, named after the seconds since the run's start (REPORT-at42s); without
    --report, under the layer's work directory (in the VM that one is gone after the
    run: give --report or a PREFIX in a directory you keep)."""
    parts = _args(line, "plot [PREFIX]", 0, 1)
    layer = _layer(cli)
    at = f"at{max(0.0, time.monotonic() - layer.t0):.0f}s" if layer.t0 else "at0s"
    if parts:
        stem = Path(parts[0]).expanduser()
    elif layer.report_path:
        report_path = Path(layer.report_path)
        stem = report_path.with_name(f"{report_path.stem}-{at}")
    else:
        stem = layer.work / "plots" / at
    try:
        paths = layer.draw(stem)
    except Exception as exc:  # a picture that fails must not end the session
        raise CommandFailed(f"plot: {type(exc).__name__}: {exc}") from exc
    for p in paths:
        cli.say(p)


@register_command("daemon")
def daemon_cmd(cli: EmulationCLI, line: str) -> None:
    """daemon stop|start|kill NODE: stop (SIGTERM), kill (SIGKILL) or restart a fastpayd."""
    action, name = _args(line, "daemon stop|start|kill NODE", 2, 2)
    layer = _layer(cli)
    d = layer.daemon(name)
    if action in ("stop", "kill"):
        d.stop(signal.SIGTERM if action == "stop" else signal.SIGKILL)
        layer.record("daemon_stopped", node=name)
    elif action == "start":
        d.start()
        layer.wait_ready(d, 300.0)
        layer.record("daemon_started", node=name)
    else:
        raise CommandFailed("usage: daemon stop|start|kill NODE")
    cli.say(f"{name}: {action} done")


@register_command("bare_join")
def bare_join(cli: EmulationCLI, line: str) -> None:
    """bare_join GO JOINER: time a plain P2P group join (wpa_cli, no FastPay) between two
    plain stations, for comparison with fastpayd's joins (goes into the report)."""
    go, joiner = _args(line, "bare_join GO JOINER", 2, 2)
    seconds = _layer(cli).bare_join(go, joiner)
    cli.say(f"bare join {joiner} -> {go}: {seconds:.2f} s")
