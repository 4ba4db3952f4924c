"""The emulation's Mininet-style command line.

Each command is a thin ``do_<verb>(self, line)`` method whose docstring is its help
(``help <verb>``). A line whose first word is a station name runs the rest as a shell
command inside that station (``sta1 iw dev``). User mistakes print a message and the
prompt returns; the last command's success is kept in :attr:`EmulationCLI.last_ok`, so
the same commands drive batch timelines (``python -m emulation.run --batch``).

Extending: later layers add commands by subclassing or with :func:`register_command`
(``@register_command("discover")`` on a function ``(cli, line) -> bool | None``);
FastPay's commands (discover, mobile_transfer, show_peers, ...) come in that way.
"""

from __future__ import annotations

import cmd
import io
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
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


class EmulationCLI(cmd.Cmd):
    """Commands over a running network (hwsim or Mininet-WiFi backend)."""

    prompt = "emulation> "
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

    def default(self, line: str) -> bool:  # type: ignore[override]
        name, _, command = line.strip().partition(" ")
        if name in self.net.stations:
            if not command.strip():
                raise CommandFailed(f"usage: {name} <shell command>")
            result = self.net.station(name).run(command, timeout=300)
            out = (result.stdout + result.stderr).rstrip("\n")
            if out:
                self.say(out)
            if result.returncode != 0:
                self.say(f"*** exit status {result.returncode}")
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
        """shell STATION: an interactive shell inside the station (its bus variables set)."""
        name = line.strip()
        if not name:
            raise CommandFailed("usage: shell STATION")
        station = self.net.station(name)
        self.say(f"*** shell in {name} (netns {station.netns}); 'exit' to come back")
        subprocess.run(station.wrap(["sh", "-c", 'exec "${SHELL:-/bin/sh}" -i']),
                       env=dict(station.env(), PS1=f"{name}# "))

    def do_report(self, line: str) -> None:
        """report: print the network's description as JSON."""
        self.say(json.dumps(self.net.describe(), indent=2))

    def do_wait(self, line: str) -> None:
        """wait SECONDS: pause (use in scenario timelines)."""
        deadline = time.monotonic() + float(line or 0)
        while time.monotonic() < deadline:
            if self.net.failed.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                raise CommandFailed(f"the emulation has stopped: {self.net.error}")

    def do_exit(self, line: str) -> bool:
        """exit: stop the emulation and leave."""
        return True

    do_quit = do_exit

    def do_EOF(self, line: str) -> bool:  # noqa: N802 - cmd.Cmd's name for end of input
        """EOF (Ctrl-D): same as exit."""
        self.say()
        return True

    # -- helpers --

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
