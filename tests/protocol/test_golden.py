"""Golden wire format: pins the exact bytes of every message and every error.

Keys come from fixed seeds and Ed25519 is deterministic, so every signature
and therefore every encoding is reproducible.  If one of these tests fails,
the wire format changed: that must be a deliberate act (bump
PROTOCOL_VERSION, update docs/protocol.md, then regenerate the hex below
with ``python tests/protocol/test_golden.py``).
"""

from __future__ import annotations

import pytest

from protocol import (
    ALL_ERRORS,
    DOMAIN_TRANSFER_ORDER,
    DOMAIN_VOTE,
    PROTOCOL_VERSION,
    AccountInfoRequest,
    AccountInfoResponse,
    CertifiedTransferOrder,
    ConfirmationAck,
    ConfirmationOrder,
    KeyPair,
    Message,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    decode,
    encode,
)

SENDER = KeyPair.from_seed(bytes(range(32)))
RECIPIENT = KeyPair.from_seed(bytes(range(32, 64)))
AUTHORITIES = {f"auth{i}": KeyPair.from_seed(bytes([0xA0 + i]) * 32) for i in range(4)}


def golden_messages() -> dict[str, Message]:
    """The pinned messages, by name."""
    transfer = Transfer(
        sender=SENDER.public_key,
        recipient=RECIPIENT.public_key,
        amount=1_000,
        sequence_number=7,
        user_data=b"coffee",
    )
    order = TransferOrder.sign(transfer, SENDER)
    votes = [SignedTransferOrder.sign(order, n, k) for n, k in sorted(AUTHORITIES.items())]
    cert = CertifiedTransferOrder(
        value=order, signatures=tuple((v.authority, v.signature) for v in votes[:3])
    )
    messages: dict[str, Message] = {
        "Transfer": transfer,
        "Transfer.no_user_data": transfer.model_copy(update={"user_data": None}),
        "TransferOrder": order,
        "SignedTransferOrder": votes[0],
        "CertifiedTransferOrder": cert,
        "ConfirmationOrder": ConfirmationOrder(certificate=cert),
        "ConfirmationAck": ConfirmationAck(
            sender=SENDER.public_key, sequence_number=7, applied=True
        ),
        "AccountInfoRequest": AccountInfoRequest(sender=SENDER.public_key),
        "AccountInfoRequest.full": AccountInfoRequest(
            sender=SENDER.public_key,
            request_sequence_number=6,
            request_received_transfers_excluding_first_nth=0,
        ),
        "AccountInfoResponse": AccountInfoResponse(
            sender=SENDER.public_key,
            balance=-5,
            next_sequence_number=7,
            pending_confirmation=votes[1],
            requested_certificate=None,
            requested_received_transfers=(),
        ),
        "AccountInfoResponse.certificates": AccountInfoResponse(
            sender=RECIPIENT.public_key,
            balance=1_000,
            next_sequence_number=0,
            pending_confirmation=None,
            requested_certificate=cert,
            requested_received_transfers=(cert,),
        ),
    }
    for cls in ALL_ERRORS:
        messages[f"Error.{cls.code}"] = cls().to_message()
    return messages


