"""fastpayd.errors: one root for the daemon's errors, each with a stable code and exit status."""

from __future__ import annotations

import pytest

from fastpayd.config import ConfigError
from fastpayd.control import ControlError, ControlSocketInUse
from fastpayd.database import StorageError
from fastpayd.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_IN_USE, FastpaydError
from fastpayd.keys import KeyFileError
from fastpayd.link import LinkError
from fastpayd.statelock import StateLocked
from fastpayd.wifidirect import FormationFailed, PeerGone, WifiDirectError, WpaError


@pytest.mark.parametrize(("cls", "code", "status"), [
    (ConfigError, "ConfigError", EXIT_CONFIG),
    (KeyFileError, "KeyFileError", EXIT_CONFIG),
    (StateLocked, "StateLocked", EXIT_IN_USE),
    (ControlSocketInUse, "ControlSocketInUse", EXIT_IN_USE),
    (LinkError, "LinkError", EXIT_FAILURE),
    (StorageError, "StorageError", EXIT_FAILURE),
    (WifiDirectError, "WifiDirect", EXIT_FAILURE),
    (FormationFailed, "FormationFailed", EXIT_FAILURE),
    (PeerGone, "PeerGone", EXIT_FAILURE),
    (WpaError, "WpaError", EXIT_FAILURE),
])
def test_every_daemon_error_has_one_root_a_code_and_an_exit_status(cls, code, status):
    assert issubclass(cls, FastpaydError)
    assert cls.code == code and cls.exit_status == status


def test_control_errors_carry_their_own_code():
    err = ControlError("NoQuorum", "no quorum")
    assert isinstance(err, FastpaydError) and err.code == "NoQuorum"
