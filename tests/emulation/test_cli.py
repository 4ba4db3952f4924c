"""The emulation CLI on the host, without radios: the real command loop driven through a
pty as a user types (Ctrl-C included), real station subprocesses, and the parsers behind
``net``/``dump``/``pingall``/name substitution fed the output formats of ``iw dev``,
``ip -br addr`` and ``ping``.

A host station is the real :class:`emulation.station.Station` whose ``wrap`` runs a
command on the host instead of in a namespace -- the same seam the Mininet-WiFi backend
uses (``mnexec -a PID``) -- so what runs, streams and gets interrupted is real.
"""

from __future__ import annotations

import errno
import io
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emulation import cli as cli_mod
from emulation import mobility, scenario
from emulation.cli import (
    CommandFailed,
    EmulationCLI,
    StationView,
    group_address,
    p2p_groups,
    parse_ip_br_addr,
    parse_iw_dev,
    parse_ping,
    rfkill_switch,
    stream_process,
    substitute_names,
)

ROOT = Path(__file__).resolve().parents[2]

# What `iw dev` prints in a hwsim station: the group on wlan0 (p2p_no_group_iface=1)
# and the P2P Device without a netdev.
IW_GO = """phy#3
\tUnnamed/non-netdev interface
\t\twdev 0x300000002
\t\taddr 42:00:00:00:03:00
\t\ttype P2P-device
\tInterface wlan0
\t\tifindex 7
\t\twdev 0x300000001
\t\taddr 02:00:00:00:03:00
\t\tssid DIRECT-xy-auth1
\t\ttype P2P-GO
\t\tchannel 6 (2437 MHz), width: 20 MHz (no HT), center1: 2437 MHz
\t\ttxpower 20.00 dBm
"""
IW_CLIENT = IW_GO.replace("phy#3", "phy#5").replace("03:00", "05:00").replace(
    "P2P-GO", "P2P-client")
IW_IDLE = """phy#6
\tInterface wlan0
\t\tifindex 9
\t\twdev 0x600000001
\t\taddr 02:00:00:00:06:00
\t\ttype managed
\t\ttxpower 20.00 dBm
"""
IP_GO = """lo               UNKNOWN        127.0.0.1/8 ::1/128
wlan0            UP             fe80::ff:fe00:300/64
"""
IP_CLIENT = """lo               UNKNOWN        127.0.0.1/8 ::1/128
wlan0            UP             fe80::ff:fe00:500/64
"""


def _views() -> dict[str, StationView]:
    return {
        "auth1": StationView("auth1", parse_iw_dev(IW_GO), parse_ip_br_addr(IP_GO)),
        "client0": StationView("client0", parse_iw_dev(IW_CLIENT), parse_ip_br_addr(IP_CLIENT)),
        "client1": StationView("client1", parse_iw_dev(IW_IDLE), parse_ip_br_addr(IP_CLIENT)),
    }


# -- parsers ------------------------------------------------------------------------------


def test_parse_iw_dev_reads_every_interface_of_the_phy() -> None:
    ifaces = parse_iw_dev(IW_GO)
    assert [(i.phy, i.name, i.type) for i in ifaces] == [
        ("phy3", None, "P2P-device"), ("phy3", "wlan0", "P2P-GO")]
    assert ifaces[1].ssid == "DIRECT-xy-auth1" and ifaces[1].addr == "02:00:00:00:03:00"
    assert ifaces[1].in_group and not ifaces[0].in_group


def test_parse_ip_br_addr_keeps_addresses_per_interface() -> None:
    addrs = parse_ip_br_addr(IP_GO + "veth0@if3       UP             10.0.0.2/24 \n")
    assert addrs == {"lo": ["127.0.0.1/8", "::1/128"], "wlan0": ["fe80::ff:fe00:300/64"],
                     "veth0": ["10.0.0.2/24"]}


def test_p2p_groups_puts_the_go_first_and_skips_stations_in_no_group() -> None:
    groups = p2p_groups(_views())
    assert list(groups) == ["DIRECT-xy-auth1"]
    assert [(n, i.type) for n, i in groups["DIRECT-xy-auth1"]] == [
        ("auth1", "P2P-GO"), ("client0", "P2P-client")]


def test_group_address_is_link_local_scoped_to_the_source_interface() -> None:
    assert group_address(_views(), "client0", "auth1") == "fe80::ff:fe00:300%wlan0"
    assert group_address(_views(), "auth1", "client0") == "fe80::ff:fe00:500%wlan0"


def test_group_address_prefers_the_group_ipv4_address() -> None:
    views = _views()
    views["auth1"].addresses["wlan0"].insert(0, "192.168.49.1/24")
    assert group_address(views, "client0", "auth1") == "192.168.49.1"


