"""What the emulation needs from the machine, and installing what is missing.

``python -m emulation.requirements`` lists what is missing (exit 1 if anything);
``--install`` installs it (Debian packages with apt-get, Python packages with the running
interpreter's pip) and checks again. ``python -m emulation.run`` checks the same list
before it starts and says exactly what to install.

The VM shares the host's root filesystem, so every tool used inside the guest must be
installed on the host too.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Need:
    """One requirement: how to detect it and which package provides it."""

    what: str
    package: str
    kind: str  # "debian" or "pypi"
    vm_only: bool = False  # only needed to boot the VM (hosts without hwsim)


def _have_command(name: str) -> bool:
    return shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                    "/sbin:/bin") is not None


def _have_wlan_kernel() -> bool:
    for dep in Path("/lib/modules").glob("*/modules.dep"):
        if "mac80211_hwsim" in dep.read_text(errors="replace"):
            return True
    return False


NEEDS = (
    Need("wpa_supplicant", "wpasupplicant", "debian"),
    Need("wpa_cli", "wpasupplicant", "debian"),
    Need("iw", "iw", "debian"),
    Need("dbus-daemon", "dbus", "debian"),
    Need("dbus-send", "dbus", "debian"),
    Need("modprobe", "kmod", "debian"),
    Need("busybox", "busybox-static", "debian"),
    Need("ip", "iproute2", "debian"),
    Need("qemu-system-x86_64", "qemu-system-x86", "debian", vm_only=True),
    Need("udevadm", "udev", "debian", vm_only=True),
    Need("file", "file", "debian", vm_only=True),
    Need("kernel with mac80211_hwsim", "linux-image-amd64", "debian", vm_only=True),
    Need("dbus_fast", "dbus-fast", "pypi"),
    Need("rich", "rich", "pypi"),
    Need("virtme", "virtme-ng", "pypi", vm_only=True),
)


def missing(vm: bool = True) -> list[Need]:
    """Return the requirements not met (``vm``: include those only the VM needs)."""
    out = []
    for need in NEEDS:
        if need.vm_only and not vm:
            continue
        if need.kind == "pypi":
            ok = importlib.util.find_spec(need.what) is not None
        elif need.what.startswith("kernel"):
            ok = _have_wlan_kernel()
        else:
            ok = _have_command(need.what)
        if not ok:
            out.append(need)
    return out


def install_commands(needs: list[Need]) -> list[list[str]]:
    """The commands that install ``needs``."""
    debian = sorted({n.package for n in needs if n.kind == "debian"})
    pypi = sorted({n.package for n in needs if n.kind == "pypi"})
    commands = []
    if debian:
        commands.append(["apt-get", "install", "-y", "--no-install-recommends", *debian])
    if pypi:
        commands.append([sys.executable, "-m", "pip", "install", *pypi])
    return commands


def explain(needs: list[Need]) -> str:
    """A message saying what is missing and the exact commands to install it."""
    lines = ["missing: " + ", ".join(f"{n.what} ({n.package})" for n in needs),
             "install with:"]
    lines += ["  " + " ".join(cmd) for cmd in install_commands(needs)]
    lines.append("or run: sudo python -m emulation.requirements --install")
    return "\n".join(lines)


def install(needs: list[Need]) -> bool:
    """Install ``needs``; return True if every command succeeded."""
    ok = True
    if any(n.kind == "debian" for n in needs):
        ok = subprocess.run(["apt-get", "update"]).returncode == 0 and ok
    for cmd in install_commands(needs):
        print("+ " + " ".join(cmd), flush=True)
        ok = subprocess.run(cmd).returncode == 0 and ok
    return ok


def main(argv: list[str] | None = None) -> int:
    """List (and with --install, install) what is missing."""
    parser = argparse.ArgumentParser(prog="python -m emulation.requirements")
    parser.add_argument("--install", action="store_true", help="install what is missing")
    args = parser.parse_args(argv)
    needs = missing()
    if needs and args.install:
        install(needs)
        needs = missing()
    if needs:
        print(explain(needs), file=sys.stderr)
        return 1
    print("everything the emulation needs is installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
