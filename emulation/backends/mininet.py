"""Mininet-WiFi backend: its stations, positions, ranges and wmediumd; our daemons.

Mininet-WiFi (``mn_wifi``, installed by ``scripts/setup-mininet.sh``) builds the stations
-- each a process in its own network and mount namespace with a hwsim radio created by
``hwsim_mgmt`` and renamed ``<station>-wlan0`` --, turns each station's range into a tx
power (log-distance model), and runs wmediumd (interference mode) as the medium. On each
of its stations we start the same per-station dbus-daemon and ``wpa_supplicant -u`` as the
hwsim backend (:class:`emulation.station.Station`), entering the station's namespaces
through its shell's pid (``mnexec -a PID``), and the FastPay layer starts fastpayd the
same way. This module is a thin adapter; it works around four things measured in the VM
(``../shared/PLATFORM.md``):

* **wmediumd's socket race**: mn_wifi connects to ``/var/run/wmediumd.sock`` one second
  after starting wmediumd, which under TCG can be too early, and a stale socket file from
  an earlier run gives ConnectionRefused. A stale socket is removed first, and the connect
  retries until wmediumd listens (or exits: then its log is the error).
* **No P2P Device**: radios made by ``hwsim_mgmt`` have none, so P2P runs on the station
  interface; readiness is its control socket plus ``GetInterface`` on D-Bus.
* **Deaf stations**: wmediumd's uninitialised ``station->freq`` (fixed by the patch the
  setup applies) -- and, as in the hwsim backend, every position is sent again once the
  supplicants run.
* **Cleanup**: mn_wifi's teardown kills hostapd/wmediumd by name and removes
  mac80211_hwsim. It only ever runs from :meth:`MininetNetwork.stop` of a network that
  was built, which needs a kernel with mac80211_hwsim: never on these machines' host
  (there the run goes into the VM first).

Ranges: Mininet-WiFi's default antenna gain (5 dBi, both ends) makes its minimum tx power
(1 dBm) already reach ~116 m at path-loss exponent 3, so stations get a 0 dBi antenna
unless a spec says otherwise (``antenna_gain``); the effective range (whole-dBm tx power)
is what :meth:`MininetNetwork.links` reports.

``mn_wifi`` is imported when a network starts (38-55 s under TCG, once per process).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from emulation import hwsim, mobility
from emulation.medium import PathLoss
from emulation.network import DEFAULT_RUN_DIR, EmulationError, MediumDied, cleanup_stale
from emulation.station import Station, StationSpec
from emulation.vm import TOOLS_DIR

WMEDIUMD_SOCKET = Path("/var/run/wmediumd.sock")
DEFAULT_ANTENNA_GAIN = 0.0
TOOLS = ("mnexec", "wmediumd", "hwsim_mgmt")


def prepare_environment() -> None:
    """Make the tools and a headless matplotlib available to mn_wifi in this process."""
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep)
    if TOOLS_DIR.is_dir() and str(TOOLS_DIR) not in path:
        os.environ["PATH"] = os.pathsep.join([str(TOOLS_DIR), *path])
    os.environ.setdefault("MPLBACKEND", "Agg")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise EmulationError(f"Mininet-WiFi's tools are missing: {', '.join(missing)} "
                             "(run scripts/setup.sh)")
    # mn_wifi finds its radios in debugfs (/sys/kernel/debug/ieee80211/*/hwsim).
    if not os.path.ismount("/sys/kernel/debug"):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"],
                       capture_output=True)


def import_mn_wifi() -> float:
    """Import mn_wifi (once per process); return the seconds it took."""
    t0 = time.monotonic()
    import mn_wifi.net  # noqa: F401

    return time.monotonic() - t0


def remove_stale_socket(path: Path = WMEDIUMD_SOCKET) -> bool:
    """Remove ``path`` if nothing listens on it; raise if a wmediumd still does."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return True
    raise EmulationError(f"a wmediumd already listens on {path}: another emulation runs")


def _wmediumd_pid() -> int | None:
    """The pid of the wmediumd that mn_wifi started with its own config file."""
    from mn_wifi.wmediumdConnector import WStarter

    config = WStarter.wmd_config_name
    if not config:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"wmediumd") and config.encode() in argv:
                return int(entry.name)
    return None


def _wmediumd_log() -> str:
    from mn_wifi.wmediumdConnector import WStarter

    log = WStarter.wmd_logfile
    with contextlib.suppress(OSError, AttributeError):
        return Path(log.name).read_text(errors="replace")[-600:]
    return ""


