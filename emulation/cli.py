"""The emulation's Mininet-style command line.

Each command is a thin ``do_<verb>(self, line)`` method whose docstring is its help
(``help <verb>``). A line whose first word is a station name runs the rest as a shell
command inside that station (``sta1 iw dev``). User mistakes print a message and the
prompt returns; the last command's success is kept in :attr:`EmulationCLI.last_ok`, so
the same commands drive batch timelines (``python -m emulation.run --batch``).

Extending: later layers add commands by subclassing or with :func:`register_command`
(``@register_command("discover")`` on a function ``(cli, line) -> bool | None``);
FastPay's commands (discover, mobile_transfer, show_peers, ...) come in that way.

Ctrl-C interrupts the command that runs (a station command gets SIGINT, a wait ends) or
the line being typed, and the prompt comes back: :meth:`EmulationCLI.cmdloop` catches
``KeyboardInterrupt``; only ``exit`` or end of input ends the emulation. Station commands
run in a session of their own (``start_new_session``), so the terminal's SIGINT reaches
only us and we decide what it interrupts; their output is shown as it comes.

Mininet-WiFi's commands are here too: ``net`` and ``dump`` (read from ``iw dev`` and
``ip -br addr`` in each station), ``distance``, ``pingall`` (over the P2P groups that
exist), ``link STA up|down`` (the radio's rfkill switch), and station names turned into
addresses in network tools' arguments (``client0 ping auth1``). The parsers they use are
plain functions (:func:`parse_iw_dev`, :func:`parse_ip_br_addr`, :func:`p2p_groups`,
:func:`group_address`, :func:`substitute_names`, :func:`parse_ping`), tested on the host.
"""

from __future__ import annotations

import cmd
import codecs
import contextlib
import io
import json
import math
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from emulation.network import EmulationError

CommandFn = Callable[["EmulationCLI", str], "bool | None"]


class CommandFailed(Exception):
    """A command could not do what it was asked (the message is shown to the user)."""


def register_command(name: str, cls: type[EmulationCLI] | None = None
                     ) -> Callable[[CommandFn], CommandFn]:
    """Decorator: add ``fn(cli, line)`` as command ``name`` (its docstring is the help).

    ``fn`` returns False (or raises CommandFailed) when the command failed.
    """
    def decorate(fn: CommandFn) -> CommandFn:
        target = cls or EmulationCLI

        def method(self: EmulationCLI, line: str) -> None:
            if fn(self, line) is False:
                self.last_ok = False

        method.__doc__ = fn.__doc__
        method.__name__ = f"do_{name}"
        setattr(target, f"do_{name}", method)
        return fn

    return decorate


# -- what a station's radios look like (parsed from iw / ip output) --------------------

# Tools whose arguments name hosts: in ``<station> <tool> ...`` a station name among
# them becomes that station's address (``client0 ping auth1``), as in Mininet.
NETWORK_TOOLS = frozenset({
    "ping", "ping6", "arping", "traceroute", "traceroute6", "tracepath", "mtr", "iperf",
    "iperf3", "nc", "ncat", "netcat", "socat", "curl", "wget", "ssh", "telnet", "nping"})
GROUP_TYPES = ("P2P-GO", "P2P-client")
RFKILL_ROOT = Path("/sys/class/rfkill")
INTERRUPTED = "*** interrupted: back at the prompt (the emulation still runs; " \
              "'exit' or Ctrl-D ends it)"


@dataclass(frozen=True)
class Iface:
    """One wireless interface as ``iw dev`` lists it (``name`` None: no netdev, e.g. the
    P2P Device)."""

    phy: str
    name: str | None
    type: str
    addr: str = ""
    ssid: str | None = None

    @property
    def in_group(self) -> bool:
        """True if the interface is a P2P group's GO or client now."""
        return self.type in GROUP_TYPES and self.ssid is not None


@dataclass
class StationView:
    """A station's interfaces and addresses at one moment."""

    name: str
    ifaces: list[Iface]
    addresses: dict[str, list[str]]  # interface -> addresses with prefix length

    def group_ifaces(self) -> list[Iface]:
        """The interfaces that are in a P2P group."""
        return [i for i in self.ifaces if i.in_group]