GOLDEN_KEYS: dict[str, str] = {
    "sender": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
    "recipient": "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7",
    "auth0": "b533d8ad9fcfbdde0b481c1b334ddc3c53412fd614564e7e5afd020368d382c3",
    "auth1": "bc7cbcb5636375fa1d82434d466724d92377f53b980695dd49d26d0ce12205a5",
    "auth2": "65e8f9b0bc6eae124169f0576f97362d295a8cf5f770b45e14357ce647d33eec",
    "auth3": "acf12b4acc1c660a8326aed34039efb728a5e496488240f50a932ab7aba51751",
}
GOLDEN_CANONICAL_TRANSFER = (
    "95c42003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8c42029acba"
    "e141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7cd03e807c406636f666665"
    "65"
)
GOLDEN_HEX: dict[str, str] = {
    "Transfer": (
        "9301a85472616e7366657295c42003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc"
        "8664125531b8c42029acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7"
        "cd03e807c406636f66666565"
    ),
    "Transfer.no_user_data": (
        "9301a85472616e7366657295c42003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc"
        "8664125531b8c42029acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7"
        "cd03e807c0"
    ),
    "TransferOrder": (
        "9301ad5472616e736665724f726465729295c42003a107bff3ce10be1d70dd18e74bc09967e4d630"
        "9ba50d5f1ddc8664125531b8c42029acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794"
        "bc9322966dd7cd03e807c406636f66666565c4402f567256a41d9453a67f40bc0588056083bbb668"
        "868249b3f108310d17131129aa7ef47085949e18b6e594b03b3236ad3536ba352a1e2912e82ed9b5"
        "ad827e0f"
    ),
    "SignedTransferOrder": (
        "9301b35369676e65645472616e736665724f72646572939295c42003a107bff3ce10be1d70dd18e7"
        "4bc09967e4d6309ba50d5f1ddc8664125531b8c42029acbae141bccaf0b22e1a94d34d0bc7361e52"
        "6d0bfe12c89794bc9322966dd7cd03e807c406636f66666565c4402f567256a41d9453a67f40bc05"
        "88056083bbb668868249b3f108310d17131129aa7ef47085949e18b6e594b03b3236ad3536ba352a"
        "1e2912e82ed9b5ad827e0fa56175746830c440f0f75fb2946bfe89891a1f219dd86a88265a0326bf"
        "ccd9545b0013ba6a0ef47fa588a5b950d8ac2d9e7b9535c5c265de54cd733838c8c7d6ecffc65b4f"
        "314a06"
    ),
    "CertifiedTransferOrder": (
        "9301b64365727469666965645472616e736665724f72646572929295c42003a107bff3ce10be1d70"
        "dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8c42029acbae141bccaf0b22e1a94d34d0bc7"
        "361e526d0bfe12c89794bc9322966dd7cd03e807c406636f66666565c4402f567256a41d9453a67f"
        "40bc0588056083bbb668868249b3f108310d17131129aa7ef47085949e18b6e594b03b3236ad3536"
        "ba352a1e2912e82ed9b5ad827e0f9392a56175746830c440f0f75fb2946bfe89891a1f219dd86a88"
        "265a0326bfccd9545b0013ba6a0ef47fa588a5b950d8ac2d9e7b9535c5c265de54cd733838c8c7d6"
        "ecffc65b4f314a0692a56175746831c4402c2ad1c34efbc7e96e3fbc483ecdef8393867942bea498"
        "4b3f9551dad3ed7536ae74298fe4ec8e0af0e9cf9367b367b6d9dfa7e46df1ed4cc02b64ffd7c7fd"
        "0092a56175746832c4405e29e404c39edbb468ca4b7032787963c002eee90d30bf0b810a598c5491"
        "e18955df3336441bd7aab232cfa1d40625e84928212b87cea00368b37f2cfa22350b"
    ),
    "ConfirmationOrder": (
        "9301b1436f6e6669726d6174696f6e4f7264657291929295c42003a107bff3ce10be1d70dd18e74b"
        "c09967e4d6309ba50d5f1ddc8664125531b8c42029acbae141bccaf0b22e1a94d34d0bc7361e526d"
        "0bfe12c89794bc9322966dd7cd03e807c406636f66666565c4402f567256a41d9453a67f40bc0588"
        "056083bbb668868249b3f108310d17131129aa7ef47085949e18b6e594b03b3236ad3536ba352a1e"
        "2912e82ed9b5ad827e0f9392a56175746830c440f0f75fb2946bfe89891a1f219dd86a88265a0326"
        "bfccd9545b0013ba6a0ef47fa588a5b950d8ac2d9e7b9535c5c265de54cd733838c8c7d6ecffc65b"
        "4f314a0692a56175746831c4402c2ad1c34efbc7e96e3fbc483ecdef8393867942bea4984b3f9551"
        "dad3ed7536ae74298fe4ec8e0af0e9cf9367b367b6d9dfa7e46df1ed4cc02b64ffd7c7fd0092a561"
        "75746832c4405e29e404c39edbb468ca4b7032787963c002eee90d30bf0b810a598c5491e18955df"
        "3336441bd7aab232cfa1d40625e84928212b87cea00368b37f2cfa22350b"
    ),
    "ConfirmationAck": (
        "9301af436f6e6669726d6174696f6e41636b93c42003a107bff3ce10be1d70dd18e74bc09967e4d6"
        "309ba50d5f1ddc8664125531b807c3"
    ),
    "AccountInfoRequest": (
        "9301b24163636f756e74496e666f5265717565737493c42003a107bff3ce10be1d70dd18e74bc099"
        "67e4d6309ba50d5f1ddc8664125531b8c0c0"
    ),
    "AccountInfoRequest.full": (
        "9301b24163636f756e74496e666f5265717565737493c42003a107bff3ce10be1d70dd18e74bc099"
        "67e4d6309ba50d5f1ddc8664125531b80600"
    ),
    "AccountInfoResponse": (
        "9301b34163636f756e74496e666f526573706f6e736596c42003a107bff3ce10be1d70dd18e74bc0"
        "9967e4d6309ba50d5f1ddc8664125531b8fb07939295c42003a107bff3ce10be1d70dd18e74bc099"
        "67e4d6309ba50d5f1ddc8664125531b8c42029acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe"
        "12c89794bc9322966dd7cd03e807c406636f66666565c4402f567256a41d9453a67f40bc05880560"
        "83bbb668868249b3f108310d17131129aa7ef47085949e18b6e594b03b3236ad3536ba352a1e2912"
        "e82ed9b5ad827e0fa56175746831c4402c2ad1c34efbc7e96e3fbc483ecdef8393867942bea4984b"
        "3f9551dad3ed7536ae74298fe4ec8e0af0e9cf9367b367b6d9dfa7e46df1ed4cc02b64ffd7c7fd00"
        "c090"
    ),
    "AccountInfoResponse.certificates": (
        "9301b34163636f756e74496e666f526573706f6e736596c42029acbae141bccaf0b22e1a94d34d0b"
        "c7361e526d0bfe12c89794bc9322966dd7cd03e800c0929295c42003a107bff3ce10be1d70dd18e7"
        "4bc09967e4d6309ba50d5f1ddc8664125531b8c42029acbae141bccaf0b22e1a94d34d0bc7361e52"
        "6d0bfe12c89794bc9322966dd7cd03e807c406636f66666565c4402f567256a41d9453a67f40bc05"
        "88056083bbb668868249b3f108310d17131129aa7ef47085949e18b6e594b03b3236ad3536ba352a"
        "1e2912e82ed9b5ad827e0f9392a56175746830c440f0f75fb2946bfe89891a1f219dd86a88265a03"
        "26bfccd9545b0013ba6a0ef47fa588a5b950d8ac2d9e7b9535c5c265de54cd733838c8c7d6ecffc6"
        "5b4f314a0692a56175746831c4402c2ad1c34efbc7e96e3fbc483ecdef8393867942bea4984b3f95"
        "51dad3ed7536ae74298fe4ec8e0af0e9cf9367b367b6d9dfa7e46df1ed4cc02b64ffd7c7fd0092a5"
        "6175746832c4405e29e404c39edbb468ca4b7032787963c002eee90d30bf0b810a598c5491e18955"
        "df3336441bd7aab232cfa1d40625e84928212b87cea00368b37f2cfa22350b91929295c42003a107"
        "bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8c42029acbae141bccaf0b2"
        "2e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7cd03e807c406636f66666565c4402f5672"
        "56a41d9453a67f40bc0588056083bbb668868249b3f108310d17131129aa7ef47085949e18b6e594"
        "b03b3236ad3536ba352a1e2912e82ed9b5ad827e0f9392a56175746830c440f0f75fb2946bfe8989"
        "1a1f219dd86a88265a0326bfccd9545b0013ba6a0ef47fa588a5b950d8ac2d9e7b9535c5c265de54"
        "cd733838c8c7d6ecffc65b4f314a0692a56175746831c4402c2ad1c34efbc7e96e3fbc483ecdef83"
        "93867942bea4984b3f9551dad3ed7536ae74298fe4ec8e0af0e9cf9367b367b6d9dfa7e46df1ed4c"
        "c02b64ffd7c7fd0092a56175746832c4405e29e404c39edbb468ca4b7032787963c002eee90d30bf"
        "0b810a598c5491e18955df3336441bd7aab232cfa1d40625e84928212b87cea00368b37f2cfa2235"
        "0b"
    ),
    "Error.InvalidMessage": (
        "9301a54572726f7292ae496e76616c69644d657373616765b14d616c666f726d6564206d657373616765"
    ),
    "Error.UnknownMessageType": (
        "9301a54572726f7292b2556e6b6e6f776e4d65737361676554797065b4556e6b6e6f776e206d6573"
        "736167652074797065"
    ),
    "Error.UnsupportedVersion": (
        "9301a54572726f7292b2556e737570706f7274656456657273696f6ebc556e737570706f72746564"
        "2070726f746f636f6c2076657273696f6e"
    ),
    "Error.FrameTooLarge": (
        "9301a54572726f7292ad4672616d65546f6f4c61726765d9244672616d6520657863656564732074"
        "6865206d6178696d756d206672616d652073697a65"
    ),
    "Error.UnexpectedMessage": (
        "9301a54572726f7292b1556e65787065637465644d657373616765be4d6573736167652074797065"
        "206e6f742061636365707465642068657265"
    ),
    "Error.Timeout": ("9301a54572726f7292a754696d656f7574a954696d6564206f7574"),
    "Error.TooManyConnections": (
        "9301a54572726f7292b2546f6f4d616e79436f6e6e656374696f6e73b4546f6f206d616e7920636f"
        "6e6e656374696f6e73"
    ),
    "Error.InternalError": (
        "9301a54572726f7292ad496e7465726e616c4572726f72ae496e7465726e616c206572726f72"
    ),
    "Error.InvalidSignature": (
        "9301a54572726f7292b0496e76616c69645369676e6174757265b65369676e617475726520697320"
        "6e6f742076616c6964"
    ),
    "Error.IncorrectTransferAmount": (
        "9301a54572726f7292b7496e636f72726563745472616e73666572416d6f756e74d9295472616e73"
        "66657220616d6f756e74206d7573742062652067726561746572207468616e207a65726f"
    ),
    "Error.InvalidSequenceNumber": (
        "9301a54572726f7292b5496e76616c696453657175656e63654e756d626572d92553657175656e63"
        "65206e756d6265722063616e6e6f7420626520696e6372656d656e746564"
    ),
    "Error.UnknownSenderAccount": (
        "9301a54572726f7292b4556e6b6e6f776e53656e6465724163636f756e74b6556e6b6e6f776e2073"
        "656e646572206163636f756e74"
    ),
    "Error.PreviousTransferMustBeConfirmedFirst": (
        "9301a54572726f7292d92450726576696f75735472616e736665724d7573744265436f6e6669726d"
        "65644669727374d9314120646966666572656e74207472616e736665722069732070656e64696e67"
        "3b20636f6e6669726d206974206669727374"
    ),
    "Error.UnexpectedSequenceNumber": (
        "9301a54572726f7292b8556e657870656374656453657175656e63654e756d626572ba556e657870"
        "65637465642073657175656e6365206e756d626572"
    ),
    "Error.InsufficientFunding": (
        "9301a54572726f7292b3496e73756666696369656e7446756e64696e67b4496e7375666669636965"
        "6e742066756e64696e67"
    ),
    "Error.CertificateAuthorityReuse": (
        "9301a54572726f7292b94365727469666963617465417574686f726974795265757365d932416e20"
        "617574686f72697479207369676e656420746865206365727469666963617465206d6f7265207468"
        "616e206f6e6365"
    ),
    "Error.UnknownSigner": (
        "9301a54572726f7292ad556e6b6e6f776e5369676e6572d9205369676e6572206973206e6f742061"
        "20636f6d6d6974746565206d656d626572"
    ),
    "Error.CertificateRequiresQuorum": (
        "9301a54572726f7292b94365727469666963617465526571756972657351756f72756dd929436572"
        "7469666963617465207369676e65727320646f206e6f7420726561636820612071756f72756d"
    ),
    "Error.MissingEarlierConfirmations": (
        "9301a54572726f7292bb4d697373696e674561726c696572436f6e6669726d6174696f6e73d92145"
        "61726c69657220636f6e6669726d6174696f6e7320617265206d697373696e67"
    ),
    "Error.CertificateNotFound": (
        "9301a54572726f7292b343657274696669636174654e6f74466f756e64d9274e6f20636572746966"
        "696361746520666f7220746861742073657175656e6365206e756d626572"
    ),
    "Error.TransferAlreadyPending": (
        "9301a54572726f7292b65472616e73666572416c726561647950656e64696e67bd41207472616e73"
        "66657220697320616c72656164792070656e64696e67"
    ),
    "Error.WrongRecipient": (
        "9301a54572726f7292ae57726f6e67526563697069656e74d9254365727469666963617465206973"
        "206e6f7420666f72207468697320726563697069656e74"
    ),
    "Error.BalanceOverflow": (
        "9301a54572726f7292af42616c616e63654f766572666c6f77d92143726564697420776f756c6420"
        "6f766572666c6f77207468652062616c616e6365"
    ),
}


