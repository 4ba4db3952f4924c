"""``python -m emulation.bench``: what group sharing buys, as ratios over a bare P2P join.

One VM run (booted as the live tests boot it) of ``tests/wifidirect/test_sharing_live.py``:
four authority daemons in one room share one P2P group, a client daemon pays three
times -- first (one join), repeat (right after, on the same membership), returning
(after it left: the stored persistent group re-invoked) -- and two plain stations make a
bare WPS join with no FastPay traffic.  Each payment's time from ``transfer`` to final (a
quorum confirmed) is printed over the bare join measured in the same run:

    first payment / bare join: X.XX
    repeat payment / bare join: X.XX
    returning payment / bare join: X.XX

``--report FILE`` writes the figures as JSON (``versus_bare_join``: ``first``,
``repeat``, ``returning``).  Exit status: the test's (0 when every assertion held).
Needs root (the VM); takes about 5 minutes on an idle machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/wifidirect/test_sharing_live.py"
RATIOS = ("first", "repeat", "returning")


def _properties(junit: Path) -> dict[str, Any]:
    """The test's recorded figures (``record_property``) from pytest's JUnit XML."""
    out: dict[str, Any] = {}
    for prop in ET.parse(junit).getroot().iter("property"):
        name, value = prop.get("name"), prop.get("value", "")
        if name is None:
            continue
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulation.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastpay-bench-") as tmp:
        junit = Path(tmp) / "bench.xml"
        # The test's own output (VM boot progress, each step) streams through.
        rc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             TEST, f"--junitxml={junit}"], cwd=ROOT).returncode
        figures = _properties(junit) if junit.exists() else {}
    ratios = figures.get("versus_bare_join")
    if not isinstance(ratios, dict):
        print(f"bench: no figures (the test exited {rc}; its output is above)",
              file=sys.stderr)
        return rc or 1
    print(f"bare join (WPS, no FastPay): {figures.get('bare_join_s')} s")
    for key in RATIOS:
        print(f"{key} payment / bare join: {ratios[key]:.2f}")
    if args.report is not None:
        args.report.write_text(json.dumps({"versus_bare_join": ratios, "figures": figures},
                                          indent=2, sort_keys=True) + "\n")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