def parse_iw_dev(text: str) -> list[Iface]:
    """Parse ``iw dev`` output into its interfaces (every phy's)."""
    out: list[Iface] = []
    phy = ""
    cur: dict[str, Any] | None = None

    def flush() -> None:
        if cur is not None:
            out.append(Iface(phy=cur["phy"], name=cur.get("name"),
                             type=cur.get("type", "?"), addr=cur.get("addr", ""),
                             ssid=cur.get("ssid")))

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("phy#"):
            flush()
            cur = None
            phy = "phy" + line[4:]
        elif line.startswith("Interface ") or line.startswith("Unnamed/non-netdev"):
            flush()
            cur = {"phy": phy}
            if line.startswith("Interface "):
                cur["name"] = line.split()[1]
        elif cur is not None and " " in line:
            key, value = line.split(" ", 1)
            if key in ("type", "addr", "ssid"):
                cur[key] = value.strip()
    flush()
    return out


def parse_ip_br_addr(text: str) -> dict[str, list[str]]:
    """Parse ``ip -br addr``: interface -> its addresses (``10.0.0.1/24``, ``fe80::1/64``)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2:
            out[words[0].split("@")[0]] = words[2:]
    return out


def p2p_groups(views: dict[str, StationView]) -> dict[str, list[tuple[str, Iface]]]:
    """The P2P groups that exist: SSID -> its members (station, interface), GO first."""
    groups: dict[str, list[tuple[str, Iface]]] = {}
    for name, view in views.items():
        for iface in view.group_ifaces():
            assert iface.ssid is not None
            groups.setdefault(iface.ssid, []).append((name, iface))
    for members in groups.values():
        members.sort(key=lambda m: (m[1].type != "P2P-GO", m[0]))
    return groups


def group_address(views: dict[str, StationView], src: str, dst: str) -> str:
    """The address ``src`` reaches ``dst`` at, inside a P2P group both are in: the group's
    IPv4 address if ``dst`` has one there, else its IPv6 link-local address scoped to
    ``src``'s interface (``fe80::...%wlan0``). Raises CommandFailed if they share none."""
    for ssid, members in p2p_groups(views).items():
        mine = [i for n, i in members if n == src]
        theirs = [i for n, i in members if n == dst]
        if not (mine and theirs) or src == dst:
            continue
        assert theirs[0].name is not None and mine[0].name is not None
        addrs = [a.split("/")[0] for a in views[dst].addresses.get(theirs[0].name, [])]
        v4 = [a for a in addrs if ":" not in a]
        if v4:
            return v4[0]
        local = [a for a in addrs if a.lower().startswith("fe80:")]
        if local:
            return f"{local[0]}%{mine[0].name}"
        raise CommandFailed(f"{dst} is in group {ssid} but has no address on "
                            f"{theirs[0].name} yet")
    if src == dst:
        own = [a.split("/")[0] for i in views[src].group_ifaces() if i.name
               for a in views[src].addresses.get(i.name, [])]
        if own:
            return own[0]
    shared = ", ".join(f"{ssid} ({', '.join(n for n, _ in m)})"
                       for ssid, m in p2p_groups(views).items()) or "none"
    raise CommandFailed(f"{src} and {dst} share no P2P group (groups now: {shared}); "
                        "see 'net'")


def substitute_names(command: str, src: str, stations: Iterable[str],
                     resolve: Callable[[str, str], str]) -> str:
    """Replace station names in a network tool's arguments with addresses.

    Only a command whose first word is in :data:`NETWORK_TOOLS` is touched, and only
    whole words equal to a station name; ``resolve(src, name)`` gives the address.
    Everything else (spacing, quotes, pipes) is left as typed.
    """
    parts = re.split(r"(\s+)", command.strip())
    if not parts or Path(parts[0]).name not in NETWORK_TOOLS:
        return command
    names = set(stations)
    # A pipe or separator ends the tool's arguments.
    for i in range(2, len(parts), 2):
        word = parts[i]
        if word in ("|", "||", "&&", ";", "&"):
            break
        if word in names:
            parts[i] = resolve(src, word)
    return "".join(parts)


