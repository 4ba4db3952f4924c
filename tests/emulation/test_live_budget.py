"""The live VM's budget follows progress (tests/live_budget.py, emulation.vm's deadline):
a run that keeps reporting outlives any single budget, a silent one is stopped."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

from emulation import vm
from tests.live_budget import ProgressBudget


class Clock:
    """A clock the test moves by hand (the budget's time input)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_each_result_pushes_the_deadline_back(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    clock = Clock()
    budget = ProgressBudget(results, per_test=60.0, boot=30.0, clock=clock)
    assert budget.deadline() == 1090.0  # boot + first test
    clock.t = 1080.0
    results.write_text("{}")
    assert budget.deadline() == 1140.0  # a report: 60 s from now
    clock.t = 1130.0
    assert budget.deadline() == 1140.0  # no new report: unchanged
    results.write_text('{"a": 1}')
    assert budget.deadline() == 1190.0
    assert budget.progress_events == 2
    assert "--live-test-timeout" in budget.expired_because()


def test_overall_ceiling_wins(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    clock = Clock()
    budget = ProgressBudget(results, per_test=60.0, boot=30.0, overall=100.0, clock=clock)
    clock.t = 1095.0
    results.write_text("{}")
    assert budget.deadline() == 1100.0
    clock.t = 1100.0
    assert "--live-vm-timeout" in budget.expired_because()


def _child(script: str) -> list[str]:
    return [sys.executable, "-c", f"print({vm.STARTED_MARKER!r}, flush=True)\n" + script]


def test_a_run_that_keeps_reporting_outlives_the_per_test_budget(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    budget = ProgressBudget(results, per_test=2.0, boot=0.0)
    script = ("import time, pathlib\n"
              f"p = pathlib.Path({str(results)!r})\n"
              "for i in range(8):\n"
              "    p.write_text(str(i)); time.sleep(0.5)\n")  # a report every 0.5 s, 4 s
    t0 = time.monotonic()
    code = vm._run_captured(_child(script), dict(os.environ), None, None, io.StringIO(),
                            "test", budget.deadline)
    assert code == 0 and time.monotonic() - t0 >= 3.5
    assert budget.progress_events >= 6


def test_a_silent_run_is_stopped_at_the_budget(tmp_path: Path) -> None:
    budget = ProgressBudget(tmp_path / "results.json", per_test=1.5, boot=0.0)
    out = io.StringIO()
    t0 = time.monotonic()
    code = vm._run_captured(_child("import time; time.sleep(60)"), dict(os.environ), None,
                            None, out, "test", budget.deadline)
    assert code == vm.TIMEOUT_EXIT
    assert 1.4 <= time.monotonic() - t0 < 20
    assert "killing QEMU" in out.getvalue()
