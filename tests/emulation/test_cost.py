"""Cost per station from /proc-like text (emulation/cost.py)."""

from __future__ import annotations

from pathlib import Path

from emulation import cost

STATUS = """Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
Pid:\t4242
VmPeak:\t  180220 kB
VmSize:\t  172000 kB
VmHWM:\t   61000 kB
VmRSS:\t   51200 kB
Threads:\t3
"""


def stat(utime: int, stime: int, comm: str = "python3") -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime ...
    return (f"4242 ({comm}) S 1 4242 4242 0 -1 4194560 9000 0 12 0 {utime} {stime} 0 0 "
            "20 0 3 0 123456 176128000 12800 18446744073709551615")


def test_vmrss_is_read_in_kib() -> None:
    assert cost.vmrss_kib(STATUS) == 51200
    assert cost.vmrss_kib("Name:\tkthreadd\nState:\tS\n") is None  # kernel threads: none


def test_cpu_ticks_add_utime_and_stime_even_with_odd_names() -> None:
    assert cost.cpu_ticks(stat(300, 45)) == 345
    assert cost.cpu_ticks(stat(7, 3, comm="a b) (c")) == 10
    assert cost.cpu_ticks("garbage") is None


def test_read_proc_reads_a_proc_like_tree(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(stat(120, 30))
    (tmp_path / "4242" / "status").write_text(STATUS)
    assert cost.read_proc(4242, tmp_path) == (150, 51200)
    assert cost.read_proc(1, tmp_path) == (None, None)  # gone


def test_daemon_cost_share_and_peak_memory() -> None:
    samples: list[cost.Sample] = [
        (100.0, cost.cpu_ticks(stat(100, 20)), cost.vmrss_kib(STATUS)),
        (110.0, 200, 81920),
        (140.0, cost.cpu_ticks(stat(400, 120)), 61440),
    ]
    c = cost.daemon_cost(samples, ticks_per_s=100)
    # (520 - 120) ticks = 4 s of CPU over 40 s of wall clock: a tenth of a core.
    assert (c["cpu_s"], c["wall_s"], c["cpu_share"]) == (4.0, 40.0, 0.1)
    assert (c["rss_mib_max"], c["rss_mib_last"]) == (80.0, 60.0)


def test_daemon_cost_with_one_sample_has_no_share() -> None:
    c = cost.daemon_cost([(1.0, 50, None)])
    assert c["cpu_share"] is None and c["rss_mib_max"] is None


def test_per_station_divides_start_up_and_groups_by_role() -> None:
    daemons = {
        "auth0": cost.daemon_cost([(0.0, 0, 40960), (100.0, 2000, 40960)]),
        "client0": cost.daemon_cost([(0.0, 0, 61440), (100.0, 500, 61440)]),
        "client1": cost.daemon_cost([(0.0, 100, 51200), (100.0, 1100, 51200)]),
    }
    roles = {"auth0": "authority", "client0": "client", "client1": "client"}
    c = cost.per_station(daemons, roles, startup_s=70.0, stations=5)
    assert c["startup_s_per_station"] == 14.0
    assert c["cpu_share"] == {"n": 3, "mean": 0.1167,
                              "max": 0.2, "sum": 0.35}
    assert c["rss_mib"]["max"] == 60.0 and c["rss_mib"]["mean"] == 50.0
    assert c["by_role"]["client"]["cpu_share"]["mean"] == 0.075
    assert c["by_role"]["authority"]["rss_mib"]["n"] == 1
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(cost.table(c))
    assert "start-up s per station" in console.export_text()
