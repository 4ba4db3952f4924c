"""Backend registry and the host-side parts of the Mininet-WiFi backend.

The backend itself needs mac80211_hwsim and runs in the VM: ``tests/live/test_mininet_live.py``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from emulation import backends, hwsim, vm
from emulation.backends import mininet
from emulation.network import EmulationError

NO_HWSIM = not hwsim.kernel_has_hwsim()


def test_choose_unknown_backend_rejected() -> None:
    with pytest.raises(backends.BackendUnavailable, match="unknown backend"):
        backends.choose("ns3")


def test_choose_hwsim_always_named() -> None:
    assert backends.choose("hwsim") == "hwsim"


def test_setup_installed_mininet_wifi() -> None:
    # scripts/setup.sh installs it from ../shared/third_party: a gap is a setup bug.
    ok, why = backends.mininet_installed()
    assert ok, why
    for tool in mininet.TOOLS:
        assert (vm.TOOLS_DIR / tool).exists(), tool


@pytest.mark.skipif(not NO_HWSIM, reason="this kernel has mac80211_hwsim")
def test_choose_auto_without_hwsim_is_hwsim() -> None:
    # Here the run goes into the VM first; inside it, auto picks mininet.
    assert backends.choose("auto") == "hwsim"
    ok, why = backends.mininet_available()
    assert not ok and "mac80211_hwsim" in why


@pytest.mark.skipif(not NO_HWSIM, reason="this kernel has mac80211_hwsim")
def test_choose_mininet_without_hwsim_says_why() -> None:
    with pytest.raises(backends.BackendUnavailable, match="mac80211_hwsim"):
        backends.choose("mininet")


@pytest.mark.skipif(not NO_HWSIM, reason="this kernel has mac80211_hwsim")
def test_mininet_network_refuses_a_kernel_without_hwsim(tmp_path: Path) -> None:
    # Never builds (and so never runs mn_wifi's teardown) on such a host.
    from emulation.station import StationSpec

    net = mininet.MininetNetwork([StationSpec("sta1")], run_dir=tmp_path / "run")
    with pytest.raises(EmulationError, match="mac80211_hwsim|root"):
        net.start()
    assert net.mn is None
    net.stop()


def test_stale_wmediumd_socket_removed(tmp_path: Path) -> None:
    path = tmp_path / "wmediumd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # bound, never listening, closed: what a crash leaves
    assert path.exists()
    assert mininet.remove_stale_socket(path) is True
    assert not path.exists()
    assert mininet.remove_stale_socket(path) is False


def test_live_wmediumd_socket_kept(tmp_path: Path) -> None:
    path = tmp_path / "wmediumd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen(1)
        with pytest.raises(EmulationError, match="already listens"):
            mininet.remove_stale_socket(path)
    assert path.exists()


def test_vm_guest_gets_tools_debugfs_and_font_cache(tmp_path: Path) -> None:
    assert str(vm.TOOLS_DIR) in vm._vm_path().split(":")
    script = vm._write_script(tmp_path, ["true"], "/", {}).read_text()
    assert "mount -t debugfs debugfs /sys/kernel/debug" in script
    assert vm.GUEST_MPL_DIR in script
