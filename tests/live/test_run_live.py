"""Live: ``python -m emulation.run --batch`` runs a scenario headless and says if it worked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.live, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

# Plain roles only: this checks the radio layer's runner, not FastPay's layer on top.
SCENARIO = """
name = "batch check"
[area]
x_max = 300
y_max = 100
[[stations]]
name = "sta1"
position = [10, 50]
range = 100
[[stations]]
name = "sta2"
role = "plain"
position = [60, 50]
range = 100
[[timeline]]
at = 0
do = "p2p_find"
[[timeline]]
at = 0.5
do = "expect_peer sta1 sta2"
retry_for = 60
[[timeline]]
at = 1
do = "move sta2 280,50"
[[timeline]]
at = 1.5
do = "sta2 ip link show wlan0"
[[timeline]]
at = 2
do = "{last}"
"""


def _run(tmp_path: Path, last: str) -> tuple[int, dict, str]:
    scen = tmp_path / "scenario.toml"
    scen.write_text(SCENARIO.replace("{last}", last))
    report = tmp_path / "report.json"
    result = subprocess.run(
        # hwsim explicitly: `auto` picks Mininet-WiFi in the VM, whose import and set-up
        # cost ~1.5 min per process (test_mininet_live.py covers that backend).
        [sys.executable, "-m", "emulation.run", "--backend", "hwsim", "--batch", "--report",
         str(report), str(scen)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    return result.returncode, json.loads(report.read_text()), result.stdout + result.stderr


def test_run_batch_success_writes_report(tmp_path: Path) -> None:
    code, report, output = _run(tmp_path, "positions")
    assert code == 0, output
    assert report["success"] is True
    assert [step["ok"] for step in report["timeline"]] == [True] * 5
    assert report["final_positions"]["sta2"] == [280.0, 50.0]
    assert report["medium"]["frames"] > 0


def test_run_batch_failing_step_exits_1(tmp_path: Path) -> None:
    code, report, output = _run(tmp_path, "sta1 false")
    assert code == 1, output
    assert report["success"] is False
    assert report["timeline"][-1] == {**report["timeline"][-1], "do": "sta1 false", "ok": False}


def test_run_many_clients_small(tmp_path: Path) -> None:
    """The many-clients scenario at its small size: 4 clients (8 stations) each pay
    another once; every payment completes, safely, and the report has the cost."""
    report_path = tmp_path / "many.json"
    result = subprocess.run(
        [sys.executable, "-m", "emulation.run", "--backend", "hwsim", "--batch",
         "--clients", "4", "--report", str(report_path),
         str(ROOT / "emulation" / "scenarios" / "many.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=870)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    report = json.loads(report_path.read_text())
    assert report["success"] is True, report.get("error")
    payments = report["payments"]
    assert payments["scheduled"] == 4
    assert payments["completed"] == 4 and payments["completion_rate"] == 1.0, payments
    # Every certified payment is credited to its payee, or counted as not yet.
    assert sum(payments["handoff_channels"].values()) + payments["payee_not_credited"] == 4
    safety = report["safety"]
    assert safety["ok"] is True and safety["checked"], safety["violations"]
    assert sorted(safety["authorities"]) == ["auth0", "auth1", "auth2", "auth3"]
    cost = report["cost"]
    assert cost["stations"] == 8 and cost["startup_s_per_station"] > 0
    assert cost["rss_mib"]["n"] == 8 and cost["cpu_share"]["n"] == 8
    assert "completed / scheduled" in output and "Cost per station" in output
