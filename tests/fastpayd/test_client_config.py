"""The client node file's [client] table: the payment session's pacing, strictly read."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastpayd.config import ConfigError, load_node_config
from fastpayd.testnet import generate_testnet


def _client_file(tmp_path: Path, extra: str) -> Path:
    generate_testnet(tmp_path, authorities=4, clients=1, balance=10, base_port=19100,
                     progress=lambda line: None)
    path = tmp_path / "client0.toml"
    path.write_text(path.read_text() + extra)
    return path


def test_client_table_sets_the_session_pacing(tmp_path: Path) -> None:
    path = _client_file(tmp_path, "\n[client]\nsync_interval = 1.5\nretry_after = 0.5\n")
    cc = load_node_config(path).client
    assert (cc.sync_interval, cc.retry_after, cc.max_retry_after) == (1.5, 0.5, 30.0)


def test_client_table_typo_names_the_nearest_key(tmp_path: Path) -> None:
    path = _client_file(tmp_path, "\n[client]\nsync_intervall = 1\n")
    with pytest.raises(ConfigError, match=r"\[client\].*sync_intervall.*sync_interval"):
        load_node_config(path)


def test_client_table_refuses_a_zero_back_off(tmp_path: Path) -> None:
    path = _client_file(tmp_path, "\n[client]\nretry_after = 0\n")
    with pytest.raises(ConfigError, match="retry_after"):
        load_node_config(path)
