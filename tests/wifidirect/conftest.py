"""Live-test stations for the WiFi Direct link, built by hand on mac80211_hwsim.

Each station is a hwsim radio moved into its own network namespace (``wd-<name>``),
a dbus-daemon listening on an abstract socket (abstract names are per namespace, so
every station has the same address and reaches only its own bus) and a real
``wpa_supplicant -u`` with P2P enabled. The test process drives each station from a
thread that has entered the station's namespace (``setns`` applies to the calling
thread only) and runs its own event loop there: every socket the link opens -- D-Bus
and TCP -- is then created inside the station, exactly as a per-station fastpayd would.

Needs root and a kernel with mac80211_hwsim (the QEMU guest); tests are skipped
elsewhere. The stations are made once per test module and removed after it (no
medium process: hwsim's perfect medium, everyone in range).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
BUS = "unix:abstract=fastpay-wd-bus"
RUN = Path("/tmp/fastpay-wd")
STATIONS = ("auth1", "auth2", "cli1", "cli2", "cli3", "plain")

_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


class Station:
    """One station: namespace, bus, wpa_supplicant, and a thread+loop inside it."""

    def __init__(self, name: str, phy: str, p2p_address: str) -> None:
        self.name = name
        self.netns = f"wd-{name}"
        self.phy = phy
        self.p2p_address = p2p_address
        self.ifname = "wlan0"
        self.bus = BUS  # the abstract name resolves inside the station's namespace
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            enter_netns(self.netns)
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name=f"station-{name}", daemon=True)
        self.thread.start()
        ready.wait(10)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this station's loop (inside its namespace) and await it."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def log_tail(self, lines: int = 60) -> str:
        path = RUN / f"{self.name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def _bus_config() -> str:
    text = Path("/usr/share/dbus-1/system.conf").read_text()
    text = text.replace("<user>messagebus</user>", "")
    import re

    text = re.sub(r"<listen>.*?</listen>", f"<listen>{BUS}</listen>", text)
    text = re.sub(r"<pidfile>.*?</pidfile>", "", text)
    # A relative includedir in a copied config is silently ignored: make it absolute.
    return text.replace("<includedir>system.d</includedir>",
                        "<includedir>/usr/share/dbus-1/system.d</includedir>")


def _wpa_config(name: str) -> str:
    return "\n".join([
        f"ctrl_interface={RUN}/ctrl-{name}",
        f"device_name={name}",
        "device_type=1-0050F204-1",
        "config_methods=display keypad push_button virtual_push_button",
        "p2p_no_group_iface=1",
        "p2p_listen_reg_class=81",
        "p2p_listen_channel=1",
        "p2p_oper_reg_class=81",
        "p2p_oper_channel=6",
        "",
    ])


def _can_run() -> str | None:
    if os.geteuid() != 0:
        return "live WiFi Direct tests need root (run them inside the VM)"
    if shutil.which("wpa_supplicant") is None or shutil.which("iw") is None:
        return "wpa_supplicant/iw not installed"
    if not Path("/sys/module/mac80211_hwsim").exists():
        if subprocess.run(["modprobe", "mac80211_hwsim", "radios=0"],
                          capture_output=True).returncode != 0:
            return "no mac80211_hwsim in this kernel (run inside the VM)"
    return None


def _wait(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stations(request: pytest.FixtureRequest) -> Iterator[dict[str, Station]]:
    """The module's stations: names from its ``STATIONS`` tuple (default :data:`STATIONS`)."""
    names: tuple[str, ...] = getattr(request.module, "STATIONS", STATIONS)
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    RUN.mkdir(parents=True, exist_ok=True)
    subprocess.run(["modprobe", "-r", "mac80211_hwsim"], capture_output=True)
    _sh("modprobe", "mac80211_hwsim", f"radios={len(names)}")
    phys = sorted(os.listdir("/sys/class/ieee80211"), key=lambda p: int(p[3:]))
    (RUN / "bus.conf").write_text(_bus_config())
    procs: list[subprocess.Popen[bytes]] = []
    made: dict[str, Station] = {}
    try:
        for name, phy in zip(names, phys, strict=False):
            ns = f"wd-{name}"
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            _sh("ip", "netns", "add", ns)
            addresses = Path(f"/sys/class/ieee80211/{phy}/addresses").read_text().split()
            _sh("iw", "phy", phy, "set", "netns", "name", ns)
            ifname = _sh("ip", "netns", "exec", ns, "ls", "/sys/class/net").split()
            wlan = next(i for i in ifname if i != "lo")
            if wlan != "wlan0":
                _sh("ip", "netns", "exec", ns, "ip", "link", "set", wlan, "name", "wlan0")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            (RUN / f"{name}.conf").write_text(_wpa_config(name))
            daemon = subprocess.Popen(
                ["ip", "netns", "exec", ns, "dbus-daemon", "--nofork", "--print-address",
                 f"--config-file={RUN / 'bus.conf'}"], stdout=subprocess.PIPE)
            procs.append(daemon)
            assert daemon.stdout is not None
            daemon.stdout.readline()  # printed once the bus listens
            env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=BUS)
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "wpa_supplicant", "-u", "-Dnl80211", "-iwlan0",
                 f"-c{RUN / (name + '.conf')}", f"-f{RUN / (name + '.log')}", "-d", "-t"],
                env=env))
            made[name] = Station(name, phy, addresses[1] if len(addresses) > 1 else addresses[0])
        for name in made:
            # The control socket appears once wpa_supplicant set the interface up, which
            # is after it took its bus name.
            ctrl = RUN / f"ctrl-{name}" / "wlan0"
            _wait(ctrl.exists, 60, f"wpa_supplicant of {name}")
        yield made
    finally:
        for st in made.values():
            st.close()
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for name in names:
            subprocess.run(["ip", "netns", "del", f"wd-{name}"], capture_output=True)
        # Other live tests in the same VM load the module with their own radio count.
        subprocess.run(["modprobe", "-r", "mac80211_hwsim"], capture_output=True)


class EventLog(list[tuple[str, str, dict[str, Any]]]):
    """(station, name, fields) tuples; list.append is atomic, so every station's thread
    can write to one log."""

    def sink(self, station: str) -> Any:
        def on_event(name: str, **fields: Any) -> None:
            self.append((station, name, fields))

        return on_event

    def named(self, name: str, station: str | None = None) -> list[dict[str, Any]]:
        return [f for s, n, f in self if n == name and (station is None or s == station)]

    def story(self) -> str:
        """Every event, one line each, times from the first (for a failure message)."""
        t0 = min((f["t"] for _, _, f in self if "t" in f), default=0.0)
        return "\n".join(
            f"{f.get('t', t0) - t0:7.2f} {s:6} {n} "
            + " ".join(f"{k}={v}" for k, v in f.items() if k != "t") for s, n, f in self)


@pytest.fixture
def events() -> EventLog:
    return EventLog()
