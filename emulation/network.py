"""The running emulation (hwsim backend): radios, medium, stations, mobility, teardown.

:class:`Network` builds in this order and stops in reverse:

1. :func:`cleanup_stale` -- whatever a crashed earlier run left (daemons listed in pid
   files, ``fpw-*`` namespaces, the medium, the hwsim module) is removed first;
2. ``modprobe mac80211_hwsim radios=N``;
3. the medium process (:mod:`emulation.medium`), registered *before* any radio is up,
   so no frame ever crosses hwsim's built-in perfect medium; it is told every radio's
   addresses, position and range;
4. the stations (:mod:`emulation.station`), all at once: each waits on its own processes
   (namespace, dbus-daemon, wpa_supplicant), so they start in parallel threads; while
   they do, a line every 10 s says which station waits on what;
5. a supervisor thread: it watches the medium and, if the medium dies, stops the whole
   emulation and records :class:`MediumDied` (hwsim would otherwise silently fall back to
   its perfect medium); it also advances mobility models and sends new positions.

Everything lives under ``run_dir`` (default ``/run/fastpay-emu``). Use it as a context
manager, or call :meth:`start` and :meth:`stop` (idempotent).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from emulation import hwsim, mobility
from emulation.medium import MediumClient, PathLoss
from emulation.station import NETNS_PREFIX, Station, StationSpec

DEFAULT_RUN_DIR = Path("/run/fastpay-emu")


class EmulationError(RuntimeError):
    """The emulation cannot start or cannot go on."""


class MediumDied(EmulationError):
    """The medium process exited while the emulation ran."""


def cleanup_stale(run_dir: Path = DEFAULT_RUN_DIR) -> list[str]:
    """Remove what an earlier (crashed) run left behind; return what was removed."""
    removed = []
    if run_dir.exists():
        for pidfile in run_dir.glob("**/pids"):
            for line in pidfile.read_text().splitlines():
                pid_text, _, label = line.partition(" ")
                if _kill_if(int(pid_text), label):
                    removed.append(f"{label} {pid_text}")
        medium_pid = run_dir / "medium.pid"
        if medium_pid.exists():
            pid = int(medium_pid.read_text().split()[0])
            if _kill_if(pid, "emulation.medium"):
                removed.append(f"medium {pid}")
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NETNS_PREFIX):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            removed.append(f"netns {name}")
    if hwsim.module_loaded():
        hwsim.unload_module()
        removed.append("mac80211_hwsim")
    if run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    return removed


def _kill_if(pid: int, label: str) -> bool:
    """Kill ``pid`` if it still runs the program ``label`` names (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if label.split()[0] not in cmdline:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def grouped(waiting: dict[str, str]) -> str:
    """``{name: what it waits on}`` as ``what: a, b; other: c`` (a progress line)."""
    by_step: dict[str, list[str]] = {}
    for name, step in waiting.items():
        by_step.setdefault(step, []).append(name)
    return "; ".join(f"{step}: {', '.join(names)}" for step, names in by_step.items())


def start_stations(stations: list[Station], timeout: float,
                   progress: Callable[[str], None] | None = None) -> None:
    """Start every station in its own thread (each waits only on its own processes);
    raise the first failure, naming the station. ``progress`` gets a line every 10 s
    saying which station waits on what."""
    errors: dict[str, BaseException] = {}

    def start(station: Station) -> None:
        try:
            station.start(timeout)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller
            errors[station.name] = exc

    threads = [threading.Thread(target=start, args=(st,), name=f"start-{st.name}",
                                daemon=True) for st in stations]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(10.0)
            if thread.is_alive() and progress is not None:
                waiting = {st.name: st.step for st in stations
                           if st.started_at is None and st.name not in errors}
                progress(f"  ... {time.monotonic() - t0:.0f} s, "
                         f"{len(stations) - len(waiting)}/{len(stations)} stations up; "
                         f"waiting on {grouped(waiting)}")
    for name, exc in errors.items():
        if isinstance(exc, EmulationError):
            raise exc
        raise EmulationError(f"station {name}: {exc}") from exc


class Network:
    """A running set of stations on hwsim radios with our medium between them."""

    backend = "hwsim"
    # Where start-up progress goes (a line every 10 s while stations start); None: quiet.
    progress: Callable[[str], None] | None = None

    def __init__(
        self,
        specs: Iterable[StationSpec],
        *,
        area: mobility.Area | None = None,
        seed: int = 0,
        pathloss: PathLoss | None = None,
        run_dir: Path = DEFAULT_RUN_DIR,
        tick: float = 0.25,
        on_fatal: Callable[[EmulationError], None] | None = None,
    ) -> None:
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
        self.stations: dict[str, Station] = {}
        self.models: dict[str, mobility.Model] = {}
        self.medium_proc: subprocess.Popen[bytes] | None = None
        self.medium: MediumClient | None = None
        self.error: EmulationError | None = None
        self.failed = threading.Event()
        self.timings: dict[str, float] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._t0 = 0.0
        self._held = False  # hold_clock(): mobility time stays at 0 until restart_clock()
        self._started = False

    # -- lifecycle --

    def __enter__(self) -> Network:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        """Build everything; raise EmulationError (after cleaning up) if anything fails."""
        if os.geteuid() != 0:
            raise EmulationError("the emulation needs root (namespaces, kernel modules)")
        if not hwsim.kernel_has_hwsim():
            raise EmulationError("this kernel has no mac80211_hwsim: run it in the VM "
                                 "(python -m emulation.run does that by itself)")
        t0 = time.monotonic()
        self._started = True
        try:
            cleanup_stale(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            hwsim.load_module(len(self.specs))
            hwsim.warm_up_crypto()
            radios = hwsim.list_radios()
            if len(radios) < len(self.specs):
                raise EmulationError(f"asked hwsim for {len(self.specs)} radios, got "
                                     f"{len(radios)}")
            self._start_medium(timeout)
            for spec, radio in zip(self.specs, radios, strict=False):
                self.stations[spec.name] = Station(spec, radio, self.run_dir)
                self.models[spec.name] = mobility.make_model(
                    spec.mobility, spec.position, self.area, seed=self._seed_for(spec.name))
            self._t0 = time.monotonic()
            self._push_positions(0.0)
            self.timings["medium_ready_s"] = time.monotonic() - t0
            self._start_stations(timeout)
            self.timings["stations_ready_s"] = time.monotonic() - t0
            # Mobility time (and scenario timelines) start once every station is up.
            self._t0 = time.monotonic()
            self._push_positions(0.0)
            self._supervisor = threading.Thread(target=self._supervise, name="emulation",
                                                daemon=True)
            self._supervisor.start()
        except Exception as exc:
            self.stop()
            if isinstance(exc, EmulationError):
                raise
            raise EmulationError(f"cannot start the emulation: {exc}") from exc

    def _start_stations(self, timeout: float) -> None:
        start_stations(list(self.stations.values()), timeout, self.progress)

    def startup_breakdown(self) -> dict[str, dict[str, float]]:
        """Each station's start-up phases in seconds (see :class:`Station`)."""
        return {name: dict(st.timings) for name, st in self.stations.items()}

    def _seed_for(self, name: str) -> int:
        # Each station its own reproducible stream, independent of the others' order.
        return (self.seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(name))) % 2**32

    def _start_medium(self, timeout: float) -> None:
        control = self.run_dir / "medium.sock"
        log = open(self.run_dir / "medium.log", "wb")  # noqa: SIM115 - owned by the process
        self.medium_proc = subprocess.Popen(
            [sys.executable, "-m", "emulation.medium", "--control", str(control),
             "--exponent", str(self.pathloss.exponent),
             "--tx-power", str(self.pathloss.tx_power_dbm)],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent))
        log.close()
        (self.run_dir / "medium.pid").write_text(f"{self.medium_proc.pid} emulation.medium\n")
        assert self.medium_proc.stdout is not None
        line = self.medium_proc.stdout.readline().decode().strip()
        if line != "READY":
            self.medium_proc.wait(timeout=10)
            raise EmulationError("the medium did not start: "
                                 + (self.run_dir / "medium.log").read_text()[-800:])
        # A medium busy forwarding frames on a loaded TCG guest can take many seconds to
        # answer a position update; it is dead only when its process is (checked above).
        self.medium = MediumClient(str(control), timeout=60.0)

    def _push_positions(self, t: float) -> None:
        radios = []
        for name, station in self.stations.items():
            station.position = self.models[name].position(t)
            radios.append({"addr": station.radio.hwsim_addr, "name": name,
                           "pos": list(station.position), "range": station.spec.range,
                           "addresses": list(station.radio.addresses)})
        assert self.medium is not None
        self.medium.request("update", radios=radios)

    def _supervise(self) -> None:
        while not self._stopping.wait(self.tick):
            proc = self.medium_proc
            if proc is not None and proc.poll() is not None:
                tail = (self.run_dir / "medium.log").read_text(errors="replace")[-400:] \
                    if (self.run_dir / "medium.log").exists() else ""
                self._fail(MediumDied(
                    f"the medium (pid {proc.pid}) exited with status {proc.returncode}; "
                    "stopping the emulation rather than letting mac80211_hwsim fall back to "
                    "its perfect medium" + (f" -- medium log: {tail.strip()}" if tail else "")))
                return
            if any(m.dynamic for m in self.models.values()):
                try:
                    with self._lock:
                        self._push_positions(self.now())
                except (OSError, RuntimeError) as exc:
                    if not self._stopping.is_set():
                        self._fail(MediumDied(f"the medium stopped answering: {exc}"))
                    return

    def _fail(self, error: EmulationError) -> None:
        self.error = error
        print(f"emulation: FATAL: {error}", file=sys.stderr, flush=True)
        # stop() from this thread: it must not join itself.
        self._stop_everything()
        self.failed.set()
        if self.on_fatal is not None:
            self.on_fatal(error)

    def stop(self) -> None:
        """Stop everything in reverse order; safe to call twice or after a failure."""
        self._stop_everything()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=10)

    def _stop_everything(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping.set()
            for station in reversed(list(self.stations.values())):
                with contextlib.suppress(Exception):
                    station.stop()
            if self.medium is not None:
                self.medium.close()
            if self.medium_proc is not None and self.medium_proc.poll() is None:
                self.medium_proc.terminate()
                try:
                    self.medium_proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.medium_proc.kill()
                    self.medium_proc.wait()
            cleanup_stale(self.run_dir)

    # -- queries and changes --

    def now(self) -> float:
        """Seconds since the stations' clock started (mobility time); 0 while held."""
        return 0.0 if self._held else time.monotonic() - self._t0

    def hold_clock(self) -> None:
        """Keep every station at its start position (mobility time 0) until
        :meth:`restart_clock` -- while a layer above starts its daemons, say."""
        with self._lock:
            self._held = True
            if self.medium is not None:
                self._push_positions(0.0)

    def restart_clock(self) -> None:
        """Start mobility and timeline time (again) from 0 now."""
        with self._lock:
            self._t0 = time.monotonic()
            self._held = False

    @property
    def running(self) -> bool:
        """True between a successful start and stop/failure."""
        return self._started and not self.failed.is_set()

    def station(self, name: str) -> Station:
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
            station.position = (x, y)
            assert self.medium is not None
            self.medium.request("move", name=name, pos=[x, y])

    def set_model(self, name: str, model: mobility.Model) -> None:
        """Give a station a new mobility model (positions follow from now on)."""
        self.station(name)
        with self._lock:
            self.models[name] = model

    def positions(self) -> dict[str, tuple[float, float]]:
        """Return every station's current position."""
        return {name: s.position for name, s in self.stations.items()}

    def links(self) -> list[dict[str, Any]]:
        """The medium's view: distance, signal and reachability for every ordered pair."""
        assert self.medium is not None
        with self._lock:
            return list(self.medium.request("links")["links"])

    def medium_stats(self) -> dict[str, int]:
        """The medium's frame counters."""
        assert self.medium is not None
        with self._lock:
            return dict(self.medium.request("stats")["stats"])

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the running emulation (for reports and tools)."""
        return {
            "backend": self.backend,
            "run_dir": str(self.run_dir),
            "stations": {
                name: {"role": s.spec.role, "position": list(s.position), "range": s.spec.range,
                       "netns": s.netns, "iface": s.iface, "phy": s.radio.phy,
                       "p2p_device_address": s.p2p_device_address,
                       "bus_address": s.bus_address,
                       "outside_bus_address": s.outside_bus_address}
                for name, s in self.stations.items()
            },
            "timings": self.timings,
        }

    def write_state(self) -> Path:
        """Write describe() to ``<run_dir>/network.json`` (read by emulation.shell)."""
        path = self.run_dir / "network.json"
        path.write_text(json.dumps(self.describe(), indent=2))
        return path
