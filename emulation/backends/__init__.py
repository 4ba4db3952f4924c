"""Backends: who provides the stations. One registry maps names to classes.

* ``hwsim`` -- :class:`emulation.network.Network`: our own radios, namespaces and medium.
* ``mininet`` -- :class:`emulation.backends.mininet.MininetNetwork`: stations, positions,
  ranges and wmediumd from Mininet-WiFi, with our per-station dbus-daemon and
  wpa_supplicant. Imported lazily: Mininet-WiFi cannot be installed on these machines.
* ``auto`` -- ``mininet`` where ``mn_wifi`` imports and the kernel has hwsim, else
  ``hwsim``.

Both classes take ``(specs, *, area, seed, pathloss, ...)`` and offer the same running
interface (start/stop, stations, move, positions, links, medium_stats, describe,
failed/error), which is all the CLI and the run use.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from emulation import hwsim

NAMES = ("auto", "hwsim", "mininet")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def mininet_available() -> tuple[bool, str]:
    """(True, "") if the Mininet-WiFi backend can run here, else (False, reason)."""
    if importlib.util.find_spec("mn_wifi") is None:
        return False, ("Mininet-WiFi (python module mn_wifi) is not installed; it is only "
                       "on GitHub and cannot be installed on these machines")
    if not hwsim.kernel_has_hwsim():
        return False, "this kernel has no mac80211_hwsim"
    return True, ""


def choose(name: str = "auto") -> str:
    """Resolve a backend name ('auto' included) to 'hwsim' or 'mininet'."""
    if name not in NAMES:
        raise BackendUnavailable(f"unknown backend {name!r} (known: {', '.join(NAMES)})")
    if name == "auto":
        return "mininet" if mininet_available()[0] else "hwsim"
    if name == "mininet":
        ok, why = mininet_available()
        if not ok:
            raise BackendUnavailable(f"the mininet backend cannot run: {why}")
    return name


def backend_class(name: str = "auto") -> Any:
    """Return the network class for a backend name (imported only when chosen)."""
    resolved = choose(name)
    if resolved == "mininet":
        from emulation.backends.mininet import MininetNetwork

        return MininetNetwork
    from emulation.network import Network

    return Network
