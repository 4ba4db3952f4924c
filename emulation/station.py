"""Stations: one hwsim radio in its own network namespace with its own bus and supplicant.

A :class:`StationSpec` only describes a station (name, role, position, range,
mobility). A :class:`Station` is the running thing, built by the network:

1. ``ip netns add fpw-<name>``; the radio's wiphy is moved there
   (``iw phy phyN set netns name ...``) and its interface renamed ``wlan0`` so every
   station looks the same from inside;
2. a ``dbus-daemon`` with its own config: wpa_supplicant's bus name
   ``fi.w1.wpa_supplicant1`` can be owned once per bus, so each station needs its own
   bus. It listens on an abstract socket (abstract names are per network namespace, so
   the same address works in every station and reaches only its own bus -- this is
   what ``DBUS_SYSTEM_BUS_ADDRESS`` says inside the station) and on a path socket in the
   station's run directory (reachable from outside, for tests and tools);
3. ``wpa_supplicant -u -Dnl80211 -i wlan0`` with P2P enabled and its D-Bus interface
   on that bus.

Every pid goes to ``<run dir>/<name>/pids`` so a later run can clean up after a crash
(:func:`emulation.network.cleanup_stale`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulation import hwsim

NETNS_PREFIX = "fpw-"
BUS_ABSTRACT = "fastpay-emu-bus"
IFACE = "wlan0"
ROLES = ("authority", "client", "plain")

WPA_SERVICE = "fi.w1.wpa_supplicant1"


@dataclass
class StationSpec:
    """What a station is: the description a scenario gives. Nothing runs here."""

    name: str
    role: str = "plain"
    position: tuple[float, float] = (0.0, 0.0)
    range: float = 100.0
    mobility: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields later issues add

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"bad station name {self.name!r} (letters, digits, - and _)")
        if len(NETNS_PREFIX + self.name) > 15:
            raise ValueError(f"station name {self.name!r} is too long (at most 11 characters)")
        if self.role not in ROLES:
            raise ValueError(f"station {self.name}: role must be one of {ROLES}")
        if self.range <= 0:
            raise ValueError(f"station {self.name}: range must be positive")


class StationError(RuntimeError):
    """A station could not be started."""


def _wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise StationError(f"timed out after {timeout:.0f} s waiting for {what}")


class Station:
    """A running station. Built and stopped by the network, in that order."""

    def __init__(self, spec: StationSpec, radio: hwsim.Radio, run_dir: Path) -> None:
        self.spec = spec
        self.radio = radio
        self.dir = run_dir / spec.name
        self.netns = NETNS_PREFIX + spec.name
        self.iface = IFACE
        self.position = spec.position
        self.bus_path = self.dir / "bus.sock"
        self.ctrl_dir = self.dir / "wpa"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: float | None = None
        # Start-up breakdown (seconds per phase, in order) and what start() waits on now.
        self.timings: dict[str, float] = {}
        self.step = "not started"

    # -- identity --

    @property
    def name(self) -> str:
        """The station's name."""
        return self.spec.name

    @property
    def p2p_device_address(self) -> str:
        """The P2P device address peers see (the radio's second permanent address)."""
        return self.radio.hwsim_addr

    @property
    def p2p_ctrl_iface(self) -> str:
        """The wpa_supplicant interface that takes P2P commands (wpa_cli ``-i``): hwsim's
        radios have a P2P Device (``p2p-dev-wlan0``); radios without one take them on the
        station interface itself."""
        return f"p2p-dev-{self.iface}"

    @property
    def bus_address(self) -> str:
        """D-Bus address for processes inside the station (per-namespace abstract socket)."""
        return f"unix:abstract={BUS_ABSTRACT}"

    @property
    def outside_bus_address(self) -> str:
        """D-Bus address of this station's bus usable from any namespace (path socket)."""
        return f"unix:path={self.bus_path}"

    def env(self) -> dict[str, str]:
        """The environment of a process inside the station."""
        env = dict(os.environ)
        env.update(DBUS_SYSTEM_BUS_ADDRESS=self.bus_address, FASTPAY_STATION=self.name,
                   FASTPAY_IFACE=self.iface, FASTPAY_STATION_DIR=str(self.dir))
        return env

    @property
    def netns_path(self) -> str:
        """The station's network namespace as a path setns(2) takes."""
        return f"/run/netns/{self.netns}"

    # -- commands --

    def wrap(self, argv: list[str]) -> list[str]:
        """Return argv that runs ``argv`` inside this station's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: list[str] | str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the station (a string runs through ``sh -c``)."""
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        kwargs.setdefault("env", self.env())
        return subprocess.Popen(self.wrap(argv), **kwargs)

    def run(self, argv: list[str] | str, timeout: float = 60.0,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command inside the station; return it with stdout/stderr as text."""
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        return subprocess.run(self.wrap(argv), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=check)

    # -- lifecycle --

    def _record_pid(self, label: str, proc: subprocess.Popen[bytes]) -> None:
        self.procs[label] = proc
        with open(self.dir / "pids", "a") as fh:
            fh.write(f"{proc.pid} {label}\n")

    def start(self, timeout: float = 60.0) -> None:
        """Build the namespace, move the radio in, start dbus-daemon and wpa_supplicant."""
        t0 = mark = time.monotonic()

        def phase(name: str, next_step: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.timings[name] = round(now - mark, 3)
            mark = now
            self.step = next_step

        self.step = "namespace and radio"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ctrl_dir.mkdir(exist_ok=True)
        (self.dir / "pids").write_text("")
        _sh(["ip", "netns", "add", self.netns])
        _sh(["iw", "phy", self.radio.phy, "set", "netns", "name", self.netns])
        ifname = _iface_of(self.netns, self.radio.phy)
        if ifname != self.iface:
            _sh(self.wrap(["ip", "link", "set", ifname, "name", self.iface]))
        _sh(self.wrap(["ip", "link", "set", "lo", "up"]))
        phase("netns_s", "dbus-daemon listening")
        self._start_dbus(timeout)
        phase("dbus_s", "wpa_supplicant's control socket")
        self._start_wpa(timeout, lambda: phase("wpa_supplicant_s",
                                                "wpa_supplicant's interface on D-Bus"))
        phase("wpa_dbus_s", "ready")
        self.started_at = time.monotonic()
        self.timings["total_s"] = round(self.started_at - t0, 3)
        (self.dir / "startup_seconds").write_text(f"{self.started_at - t0:.3f}\n")

    def _start_dbus(self, timeout: float) -> None:
        config = self.dir / "bus.conf"
        config.write_text(_DBUS_CONFIG.format(path=self.bus_path, abstract=BUS_ABSTRACT))
        with contextlib.suppress(FileNotFoundError):
            self.bus_path.unlink()
        log = open(self.dir / "dbus.log", "wb")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            self.wrap(["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={config}",
                       "--print-address=1"]),
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self._record_pid("dbus-daemon", proc)
        assert proc.stdout is not None
        # --print-address prints once the daemon listens: that is readiness.
        line = proc.stdout.readline()
        if not line:
            raise StationError(f"{self.name}: dbus-daemon exited "
                               f"({(self.dir / 'dbus.log').read_text()[-500:]})")
        _wait_for(self.bus_path.exists, timeout, f"{self.name}'s bus socket")

    def _start_wpa(self, timeout: float, on_ctrl: Any = None) -> None:
        conf = self.dir / "wpa_supplicant.conf"
        conf.write_text(_WPA_CONFIG.format(ctrl=self.ctrl_dir, name=self.name))
        log = open(self.dir / "wpa_supplicant.log", "wb")  # noqa: SIM115
        argv = ["wpa_supplicant", "-u", "-t", "-Dnl80211", "-i", self.iface, "-c", str(conf)]
        if os.environ.get("FASTPAY_EMU_WPA_DEBUG"):
            argv.append("-dd")
        proc = subprocess.Popen(self.wrap(argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env())
        log.close()
        self._record_pid("wpa_supplicant", proc)
        p2p_ctrl = self.ctrl_dir / self.p2p_ctrl_iface

        def alive() -> None:
            if proc.poll() is not None:
                raise StationError(f"{self.name}: wpa_supplicant exited with {proc.returncode}:"
                                   f" {(self.dir / 'wpa_supplicant.log').read_text()[-800:]}")

        def ctrl_ready() -> bool:
            alive()
            return p2p_ctrl.exists()

        def bus_ready() -> bool:
            alive()
            return self._wpa_on_bus()

        # The control socket appears once the P2P Device is set up (a cheap stat, polled
        # often); only then is the D-Bus interface asked for (a dbus-send process each
        # time, which costs under TCG).
        deadline = time.monotonic() + timeout
        _wait_for(ctrl_ready, timeout, f"{self.name}'s wpa_supplicant control socket")
        if on_ctrl is not None:
            on_ctrl()
        _wait_for(bus_ready, max(1.0, deadline - time.monotonic()),
                  f"{self.name}'s wpa_supplicant on D-Bus", interval=0.2)

    def _wpa_on_bus(self) -> bool:
        result = subprocess.run(
            ["dbus-send", f"--bus={self.outside_bus_address}", "--print-reply",
             f"--dest={WPA_SERVICE}", "/fi/w1/wpa_supplicant1",
             "fi.w1.wpa_supplicant1.GetInterface", f"string:{self.iface}"],
            capture_output=True, timeout=10)
        return result.returncode == 0

    def alive(self) -> bool:
        """True while all the station's daemons run."""
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def stop(self) -> None:
        """Stop the daemons (supplicant first, then its bus) and delete the namespace."""
        for label in ("wpa_supplicant", "dbus-daemon"):
            proc = self.procs.get(label)
            if proc is not None:
                _terminate(proc)
        for proc in self.procs.values():
            _terminate(proc)
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)

    def __repr__(self) -> str:
        return f"<Station {self.name} {self.spec.role} at {self.position} r={self.spec.range}>"


