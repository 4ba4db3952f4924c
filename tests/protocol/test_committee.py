"""Committee: thresholds, lookups, validation."""

from __future__ import annotations

import pytest
from protocol_helpers import keypair

from protocol import AuthorityInfo, Committee


def committee(weights: dict[str, int]) -> Committee:
    return Committee(
        "c", {n: AuthorityInfo(keypair(f"authority/{n}").public_key, w) for n, w in weights.items()}
    )


@pytest.mark.parametrize(
    ("weights", "quorum", "validity"),
    [
        ([1], 1, 1),
        ([1, 1, 1, 1], 3, 2),
        ([1] * 7, 5, 3),
        ([1] * 10, 7, 4),
        ([3, 1, 1, 1], 5, 2),
        ([1, 1, 1], 3, 1),
    ],
)
def test_committee_thresholds(weights: list[int], quorum: int, validity: int):
    c = committee({f"a{i}": w for i, w in enumerate(weights)})
    assert c.total_weight == sum(weights)
    assert c.quorum_threshold == quorum == 2 * sum(weights) // 3 + 1
    assert c.validity_threshold == validity == (sum(weights) + 2) // 3


def test_committee_lookups():
    c = committee({"a": 2, "b": 1})
    assert c.names == frozenset({"a", "b"})
    assert c.weight("a") == 2 and c.weight("zz") == 0
    assert c.public_key("a") == keypair("authority/a").public_key
    assert c.public_key("zz") is None
    assert c.weight_of(["a", "a", "b", "zz"]) == 3
    assert "a" in c and "zz" not in c
    assert c == committee({"a": 2, "b": 1}) and hash(c) == hash(committee({"a": 2, "b": 1}))
    assert c.committee_id == "c"


def test_committee_rejects_invalid():
    pk = keypair("x").public_key
    with pytest.raises(ValueError):
        Committee("c", {})
    with pytest.raises(ValueError):
        Committee("", {"a": AuthorityInfo(pk, 1)})
    with pytest.raises(ValueError):
        Committee("c", {"a": AuthorityInfo(pk, 1), "b": AuthorityInfo(pk, 1)})
    with pytest.raises(ValueError):
        Committee("c", {"": AuthorityInfo(pk, 1)})
    with pytest.raises(ValueError):
        AuthorityInfo(pk, 0)
    with pytest.raises(ValueError):
        AuthorityInfo(b"short", 1)


def test_committee_with_equal_weights():
    c = Committee.with_equal_weights("c", {"a": keypair("a").public_key})
    assert c.weight("a") == 1 and c.quorum_threshold == 1