def parse_ping(text: str) -> tuple[int, int] | None:
    """(packets transmitted, received) from ping's summary, or None if it has none."""
    match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def rfkill_switch(phy: str, root: Path = RFKILL_ROOT) -> Path:
    """The rfkill directory (``/sys/class/rfkill/rfkillN``) of wiphy ``phy``; raises
    CommandFailed if there is none."""
    for entry in sorted(root.glob("rfkill*")):
        with contextlib.suppress(OSError):
            if (entry / "name").read_text().strip() == phy:
                return entry
    raise CommandFailed(f"no rfkill switch named {phy} under {root}")


def distance_at(models: dict[str, Any], a: str, b: str, t: float) -> float:
    """Metres between stations ``a`` and ``b`` at mobility time ``t``."""
    (x1, y1), (x2, y2) = models[a].position(t), models[b].position(t)
    return math.hypot(x1 - x2, y1 - y2)


def stream_process(proc: subprocess.Popen[bytes], out: IO[str],
                   timeout: float | None = None, grace: float = 3.0) -> int:
    """Copy ``proc``'s stdout to ``out`` as it comes; return its exit status.

    ``proc`` must have been started with ``start_new_session=True`` (its own process
    group) and ``stdout=PIPE``. On Ctrl-C (KeyboardInterrupt) the group gets SIGINT, what
    it still prints in ``grace`` seconds is shown (ping's summary, say), the group is
    killed if it is still there, and KeyboardInterrupt goes on up. After ``timeout``
    seconds the group is killed and CommandFailed raised.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    deadline = None if timeout is None else time.monotonic() + timeout

    def pump(until: float | None) -> bool:
        """Copy output until EOF (True) or ``until`` passes (False)."""
        while True:
            wait = None if until is None else max(0.0, until - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return False
            chunk = os.read(fd, 65536)
            if not chunk:
                out.write(decoder.decode(b"", final=True))
                out.flush()
                return True
            out.write(decoder.decode(chunk))
            out.flush()

    try:
        if not pump(deadline):
            raise CommandFailed(f"killed after {timeout:g} s")
        return proc.wait()
    except KeyboardInterrupt:
        _signal_group(proc, signal.SIGINT)
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop at once
            pump(time.monotonic() + grace)
        raise
    finally:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        proc.stdout.close()


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class EmulationCLI(cmd.Cmd):
    """Commands over a running network (hwsim or Mininet-WiFi backend)."""

    prompt = "emulation> "
    # A station command is killed after this long (None: never; Ctrl-C always works).
    command_timeout: float | None = 300.0
    intro = ("FastPay radio emulation. Type 'help' for commands, '<station> <command>' "
             "to run a command in a station, 'exit' to stop.")

    def __init__(self, net: Any, stdin: IO[str] | None = None,
                 stdout: IO[str] | None = None) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.net = net
        self.last_ok = True
        self.use_rawinput = stdin is None
        self.py_locals: dict[str, Any] = {"net": net}

    # -- plumbing --

    def say(self, text: str = "") -> None:
        """Print to the CLI's output."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def onecmd(self, line: str) -> bool:
        """Run one line; return True to stop the loop. Errors are printed, not raised."""
        self.last_ok = True
        try:
            return bool(super().onecmd(line))
        except (CommandFailed, KeyError, ValueError, EmulationError, RuntimeError,
                OSError, subprocess.SubprocessError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            self.say(f"*** {message}")
            self.last_ok = False
            return False

    def precmd(self, line: str) -> str:
        if getattr(self.net, "failed", None) is not None and self.net.failed.is_set():
            self.say(f"*** the emulation has stopped: {self.net.error}")
            self.last_ok = False
            return "exit"
        return line

    def emptyline(self) -> bool:
        return False

    def cmdloop(self, intro: Any = None) -> None:
        """Read and run commands until ``exit`` or end of input. Ctrl-C (at the prompt or
        during a command) interrupts only that and the prompt comes back."""
        while True:
            try:
                super().cmdloop(intro)
                return
            except KeyboardInterrupt:
                self.last_ok = False
                self.say()
                self.say(INTERRUPTED)
                intro = ""  # said once

    def default(self, line: str) -> bool:  # type: ignore[override]
        name, _, command = line.strip().partition(" ")
        if name in self.net.stations:
            if not command.strip():
                raise CommandFailed(f"usage: {name} <shell command>")
            command = substitute_names(command, name, self.net.stations, self._address)
            proc = self.net.station(name).popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True)
            status = stream_process(proc, self.stdout, timeout=self.command_timeout)
            if status != 0:
                self.say(f"*** exit status {status}")
                self.last_ok = False
            return False
        raise CommandFailed(f"unknown command or station: {name!r} (try 'help')")

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return super().completenames(text, *ignored) + [
            n for n in self.net.stations if n.startswith(text)]

    # -- commands --

    def do_nodes(self, line: str) -> None:
        """nodes: list stations (role, namespace, interface, position, range)."""
        for name, station in self.net.stations.items():
            x, y = station.position
            self.say(f"{name:12} {station.spec.role:10} {station.netns:16} {station.iface:8} "
                     f"({x:7.1f}, {y:7.1f})  range {station.spec.range:g} m")

    def do_positions(self, line: str) -> None:
        """positions: every station's position, and who is in whose range."""
        for name, (x, y) in self.net.positions().items():
            self.say(f"{name:12} ({x:8.2f}, {y:8.2f})")
        for link in self.net.links():
            if link["in_range"]:
                self.say(f"  {link['from']} -> {link['to']}: {link['distance']:.1f} m, "
                         f"{link['signal']} dBm")

    def do_links(self, line: str) -> None:
        """links: the medium's view of every ordered pair (distance, signal, in range)."""
        for link in self.net.links():
            state = "in range" if link["in_range"] else "out of range"
            self.say(f"{link['from']:>10} -> {link['to']:<10} {link['distance']:8.1f} m "
                     f"{link['signal']:5d} dBm  {state}")

    def do_move(self, line: str) -> None:
        """move STATION X,Y: put a station at (X, Y) metres (it stops its mobility model)."""
        parts = line.replace(",", " ").split()
        if len(parts) != 3:
            raise CommandFailed("usage: move STATION X,Y")
        name, x, y = parts[0], float(parts[1]), float(parts[2])
        self.net.move(name, (x, y))
        self.say(f"{name} at ({x:g}, {y:g})")

    def do_stats(self, line: str) -> None:
        """stats: the medium's frame counters."""
        for key, value in self.net.medium_stats().items():
            self.say(f"{key:16} {value}")

    def do_p2p_find(self, line: str) -> None:
        """p2p_find STATION...: start wpa_supplicant P2P discovery in stations (all if none)."""
        for name in line.split() or list(self.net.stations):
            self._wpa_cli(name, "p2p_find")
            self.say(f"{name}: finding")

    def do_p2p_peers(self, line: str) -> None:
        """p2p_peers STATION: P2P peers the station's wpa_supplicant knows (name, address)."""
        name = line.strip()
        if not name:
            raise CommandFailed("usage: p2p_peers STATION")
        for address, device in self._peers(name).items():
            self.say(f"{address}  {device}")

    def do_expect_peer(self, line: str) -> None:
        """expect_peer STATION PEER: succeed if STATION's wpa_supplicant knows PEER now.

        With 'no' first (expect_peer no STATION PEER) it succeeds if it does not.
        """
        parts = line.split()
        negate = bool(parts) and parts[0] == "no"
        parts = parts[1:] if negate else parts
        if len(parts) != 2:
            raise CommandFailed("usage: expect_peer [no] STATION PEER")
        station, peer = parts
        known = self.net.station(peer).p2p_device_address in self._peers(station)
        if known == negate:
            raise CommandFailed(f"{station} {'knows' if known else 'does not know'} {peer}")
        self.say(f"ok: {station} {'does not know' if negate else 'knows'} {peer}")

    def do_py(self, line: str) -> None:
        """py EXPRESSION: evaluate Python with 'net' (the network) in scope; print the result."""
        try:
            result = eval(line, {"__builtins__": __builtins__}, self.py_locals)  # noqa: S307
        except SyntaxError:
            exec(line, {"__builtins__": __builtins__}, self.py_locals)  # noqa: S102
            return
        except Exception as exc:  # a user typo must not end the session
            raise CommandFailed(f"{type(exc).__name__}: {exc}") from exc
        if result is not None:
            self.say(repr(result))

    def do_shell(self, line: str) -> None:
        """shell STATION: an interactive shell inside the station (its namespace, its bus:
        DBUS_SYSTEM_BUS_ADDRESS set); 'exit' in it comes back to this prompt.

        When the emulation runs in the QEMU VM (a host without mac80211_hwsim, where
        'python -m emulation.run' starts the VM itself), this prompt is the only way into
        the VM: the VM has no network and no second console, so 'python -m emulation.shell'
        in another host terminal cannot reach it. Use 'shell STATION' here (or
        'STATION COMMAND' for one command); 'shell' alone gives a shell in the VM itself,
        outside every station."""
        name = line.strip()
        if name:
            station = self.net.station(name)
            self.say(f"*** shell in {name} (netns {station.netns}); 'exit' to come back")
            argv = station.wrap(["sh", "-c", 'exec "${SHELL:-/bin/sh}" -i'])
            env = dict(station.env(), PS1=f"{name}# ")
        else:
            self.say("*** shell in the emulation's own namespace (outside the stations); "
                     "'exit' to come back")
            argv = ["sh", "-c", 'exec "${SHELL:-/bin/sh}" -i']
            env = dict(os.environ, PS1="emulation# ")
        # The shell shares our terminal: its Ctrl-C is its own. A Python handler (not
        # SIG_IGN, which the shell would inherit) keeps it from interrupting us.
        previous = signal.signal(signal.SIGINT, lambda *_: None)
        try:
            subprocess.run(argv, env=env)
        finally:
            signal.signal(signal.SIGINT, previous)

    def do_report(self, line: str) -> None:
        """report: print the network's description as JSON."""
        self.say(json.dumps(self.net.describe(), indent=2))

    def do_wait(self, line: str) -> None:
        """wait SECONDS: pause (use in scenario timelines); a line every 10 s says how
        long is left. Ctrl-C ends it early."""
        try:
            seconds = float(line or 0)
        except ValueError:
            raise CommandFailed("usage: wait SECONDS") from None
        start = time.monotonic()
        deadline = start + seconds
        shown = start
        if seconds >= 10.0:
            self.say(f"  waiting {seconds:g} s (Ctrl-C ends it)")
        while (left := deadline - time.monotonic()) > 0:
            if self.net.failed.wait(min(1.0, left)):
                raise CommandFailed(f"the emulation has stopped: {self.net.error}")
            now = time.monotonic()
            if now - shown >= 10.0 and deadline - now > 1.0:
                shown = now
                self.say(f"  ... {now - start:.0f} s of {seconds:g} s")

    def do_net(self, line: str) -> None:
        """net: every station's radio and interfaces (type, SSID), then the P2P groups
        that exist now (GO and clients), read with 'iw dev' in each station."""
        views = self._views()
        for name, view in views.items():
            station = self.net.station(name)
            shown = [f"{i.name or '(' + i.type + ')'}:{i.type}"
                     + (f"[{i.ssid}]" if i.in_group else "") for i in view.ifaces]
            self.say(f"{name:10} {station.radio.phy:6} {' '.join(shown) or 'no interfaces'}")
        groups = p2p_groups(views)
        if not groups:
            self.say("P2P groups: none")
        for ssid, members in groups.items():
            go = [f"{n}/{i.name}" for n, i in members if i.type == "P2P-GO"]
            clients = [f"{n}/{i.name}" for n, i in members if i.type != "P2P-GO"]
            self.say(f"P2P group {ssid}: GO {', '.join(go) or '?'}; "
                     f"clients {', '.join(clients) or 'none'}")

    def do_dump(self, line: str) -> None:
        """dump: per station, its role, interfaces and addresses, the pids of its
        processes and its position."""
        views = self._views()
        layer = getattr(self.net, "fastpay", None)
        for name, view in views.items():
            st = self.net.station(name)
            intfs = ", ".join(f"{i}={'/'.join(a) or '-'}" for i, a in view.addresses.items()
                              if i != "lo") or "-"
            pids = {label: p.pid for label, p in st.procs.items() if p.poll() is None}
            daemon = getattr(layer, "daemons", {}).get(name) if layer is not None else None
            if daemon is not None and daemon.alive():
                pids["fastpayd"] = daemon.proc.pid
            x, y = st.position
            self.say(f"<{name} {st.spec.role}: {intfs} "
                     f"pid {' '.join(f'{k}={v}' for k, v in pids.items()) or '-'} "
                     f"position ({x:.1f}, {y:.1f})>")

    def do_distance(self, line: str) -> None:
        """distance A B: metres between two stations now (their mobility positions at the
        current time), and whether each is in the other's range."""
        parts = line.split()
        if len(parts) != 2:
            raise CommandFailed("usage: distance STATION STATION")
        a, b = (self.net.station(n) for n in parts)
        models = getattr(self.net, "models", None)
        if models and a.name in models and b.name in models:
            t = self.net.now()
            d = distance_at(models, a.name, b.name, t)
        else:  # a backend that moves stations itself: its positions are the truth
            t = self.net.now()
            d = math.dist(a.position, b.position)
        reach = "in range of each other" if d <= min(a.spec.range, b.spec.range) else \
            "out of range"
        self.say(f"{a.name} <-> {b.name}: {d:.1f} m at t={t:.1f} s ({reach}; ranges "
                 f"{a.spec.range:g} m and {b.spec.range:g} m)")

    def do_pingall(self, line: str) -> None:
        """pingall [COUNT]: ping (COUNT packets, default 3) between every two stations in
        the same P2P group, over the group's addresses; report the loss. Stations in no
        shared group are not pinged (there is no link between them)."""
        try:
            count = int(line.strip() or 3)
        except ValueError:
            count = 0
        if count < 1:
            raise CommandFailed("usage: pingall [COUNT] (COUNT >= 1)")
        views = self._views()
        groups = p2p_groups(views)
        if not groups:
            raise CommandFailed("no P2P group exists: nothing to ping (see 'net')")
        sent = received = 0
        for ssid, members in groups.items():
            self.say(f"*** group {ssid}")
            for src, _ in members:
                row = []
                for dst, _ in members:
                    if dst == src:
                        continue
                    target = group_address(views, src, dst)
                    result = self.net.station(src).run(
                        ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2",
                         target], timeout=10 + 3 * count)
                    tx_rx = parse_ping(result.stdout) or (count, 0)
                    sent += tx_rx[0]
                    received += tx_rx[1]
                    row.append(f"{dst} {tx_rx[1]}/{tx_rx[0]}")
                self.say(f"{src} -> {', '.join(row)}")
        lost = 100.0 * (sent - received) / sent if sent else 0.0
        self.say(f"*** Results: {lost:.0f}% dropped ({received}/{sent} received)")
        if received < sent:
            self.last_ok = False

    def do_link(self, line: str) -> None:
        """link STATION up|down: switch the station's radio on or off (its rfkill soft
        switch, /sys/class/rfkill/*/name = its phy); 'link STATION' shows the switch."""
        parts = line.split()
        if len(parts) not in (1, 2) or (len(parts) == 2 and parts[1] not in ("up", "down")):
            raise CommandFailed("usage: link STATION up|down")
        station = self.net.station(parts[0])
        switch = rfkill_switch(station.radio.phy)
        if len(parts) == 2:
            (switch / "soft").write_text("1" if parts[1] == "down" else "0")
        soft = (switch / "soft").read_text().strip() == "1"
        hard = (switch / "hard").read_text().strip() == "1" \
            if (switch / "hard").exists() else False
        state = "down" if soft or hard else "up"
        self.say(f"{station.name}: radio {station.radio.phy} {state} ({switch.name}: "
                 f"soft {'blocked' if soft else 'unblocked'}, "
                 f"hard {'blocked' if hard else 'unblocked'})")

    def do_exit(self, line: str) -> bool:
        """exit: stop the emulation and leave."""
        return True

    do_quit = do_exit

    def do_EOF(self, line: str) -> bool:  # noqa: N802 - cmd.Cmd's name for end of input
        """EOF (Ctrl-D): same as exit."""
        self.say()
        return True

    # -- helpers --

    def _view(self, name: str) -> StationView:
        result = self.net.station(name).run("iw dev; echo @@; ip -br addr", timeout=30)
        iw, _, ip = result.stdout.partition("@@\n")
        return StationView(name, parse_iw_dev(iw), parse_ip_br_addr(ip))

    def _views(self) -> dict[str, StationView]:
        return {name: self._view(name) for name in self.net.stations}

    def _address(self, src: str, dst: str) -> str:
        return group_address({n: self._view(n) for n in dict.fromkeys((src, dst))}, src, dst)

    def _wpa_cli(self, name: str, *args: str) -> str:
        station = self.net.station(name)
        result = station.run(["wpa_cli", "-p", str(station.ctrl_dir), "-i",
                              station.p2p_ctrl_iface, *args], timeout=30)
        if result.returncode != 0 or result.stdout.strip().startswith("FAIL"):
            raise CommandFailed(f"{name}: wpa_cli {shlex.join(args)}: "
                                f"{(result.stdout + result.stderr).strip()}")
        return result.stdout

    def _peers(self, name: str) -> dict[str, str]:
        station = self.net.station(name)
        # wpa_cli exits non-zero when the peer list is empty: not an error.
        listing = station.run(["wpa_cli", "-p", str(station.ctrl_dir), "-i",
                               station.p2p_ctrl_iface, "p2p_peers"], timeout=30)
        peers = {}
        for address in listing.stdout.split():
            info = self._wpa_cli(name, "p2p_peer", address)
            device = next((ln.split("=", 1)[1] for ln in info.splitlines()
                           if ln.startswith("device_name=")), "?")
            peers[address] = device
        return peers


