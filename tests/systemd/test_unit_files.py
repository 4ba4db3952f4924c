"""``systemd-analyze verify`` and ``security`` on ``systemd/fastpayd@.service``.

``verify`` loads the unit exactly as PID 1 would (unknown keys, bad values,
missing executables are reported); ``security --offline=yes`` scores its
sandbox without a running manager. Both run on the shipped file; ``verify``
needs ExecStart's binary to exist, so it checks a copy whose ExecStart path
points at this checkout's fastpayd instead of the install path documented in
docs/deploy.md (which a separate test pins).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from sd_helpers import (
    DEPLOY_DOC,
    INSTALLED_FASTPAYD,
    SYSTEMD_DIR,
    UNIT,
    directive,
    require_tool,
    run,
)

from fastpayd.errors import RESTART_PREVENT

# The target: `systemd-analyze security` rates <= 2.0 as "OK".
SECURITY_TARGET = 2.0

OVERALL = re.compile(r"Overall exposure level for \S+: (\d+\.\d+) (\S+)")


def local_fastpayd() -> str:
    """An executable standing in for /opt/fastpayd/bin/fastpayd in ``verify``.

    The venv's ``fastpayd`` console script when the project is installed
    (scripts/setup.sh does it); otherwise the venv's Python, since ``verify``
    only checks that ExecStart names an executable file.
    """
    script = Path(sys.executable).parent / "fastpayd"
    return str(script) if script.exists() else sys.executable


def verify(systemd_analyze: str, *units: Path) -> None:
    """Run ``systemd-analyze verify`` and fail on any complaint about our units.

    ``verify`` exits 0 on some warnings (an unknown key is only "ignoring"), so
    the output is checked too. ``--recursive-errors=no`` keeps complaints about
    the host's own units (dbus.service, ...) out of our verdict.
    """
    argv = [systemd_analyze, "verify", "--man=no", "--recursive-errors=no", *map(str, units)]
    proc = run(argv)
    names = {u.name for u in units} | {u.stem.split("@")[0] for u in units}
    ours = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if any(n in line for n in names) or str(units[0].parent) in line
    ]
    assert proc.returncode == 0 and not ours, (
        f"systemd-analyze verify failed (rc={proc.returncode}):\n{proc.stdout}{proc.stderr}"
    )


def test_fastpayd_unit_verifies(systemd_analyze: str, tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert INSTALLED_FASTPAYD in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_FASTPAYD, local_fastpayd()))
    verify(systemd_analyze, copy)


def test_fastpayd_unit_verify_catches_a_bad_key(systemd_analyze: str, tmp_path: Path) -> None:
    """The check above is only worth something if it fails on a broken unit."""
    copy = tmp_path / UNIT.name
    broken = UNIT.read_text().replace(INSTALLED_FASTPAYD, local_fastpayd())
    copy.write_text(broken.replace("[Service]\n", "[Service]\nProtectSistem=strict\n", 1))
    with pytest.raises(AssertionError, match="Unknown key"):
        verify(systemd_analyze, copy)


def test_fastpayd_unit_runs_the_documented_install() -> None:
    (exec_start,) = directive(UNIT, "Service", "ExecStart")
    assert exec_start.split()[0] == INSTALLED_FASTPAYD
    assert "--config /etc/fastpayd/%i.toml" in exec_start
    doc = DEPLOY_DOC.read_text()
    # The guide creates the venv whose bin/ holds the unit's binary.
    assert "python3 -m venv /opt/fastpayd" in doc
    assert "systemctl enable --now fastpayd@" in doc


def test_fastpayd_unit_is_notify_with_state_and_runtime_dirs() -> None:
    def one(key: str) -> str:
        (value,) = directive(UNIT, "Service", key)
        return value

    assert one("Type") == "notify"
    assert one("User") == "fastpayd"
    assert one("StateDirectory") == "fastpayd/%i"
    assert one("RuntimeDirectory") == "fastpayd/%i"
    assert one("Restart") == "on-failure"
    # The start-up failures that fail the same way on every restart, from the one table.
    assert one("RestartPreventExitStatus").split() == [str(c) for c in RESTART_PREVENT]
    assert "wpa_supplicant.service" in directive(UNIT, "Unit", "Wants")[0].split()
    assert "wpa_supplicant.service" in directive(UNIT, "Unit", "After")[0].split()


def security_report(systemd_analyze: str, unit: Path) -> tuple[float, str, str]:
    """Score ``unit`` offline; return (exposure, verdict, the whole table)."""
    threshold = str(int(SECURITY_TARGET * 10))  # --threshold counts in tenths
    proc = run(
        [systemd_analyze, "security", "--offline=yes", f"--threshold={threshold}", str(unit)]
    )
    match = OVERALL.search(proc.stdout)
    assert match, f"no overall exposure in:\n{proc.stdout}{proc.stderr}"
    score = float(match.group(1))
    # --threshold makes systemd-analyze itself fail above the target; both must agree.
    assert (proc.returncode == 0) == (score <= SECURITY_TARGET), proc.stderr
    return score, match.group(2), proc.stdout


def test_fastpayd_unit_security_score(systemd_analyze: str) -> None:
    score, verdict, table = security_report(systemd_analyze, UNIT)
    print(f"systemd-analyze security --offline=yes {UNIT.name}: {score} {verdict}")
    assert score <= SECURITY_TARGET, table
    assert verdict == "OK"


def test_security_check_fails_an_unhardened_unit(systemd_analyze: str, tmp_path: Path) -> None:
    """The score check must be able to fail: the same unit without its sandbox scores high."""
    bare = tmp_path / UNIT.name
    kept = [
        line
        for line in UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability"))
    ]
    bare.write_text("\n".join(kept) + "\n")
    score, _, _ = security_report(systemd_analyze, bare)
    assert score > SECURITY_TARGET


def test_fastpayd_unit_keeps_what_the_daemon_needs(systemd_analyze: str) -> None:
    """Hardening must not cut the daemon off from D-Bus, its control socket or TCP."""
    proc = run([systemd_analyze, "security", "--offline=yes", "--json=short", str(UNIT)])
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    # "set": False on a RestrictAddressFamilies=~X line means X is still allowed.
    assert checks["RestrictAddressFamilies=~AF_UNIX"]["set"] is False  # system bus, control
    assert checks["RestrictAddressFamilies=~AF_(INET|INET6)"]["set"] is False  # FastPay TCP
    assert checks["PrivateNetwork="]["set"] is False  # the P2P group interface is on the host
    # ...and none of what it does not need.
    assert checks["RestrictAddressFamilies=~AF_PACKET"]["set"] is True
    assert checks["RestrictAddressFamilies=~AF_NETLINK"]["set"] is True
    assert checks["CapabilityBoundingSet=~CAP_NET_ADMIN"]["set"] is True
    assert checks["User=/DynamicUser="]["set"] is True


def test_wpa_supplicant_dropin_verifies(systemd_analyze: str, tmp_path: Path) -> None:
    """The drop-in is loaded over Debian's own wpa_supplicant.service and verified with it."""
    require_tool("wpa_supplicant", "wpasupplicant")
    debian_unit = Path("/lib/systemd/system/wpa_supplicant.service")
    if not debian_unit.exists():
        pytest.skip("Debian's wpa_supplicant.service is absent (package wpasupplicant)")
    shutil.copy(debian_unit, tmp_path / debian_unit.name)
    dropins = tmp_path / "wpa_supplicant.service.d"
    shutil.copytree(SYSTEMD_DIR / "wpa_supplicant" / "wpa_supplicant.service.d", dropins)
    verify(systemd_analyze, tmp_path / debian_unit.name)
    # The drop-in must replace ExecStart (an empty assignment first), not add a second one.
    (dropin,) = dropins.glob("*.conf")
    assert directive(dropin, "Service", "ExecStart")[0] == ""
    (command,) = directive(dropin, "Service", "ExecStart")[1:]
    assert " -u " in command and "-c/etc/wpa_supplicant/fastpay-p2p-wlan0.conf" in command
