"""``python -m emulation.shell STATION [COMMAND ...]``: enter a running station.

It reads the running emulation's description (``/run/fastpay-emu/network.json``,
written by ``emulation.run``) and replaces itself with a shell -- or COMMAND -- inside
the station's network namespace, with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at the
station's own bus, so ``fastpayd --role authority ...`` or ``wpa_cli`` work there by
hand. It must run in the same kernel as the emulation. On a host without
mac80211_hwsim, ``python -m emulation.run`` runs the emulation inside a QEMU VM that has
no network and no second console, so nothing on the host can enter a station: type
``shell STATION`` (or ``STATION COMMAND``) at the ``emulation>`` prompt in the terminal
that started the run; ``exit`` in that shell comes back to the prompt.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from emulation import hwsim
from emulation.network import DEFAULT_RUN_DIR


def main(argv: list[str] | None = None) -> int:
    """Exec into the station; return an exit status only on errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    name, command = args[0], args[1:]
    state_file = Path(os.environ.get("FASTPAY_EMU_RUN_DIR", DEFAULT_RUN_DIR)) / "network.json"
    try:
        state = json.loads(state_file.read_text())
    except OSError:
        if not hwsim.kernel_has_hwsim():
            print("emulation.shell: this kernel has no mac80211_hwsim, so the emulation "
                  "runs inside the QEMU VM, which this host cannot enter. At the "
                  "'emulation>' prompt of the terminal that ran 'python -m emulation.run', "
                  f"type 'shell {name}' (or '{name} COMMAND').", file=sys.stderr)
        else:
            print(f"emulation.shell: no running emulation here ({state_file} is missing)."
                  " Start one with 'sudo python -m emulation.run'.", file=sys.stderr)
        return 1
    stations = state.get("stations", {})
    if name not in stations:
        print(f"emulation.shell: no station {name!r} (stations: {', '.join(stations)})",
              file=sys.stderr)
        return 1
    info = stations[name]
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=info["bus_address"], FASTPAY_STATION=name,
               FASTPAY_IFACE=info["iface"], PS1=f"{name}# ")
    if "netns" in info and not info["netns"].startswith("mininet:"):
        enter = ["ip", "netns", "exec", info["netns"]]
    else:
        enter = ["mnexec", "-a", str(info["pid"])]
    argv_exec = enter + (command or [os.environ.get("SHELL", "/bin/sh"), "-i"])
    os.execvpe(argv_exec[0], argv_exec, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