def set_position(node: Any, x: float, y: float) -> None:
    """``node.setPosition("x,y,0")`` without its plot update: once our report has drawn
    a pyplot figure in this process, Mininet-WiFi's ``update_graph`` tries to move circles
    it never drew (AttributeError ``circle``) before wmediumd hears of the move."""
    from mn_wifi.wmediumdConnector import w_cst, wmediumd_mode

    node.position = [float(x), float(y), 0.0]
    if wmediumd_mode.mode == w_cst.INTERFERENCE_MODE:
        node.set_pos_wmediumd(node.position)
    node.configLinks()


def patch_wmediumd_connect(timeout: float = 60.0) -> None:
    """Make mn_wifi's connect to wmediumd wait until wmediumd listens (it sleeps 1 s and
    tries once, which loses the race under TCG)."""
    from mn_wifi.wmediumdConnector import WmediumdException, w_cst, w_server

    def connect(cls: Any, uds_address: str = w_cst.SOCKET_PATH) -> None:
        if cls.connected:
            raise WmediumdException("Already connected to wmediumd server")
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(uds_address)
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise EmulationError(f"wmediumd did not listen on {uds_address} within "
                                         f"{timeout:.0f} s: {exc}; log: {_wmediumd_log()}"
                                         ) from exc
                time.sleep(0.1)  # wmediumd announces nothing else: poll its socket
                continue
            cls.sock, cls.connected = sock, True
            return

    w_server.connect = classmethod(connect)  # type: ignore[method-assign,assignment]


