"""The VM runner on the host: exit codes, results through rwdirs, no QEMU left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulation import vm

pytestmark = pytest.mark.slow


def _vm_possible() -> str | None:
    if vm.in_vm():
        return "already inside the VM"
    try:
        vm.find_kernel()
        vm.find_vng()
    except vm.VMError as exc:
        return str(exc)
    return None


skip_reason = _vm_possible()
needs_vm = pytest.mark.skipif(skip_reason is not None, reason=skip_reason or "")


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@needs_vm
def test_run_in_vm_returns_exit_code_and_results(tmp_path: Path) -> None:
    lines: list[str] = []
    code = vm.run_in_vm(["sh", "-c", f"echo in-guest; uname -r > {tmp_path}/kernel; "
                         f"test -e /sys/module/mac80211_hwsim || modprobe -n mac80211_hwsim; "
                         "exit 3"],
                        rwdirs=[tmp_path], timeout=600, on_line=lines.append)
    assert code == 3
    assert "in-guest" in lines
    assert (tmp_path / "kernel").read_text().strip() == vm.find_kernel().name[8:]
    assert _processes_mentioning(str(tmp_path)) == []  # vng and QEMU are gone


@needs_vm
def test_run_in_vm_timeout_kills_qemu(tmp_path: Path) -> None:
    lines: list[str] = []
    code = vm.run_in_vm(["sleep", "600"], rwdirs=[tmp_path], timeout=20,
                        on_line=lines.append)
    assert code == vm.TIMEOUT_EXIT
    assert any("timeout" in line for line in lines)
    assert _processes_mentioning(str(tmp_path)) == []


def test_the_guest_grows_with_the_stations() -> None:
    from emulation.run import vm_memory

    assert vm_memory(8) == "2048M"  # the default scenario: never below 2 GiB
    assert vm_memory(30) == "2944M"  # the 26-client crowd
