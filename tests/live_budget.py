"""The live VM's time budget, following progress (used by tests/conftest.py).

One wall-clock budget for the whole VM run fails on a loaded machine: every live test
gets slower, the budget expires with tests not yet run, and nothing says which test was
stuck.  Instead the VM may run as long as tests keep finishing: the inner pytest
rewrites its results file after every test report, and each change of that file moves
the deadline to ``per_test`` seconds later.  The first deadline also covers the boot.
``overall`` (optional) is a hard ceiling on top.
"""

from __future__ import annotations

import time
from pathlib import Path


class ProgressBudget:
    """``deadline()`` for :func:`emulation.vm.run_in_vm`: pushed back by every result."""

    def __init__(self, results_file: Path, per_test: float, boot: float,
                 overall: float | None = None, clock: object = time.monotonic) -> None:
        self.results_file = results_file
        self.per_test = per_test
        self._clock = clock
        now = self.now()
        self.started = now
        self.overall = None if overall is None else now + overall
        self._deadline = now + boot + per_test
        self._seen: tuple[int, int] | None = None
        self.progress_events = 0

    def now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def deadline(self) -> float:
        """The current deadline (``time.monotonic()`` scale)."""
        try:
            st = self.results_file.stat()
            seen: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen is not None and seen != self._seen:
            self._seen = seen
            self.progress_events += 1
            self._deadline = self.now() + self.per_test
        if self.overall is not None:
            return min(self._deadline, self.overall)
        return self._deadline

    def expired_because(self) -> str:
        """Why the run was stopped, for the tests that got no result."""
        if self.overall is not None and self.now() >= self.overall:
            return f"the live VM hit --live-vm-timeout ({self.overall - self.started:.0f} s)"
        return (f"no live test reported for {self.per_test:.0f} s (--live-test-timeout; the "
                "boot counts towards the first): the VM was stopped, and with it the test "
                "running then, if any")