def test_group_address_refuses_stations_without_a_shared_group() -> None:
    with pytest.raises(CommandFailed, match="client0 and client1 share no P2P group"):
        group_address(_views(), "client0", "client1")


def test_substitute_names_only_in_network_tools_and_whole_words() -> None:
    def resolve(src: str, dst: str) -> str:
        return group_address(_views(), src, dst)

    names = list(_views())
    assert substitute_names("ping -c 2 auth1", "client0", names, resolve) == \
        "ping -c 2 fe80::ff:fe00:300%wlan0"
    # Not a network tool, a name inside a word, or past a pipe: left as typed.
    assert substitute_names("echo auth1", "client0", names, resolve) == "echo auth1"
    assert substitute_names("ping auth1x", "client0", names, resolve) == "ping auth1x"
    assert substitute_names("ping -c1 auth1 | grep auth1", "client0", names, resolve) == \
        "ping -c1 fe80::ff:fe00:300%wlan0 | grep auth1"


def test_parse_ping_reads_the_summary() -> None:
    text = ("--- fe80::1%wlan0 ping statistics ---\n"
            "3 packets transmitted, 2 received, 33.3333% packet loss, time 404ms\n")
    assert parse_ping(text) == (3, 2)
    assert parse_ping("ping: connect: Network is unreachable\n") is None


def test_rfkill_switch_is_found_by_phy_name(tmp_path: Path) -> None:
    for index, name in ((0, "phy2"), (1, "phy3")):
        entry = tmp_path / f"rfkill{index}"
        entry.mkdir()
        (entry / "name").write_text(name + "\n")
    assert rfkill_switch("phy3", tmp_path) == tmp_path / "rfkill1"
    with pytest.raises(CommandFailed, match="no rfkill switch named phy9"):
        rfkill_switch("phy9", tmp_path)


def test_distance_follows_the_scenario_mobility() -> None:
    scen = scenario.load(scenario.DEFAULT_SCENARIO)
    models = {s.name: mobility.make_model(s.mobility, s.position, scen.area)
              for s in scen.stations}
    moving = next(s for s in scen.stations if s.mobility)
    other = next(s for s in scen.stations if s.name != moving.name)
    at_start = cli_mod.distance_at(models, moving.name, other.name, 0.0)
    assert at_start == pytest.approx(
        ((moving.position[0] - other.position[0]) ** 2
         + (moving.position[1] - other.position[1]) ** 2) ** 0.5)
    later = [cli_mod.distance_at(models, moving.name, other.name, t) for t in (10, 30, 60)]
    assert any(d != pytest.approx(at_start) for d in later)  # it walks its route


# -- help -------------------------------------------------------------------------------


def _help(topic: str) -> str:
    out = io.StringIO()
    EmulationCLI(None, stdout=out).onecmd(f"help {topic}")
    return out.getvalue()


@pytest.mark.parametrize("name", ["net", "dump", "distance", "pingall", "link", "shell",
                                  "wait"])
def test_mininet_commands_have_help(name: str) -> None:
    assert _help(name).startswith(name)


def test_help_shell_says_how_to_get_a_shell_in_the_vm() -> None:
    text = _help("shell")
    assert "VM" in text and "emulation.shell" in text and "shell STATION" in text


# -- streaming and Ctrl-C with real processes -------------------------------------------


def test_stream_process_shows_output_before_the_command_ends() -> None:
    proc = subprocess.Popen(["sh", "-c", "echo early; sleep 1; echo late"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)

    class Clock(io.StringIO):
        """Notes when each piece of output came."""

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[float, str]] = []

        def write(self, text: str) -> int:
            if text:
                self.seen.append((time.monotonic(), text))
            return super().write(text)

    out = Clock()
    started = time.monotonic()
    assert stream_process(proc, out) == 0
    first = next(t for t, text in out.seen if "early" in text)
    assert first - started < 0.8 and out.getvalue() == "early\nlate\n"


def test_stream_process_kills_a_command_past_its_timeout() -> None:
    proc = subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE, start_new_session=True)
    with pytest.raises(CommandFailed, match="killed after"):
        stream_process(proc, io.StringIO(), timeout=0.5)
    assert proc.returncode is not None


