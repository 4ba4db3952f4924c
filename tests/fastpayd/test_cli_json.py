"""``--json`` against the schema in docs/cli.md, on real daemons (issue 16, 4): every
command of ``fastpay`` and ``fastpayd`` (keygen, testnet, testnet up/status/down) prints
one JSON object; every field has its documented type in every case, no undocumented
field appears, and progress (transfer, wait, testnet up/down) comes first as JSON lines
of their documented shapes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import DEADLINE, fastpay, fastpayd, network_up
from fastpayd_helpers import REPO, subprocess_env

from fastpayd.cli import _parser, _subparsers

TYPES: dict[str, Any] = {"string": str, "integer": int, "number": (int, float),
                         "boolean": bool, "object": dict, "array": list,
                         "null": type(None)}


def schema() -> dict[str, dict[str, str]]:
    text = (REPO / "docs" / "cli.md").read_text()
    block = re.search(r"<!-- schema.*?```json\n(.*?)```", text, re.S)
    assert block is not None
    return dict(json.loads(block.group(1)))


def check(command: str, answer: dict[str, Any], top: bool = True) -> None:
    """``answer`` (a whole answer, or with ``top=False`` a row or progress object) has
    exactly the fields of ``command``'s schema, each of its type (``*``: more allowed)."""
    fields = dict(schema()[command])
    answer = dict(answer)
    if top:
        assert answer.pop("ok") is True, answer
    if fields.pop("*", None) == "any":
        answer = {k: v for k, v in answer.items() if k.rstrip("?") in
                  {f.rstrip("?") for f in fields}}
    for key, spec in fields.items():
        name = key.rstrip("?")
        if name not in answer:
            assert key.endswith("?"), f"{command}: {name} missing"
            continue
        value = answer.pop(name)
        kinds = tuple(TYPES[t] for t in spec.split("|"))
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        assert ok, f"{command}: {name} = {value!r} is not {spec}"
    assert not answer, f"{command}: undocumented fields {sorted(answer)}"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("json") / "net"
    with network_up(root, "--authorities", "4", "--clients", "2") as up:
        assert up.returncode == 0, up.stdout + up.stderr
        yield root


def run(net: Path, node: str, *args: str) -> list[dict[str, Any]]:
    out = fastpay(*args, "--json", "--config", str(net / f"{node}.toml"))
    assert out.returncode == 0, out
    return [json.loads(line) for line in out.stdout.splitlines()]


def checked(net: Path, node: str, command: str, schema_name: str, *args: str
            ) -> list[dict[str, Any]]:
    lines = run(net, node, command, *args)
    check(schema_name, lines[-1])
    return lines


# (node, fastpay arguments, schema): every command of the parser appears here or in the
# tests below (transfer, events --follow); test_every_fastpay_command_covered checks it.
JSON_RUNS = [
    ("client0", ("status",), "status"), ("auth0", ("status",), "status"),
    ("client0", ("wait-ready",), "status"),
    ("client0", ("progress",), "progress"),  # idle: no transfer yet
    ("client0", ("balance",), "balance"), ("auth0", ("balance",), "balance"),
    ("auth0", ("balance", "client0"), "balance"),
    ("client0", ("history",), "history"), ("auth0", ("history",), "history"),
    ("client0", ("peers",), "peers"), ("auth0", ("events",), "events"),
    ("client0", ("sync",), "sync"), ("auth0", ("reload",), "reload"),
    ("auth0", ("wait", "ready"), "wait"),
    ("client0", ("wait", "payment", "--balance", "0"), "wait"),  # holds already
    ("client0", ("help",), "help"), ("client0", ("help", "wait"), "help"),
]


def test_json_answers_match_schema(net: Path) -> None:
    for node, args, command in JSON_RUNS:
        lines = checked(net, node, args[0], command, *args[1:])
        if args[0] != "wait":
            assert len(lines) == 1, (args, lines)
        for line in lines[:-1]:
            check("wait progress", line["progress"], top=False)
    check("status", run(net, "client0", "wait", "ready")[-1]["status"], top=False)


def test_json_events_follow_lines(net: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastpayd.cli", "events", "--follow", "--json", "--config",
         str(net / "auth0.toml")], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for _ in range(3):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            check("event", json.loads(line), top=False)
    finally:
        proc.kill()
        proc.communicate(timeout=DEADLINE)