def _terminate(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _sh(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise StationError(f"{shlex.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _iface_of(netns: str, phy: str) -> str:
    """Return the name of the (first) interface of ``phy`` inside ``netns``."""
    out = _sh(["ip", "netns", "exec", netns, "iw", "dev"])
    current_phy = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("phy#"):
            current_phy = "phy" + line[4:]
        elif line.startswith("Interface ") and current_phy == phy:
            return line.split()[1]
    raise StationError(f"no interface of {phy} in {netns}: {out}")


_DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- One station's private system bus (written by emulation.station). -->
<busconfig>
  <type>system</type>
  <listen>unix:path={path}</listen>
  <listen>unix:abstract={abstract}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""

# The P2P settings that were measured to work between hwsim radios (PLATFORM.md):
# social listen channel 1, operating channel 6, the group on wlan0 itself. Scans stay
# on 2.4 GHz: a scan of every hwsim channel takes ~8 s under a loaded TCG.
_WPA_CONFIG = """ctrl_interface={ctrl}
update_config=0
device_name={name}
device_type=1-0050F204-1
config_methods=virtual_push_button physical_display keypad
p2p_no_group_iface=1
p2p_listen_reg_class=81
p2p_listen_channel=1
p2p_oper_reg_class=81
p2p_oper_channel=6
freq_list=2412 2417 2422 2427 2432 2437 2442 2447 2452 2457 2462
"""
