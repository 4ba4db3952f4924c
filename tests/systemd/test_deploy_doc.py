"""docs/deploy.md stays true to the files it installs and the configs it shows.

A reader deploys from the guide alone, so its examples are run through the same
code the device runs: the node config and committee examples are loaded by
``fastpayd.config``, every repository file it installs must exist, and the
paths the example config uses must be the ones the unit lets the sandboxed
service write. The logrotate rule is run by the real ``logrotate`` against a
file held open in append mode, the way fastpayd holds ``events.jsonl``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from sd_helpers import DEPLOY_DOC, REPO, SYSTEMD_DIR, UNIT, directive, require_tool, run

from fastpayd.config import load_committee_file, load_node_config

LOGROTATE = SYSTEMD_DIR / "logrotate.d" / "fastpayd"


def toml_blocks(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


def test_every_installed_repository_file_exists() -> None:
    doc = DEPLOY_DOC.read_text()
    sources = set(re.findall(r"(?<![\w/])(systemd/[\w@./-]+\w)", doc))
    assert sources, "the guide installs nothing from systemd/"
    missing = sorted(s for s in sources if not (REPO / s).is_file())
    assert not missing, f"docs/deploy.md installs files that do not exist: {missing}"
    # Every shipped file is installed by the guide.
    shipped = {str(p.relative_to(REPO)) for p in SYSTEMD_DIR.rglob("*") if p.is_file()}
    assert shipped <= sources, f"not installed by docs/deploy.md: {sorted(shipped - sources)}"


def test_wpa_supplicant_config_lands_where_the_dropin_reads_it() -> None:
    doc = DEPLOY_DOC.read_text()
    dropin = SYSTEMD_DIR / "wpa_supplicant" / "wpa_supplicant.service.d" / "fastpay-p2p.conf"
    (command,) = directive(dropin, "Service", "ExecStart")[1:]
    (config_path,) = re.findall(r"-c(\S+)", command)
    assert config_path in doc, f"the guide never installs {config_path}"


def test_node_config_example_loads_and_matches_the_unit_sandbox(tmp_path: Path) -> None:
    blocks = toml_blocks(DEPLOY_DOC.read_text())
    (node_example,) = [b for b in blocks if "[node]" in b]
    config = tmp_path / "auth0.toml"
    config.write_text(node_example)
    node = load_node_config(config)
    assert node.name == "auth0" and node.role == "authority"
    assert node.link.kind == "wifidirect"
    # The unit's StateDirectory=fastpayd/%i and RuntimeDirectory=fastpayd/%i are the only
    # places the service may write (ProtectSystem=strict).
    assert directive(UNIT, "Service", "StateDirectory") == ["fastpayd/%i"]
    assert directive(UNIT, "Service", "RuntimeDirectory") == ["fastpayd/%i"]
    assert node.state_dir == Path("/var/lib/fastpayd/auth0")
    assert node.control_socket.parent == Path("/run/fastpayd/auth0")
    # Keys and committee resolve under /etc/fastpayd when the file is installed there.
    assert node.key_file == tmp_path / "keys" / "auth0.key"
    assert node.committee_file == tmp_path / "committee.toml"


def test_committee_example_loads(tmp_path: Path) -> None:
    blocks = toml_blocks(DEPLOY_DOC.read_text())
    (committee_example,) = [b for b in blocks if "[[authorities]]" in b]
    path = tmp_path / "committee.toml"
    path.write_text(committee_example)
    committee = load_committee_file(path)
    assert [a.name for a in committee.authorities] == ["auth0", "auth1"]
    assert committee.genesis and committee.genesis[0][1] == 1000


def test_guide_covers_the_card_check_and_operations() -> None:
    doc = DEPLOY_DOC.read_text()
    for needle in ("iw list", "P2P-GO", "P2P-client", "fastpayd keygen", "journalctl -u fastpayd@",
                   "systemctl reload fastpayd@", "pip install --prefer-binary --upgrade",
                   "fastpay --config /etc/fastpayd/auth0.toml status"):  # fmt: skip
        assert needle in doc, f"docs/deploy.md lost {needle!r}"


def test_logrotate_rotates_an_open_append_only_event_log() -> None:
    logrotate = require_tool("logrotate", "logrotate")
    if os.geteuid() != 0:
        pytest.skip("needs root: logrotate switches to the service user (su)")
    nobody = pwd.getpwnam("nobody")
    group = "nogroup"
    # pytest's tmp_path is private to root; the rotation runs as nobody.
    top = Path(tempfile.mkdtemp(prefix="fastpay-logrotate-"))
    try:
        top.chmod(0o755)
        state_dir = top / "lib" / "auth0"
        state_dir.mkdir(parents=True)
        os.chown(state_dir, nobody.pw_uid, nobody.pw_gid)
        state_dir.chmod(0o700)
        events = state_dir / "events.jsonl"
        rule = LOGROTATE.read_text()
        assert rule.count("/var/lib/fastpayd/*/events.jsonl") == 1
        assert rule.count("su fastpayd fastpayd") == 1
        conf = top / "fastpayd.logrotate"
        conf.write_text(
            rule.replace("/var/lib/fastpayd/", f"{top}/lib/").replace(
                "su fastpayd fastpayd", f"su nobody {group}"
            )
        )
        with events.open("a") as log:  # as fastpayd holds it: O_APPEND, never reopened
            os.chown(events, nobody.pw_uid, nobody.pw_gid)
            log.write('{"seq": 1}\n{"seq": 2}\n')
            log.flush()
            proc = run([logrotate, "--force", "--state", str(top / "status"), str(conf)])
            assert proc.returncode == 0, proc.stdout + proc.stderr
            log.write('{"seq": 3}\n')
            log.flush()
        rotated = state_dir / "events.jsonl.1"
        assert rotated.read_text() == '{"seq": 1}\n{"seq": 2}\n'
        # With O_APPEND the next event lands at the start of the truncated file (no hole).
        assert events.read_text() == '{"seq": 3}\n'
        assert rotated.stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(top, ignore_errors=True)
