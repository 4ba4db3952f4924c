"""``python -m fastpayd.bench`` at tiny sizes: it runs end to end and prints the figures
the README quotes (the per-genesis-size lines and the four closing ratio lines)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from fastpayd_helpers import REPO, subprocess_env

from fastpayd.bench import main


def test_bench_tiny_sizes_print_scaling_lines_and_closing_ratios() -> None:
    # A subprocess: the bench pins itself to a CPU, which must not stick to pytest.
    out = subprocess.run(
        [sys.executable, "-m", "fastpayd.bench", "--orders", "40", "--connections", "2",
         "--window", "8", "--genesis-sizes", "30,60", "--scale-orders", "20"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for size in (30, 60):
        assert any(re.fullmatch(
            rf"genesis +{size} accounts: first start \(import\) +[\d.]+ s, start-up +[\d.]+ s,"
            r" RSS +\d+ MiB at start / +\d+ MiB .* orders +\d+ /s, CPU \d+ us per order", line)
            for line in lines), out.stdout
    assert any(line.startswith("genesis 60 vs 30 accounts: orders/s x") for line in lines)
    # A CPU ratio at this size may be below /proc's clock tick: then it says so.
    closing = [re.fullmatch(r"([a-z ]+): (\d+\.\d\d|not measured \(under one clock tick\))",
                            line) for line in lines[-4:]]
    assert [m.group(1) if m else None for m in closing] == [
        "orders ratio", "confirmations ratio", "orders cpu ratio", "confirmations cpu ratio"]


def test_bench_refuses_bad_sizes() -> None:
    assert main(["--scale-orders", "0"]) == 2
    for sizes in ("0", "10,x"):
        with pytest.raises(SystemExit) as exc:
            main(["--genesis-sizes", sizes])
        assert exc.value.code == 2
