"""sysusers.d, tmpfiles.d and the wpa_supplicant example, applied by the real tools.

``systemd-sysusers`` and ``systemd-tmpfiles`` run against a scratch ``--root``
(the host's users and /etc are never touched); the wpa_supplicant example is
parsed by the real ``wpa_supplicant``, which reads the whole file before it
looks for the (absent) interface.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sd_helpers import SYSTEMD_DIR, require_tool, run

SYSUSERS = SYSTEMD_DIR / "sysusers.d" / "fastpayd.conf"
TMPFILES = SYSTEMD_DIR / "tmpfiles.d" / "fastpayd.conf"
WPA_EXAMPLE = SYSTEMD_DIR / "wpa_supplicant" / "p2p-wlan0.conf"


def passwd_entry(root: Path, name: str) -> tuple[int, int, str, str]:
    """(uid, gid, home, shell) of ``name`` in ``root``/etc/passwd."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3]), fields[5], fields[6]
    raise AssertionError(f"{name} not in {root}/etc/passwd")


def mode_owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_sysusers_and_tmpfiles_lock_down_config_and_keys(tmp_path: Path) -> None:
    sysusers = require_tool("systemd-sysusers", "systemd")
    tmpfiles = require_tool("systemd-tmpfiles", "systemd")
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-tmpfiles must chown files to the fastpayd user")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    proc = run([sysusers, f"--root={root}", str(SYSUSERS)])
    assert proc.returncode == 0, proc.stderr
    uid, gid, home, shell = passwd_entry(root, "fastpayd")
    assert 0 < uid < 1000 and home == "/var/lib/fastpayd" and shell.endswith("nologin")

    # An operator copied a config and a key in with careless modes, as root.
    keys = root / "etc" / "fastpayd" / "keys"
    keys.mkdir(parents=True)
    config = root / "etc" / "fastpayd" / "auth0.toml"
    key = keys / "auth0.key"
    config.write_text("# config\n")
    key.write_text("secret\n")
    for p in (config, key):
        p.chmod(0o666)
    keys.chmod(0o777)

    proc = run([tmpfiles, f"--root={root}", "--create", str(TMPFILES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert mode_owner(root / "etc" / "fastpayd") == (0o750, 0, gid)
    assert mode_owner(config) == (0o640, 0, gid)
    assert mode_owner(keys) == (0o750, 0, gid)
    # Readable by the service user alone: not its group, not others.
    assert mode_owner(key) == (0o400, uid, gid)


def test_wpa_supplicant_parses_the_p2p_example(tmp_path: Path) -> None:
    wpa_supplicant = require_tool("wpa_supplicant", "wpasupplicant")
    # A name no machine has: wpa_supplicant reads the config, then fails on the driver.
    proc = run(
        [wpa_supplicant, "-dd", "-i", "fastpaytest0", "-Dnl80211", "-c", str(WPA_EXAMPLE)],
        timeout=30,
    )
    out = proc.stdout + proc.stderr
    assert f"Reading configuration file '{WPA_EXAMPLE}'" in out, out
    bad = [line for line in out.splitlines() if line.startswith("Line ") or "parse" in line]
    assert not bad, "\n".join(bad)
    # The settings fastpayd's P2P link relies on were understood, not skipped.
    for echoed in (
        "device_name='fastpay-node'",
        "p2p_listen_channel=1",
        "p2p_oper_channel=6",
        "ip_addr_go = 0xc0a83101",
    ):
        assert echoed in out, f"{echoed!r} missing from wpa_supplicant -dd output"


def test_wpa_supplicant_check_rejects_a_broken_example(tmp_path: Path) -> None:
    """The parse check above must be able to fail."""
    wpa_supplicant = require_tool("wpa_supplicant", "wpasupplicant")
    broken = tmp_path / "broken.conf"
    broken.write_text(WPA_EXAMPLE.read_text() + "p2p_oper_chanel=6\n")
    proc = run([wpa_supplicant, "-dd", "-i", "fastpaytest0", "-Dnl80211", "-c", str(broken)])
    assert "unknown global field 'p2p_oper_chanel=6'" in proc.stdout + proc.stderr
