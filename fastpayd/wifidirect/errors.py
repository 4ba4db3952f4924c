"""Errors of the WiFi Direct link: one root, one subclass per way things fail.

:class:`WpaError` carries the D-Bus error name wpa_supplicant replied with (e.g.
``fi.w1.wpa_supplicant1.InvalidArgs``) so callers can tell a refused request from a
radio problem; it is made in exactly one place (:func:`manager.check_reply`).
"""

from __future__ import annotations

from fastpayd.errors import FastpaydError


class WifiDirectError(FastpaydError):
    """Root of every error this package raises."""

    code = "WifiDirect"


class WpaError(WifiDirectError):
    """wpa_supplicant answered a D-Bus call with an error reply."""

    code = "WpaError"

    def __init__(self, method: str, name: str, message: str) -> None:
        super().__init__(f"{method}: {name}: {message}")
        self.method = method
        self.name = name
        self.message = message


class InterfaceNotFound(WifiDirectError):
    """wpa_supplicant does not control the named network interface (or is not on the bus)."""

    code = "InterfaceNotFound"


class FormationFailed(WifiDirectError):
    """Joining or starting a P2P group failed (WPS failure, formation failure, timeout)."""

    code = "FormationFailed"


class RecordError(WifiDirectError, ValueError):
    """A FastPay service record could not be encoded or decoded."""

    code = "RecordError"


class PeerGone(WifiDirectError):
    """The peer left radio range (or its group ended) while we were talking to it."""

    code = "PeerGone"


class NotListening(PeerGone):
    """In the peer's group, its port refused us for longer than a daemon takes to start:
    nobody serves there (a daemon that died leaves its group up in wpa_supplicant)."""

    code = "NotListening"
