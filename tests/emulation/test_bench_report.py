"""emulation.bench without a VM: reading the live test's figures back from JUnit XML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from emulation.bench import ROOT, _properties


def test_figures_are_read_back_with_their_types(tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase name="t"><properties>'
        '<property name="bare_join_s" value="5.21"/>'
        "<property name=\"versus_bare_join\" value=\"{'first': 0.8, 'repeat': 0.05}\"/>"
        '<property name="note" value="not a literal"/>'
        "</properties></testcase></testsuite></testsuites>")
    got = _properties(junit)
    assert got == {"bare_join_s": 5.21, "versus_bare_join": {"first": 0.8, "repeat": 0.05},
                   "note": "not a literal"}


def test_help_says_what_it_prints() -> None:
    out = subprocess.run([sys.executable, "-m", "emulation.bench", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "bare" in out.stdout and "--report" in out.stdout
