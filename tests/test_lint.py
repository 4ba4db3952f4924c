"""The tree stays lint-clean and typed: ruff on everything, mypy on our packages
(``--strict`` on ``protocol/``, whose types are the wire format's contract)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_ruff_clean() -> None:
    out = run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("args", [("--strict", "protocol"), ("fastpayd", "emulation")],
                         ids=["protocol-strict", "fastpayd-emulation"])
def test_mypy_clean(args: tuple[str, ...]) -> None:
    out = run("mypy", "--no-error-summary", *args)
    assert out.returncode == 0, out.stdout + out.stderr