def test_golden_keys():
    assert SENDER.public_key.hex() == GOLDEN_KEYS["sender"]
    assert RECIPIENT.public_key.hex() == GOLDEN_KEYS["recipient"]
    for name, key in AUTHORITIES.items():
        assert key.public_key.hex() == GOLDEN_KEYS[name]


def test_golden_signing_domains():
    assert DOMAIN_TRANSFER_ORDER == b"FastPay/TransferOrder/v1\x00"
    assert DOMAIN_VOTE == b"FastPay/Vote/v1\x00"
    assert PROTOCOL_VERSION == 1
    transfer = golden_messages()["Transfer"]
    assert isinstance(transfer, Transfer)
    assert transfer.canonical_bytes.hex() == GOLDEN_CANONICAL_TRANSFER


def test_golden_covers_every_message():
    assert set(golden_messages()) == set(GOLDEN_HEX)


@pytest.mark.parametrize("name", sorted(golden_messages()))
def test_golden_wire_bytes(name: str):
    message = golden_messages()[name]
    assert encode(message).hex() == GOLDEN_HEX[name]
    assert decode(bytes.fromhex(GOLDEN_HEX[name])) == message


def _regenerate() -> None:  # pragma: no cover - maintenance helper
    print("GOLDEN_KEYS = {")
    print(f'    "sender": "{SENDER.public_key.hex()}",')
    print(f'    "recipient": "{RECIPIENT.public_key.hex()}",')
    for name, key in AUTHORITIES.items():
        print(f'    "{name}": "{key.public_key.hex()}",')
    print("}")
    transfer = golden_messages()["Transfer"]
    assert isinstance(transfer, Transfer)
    print(f'GOLDEN_CANONICAL_TRANSFER = "{transfer.canonical_bytes.hex()}"')
    print("GOLDEN_HEX = {")
    for name, message in golden_messages().items():
        data = encode(message).hex()
        chunks = [data[i : i + 80] for i in range(0, len(data), 80)]
        print(f'    "{name}": (')
        for chunk in chunks:
            print(f'        "{chunk}"')
        print("    ),")
    print("}")


if __name__ == "__main__":  # pragma: no cover
    _regenerate()
