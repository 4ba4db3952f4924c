"""WiFi Direct for fastpayd: wpa_supplicant over D-Bus, FastPay service discovery, P2P groups.

Three modules, three jobs (the daemon's :class:`~fastpayd.link.Link` on top of them is
:mod:`fastpayd.link.wifidirect`):

* :mod:`.manager` -- :class:`WpaManager`, the D-Bus mirror of one wpa_supplicant
  interface (signals subscribed before state is read, one error helper), names in
  :mod:`.defs`;
* :mod:`.radio` -- the radio verbs: :class:`WifiDirectAuthority` (advertise a
  :class:`FastPayRecord`, keep a group up as GO, admit clients) and
  :class:`WifiDirectClient` (``discover()`` authorities of a committee in range,
  ``membership(peer)`` to join and leave, ``open_tcp()`` to the GO);
* :mod:`.service` -- the FastPay service record and its Bonjour TLVs.
"""

from fastpayd.wifidirect.errors import (
    FormationFailed,
    InterfaceNotFound,
    NotListening,
    PeerGone,
    RecordError,
    WifiDirectError,
    WpaError,
)
from fastpayd.wifidirect.manager import WpaManager
from fastpayd.wifidirect.radio import (
    EVENTS,
    AuthorityPeer,
    Membership,
    WifiDirectAuthority,
    WifiDirectClient,
    link_local_from_mac,
)
from fastpayd.wifidirect.service import FastPayRecord

__all__ = [
    "EVENTS",
    "AuthorityPeer",
    "FastPayRecord",
    "FormationFailed",
    "InterfaceNotFound",
    "Membership",
    "NotListening",
    "PeerGone",
    "RecordError",
    "WifiDirectAuthority",
    "WifiDirectClient",
    "WifiDirectError",
    "WpaError",
    "WpaManager",
    "link_local_from_mac",
]
