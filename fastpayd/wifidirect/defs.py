"""Names and value shapes of wpa_supplicant's D-Bus API (``fi.w1.wpa_supplicant1``).

Everything the rest of the package needs to know about the wire lives here: bus and
interface names, method and signal names, and the D-Bus type of every argument we
send (wpa_supplicant checks variant types strictly: ``Timeout`` of ``Find`` is ``i``,
``query``/``response`` of ``AddService`` are ``ay``, a peer is an ``o``...). Source:
hostap ``doc/dbus.doxygen``, checked against wpa_supplicant 2.10 in the VM.
"""

from __future__ import annotations

from typing import Final

SERVICE: Final = "fi.w1.wpa_supplicant1"
ROOT_PATH: Final = "/fi/w1/wpa_supplicant1"

IFACE_ROOT: Final = "fi.w1.wpa_supplicant1"
IFACE_INTERFACE: Final = "fi.w1.wpa_supplicant1.Interface"
IFACE_P2P: Final = "fi.w1.wpa_supplicant1.Interface.P2PDevice"
IFACE_WPS: Final = "fi.w1.wpa_supplicant1.Interface.WPS"
IFACE_PEER: Final = "fi.w1.wpa_supplicant1.Peer"
IFACE_GROUP: Final = "fi.w1.wpa_supplicant1.Group"
IFACE_BSS: Final = "fi.w1.wpa_supplicant1.BSS"
IFACE_PERSISTENT_GROUP: Final = "fi.w1.wpa_supplicant1.PersistentGroup"
IFACE_PROPERTIES: Final = "org.freedesktop.DBus.Properties"
IFACE_DBUS: Final = "org.freedesktop.DBus"

# Signals of fi.w1.wpa_supplicant1.Interface.P2PDevice we react to.
SIG_DEVICE_FOUND: Final = "DeviceFound"  # (o)
SIG_DEVICE_FOUND_PROPS: Final = "DeviceFoundProperties"  # (o, a{sv})
SIG_DEVICE_LOST: Final = "DeviceLost"  # (o)
SIG_FIND_STOPPED: Final = "FindStopped"  # ()
SIG_GROUP_STARTED: Final = "GroupStarted"  # (a{sv}) interface_object, role, group_object
SIG_GROUP_FINISHED: Final = "GroupFinished"  # (a{sv}) same keys
SIG_GROUP_FORMATION_FAILURE: Final = "GroupFormationFailure"  # (s reason)
SIG_GO_NEGOTIATION_FAILURE: Final = "GONegotiationFailure"  # (a{sv}) peer_object, status
SIG_GO_NEGOTIATION_REQUEST: Final = "GONegotiationRequest"  # (o, q passwd id, y go intent)
SIG_WPS_FAILED: Final = "WpsFailed"  # (s, a{sv})
SIG_SD_RESPONSE: Final = "ServiceDiscoveryResponse"  # (a{sv}) peer_object, update_indicator, tlvs
SIG_PD_PBC_REQUEST: Final = "ProvisionDiscoveryPBCRequest"  # (o)
SIG_PD_ENTER_PIN_REQUEST: Final = "ProvisionDiscoveryRequestEnterPin"  # (o)
SIG_PD_DISPLAY_PIN_REQUEST: Final = "ProvisionDiscoveryRequestDisplayPin"  # (o, s)
SIG_PD_FAILURE: Final = "ProvisionDiscoveryFailure"  # (o, i)
# Signals of fi.w1.wpa_supplicant1.Group (GO side only).
SIG_PEER_JOINED: Final = "PeerJoined"  # (o)
SIG_PERSISTENT_GROUP_ADDED: Final = "PersistentGroupAdded"  # (o, a{sv}) its network block
SIG_PERSISTENT_GROUP_REMOVED: Final = "PersistentGroupRemoved"  # (o)
SIG_PEER_DISCONNECTED: Final = "PeerDisconnected"  # (o)
# org.freedesktop.DBus.Properties
SIG_PROPERTIES_CHANGED: Final = "PropertiesChanged"  # (s, a{sv}, as)

# Provision-discovery requests a GO sees when a client asks to join its group.
PD_REQUEST_SIGNALS: Final = frozenset(
    {SIG_PD_PBC_REQUEST, SIG_PD_ENTER_PIN_REQUEST, SIG_PD_DISPLAY_PIN_REQUEST}
)

# Keys and D-Bus types of method arguments (a{sv} dictionaries).
FIND_ARGS: Final = {"Timeout": "i", "DiscoveryType": "s", "freq": "i"}
CONNECT_ARGS: Final = {
    "peer": "o",
    "persistent": "b",
    "join": "b",
    "authorize_only": "b",
    "frequency": "i",
    "go_intent": "i",
    "wps_method": "s",
    "pin": "s",
}
GROUP_ADD_ARGS: Final = {"persistent": "b", "frequency": "i", "persistent_group_object": "o"}
SERVICE_ARGS: Final = {
    "service_type": "s",
    "version": "i",
    "service": "s",
    "query": "ay",
    "response": "ay",
}
SD_REQUEST_ARGS: Final = {"peer_object": "o", "service_type": "s", "tlv": "ay"}
WPS_START_ARGS: Final = {
    "Role": "s",
    "Type": "s",
    "Pin": "s",
    "Bssid": "ay",
    "P2PDeviceAddress": "ay",
}

# Properties of a fi.w1.wpa_supplicant1.Peer object (subset we read).
PEER_DEVICE_NAME: Final = "DeviceName"
PEER_DEVICE_ADDRESS: Final = "DeviceAddress"  # ay
PEER_LEVEL: Final = "level"  # i, dBm of the last frame heard from the peer
PEER_GROUP_CAPABILITY: Final = "groupcapability"  # y
GROUP_CAPAB_GO: Final = 0x01  # P2P Group Capability bitmap: "P2P Group Owner"

# Service-discovery TLV protocol types (Wi-Fi P2P spec, table "Service Protocol Types").
SD_PROTO_ALL: Final = 0
SD_PROTO_BONJOUR: Final = 1
SD_PROTO_UPNP: Final = 2
SD_STATUS_SUCCESS: Final = 0


def mac_str(raw: bytes) -> str:
    """Return ``aa:bb:cc:dd:ee:ff`` for 6 raw address bytes."""
    return ":".join(f"{b:02x}" for b in raw)


def mac_bytes(text: str) -> bytes:
    """Return the 6 raw bytes of ``aa:bb:cc:dd:ee:ff``; raise ValueError otherwise."""
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)
