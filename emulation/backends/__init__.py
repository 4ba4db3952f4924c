"""Backends: who provides the stations. One registry maps names to classes.

* ``hwsim`` -- :class:`emulation.network.Network`: our own radios, namespaces and medium.
* ``mininet`` -- :class:`emulation.backends.mininet.MininetNetwork`: stations, positions,
  ranges and wmediumd from Mininet-WiFi, with our per-station dbus-daemon and
  wpa_supplicant. Installed by ``scripts/setup.sh`` from ``../shared/third_party``;
  imported lazily (``mn_wifi`` takes 38-55 s to import under TCG).
* ``auto`` -- ``mininet`` where it is installed (``mn_wifi`` and its tools) and the kernel
  has hwsim, else ``hwsim``.

Both classes take ``(specs, *, area, seed, pathloss, ...)`` and offer the same running
interface (start/stop, stations, move, positions, links, medium_stats, describe,
failed/error), which is all the CLI and the run use.
"""

from __future__ import annotations

import importlib.util
import shutil
from typing import Any

from emulation import hwsim

NAMES = ("auto", "hwsim", "mininet")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def mininet_installed() -> tuple[bool, str]:
    """(True, "") if Mininet-WiFi and its tools are installed, else (False, reason)."""
    from emulation.vm import TOOLS_DIR

    if importlib.util.find_spec("mn_wifi") is None:
        return False, ("Mininet-WiFi (python module mn_wifi) is not installed: run "
                       "scripts/setup.sh (it installs it from ../shared/third_party)")
    missing = [t for t in ("mnexec", "wmediumd", "hwsim_mgmt")
               if not (TOOLS_DIR / t).exists() and shutil.which(t) is None]
    if missing:
        return False, (f"Mininet-WiFi's tools {', '.join(missing)} are not built: run "
                       "scripts/setup.sh")
    return True, ""


def mininet_available() -> tuple[bool, str]:
    """(True, "") if the Mininet-WiFi backend can run here, else (False, reason)."""
    ok, why = mininet_installed()
    if not ok:
        return ok, why
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
