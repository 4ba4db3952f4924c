"""pytest plugin: tests marked ``live`` run where real mac80211_hwsim radios exist.

* On a kernel with mac80211_hwsim (a suitable host, or inside the VM) live tests run
  directly, like any test (they need root).
* On a kernel without it (these machines, CI), every selected ``live`` test -- in any
  directory under tests/ -- is replaced on the host by a stand-in item. The first
  stand-in to run boots the QEMU/TCG VM **once** (:func:`emulation.vm.run_in_vm`) and
  runs all the selected live tests there with pytest, output streamed to the terminal;
  the inner run writes each test's outcome to a JSON file in a shared writable
  directory (``FASTPAY_LIVE_RESULTS``); each stand-in then reports its own test's real
  outcome (pass, failure with the inner traceback, skip with its reason) into the
  host's pytest run.

Budget: the VM runs as long as live tests keep finishing (:mod:`tests.live_budget`):
``--live-test-timeout SECONDS`` (default 900) is how long it may go without a test
report — the boot counts towards the first — and ``--live-vm-timeout SECONDS``
(default: none) an optional ceiling for the whole VM run.  ``--no-live-vm`` skips live
tests instead of booting the VM.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

RESULTS_ENV = "FASTPAY_LIVE_RESULTS"
BOOT_ALLOWANCE = 300.0  # s on top of the first test's budget: boot under TCG, loaded
ROOT = Path(__file__).resolve().parent.parent

if str(ROOT) not in sys.path:  # the project is used from its tree, not installed
    sys.path.insert(0, str(ROOT))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("live", "live tests on mac80211_hwsim radios")
    group.addoption("--live-test-timeout", type=float, default=900.0,
                    help="seconds the live VM may go without a test finishing (boot "
                         "included for the first; default 900)")
    group.addoption("--live-vm-timeout", type=float, default=None,
                    help="optional ceiling in seconds for the whole live VM run "
                         "(default: none, the per-test budget governs)")
    group.addoption("--no-live-vm", action="store_true",
                    help="skip live tests instead of booting a VM when the kernel has no hwsim")


def _radios_here() -> bool:
    from emulation import hwsim, vm

    return vm.in_vm() or hwsim.kernel_has_hwsim()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    live = [item for item in items if item.get_closest_marker("live")]
    if not live:
        return
    if _radios_here():
        if os.geteuid() != 0:
            skip = pytest.mark.skip(reason="live tests need root (namespaces, kernel modules)")
            for item in live:
                item.add_marker(skip)
        return
    if config.getoption("--no-live-vm"):
        skip = pytest.mark.skip(reason="no mac80211_hwsim in this kernel and --no-live-vm given")
        for item in live:
            item.add_marker(skip)
        return
    runner = VMRunner(config, [item.nodeid for item in live])
    live_ids = {id(item) for item in live}
    for index, item in enumerate(items):
        if id(item) in live_ids:
            items[index] = VMResultItem.from_parent(item.parent, name=item.name,
                                                    runner=runner, original=item)


class VMRunner:
    """Boots the VM once and runs every selected live test in it."""

    def __init__(self, config: pytest.Config, nodeids: list[str]) -> None:
        self.config = config
        self.nodeids = nodeids
        self.results: dict[str, dict[str, Any]] | None = None
        self.error: str | None = None

    def result_for(self, nodeid: str) -> dict[str, Any] | None:
        """Return the inner outcome of ``nodeid``, running the VM on first use."""
        if self.results is None:
            self._run()
        assert self.results is not None
        return self.results.get(nodeid)

    def _run(self) -> None:
        from emulation import vm
        from tests.live_budget import ProgressBudget

        self.results = {}
        rwdir = Path(tempfile.mkdtemp(prefix="fastpay-live-"))
        results_file = rwdir / "results.json"
        budget = ProgressBudget(results_file, self.config.getoption("--live-test-timeout"),
                                boot=BOOT_ALLOWANCE,
                                overall=self.config.getoption("--live-vm-timeout"))
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
                "-o", "console_output_style=classic", *self.nodeids]
        capman = self.config.pluginmanager.getplugin("capturemanager")
        try:
            with capman.global_and_fixture_disabled():
                print(f"\n[live] {len(self.nodeids)} live test(s): no mac80211_hwsim in this "
                      "kernel, running them in one QEMU/TCG VM", flush=True)
                code = vm.run_in_vm(
                    argv, rwdirs=[rwdir], cwd=str(self.config.rootpath),
                    env={RESULTS_ENV: str(results_file), "PYTHONPATH": str(ROOT)},
                    deadline=budget.deadline, title="[live] booting the VM")
                print(f"[live] VM finished: inner pytest exit code {code}", flush=True)
            if code == vm.TIMEOUT_EXIT:
                self.error = budget.expired_because()
            if results_file.exists():
                self.results = json.loads(results_file.read_text())
            elif self.error is None:
                self.error = f"the VM returned {code} and no results (see its output above)"
        except vm.VMError as exc:
            self.error = f"cannot boot the VM: {exc}"
        finally:
            for leftover in rwdir.iterdir():
                leftover.unlink()
            rwdir.rmdir()


class VMTestFailure(Exception):
    """A live test failed inside the VM; carries the inner report."""


class VMResultItem(pytest.Item):
    """Stands in on the host for a live test that ran in the VM."""

    def __init__(self, *, runner: VMRunner, original: pytest.Item, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runner = runner
        self.original = original
        # Markers of the module/class come from the shared parent; copy the test's own.
        for mark in original.own_markers:
            self.own_markers.append(mark)
            self.keywords[mark.name] = mark  # as add_marker does: 'live' in the reports
        self.user_properties = []

    def runtest(self) -> None:
        result = self.runner.result_for(self.nodeid)
        if result is None:
            raise VMTestFailure(self.runner.error
                                or "no result came back from the VM for this test "
                                   "(see the VM output above)")
        self.user_properties.extend(tuple(p) for p in result.get("properties", []))
        if result["outcome"] == "skipped":
            pytest.skip(result.get("reason") or "skipped in the VM")
        if result["outcome"] == "failed":
            raise VMTestFailure(result.get("longrepr") or "failed in the VM")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, VMTestFailure):
            return f"[ran in the VM]\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        path, line, name = self.original.reportinfo()
        return path, line, f"{name} [VM]"


_measurements: list[tuple[str, list[Any]]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show what live tests measured (record_property), wherever they ran."""
    if not _measurements:
        return
    terminalreporter.section("live measurements")
    for nodeid, props in _measurements:
        shown = ", ".join(f"{k}={v}" for k, v in props)
        terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {shown}")


# --- inside the VM: record outcomes for the host (and, everywhere, measurements) -------

_outcomes: dict[str, dict[str, Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and "live" in report.keywords and report.user_properties:
        _measurements.append((report.nodeid, list(report.user_properties)))
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    entry = _outcomes.setdefault(report.nodeid, {"outcome": "passed", "properties": []})
    if report.when == "call" or report.outcome != "passed":
        if report.failed:
            entry["outcome"] = "failed"
            entry["longrepr"] = (entry.get("longrepr", "") + f"[{report.when}] "
                                 + str(report.longrepr) + "\n")
        elif report.skipped and entry["outcome"] != "failed":
            entry["outcome"] = "skipped"
            longrepr = report.longrepr
            entry["reason"] = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    entry["properties"] = [list(p) for p in report.user_properties]
    # Written after every report: if the VM dies mid-run, what finished still counts.
    Path(path).write_text(json.dumps(_outcomes, indent=1, default=str))
