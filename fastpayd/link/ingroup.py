"""Range awareness inside a group, sans-I/O: who still answers in the group we are in.

A client in a P2P group runs no discovery (a Find would take the radio off the group's
channel), so without this an authority walking away would leave its in-range table only
after its group ends (the GO, ~10 s of beacon loss) or never (a member behind a GO that
stays).  While in a group the WiFi Direct link multicasts a presence query
(:mod:`fastpayd.wifidirect.group`) every ``every`` seconds on the group interface; this
table says, from the answers, who went silent for ``misses`` probes in a row — out of
range, or gone — within about ``every * misses`` seconds.  Every input carries ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable


class InGroupLiveness:
    """Authorities expected in our group → consecutive probes each left unanswered."""

    def __init__(self, expected: Iterable[str], misses: int = 2) -> None:
        self.misses = misses
        self._silent: dict[str, int] = dict.fromkeys(expected, 0)
        self.last_answer: dict[str, float] = {}

    def expect(self, name: str) -> None:
        self._silent.setdefault(name, 0)

    def probe_done(self, answered: Iterable[str], now: float) -> list[str]:
        """One probe's answers are in; return those now silent ``misses`` times in a row
        (each reported once: they are no longer expected)."""
        heard = set(answered)
        gone = []
        for name in list(self._silent):
            if name in heard:
                self._silent[name] = 0
                self.last_answer[name] = now
                continue
            self._silent[name] += 1
            if self._silent[name] >= self.misses:
                del self._silent[name]
                gone.append(name)
        return gone

    @property
    def expected(self) -> list[str]:
        return sorted(self._silent)
