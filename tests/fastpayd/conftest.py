"""Fixtures for fastpayd tests (helpers in ``fastpayd_helpers``); every daemon is killed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastpayd_helpers import LocalNet


@pytest.fixture
def make_testnet(tmp_path: Path) -> Iterator[Any]:
    nets: list[LocalNet] = []

    def make(authorities: int = 4, clients: int = 2, balance: int = 1000,
             extra_genesis: list[tuple[bytes, int]] | None = None,
             genesis_file: bool = False) -> LocalNet:
        net = LocalNet(tmp_path / f"net{len(nets)}", authorities, clients, balance,
                       extra_genesis, genesis_file)
        nets.append(net)
        return net

    try:
        yield make
    finally:
        for net in nets:
            net.close()
