"""The WiFi Direct link of fastpayd: wpa_supplicant over D-Bus, FastPay service discovery,
P2P groups and link-local sockets.

Public names:

* :class:`WifiDirectAuthority` -- advertise a :class:`FastPayRecord`, keep a group up
  as GO, admit clients, ``serve()`` TCP on the advertised port;
* :class:`WifiDirectClient` -- ``discover()`` authorities of a committee in range,
  ``session(peer)`` to join, talk framed msgpack, and leave;
* :class:`WpaManager` -- the D-Bus mirror of one wpa_supplicant interface;
* :func:`read_frame` / :func:`write_frame` -- :mod:`fastpayd.framing` frames on streams.
"""

from fastpayd.wifidirect.errors import (
    FormationFailed,
    InterfaceNotFound,
    PeerGone,
    RecordError,
    WifiDirectError,
    WpaError,
)
from fastpayd.wifidirect.link import (
    EVENTS,
    AuthorityPeer,
    Membership,
    WifiDirectAuthority,
    WifiDirectClient,
    link_local_from_mac,
    read_frame,
    write_frame,
)
from fastpayd.wifidirect.manager import WpaManager
from fastpayd.wifidirect.service import FastPayRecord

__all__ = [
    "EVENTS",
    "AuthorityPeer",
    "FastPayRecord",
    "FormationFailed",
    "InterfaceNotFound",
    "Membership",
    "PeerGone",
    "RecordError",
    "WifiDirectAuthority",
    "WifiDirectClient",
    "WifiDirectError",
    "WpaError",
    "WpaManager",
    "link_local_from_mac",
    "read_frame",
    "write_frame",
]
