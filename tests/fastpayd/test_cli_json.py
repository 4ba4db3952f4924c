"""``fastpay --json`` against the schema in docs/cli.md, on real daemons (issue 16, 4):
every field has its documented type in every case, no undocumented field appears, and
a transfer's progress comes first as JSON lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import fastpay, network_up
from fastpayd_helpers import REPO

TYPES: dict[str, Any] = {"string": str, "integer": int, "number": (int, float),
                         "boolean": bool, "object": dict, "array": list,
                         "null": type(None)}


def schema() -> dict[str, dict[str, str]]:
    text = (REPO / "docs" / "cli.md").read_text()
    block = re.search(r"<!-- schema.*?```json\n(.*?)```", text, re.S)
    assert block is not None
    return dict(json.loads(block.group(1)))


def check(command: str, answer: dict[str, Any]) -> None:
    fields = schema()[command]
    assert answer.pop("ok") is True, answer
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


def test_json_answers_match_schema(net: Path) -> None:
    for node, args, command in [
        ("client0", ("status",), "status"), ("auth0", ("status",), "status"),
        ("client0", ("wait-ready",), "status"),
        ("client0", ("progress",), "progress"),  # idle: no transfer yet
        ("client0", ("balance",), "balance"), ("auth0", ("balance",), "balance"),
        ("auth0", ("balance", "client0"), "balance"),
        ("client0", ("history",), "history"), ("auth0", ("history",), "history"),
        ("client0", ("peers",), "peers"), ("auth0", ("events",), "events"),
        ("client0", ("sync",), "sync"), ("auth0", ("reload",), "reload"),
    ]:
        lines = run(net, node, *args)
        assert len(lines) == 1, (args, lines)
        check(command, lines[0])


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
