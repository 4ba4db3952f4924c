"""Mininet-WiFi backend: its stations, positions, ranges and wmediumd; our daemons.

Mininet-WiFi builds the stations (each a process in its own network namespace with a
hwsim radio), places them, applies ranges and runs wmediumd with a log-distance
propagation model. On each of its stations we start the same per-station dbus-daemon
and wpa_supplicant as the hwsim backend (:class:`emulation.station.Station`), entering
the station's namespace through its process (``mnexec -a PID``) instead of
``ip netns exec``. Everything Mininet-WiFi does stays Mininet-WiFi's: this module is a
thin adapter. ``mn_wifi`` is imported only when this backend is started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emulation import hwsim
from emulation.medium import PathLoss
from emulation.mobility import Area
from emulation.network import DEFAULT_RUN_DIR, EmulationError
from emulation.station import Station, StationSpec


class MininetStation(Station):
    """A Station whose namespace belongs to a Mininet-WiFi node."""

    def __init__(self, spec: StationSpec, node: Any, run_dir: Path) -> None:
        intf = node.wintfs[0]
        radio = hwsim.Radio(phy=str(getattr(intf, "phy", "")),
                            addresses=(intf.mac, intf.mac))
        super().__init__(spec, radio, run_dir)
        self.node = node
        self.iface = intf.name
        self.netns = f"mininet:{spec.name}"

    def wrap(self, argv: list[str]) -> list[str]:
        return ["mnexec", "-a", str(self.node.pid), *argv]

    def start(self, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ctrl_dir.mkdir(exist_ok=True)
        (self.dir / "pids").write_text("")
        self._start_dbus(timeout)
        self._start_wpa(timeout)
        self.started_at = time.monotonic()
        (self.dir / "startup_seconds").write_text(f"{self.started_at - t0:.3f}\n")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=5)


class MininetNetwork:
    """The same running interface as emulation.network.Network, on Mininet-WiFi."""

    backend = "mininet"

    def __init__(self, specs: Iterable[StationSpec], *, area: Area | None = None,
                 seed: int = 0, pathloss: PathLoss | None = None,
                 run_dir: Path = DEFAULT_RUN_DIR, **_: Any) -> None:
        self.specs = list(specs)
        self.area = area or Area(0, 0, 1000, 1000)
        self.seed = seed
        self.pathloss = pathloss or PathLoss()
        self.run_dir = run_dir
        self.stations: dict[str, MininetStation] = {}
        self.mn: Any = None
        self.failed = threading.Event()
        self.error: EmulationError | None = None
        self.timings: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._held = False

    def __enter__(self) -> MininetNetwork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        """Build the Mininet-WiFi network, then our daemons in each station."""
        from mn_wifi.link import wmediumd
        from mn_wifi.net import Mininet_wifi
        from mn_wifi.wmediumdConnector import interference

        t0 = time.monotonic()
        self.mn = Mininet_wifi(link=wmediumd, wmediumd_mode=interference)
        nodes = {}
        for spec in self.specs:
            x, y = spec.position
            nodes[spec.name] = self.mn.addStation(spec.name, position=f"{x},{y},0",
                                                  range=spec.range)
        self.mn.setPropagationModel(model="logDistance", exp=self.pathloss.exponent)
        self.mn.configureNodes()
        self.mn.build()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            for spec in self.specs:
                station = MininetStation(spec, nodes[spec.name], self.run_dir)
                self.stations[spec.name] = station
                station.start(timeout)
        except Exception as exc:
            self.stop()
            raise EmulationError(f"cannot start the Mininet-WiFi emulation: {exc}") from exc
        self._t0 = time.monotonic()
        self.timings["stations_ready_s"] = self._t0 - t0

    def stop(self) -> None:
        """Stop our daemons, then Mininet-WiFi."""
        for station in reversed(list(self.stations.values())):
            station.stop()
        if self.mn is not None:
            self.mn.stop()
            self.mn = None

    def now(self) -> float:
        return 0.0 if self._held else time.monotonic() - self._t0

    def hold_clock(self) -> None:
        """Mobility time stays at 0 until :meth:`restart_clock` (as the hwsim Network)."""
        self._held = True

    def restart_clock(self) -> None:
        self._t0 = time.monotonic()
        self._held = False

    def station(self, name: str) -> MininetStation:
        try:
            return self.stations[name]
        except KeyError:
            raise KeyError(f"no station {name!r}") from None

    def move(self, name: str, position: tuple[float, float]) -> None:
        station = self.station(name)
        station.node.setPosition(f"{position[0]},{position[1]},0")
        station.position = (float(position[0]), float(position[1]))

    def positions(self) -> dict[str, tuple[float, float]]:
        return {n: s.position for n, s in self.stations.items()}

    def links(self) -> list[dict[str, Any]]:
        out = []
        for a in self.stations.values():
            for b in self.stations.values():
                if a is not b:
                    d = ((a.position[0] - b.position[0]) ** 2
                         + (a.position[1] - b.position[1]) ** 2) ** 0.5
                    out.append({"from": a.name, "to": b.name, "distance": round(d, 2),
                                "signal": self.pathloss.signal_dbm(d),
                                "in_range": d <= a.spec.range})
        return out

    def medium_stats(self) -> dict[str, int]:
        return {}  # wmediumd keeps its own counters

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "run_dir": str(self.run_dir),
                "stations": {n: {"role": s.spec.role, "position": list(s.position),
                                 "range": s.spec.range, "iface": s.iface,
                                 "pid": s.node.pid, "bus_address": s.bus_address,
                                 "outside_bus_address": s.outside_bus_address}
                             for n, s in self.stations.items()},
                "timings": self.timings}

    def write_state(self) -> Path:
        import json

        path = self.run_dir / "network.json"
        path.write_text(json.dumps(self.describe(), indent=2))
        return path
