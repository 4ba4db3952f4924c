"""Shared helpers for the tests of the files under ``systemd/``.

The unit tests here run the real tools a device uses: ``systemd-analyze``,
``systemd-sysusers``, ``systemd-tmpfiles``, ``dbus-daemon`` and
``wpa_supplicant``. A test that needs a tool the machine lacks is skipped with
the Debian package to install; CI installs them all (``scripts/setup.sh``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"
UNIT = SYSTEMD_DIR / "fastpayd@.service"
DEPLOY_DOC = REPO / "docs" / "deploy.md"

# Where docs/deploy.md installs fastpayd; the shipped unit must run it from there.
INSTALLED_FASTPAYD = "/opt/fastpayd/bin/fastpayd"


def require_tool(name: str, package: str) -> str:
    """Return the absolute path of ``name``, or skip the test saying what to install."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package: {package})")
    return path


def run(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command to completion and capture its text output (never raises on failure)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def unit_directives(path: Path) -> list[tuple[str, str, str]]:
    """Parse a systemd unit file into ``(section, key, value)`` triples, in file order.

    systemd allows repeated keys (``SystemCallFilter=`` twice), which is why this
    is a list and not a ``configparser`` mapping.
    """
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not a key=value line: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def directive(path: Path, section: str, key: str) -> list[str]:
    """All values of ``key`` in ``section`` of a unit file, in order."""
    return [v for s, k, v in unit_directives(path) if s == section and k == key]