# The child: the real CLI over a real Network object whose station runs on the host.
CHILD = textwrap.dedent("""
    import fcntl, sys, termios
    from pathlib import Path
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty is our terminal: ^C is SIGINT
    from emulation import hwsim
    from emulation.cli import EmulationCLI
    from emulation.network import Network
    from emulation.station import Station, StationSpec

    class HostStation(Station):
        def wrap(self, argv):
            return list(argv)

    spec = StationSpec("sta1")
    net = Network([spec], run_dir=Path(sys.argv[1]))
    net.stations["sta1"] = HostStation(spec, hwsim.Radio("phy0", ("02:00:00:00:00:00",)),
                                       Path(sys.argv[1]))
    EmulationCLI(net).cmdloop()
    print("LOOP ENDED", flush=True)
""")


class Terminal:
    """A pty with the child on its other side; reads what a user would see."""

    def __init__(self, tmp: Path) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp)], stdin=slave, stdout=slave,
            stderr=slave, cwd=ROOT, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT), TERM="dumb"))
        os.close(slave)
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in the output after the last match; return it."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.seen)
            if match:
                self.seen = self.seen[match.end():]
                return match
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"no {pattern!r} in {self.seen!r}")
            try:
                self.seen += os.read(self.master, 4096).decode(errors="replace")
            except OSError as exc:  # EIO: the child closed the terminal
                if exc.errno != errno.EIO:
                    raise
                raise AssertionError(f"terminal closed; no {pattern!r} in {self.seen!r}") \
                    from None

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_reading(self, timeout: float = 10.0) -> None:
        """Return once the child sleeps in a read/select on its terminal: it printed the
        prompt and waits for a key.  (A ^C that lands between readline writing the prompt
        and its select() is only noticed at the next key: a user types it again.)"""
        waiting = {"0", "7", "23", "270", "271"}  # x86-64 read, poll, select, pselect6, ppoll
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                call = Path(f"/proc/{self.proc.pid}/syscall").read_text().split()
            except OSError:
                call = []
            if call and call[0] in waiting:
                return
            select.select([], [], [], 0.01)  # a look at the kernel's state every 10 ms
        raise AssertionError("the CLI never waited for input")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


def _alive_in_group(pgid: int) -> bool:
    """True if a process of group ``pgid`` runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture
def term(tmp_path: Path) -> Terminal:
    t = Terminal(tmp_path)
    yield t  # type: ignore[misc]
    t.close()


def test_ctrl_c_at_the_prompt_returns_to_the_prompt(term: Terminal) -> None:
    term.expect("emulation> ")
    term.wait_reading()
    term.type("\x03")
    term.expect(re.escape(cli_mod.INTERRUPTED))
    term.expect("emulation> ")
    term.type("exit\r")
    term.expect("LOOP ENDED")
    assert term.proc.wait(10) == 0


def test_ctrl_c_interrupts_a_streamed_station_command(term: Terminal) -> None:
    term.expect("emulation> ")
    # Quotes split the markers, so the terminal's echo of the line does not match them.
    term.type("sta1 echo pid $$; echo fir''st; sleep 30; echo nev''er\r")
    group = int(term.expect(r"pid (\d+)\r?\n").group(1))  # sh leads its own group
    term.expect("first")  # shown while the command still runs
    assert _alive_in_group(group)  # sh and its sleep
    typed = time.monotonic()
    term.type("\x03")
    term.expect(re.escape(cli_mod.INTERRUPTED), timeout=10)
    assert time.monotonic() - typed < 5
    term.expect("emulation> ")
    assert "never" not in term.seen
    assert not _alive_in_group(group)
    term.type("sta1 echo st''ill here\r")
    term.expect("still here")  # the station (and the emulation) still works
    term.type("exit\r")
    term.expect("LOOP ENDED")
    assert term.proc.wait(10) == 0


def test_ctrl_c_ends_a_wait_and_keeps_the_session(term: Terminal) -> None:
    term.expect("emulation> ")
    term.type("wait 60\r")
    term.expect(r"  waiting 60 s")  # the wait has begun
    typed = time.monotonic()
    term.type("\x03")
    term.expect(re.escape(cli_mod.INTERRUPTED))
    assert time.monotonic() - typed < 5
    term.expect("emulation> ")
    term.wait_reading()
    term.type("\x04")  # Ctrl-D ends it, like exit
    term.expect("LOOP ENDED")
    assert term.proc.wait(10) == 0


def test_emulation_shell_on_a_host_without_hwsim_says_how_to_get_a_shell(
        tmp_path: Path) -> None:
    from emulation import hwsim

    if hwsim.kernel_has_hwsim():
        pytest.skip("this kernel has mac80211_hwsim: the emulation would run here")
    out = subprocess.run([sys.executable, "-m", "emulation.shell", "client0"], cwd=ROOT,
                         env=dict(os.environ, FASTPAY_EMU_RUN_DIR=str(tmp_path)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "'shell client0'" in out.stderr and "emulation>" in out.stderr
