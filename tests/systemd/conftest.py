"""Fixtures for the tests of the files under ``systemd/`` (helpers: ``sd_helpers``)."""

from __future__ import annotations

import pytest
from sd_helpers import require_tool


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """Path of ``systemd-analyze`` (Debian package ``systemd``)."""
    return require_tool("systemd-analyze", "systemd")
