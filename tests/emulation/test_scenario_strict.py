"""Scenario files are checked whole at load, before any VM boots (issue 10, item 9):
unknown keys anywhere, timeline commands and their arguments."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from emulation import scenario

ROOT = Path(__file__).resolve().parents[2]

BASE = """
name = "strict"
[[stations]]
name = "auth0"
role = "authority"
[[stations]]
name = "client0"
role = "client"
[[stations]]
name = "client1"
role = "client"
[[stations]]
name = "plain1"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def _timeline(do: str) -> str:
    return BASE + f"[[timeline]]\nat = 1\ndo = {do!r}\n"


@pytest.mark.parametrize("text, needles", [
    (BASE.replace('role = "authority"', 'role = "authority"\nposiiton = [1, 2]'),
     ["s.toml", "stations[0] (auth0)", "unknown key 'posiiton'", "did you mean 'position'"]),
    (BASE.replace('name = "plain1"', 'name = "plain1"\nrnage = 40'),
     ["unknown key 'rnage'", "did you mean 'range'"]),
    (BASE + "[[timelines]]\nat = 1\ndo = 'nodes'\n",
     ["top level", "unknown key 'timelines'", "did you mean 'timeline'"]),
    (BASE + "[area]\nx_mx = 5\n", ["[area]", "did you mean 'x_max'"]),
    (BASE + "[medium]\nexponnent = 2\n", ["[medium]", "did you mean 'exponent'"]),
    (BASE + "[fastpay]\nbalanse = 2\n", ["[fastpay]", "did you mean 'balance'"]),
    (BASE + "[fastpay]\nlink = { request_timout = 3 }\n",
     ["[fastpay] link", "did you mean 'request_timeout'"]),
    (BASE + "[[timeline]]\nat = 1\ndo = 'nodes'\nretry = 3\n",
     ["timeline[0]", "did you mean 'retry_for'"]),
    (_timeline("expct_peer auth0 client0"),
     ["timeline[0]", "unknown command 'expct_peer'", "did you mean 'expect_peer'"]),
    (_timeline("expect_peer auth0"), ["usage: expect_peer [no] STATION STATION"]),
    (_timeline("expect_peer no auth0 clinet0"), ["no station 'clinet0'",
                                                 "did you mean 'client0'"]),
    (_timeline("mobile_transfer client0 client1"), ["usage: mobile_transfer"]),
    (_timeline("mobile_transfer client0 client1 ten"), ["'ten' is not a whole amount"]),
    (_timeline("mobile_transfer auth0 client1 10"), ["'auth0' is a authority station"]),
    (_timeline("mobile_transfer client0 client1 10 extra"), ["unexpected 'extra'"]),
    (_timeline("move client0 10"), ["usage: move STATION XY"]),
    (_timeline("move client0 a,b"), ["'a' is not a number"]),
    (_timeline("wait soon"), ["'soon' is not a number"]),
    (_timeline("wait_in_range client0"), ["usage: wait_in_range"]),
    (_timeline("wait_in_range client0 client1"), ["'client1' is a client station"]),
    (_timeline("daemon restart auth0"), ["'restart' is not one of stop|start|kill"]),
    (_timeline("show_peers plain1"), ["'plain1' is a plain station"]),
    (_timeline("receive client1 1010 400 9"), ["unexpected '9'"]),
    (_timeline("client0"), ["needs a shell command"]),
    (_timeline("plot /tmp/a /tmp/b"), ["unexpected '/tmp/b'"]),
    (BASE + "[[timeline]]\nat = -1\ndo = 'nodes'\n", ["must not be negative"]),
])
def test_mistakes_rejected_at_load(tmp_path: Path, text: str, needles: list[str]) -> None:
    with pytest.raises(scenario.ScenarioError) as info:
        scenario.load(_write(tmp_path, text))
    for needle in needles:
        assert needle in str(info.value), str(info.value)


@pytest.mark.parametrize("do", [
    "nodes", "move client0 10,20", "move client0 10 20", "expect_peer no auth0 client0",
    "expect_peer auth0 client0", "p2p_find", "p2p_find auth0 plain1", "wait 2.5",
    "discover", "discover client0 auth0", "expect_in_range client0",
    "wait_in_range client0 auth0", "mobile_transfer client0 client1 10",
    "mobile_transfer client0 " + "ab" * 32 + " 1", "wait_payment client0",
    "wait_payment client0 400", "receive client1", "receive client1 1010 400",
    "show_peers auth0", "connection_status client0", "balances",
    "expect_balance client1 1010", "daemon kill auth0", "bare_join plain1 plain1",
    "client0 ip -br addr", "py 1 + 1", "help move", "plot", "plot /tmp/run/mid",
])
def test_valid_lines_accepted(tmp_path: Path, do: str) -> None:
    assert scenario.load(_write(tmp_path, _timeline(do))).timeline[0].do == do


def test_shipped_scenarios_are_valid() -> None:
    for path in sorted((ROOT / "emulation" / "scenarios").glob("*.toml")):
        scenario.load(path)


def test_command_table_matches_the_cli() -> None:
    """Every CLI command has an argument spec and every spec is a CLI command."""
    from emulation import fastpay  # noqa: F401 - registers FastPay's commands
    from emulation.cli import EmulationCLI

    cli = {name[3:] for name, fn in inspect.getmembers(EmulationCLI)
           if name.startswith("do_") and callable(fn)}
    assert cli == set(scenario.TIMELINE_COMMANDS)


def test_fastpay_link_keys_match_fastpayd() -> None:
    """The copy of fastpayd's [link] keys the emulation validates against is current."""
    from fastpayd.config import LINK_KEYS, LINK_OPTIONS

    assert scenario.FASTPAY_LINK_KEYS == (LINK_KEYS | LINK_OPTIONS["wifidirect"]) - {
        "kind", "interface"}


def test_bad_scenario_fails_before_any_vm(tmp_path: Path) -> None:
    """`python -m emulation.run` refuses a bad file at once (exit 2), as any user, no root."""
    path = _write(tmp_path, _timeline("expct_peer auth0 client0"))
    out = subprocess.run([sys.executable, "-m", "emulation.run", "--batch", str(path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2, out.stderr
    assert "bad scenario" in out.stderr and "expct_peer" in out.stderr
    assert "VM" not in out.stdout