@pytest.mark.parametrize("recipient", ["client1", "client0"])
def test_json_transfer_progress_then_answer(net: Path, recipient: str) -> None:
    *steps, answer = run(net, "client0", "transfer", recipient, "3")
    assert steps and all(set(s) == {"progress"} and isinstance(s["progress"]["step"], str)
                         for s in steps)
    check("transfer", answer)
    for node, args, command in [("client0", ("progress",), "progress"),
                                ("client0", ("status",), "status"),
                                ("client0", ("history",), "history"),
                                ("auth1", ("history", "client0"), "history")]:
        check(command, run(net, node, *args)[-1])
    seq = str(answer["sequence_number"])
    for args in ((seq, "--state", "certified"), ("--ticket", str(answer["ticket"])), ()):
        *steps, done = checked(net, "client0", "wait", "wait", "transfer", *args)
        assert all(check("wait progress", s["progress"], top=False) is None for s in steps)
        assert done["state"] in ("certified", "final", "completed"), done
    if recipient != "client0":  # paying oneself is no payment received (net zero)
        *steps, done = checked(net, recipient, "wait", "wait", "payment", "--since", "0",
                               "--from", "client0")
        check("wait payment", done["payment"], top=False)


def test_every_fastpay_command_covered() -> None:
    """A command added to the CLI without a --json schema check here fails this test."""
    commands = set(_subparsers(_parser()).choices)
    covered = {args[0] for _, args, _ in JSON_RUNS} | {"transfer", "events"}
    assert commands - covered == set(), f"no --json schema test for {commands - covered}"
    documented = schema()
    assert {c for _, _, c in JSON_RUNS} <= set(documented)


def test_fastpayd_json_commands(tmp_path: Path) -> None:
    key = fastpayd("keygen", str(tmp_path / "k.key"), "--json")
    assert key.returncode == 0, key
    check("fastpayd keygen", json.loads(key.stdout))
    again = fastpayd("keygen", str(tmp_path / "k.key"), "--json")
    assert again.returncode == 2 and json.loads(again.stdout)["ok"] is False, again
    gen = fastpayd("testnet", "--authorities", "1", "--clients", "1", "--out",
                   str(tmp_path / "gen"), "--json")
    assert gen.returncode == 0, gen
    answer = json.loads(gen.stdout)
    check("fastpayd testnet", answer)
    for row in answer["nodes"]:
        check("testnet node", row, top=False)
    net = tmp_path / "net"
    try:
        up = fastpayd("testnet", "up", str(net), "--authorities", "1", "--clients", "1",
                      "--timeout", str(DEADLINE), "--json")
        assert up.returncode == 0, up
        *steps, answer = [json.loads(line) for line in up.stdout.splitlines()]
        check("fastpayd testnet up", answer)
        assert {s["progress"]["step"] for s in steps} == {"generated", "started", "ready"}
        for s in steps:
            check("testnet progress", s["progress"], top=False)
        status = fastpayd("testnet", "status", str(net), "--json")
        assert status.returncode == 0, status
        answer = json.loads(status.stdout)
        check("fastpayd testnet status", answer)
        for row in answer["nodes"]:
            check("testnet status row", row, top=False)
    finally:
        down = fastpayd("testnet", "down", str(net), "--json")
    assert down.returncode == 0, down
    *steps, answer = [json.loads(line) for line in down.stdout.splitlines()]
    check("fastpayd testnet down", answer)
    assert sorted(answer["stopped"]) == ["auth0", "client0"] and answer["killed"] == []
    for s in steps:
        check("testnet progress", s["progress"], top=False)
    stopped = fastpayd("testnet", "status", str(net), "--json")
    answer = json.loads(stopped.stdout)
    assert stopped.returncode == 1 and answer["ok"] is False
    assert answer["error"]["code"] == "NotReady"
    for row in answer["nodes"]:
        check("testnet status row", row, top=False)


def test_json_errors_are_objects_too(tmp_path: Path) -> None:
    """With --json the last stdout line is an object even when the CLI itself fails."""
    for args, status, code in [
        (("--socket", str(tmp_path / "none.sock"), "status"), 3, "Unreachable"),
        (("--socket", str(tmp_path / "none.sock"), "wait-ready", "--timeout", "0.2"), 4,
         "Timeout"),
        (("help", "nosuch"), 2, "Usage"),
    ]:
        out = fastpay(*args, "--json")
        assert out.returncode == status, out
        answer = json.loads(out.stdout.splitlines()[-1])
        assert answer == {"ok": False, "error": {"code": code, "message": answer["error"][
            "message"]}} and isinstance(answer["error"]["message"], str), answer
