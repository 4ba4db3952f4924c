"""One grammar for ``fastpay`` against real daemons on loopback (issue 16, 3 and 4):
options anywhere, help, reload, account arguments per role, exit codes (timeout is not
unreachable), validated input, no traceback (BrokenPipe included), events --follow
(a long-poll on the control socket), JSON progress lines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import DEADLINE, fastpay, network_up
from fastpayd_helpers import REPO, subprocess_env

from fastpayd.cli import _parser, _subparsers


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("grammar") / "net"
    with network_up(root, "--authorities", "1", "--clients", "2") as up:
        assert up.returncode == 0, up.stdout + up.stderr
        yield root


def cfg(net: Path, name: str) -> str:
    return str(net / f"{name}.toml")


def test_global_options_after_the_command(net: Path) -> None:
    out = fastpay("status", "--config", cfg(net, "client0"), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["name"] == "client0", out


def test_help_and_help_command(net: Path) -> None:
    out = fastpay("help")
    assert out.returncode == 0 and "reload" in out.stdout and "wait-ready" in out.stdout
    out = fastpay("help", "transfer")
    assert out.returncode == 0 and "--force" in out.stdout
    out = fastpay("help", "nosuch")
    assert out.returncode == 2 and "fastpay help" in out.stderr


def test_no_double_backticks_in_help() -> None:
    parser = _parser()
    texts = [parser.format_help()]
    texts += [sp.format_help() for sp in _subparsers(parser).choices.values()]
    assert not [t for t in texts if "``" in t]


def test_reload_reachable(net: Path) -> None:
    out = fastpay("--config", cfg(net, "auth0"), "reload")
    assert out.returncode == 0 and "reloaded" in out.stdout, out


def test_balance_of_another_account_on_a_client_refused(net: Path) -> None:
    for cmd in ("balance", "history"):
        out = fastpay("--config", cfg(net, "client0"), cmd, "client1")
        assert out.returncode == 1 and "NotThisAccount" in out.stderr, out
    out = fastpay("--config", cfg(net, "client0"), "balance", "client0")
    assert out.returncode == 0 and out.stdout.startswith("client0:")


def test_history_on_authority_without_account(net: Path) -> None:
    pay = fastpay("--config", cfg(net, "client0"), "transfer", "client1", "4")
    assert pay.returncode == 0, pay
    out = fastpay("--config", cfg(net, "auth0"), "history")
    assert out.returncode == 0 and "client0 -> client1" in out.stdout, out


def test_sync_timeout_is_not_unreachable(net: Path) -> None:
    out = fastpay("--config", cfg(net, "client0"), "sync", "--timeout", "0")
    assert out.returncode == 2 and "unreachable" not in out.stderr
    out = fastpay("--config", cfg(net, "client0"), "sync", "--timeout", "0.000001")
    assert out.returncode in (0, 4) and "unreachable" not in out.stderr, out
    gone = fastpay("--socket", str(net / "run" / "nobody.sock"), "status")
    assert gone.returncode == 3


def test_transfer_negative_timeout_refused(net: Path) -> None:
    for bad in (("--timeout", "-5"), ("--timeout", "nan")):
        out = fastpay("--config", cfg(net, "client0"), "transfer", "client1", "1", *bad)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out
    out = fastpay("--config", cfg(net, "client0"), "transfer", "client1", "-1")
    assert out.returncode == 2


def _follow(net: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fastpayd.cli", "--config", cfg(net, "auth0"), "events",
         "--follow"], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _read_until(proc: subprocess.Popen[str], event: str) -> dict[str, object]:
    assert proc.stdout is not None
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        record = json.loads(line)
        if record["event"] == event:
            return dict(record)
    raise AssertionError(f"no {event} event")


def test_events_follow_prints_new_events(net: Path) -> None:
    proc = _follow(net)
    try:
        # Every reload emits config_reloaded; the follower, waiting on the daemon's
        # long-poll, prints it as soon as it comes.
        assert fastpay("--config", cfg(net, "auth0"), "reload").returncode == 0
        first = _read_until(proc, "config_reloaded")
        assert fastpay("--config", cfg(net, "auth0"), "reload").returncode == 0
        second = _read_until(proc, "config_reloaded")
        assert int(str(second["seq"])) > int(str(first["seq"]))
    finally:
        proc.kill()
        proc.wait()


def test_events_into_closed_pipe_no_traceback(net: Path) -> None:
    proc = _follow(net)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()  # `| head -1` exits
    for _ in range(3):  # new events: the follower writes into the closed pipe
        assert fastpay("--config", cfg(net, "auth0"), "reload").returncode == 0
    assert proc.wait(DEADLINE) == 141
    assert "Traceback" not in proc.stderr.read()


def test_transfer_json_progress_lines(net: Path) -> None:
    out = fastpay("--config", cfg(net, "client0"), "--json", "transfer", "client1", "2")
    assert out.returncode == 0, out
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert all("progress" in line for line in lines[:-1]) and len(lines) > 2
    assert lines[-1]["ok"] is True and lines[-1]["certificate"] is True
    assert out.stderr == ""


def test_one_exit_table_for_both_programs() -> None:
    """docs/cli.md's table, fastpayd.errors.EXIT_CODES and both programs' --help agree:
    a status means one thing whichever program ends with it."""
    from fastpayd.errors import EXIT_CODES

    text = (REPO / "docs" / "cli.md").read_text()
    table = text.split("<!-- exit codes", 1)[1].split("\n\n", 1)[0]
    documented = [int(row.split("|")[1]) for row in table.splitlines()
                  if row.startswith("| ") and row.split("|")[1].strip().isdigit()]
    assert documented == sorted(EXIT_CODES)
    assert {0: "ok", 1: "refused", 2: "usage", 3: "unreachable", 4: "timeout",
            130: "interrupted"}.items() <= {k: v.split()[0].rstrip(":") for k, v in
                                            EXIT_CODES.items()}.items()
    fastpay_help = fastpay("--help").stdout
    daemon_help = subprocess.run([sys.executable, "-m", "fastpayd", "--help"], cwd=REPO,
                                 env=subprocess_env(), capture_output=True, text=True,
                                 timeout=DEADLINE).stdout
    for code, meaning in EXIT_CODES.items():
        words = f"{code} {meaning}".split()[:4]
        assert " ".join(words) in " ".join(fastpay_help.split()), (code, fastpay_help)
        assert " ".join(words) in " ".join(daemon_help.split()), (code, daemon_help)
