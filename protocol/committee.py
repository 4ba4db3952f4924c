"""The committee: who the authorities are, their keys and voting weights.

A committee maps each authority's *name* (the string that appears in votes
and certificates) to its Ed25519 public key and a positive voting weight.
With total weight N (= 3f+1 when every weight is 1):

* ``quorum_threshold = 2*N//3 + 1`` -- the weight of a certificate.  Any two
  quorums intersect in more than N/3 weight, hence in an honest authority as
  long as Byzantine weight is at most f; that authority votes once per
  (sender, sequence number), so two different certificates for one slot are
  impossible.
* ``validity_threshold = (N+2)//3`` -- weight that surely includes one honest
  authority.

The committee is immutable; ``committee_id`` names it (it is advertised in
service discovery and keeps test networks apart).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from protocol.crypto import PUBLIC_KEY_LENGTH
from protocol.messages import MAX_AUTHORITY_NAME_LENGTH, U64_MAX


@dataclass(frozen=True, slots=True)
class AuthorityInfo:
    """An authority's public key and voting weight."""

    public_key: bytes
    weight: int

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_LENGTH:
            raise ValueError(f"an authority public key is {PUBLIC_KEY_LENGTH} bytes")
        if type(self.weight) is not int or not 0 < self.weight <= U64_MAX:
            raise ValueError("an authority weight is a positive integer")


class Committee:
    """The FastPay committee: authority name -> (public key, weight); immutable."""

    __slots__ = ("_committee_id", "_members", "_total", "_quorum", "_validity")

    def __init__(self, committee_id: str, members: Mapping[str, AuthorityInfo]) -> None:
        if not isinstance(committee_id, str) or not committee_id:
            raise ValueError("committee_id must be a non-empty string")
        if not members:
            raise ValueError("a committee needs at least one authority")
        for name, info in members.items():
            if not isinstance(name, str) or not 0 < len(name) <= MAX_AUTHORITY_NAME_LENGTH:
                raise ValueError(f"invalid authority name {name!r}")
            if not isinstance(info, AuthorityInfo):
                raise TypeError("members must map names to AuthorityInfo")
        keys = [info.public_key for info in members.values()]
        if len(set(keys)) != len(keys):
            raise ValueError("two authorities share a public key")
        self._committee_id = committee_id
        self._members: Mapping[str, AuthorityInfo] = MappingProxyType(dict(members))
        self._total = sum(info.weight for info in members.values())
        self._quorum = 2 * self._total // 3 + 1
        self._validity = (self._total + 2) // 3

    @classmethod
    def with_equal_weights(cls, committee_id: str, keys: Mapping[str, bytes]) -> Committee:
        """Return a committee in which every authority (name -> public key) has weight 1."""
        return cls(committee_id, {name: AuthorityInfo(pk, 1) for name, pk in keys.items()})

    @property
    def committee_id(self) -> str:
        """The committee's identifier."""
        return self._committee_id

    @property
    def members(self) -> Mapping[str, AuthorityInfo]:
        """Read-only view of name -> AuthorityInfo."""
        return self._members

    @property
    def names(self) -> frozenset[str]:
        """The authorities' names."""
        return frozenset(self._members)

    @property
    def total_weight(self) -> int:
        """Sum of all voting weights."""
        return self._total

    @property
    def quorum_threshold(self) -> int:
        """Weight a certificate needs: 2*total//3 + 1."""
        return self._quorum

    @property
    def validity_threshold(self) -> int:
        """Weight that surely includes an honest authority: (total+2)//3."""
        return self._validity

    def weight(self, name: str) -> int:
        """Return the voting weight of ``name``, 0 if it is not a member."""
        info = self._members.get(name)
        return 0 if info is None else info.weight

    def public_key(self, name: str) -> bytes | None:
        """Return the public key of ``name``, None if it is not a member."""
        info = self._members.get(name)
        return None if info is None else info.public_key

    def weight_of(self, names: Iterable[str]) -> int:
        """Return the total weight of the distinct members among ``names``."""
        return sum(self.weight(n) for n in set(names))

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Committee)
            and other._committee_id == self._committee_id
            and dict(other._members) == dict(self._members)
        )

    def __hash__(self) -> int:
        return hash((self._committee_id, frozenset(self._members.items())))

    def __repr__(self) -> str:
        return f"Committee({self._committee_id!r}, {len(self._members)} authorities)"