class MininetStation(Station):
    """A Station whose namespaces belong to a Mininet-WiFi node (``mnexec -a PID``)."""

    def __init__(self, spec: StationSpec, node: Any, run_dir: Path) -> None:
        intf = node.wintfs[0]
        phy = node.cmd(f"cat /sys/class/net/{intf.name}/phy80211/name").strip()
        super().__init__(spec, hwsim.Radio(phy=phy, addresses=(intf.mac, intf.mac)), run_dir)
        self.node = node
        self.iface = intf.name
        self.netns = f"mininet:{spec.name}"  # emulation.shell enters it by pid

    @property  # type: ignore[override]
    def position(self) -> tuple[float, float]:
        """Where Mininet-WiFi has the node now (its own mobility models included)."""
        pos = getattr(self.node, "position", None)
        return (float(pos[0]), float(pos[1])) if pos else self.spec.position

    @position.setter
    def position(self, value: tuple[float, float]) -> None:
        pass  # Mininet-WiFi's node.position is the one truth (setPosition)

    @property
    def p2p_ctrl_iface(self) -> str:
        return self.iface  # no P2P Device: P2P runs on the station interface

    @property
    def p2p_device_address(self) -> str:
        return str(self.node.wintfs[0].mac)

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.node.pid}/ns/net"

    def wrap(self, argv: list[str]) -> list[str]:
        return ["mnexec", "-a", str(self.node.pid), *argv]

    def start(self, timeout: float = 60.0) -> None:
        """Start dbus-daemon and wpa_supplicant in the node (Mininet-WiFi made the rest)."""
        t0 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ctrl_dir.mkdir(exist_ok=True)
        (self.dir / "pids").write_text("")
        self.step = "dbus-daemon listening"
        self._start_dbus(timeout)
        self.timings["dbus_s"] = round(time.monotonic() - t0, 3)
        self.step = "wpa_supplicant's control socket"
        mark = time.monotonic()

        def ctrl_up() -> None:
            nonlocal mark
            self.timings["wpa_supplicant_s"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            self.step = "wpa_supplicant's interface on D-Bus"

        self._start_wpa(timeout, ctrl_up)
        self.timings["wpa_dbus_s"] = round(time.monotonic() - mark, 3)
        self.step = "ready"
        self.started_at = time.monotonic()
        self.timings["total_s"] = round(self.started_at - t0, 3)
        (self.dir / "startup_seconds").write_text(f"{self.started_at - t0:.3f}\n")

    def stop(self) -> None:
        """Stop our daemons (supplicant first); the node itself is Mininet-WiFi's."""
        for label in ("wpa_supplicant", "dbus-daemon"):
            proc = self.procs.get(label)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


class MininetNetwork:
    """The same running interface as :class:`emulation.network.Network`, on Mininet-WiFi.

    ``specs`` become Mininet-WiFi stations (``addStation(name, cls=station_class,
    position=..., range=..., antennaGain=...)``); scenario mobility models move them
    every ``tick`` seconds (:func:`set_position`: Mininet-WiFi's node position, wmediumd).
    """

    # Where start-up progress goes (a line every 10 s while stations start); None: quiet.
    progress: Callable[[str], None] | None = None

    backend = "mininet"

    def __init__(self, specs: Iterable[StationSpec], *, area: mobility.Area | None = None,
                 seed: int = 0, pathloss: PathLoss | None = None,
                 run_dir: Path = DEFAULT_RUN_DIR, tick: float = 0.25,
                 on_fatal: Callable[[EmulationError], None] | None = None,
                 station_class: Any = None, log_level: str | None = None) -> None:
        self.specs = list(specs)
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise EmulationError(f"duplicate station names in {names}")
        if not self.specs:
            raise EmulationError("no stations")
        self.area = area or mobility.Area(0, 0, 1000, 1000)
        self.seed = seed
        self.pathloss = pathloss or PathLoss()
        self.run_dir = run_dir
        self.tick = tick
        self.on_fatal = on_fatal
        self.station_class = station_class
        # Mininet's own log (FASTPAY_EMU_MN_LOG=info shows every step it takes).
        self.log_level = log_level or os.environ.get("FASTPAY_EMU_MN_LOG", "warning")
        self.stations: dict[str, MininetStation] = {}
        self.models: dict[str, mobility.Model] = {}
        self.mn: Any = None
        self.failed = threading.Event()
        self.error: EmulationError | None = None
        self.timings: dict[str, float] = {}
        self.wmediumd_pid: int | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._held = False
        self._started = False
        self._step: str | None = None  # what start() does now (its progress lines)
        self._started_event = threading.Event()
        self._adopted = False  # a script's own Mininet_wifi: its mobility, its stop()

    @classmethod
    def adopt(cls, mn: Any, roles: dict[str, str], timeout: float = 120.0,
              run_dir: Path = DEFAULT_RUN_DIR) -> MininetNetwork:
        """Start our daemons on the stations ``roles`` names of a Mininet-WiFi network a
        script built itself (``configureNodes()`` and ``build()`` done). Positions and
        mobility stay Mininet-WiFi's; :meth:`stop` stops only what this started."""
        specs = []
        for name, role in roles.items():
            node = mn.nameToNode[name]
            pos = getattr(node, "position", None) or (0.0, 0.0)
            specs.append(StationSpec(name, role, (float(pos[0]), float(pos[1])),
                                     float(node.wintfs[0].range) or 100.0))
        from mn_wifi.propagationModels import PropagationModel

        # The script's propagation model, for links()' signal levels.
        net = cls(specs, run_dir=run_dir,
                  pathloss=PathLoss(exponent=float(PropagationModel.exp)))
        net.mn, net._adopted, net._started = mn, True, True
        try:
            prepare_environment()
            net.run_dir.mkdir(parents=True, exist_ok=True)
            net.wmediumd_pid = _wmediumd_pid()
            hwsim.warm_up_crypto()
            for spec in specs:
                net.models[spec.name] = mobility.Static(spec.position)
                station = MininetStation(spec, mn.nameToNode[spec.name], net.run_dir)
                net.stations[spec.name] = station
                station.start(timeout)
            net._supervisor = threading.Thread(target=net._supervise, name="mininet",
                                               daemon=True)
            net._supervisor.start()
        except Exception as exc:
            net.stop()
            raise EmulationError(f"cannot start the daemons in Mininet-WiFi: {exc}") from exc
        return net

    def __enter__(self) -> MininetNetwork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle --

    def start(self, timeout: float = 120.0) -> None:
        """Build the Mininet-WiFi network, then our daemons in each station; raise
        EmulationError (after cleaning up) if anything fails."""
        if os.geteuid() != 0:
            raise EmulationError("the emulation needs root (namespaces, kernel modules)")
        if not hwsim.kernel_has_hwsim():  # also keeps mn_wifi's teardown off such hosts
            raise EmulationError("this kernel has no mac80211_hwsim: run it in the VM "
                                 "(python -m emulation.run does that by itself)")
        t0 = time.monotonic()
        self._started = True
        ticker = threading.Thread(target=self._tick, args=(t0,), name="mininet-progress",
                                  daemon=True)
        self._step = "importing mn_wifi (36-114 s under TCG)"
        ticker.start()
        try:
            prepare_environment()
            self.timings["import_s"] = round(import_mn_wifi(), 3)
            self._build(timeout)
            self.timings["mininet_ready_s"] = round(time.monotonic() - t0, 3)
            # One after the other here: the parallel start (hwsim backend) has not been run
            # on Mininet-WiFi nodes yet, whose shells are driven by mn_wifi.
            for i, station in enumerate(self.stations.values()):
                self._step = f"station {i + 1}/{len(self.stations)}: {station.name}"
                station.start(timeout)
            self._push_positions(0.0, force=True)  # wmediumd: see the module docstring
            self.timings["stations_ready_s"] = round(time.monotonic() - t0, 3)
            self._t0 = time.monotonic()
            self._supervisor = threading.Thread(target=self._supervise, name="mininet",
                                                daemon=True)
            self._supervisor.start()
        except Exception as exc:
            self.stop()
            if isinstance(exc, EmulationError):
                raise
            raise EmulationError(f"cannot start the Mininet-WiFi emulation: {exc}") from exc
        finally:
            self._step = None
            self._started_event.set()
            ticker.join(5)

    def _tick(self, t0: float) -> None:
        """A progress line every 10 s while :meth:`start` runs: which step it is on."""
        while not self._started_event.wait(10.0):
            step = self._step
            if step is not None and self.progress is not None:
                station = next((st for st in self.stations.values()
                                if step.endswith(f": {st.name}")), None)
                inner = getattr(station, "step", None) if station is not None else None
                self.progress(f"  ... {time.monotonic() - t0:.0f} s, Mininet-WiFi: {step}"
                              + (f" ({inner})" if inner else ""))

    def startup_breakdown(self) -> dict[str, dict[str, float]]:
        """Each station's start-up phases in seconds (our daemons in its node)."""
        return {name: dict(st.timings) for name, st in self.stations.items()}

    def _build(self, timeout: float) -> None:
        from mininet.log import setLogLevel
        from mn_wifi.link import wmediumd
        from mn_wifi.net import Mininet_wifi
        from mn_wifi.wmediumdConnector import interference

        setLogLevel(self.log_level)
        cleanup_stale(self.run_dir)  # ours: pid files, fpw-* namespaces, the hwsim module
        remove_stale_socket()
        patch_wmediumd_connect(timeout)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        self.mn = Mininet_wifi(link=wmediumd, wmediumd_mode=interference)
        nodes = {}
        for spec in self.specs:
            x, y = spec.position
            params: dict[str, Any] = {
                "position": f"{x},{y},0", "range": spec.range,
                "antennaGain": spec.extra.get("antenna_gain", DEFAULT_ANTENNA_GAIN)}
            cls = self.station_class
            if cls is not None:
                params["cls"] = cls
            nodes[spec.name] = self.mn.addStation(spec.name, **params)
            self.models[spec.name] = mobility.make_model(
                spec.mobility, spec.position, self.area, seed=self._seed_for(spec.name))
        self.mn.setPropagationModel(model="logDistance", exp=self.pathloss.exponent)
        self._step = f"configureNodes() for {len(self.specs)} stations (~6 s each under TCG)"
        self.mn.configureNodes()
        self.timings["configure_s"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        self._step = "build() and wmediumd"
        self.mn.build()
        self.timings["build_s"] = round(time.monotonic() - t, 3)
        self.wmediumd_pid = _wmediumd_pid()
        if self.wmediumd_pid is None:
            raise EmulationError(f"wmediumd is not running: {_wmediumd_log()}")
        hwsim.warm_up_crypto()
        for spec in self.specs:
            self.stations[spec.name] = MininetStation(spec, nodes[spec.name], self.run_dir)

    def _seed_for(self, name: str) -> int:
        return (self.seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(name))) % 2**32

    def _push_positions(self, t: float, force: bool = False) -> None:
        for name, station in self.stations.items():
            x, y = self.models[name].position(t)
            if force or (x, y) != station.position:
                set_position(station.node, x, y)

    def _supervise(self) -> None:
        while not self._stopping.wait(self.tick):
            pid = self.wmediumd_pid
            if pid is not None and not Path(f"/proc/{pid}").exists():
                self._fail(MediumDied(
                    f"wmediumd (pid {pid}) exited; stopping the emulation rather than letting "
                    f"mac80211_hwsim fall back to its perfect medium -- log: {_wmediumd_log()}"))
                return
            if any(m.dynamic for m in self.models.values()):
                try:
                    with self._lock:
                        self._push_positions(self.now())
                except Exception as exc:  # mn_wifi raises anything from a dead socket
                    if not self._stopping.is_set():
                        self._fail(MediumDied(f"wmediumd stopped answering: {exc}"))
                    return

    def _fail(self, error: EmulationError) -> None:
        self.error = error
        print(f"emulation: FATAL: {error}", file=sys.stderr, flush=True)
        self._stop_everything()
        self.failed.set()
        if self.on_fatal is not None:
            self.on_fatal(error)

    def stop(self) -> None:
        """Stop our daemons, then Mininet-WiFi (inside the VM only); idempotent."""
        self._stop_everything()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=10)

    def _stop_everything(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping.set()
            t = time.monotonic()
            for station in reversed(list(self.stations.values())):
                with contextlib.suppress(Exception):
                    station.stop()
            if self.mn is not None and not self._adopted:
                mn, self.mn = self.mn, None
                with contextlib.suppress(Exception):
                    mn.stop()
            if not self._adopted:
                cleanup_stale(self.run_dir)
            self.timings["stop_s"] = round(time.monotonic() - t, 3)

    # -- queries and changes (as emulation.network.Network) --

    @property
    def running(self) -> bool:
        """True between a successful start and stop/failure."""
        return self._started and not self.failed.is_set()

    def now(self) -> float:
        """Seconds since the stations' clock started (mobility time); 0 while held."""
        return 0.0 if self._held else time.monotonic() - self._t0

    def hold_clock(self) -> None:
        """Keep every station at its start position until :meth:`restart_clock`."""
        with self._lock:
            self._held = True
            if self.stations and not self._adopted:
                self._push_positions(0.0)

    def restart_clock(self) -> None:
        """Start mobility and timeline time (again) from 0 now."""
        with self._lock:
            self._t0 = time.monotonic()
            self._held = False

    def station(self, name: str) -> MininetStation:
        """Return the station called ``name``; raise KeyError with the known names."""
        try:
            return self.stations[name]
        except KeyError:
            raise KeyError(f"no station {name!r} (stations: {', '.join(self.stations)})") \
                from None

    def move(self, name: str, position: tuple[float, float]) -> None:
        """Put a station at ``position`` and keep it there (its mobility model ends)."""
        if self.failed.is_set():
            raise EmulationError(f"the emulation has stopped: {self.error}")
        station = self.station(name)
        x, y = float(position[0]), float(position[1])
        with self._lock:
            self.models[name] = mobility.Static((x, y))
            set_position(station.node, x, y)

    def set_model(self, name: str, model: mobility.Model) -> None:
        """Give a station a new mobility model (positions follow from now on)."""
        self.station(name)
        with self._lock:
            self.models[name] = model

    def positions(self) -> dict[str, tuple[float, float]]:
        """Return every station's current position."""
        return {n: s.position for n, s in self.stations.items()}

    def signal_dbm(self, sender: str, receiver: str) -> int:
        """wmediumd's log-distance level at ``receiver`` for frames from ``sender``."""
        a, b = self.station(sender), self.station(receiver)
        ta, tb = a.node.wintfs[0], b.node.wintfs[0]
        d = max(math.dist(a.position, b.position), 0.1)
        ref_loss = 20 * math.log10(4 * math.pi * float(ta.freq) * 1e9 / 299792458.0)
        loss = int(ref_loss) + int(10 * self.pathloss.exponent * math.log10(d))
        return int(ta.txpower + ta.antennaGain + tb.antennaGain - loss)

    def links(self) -> list[dict[str, Any]]:
        """Distance, signal and reachability (Mininet-WiFi's effective ranges) per pair."""
        out = []
        for a in self.stations.values():
            reach = float(a.node.wintfs[0].range)
            for b in self.stations.values():
                if a is not b:
                    d = math.dist(a.position, b.position)
                    out.append({"from": a.name, "to": b.name, "distance": round(d, 2),
                                "signal": self.signal_dbm(a.name, b.name),
                                "in_range": d <= reach, "range": round(reach, 2)})
        return out

    def medium_stats(self) -> dict[str, int]:
        """wmediumd keeps its counters to itself: none here."""
        return {}

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the running emulation (for reports and tools)."""
        return {
            "backend": self.backend,
            "run_dir": str(self.run_dir),
            "stations": {
                n: {"role": s.spec.role, "position": list(s.position), "range": s.spec.range,
                    "effective_range": round(float(s.node.wintfs[0].range), 2),
                    "txpower_dbm": int(s.node.wintfs[0].txpower), "netns": s.netns,
                    "iface": s.iface, "phy": s.radio.phy, "pid": s.node.pid,
                    "p2p_device_address": s.p2p_device_address, "bus_address": s.bus_address,
                    "outside_bus_address": s.outside_bus_address}
                for n, s in self.stations.items()},
            "timings": self.timings,
        }

    def write_state(self) -> Path:
        """Write describe() to ``<run_dir>/network.json`` (read by emulation.shell)."""
        path = self.run_dir / "network.json"
        path.write_text(json.dumps(self.describe(), indent=2))
        return path

