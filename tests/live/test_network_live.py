"""Live: starting and tearing down whole emulations leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from emulation import hwsim
from emulation.network import Network, cleanup_stale
from emulation.station import NETNS_PREFIX, StationSpec

pytestmark = [pytest.mark.live, pytest.mark.slow]


def _our_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _assert_nothing_left(run_dir: Path, pids: list[int]) -> None:
    assert not [pid for pid in pids if _alive(pid)]
    assert _our_netns() == []
    assert not hwsim.module_loaded()
    assert not Path("/sys/class/ieee80211").exists() or \
        not list(Path("/sys/class/ieee80211").iterdir())
    assert not run_dir.exists()


def test_network_stop_leaves_no_processes_namespaces_or_radios(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    net = Network([StationSpec("sta1"), StationSpec("sta2", position=(10.0, 0.0))],
                  run_dir=run_dir)
    net.start()
    try:
        assert sorted(_our_netns()) == ["fpw-sta1", "fpw-sta2"]
        assert all(s.alive() for s in net.stations.values())
        assert net.medium_proc is not None
        pids = [net.medium_proc.pid] + [p.pid for s in net.stations.values()
                                        for p in s.procs.values()]
    finally:
        net.stop()
    _assert_nothing_left(run_dir, pids)
    net.stop()  # idempotent


def test_network_start_after_crash_cleans_up_leftovers(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # A run that dies hard (SIGKILL) right after starting leaves everything behind.
    crash = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from emulation.network import Network
        from emulation.station import StationSpec
        net = Network([StationSpec("sta1"), StationSpec("sta2")], run_dir=Path({str(run_dir)!r}))
        net.start()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", crash], cwd=root, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(root)))
    assert result.returncode == -9
    leftover_pids = [int(line.split()[0]) for f in run_dir.glob("*/pids")
                     for line in f.read_text().splitlines()]
    assert leftover_pids and all(_alive(pid) for pid in leftover_pids)
    assert sorted(_our_netns()) == ["fpw-sta1", "fpw-sta2"]

    # The next run starts cleanly and its stop leaves nothing, old leftovers included.
    net = Network([StationSpec("sta1"), StationSpec("sta3")], run_dir=run_dir)
    net.start()
    try:
        assert sorted(_our_netns()) == ["fpw-sta1", "fpw-sta3"]
        assert not [pid for pid in leftover_pids if _alive(pid)]
    finally:
        net.stop()
    _assert_nothing_left(run_dir, leftover_pids)
    assert cleanup_stale(run_dir) == []