def run_timeline(cli: EmulationCLI, timeline: list[Any], net: Any,
                 out: IO[str] = sys.stdout) -> list[dict[str, Any]]:
    """Run scenario timeline entries at their times; return one result per entry.

    An entry with ``retry_for`` is retried (every 0.5 s) until it succeeds or that many
    seconds pass. Stops early if the emulation fails.
    """
    results: list[dict[str, Any]] = []
    for entry in timeline:
        while net.now() < entry.at:
            if net.failed.wait(min(0.2, entry.at - net.now())):
                return results
        started = time.monotonic()
        real_stdout = cli.stdout
        while True:
            # Only the last attempt's output is shown: retries would repeat themselves.
            cli.stdout = io.StringIO()
            try:
                cli.onecmd(entry.do)
            finally:
                shown, cli.stdout = cli.stdout.getvalue(), real_stdout
            if cli.last_ok or time.monotonic() - started >= entry.retry_for or \
                    net.failed.is_set():
                break
            time.sleep(0.5)
        if shown:
            cli.stdout.write(shown)
            cli.stdout.flush()
        results.append({"at": entry.at, "do": entry.do, "ok": cli.last_ok,
                        "started": round(started - net._t0, 3) if hasattr(net, "_t0") else None,
                        "seconds": round(time.monotonic() - started, 3)})
        print(f"[{net.now():7.1f} s] {'ok  ' if cli.last_ok else 'FAIL'} {entry.do}",
              file=out, flush=True)
        if net.failed.is_set():
            break
    return results
