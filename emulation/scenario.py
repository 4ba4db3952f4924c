"""Scenarios: a TOML file that describes an emulation (nothing here runs anything).

The format is documented in ``docs/scenarios.md``; in short::

    name = "two stations"
    seed = 1                       # mobility randomness (reproducible runs)
    duration = 60                  # --batch: seconds to run (after the timeline ends)
    backend = "auto"               # "auto", "hwsim" or "mininet"

    [area]                         # metres; random mobility stays inside
    x_min = 0
    y_min = 0
    x_max = 500
    y_max = 500

    [medium]                       # log-distance path loss
    tx_power = 20.0
    exponent = 3.0

    [[stations]]
    name = "sta1"
    role = "plain"                 # "authority", "client" or "plain"
    position = [0, 0]
    range = 100
    mobility = { model = "random_walk", min_speed = 0.5, max_speed = 2, interval = 5 }

    [[timeline]]                   # --batch: CLI lines at given times
    at = 5.0
    do = "move sta1 300,0"
    retry_for = 0                  # retry a failing line for this long (seconds)

Everything is checked when the file is loaded, before any VM or station starts (a
mistake found after a multi-minute boot costs the boot): every table's keys are known
(an unknown key is an error naming the file, the key and the nearest known key), and
every timeline line is a known command whose arguments have the right shape and name
stations of the right role (``TIMELINE_COMMANDS``).  The keys FastPay's layer reads
(``[fastpay]``, a station's ``weight``/``balance``) are part of the format and land in
``Scenario.extra`` / ``StationSpec.extra`` for that layer.

A crowd is described, not listed: ``[crowd]`` expands into ``count`` client stations
(``client0``.. or ``name_prefix``) with random start points and random-waypoint mobility
inside Mininet-WiFi's bounds (``min_x..max_x``, ``min_y..max_y``, speeds
``min_v..max_v``), and ``[payments]`` into a schedule of payments between the scenario's
clients (:class:`Payment`, each a ``pay`` line of the timeline).  Both are drawn from
their ``seed`` alone, so one file (and one ``--clients``) always gives the same crowd and
the same payments; :func:`parse` takes ``clients`` to override the crowd's size.
"""

from __future__ import annotations

import difflib
import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulation.medium import PathLoss
from emulation.mobility import Area, make_model
from emulation.station import StationSpec

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "default.toml"
BACKENDS = ("auto", "hwsim", "mininet")


class ScenarioError(ValueError):
    """The scenario file is invalid; the message says where."""


@dataclass(frozen=True)
class TimelineEntry:
    """One scheduled CLI line of a batch run."""

    at: float
    do: str
    retry_for: float = 0.0


@dataclass(frozen=True)
class Payment:
    """One scheduled payment of a ``[payments]`` table: ``payer`` pays ``payee`` at ``at``."""

    at: float
    payer: str
    payee: str
    amount: int


@dataclass
class Scenario:
    """A whole emulation, as described by a scenario file."""

    name: str
    stations: list[StationSpec]
    area: Area = field(default_factory=lambda: Area(0, 0, 1000, 1000))
    seed: int = 0
    duration: float = 0.0
    backend: str = "auto"
    pathloss: PathLoss = field(default_factory=PathLoss)
    timeline: list[TimelineEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    payments: list[Payment] = field(default_factory=list)  # from [payments], by time

    def station(self, name: str) -> StationSpec:
        """Return the station called ``name``; raise KeyError."""
        for spec in self.stations:
            if spec.name == name:
                return spec
        raise KeyError(name)


_KNOWN_TOP = frozenset({"name", "seed", "duration", "backend", "area", "medium", "stations",
                        "timeline", "fastpay", "crowd", "payments"})
_LAYER_TOP = frozenset({"fastpay"})  # read by emulation/fastpay.py from Scenario.extra
_KNOWN_AREA = frozenset({"x_min", "y_min", "x_max", "y_max"})
_KNOWN_MEDIUM = frozenset({"tx_power", "exponent"})
_KNOWN_STATION = frozenset({"name", "role", "position", "range", "mobility"})
_FASTPAY_STATION = frozenset({"weight", "balance"})  # read by emulation/fastpay.py
_KNOWN_TIMELINE = frozenset({"at", "do", "retry_for"})
_KNOWN_FASTPAY = frozenset({"balance", "committee_id", "link"})
_KNOWN_CROWD = frozenset({"count", "name_prefix", "min_x", "max_x", "min_y", "max_y",
                          "min_v", "max_v", "pause", "seed", "range", "balance"})
_KNOWN_PAYMENTS = frozenset({"count", "per_client", "amount", "window", "seed"})
DEFAULT_BALANCE = 1000  # a client's genesis balance when nothing says otherwise
# [fastpay] link = {...}: the [link] keys of fastpayd's node file (docs/config.md) that a
# wifidirect daemon takes; the layer writes kind and interface itself.  (A copy: the
# emulation never imports fastpayd; tests/emulation/test_scenario_strict.py compares.)
FASTPAY_LINK_KEYS = frozenset({
    "listen", "max_frame", "max_connections", "max_connections_per_peer", "idle_timeout",
    "read_timeout", "write_timeout", "max_unsent", "connect_timeout", "request_timeout",
    "port", "frequency", "bus", "discovery_window", "discovery_pause", "join_timeout",
    "linger", "stale_rounds", "fresh_for", "committee", "group_sharing", "choose_window",
    "persistent_groups", "in_group_probe", "in_group_misses", "handoff_timeout", "handoff_hold",
    "silent_hold",
})

# Timeline commands and the shape of their arguments (the CLI's commands, emulation/cli.py
# and emulation/fastpay.py; a test keeps the two lists equal).  Argument kinds:
#   STATION / NODE (authority or client) / CLIENT / AUTHORITY / PLAIN: a station name of
#   that role;  ACCOUNT: a client station or a 64-hex address;  NUMBER: seconds >= 0;
#   AMOUNT: an integer >= 0;  XY: "x,y";  TEXT: anything (the rest of the line);
#   a|b: one of these words.  [KIND] optional (from there on), KIND* / KIND+ repeated.
TIMELINE_COMMANDS: dict[str, str] = {
    "nodes": "", "positions": "", "links": "", "stats": "", "report": "", "exit": "",
    "quit": "", "EOF": "", "help": "TEXT*",
    "move": "STATION XY",
    "p2p_find": "STATION*",
    "p2p_peers": "STATION",
    "expect_peer": "[no] STATION STATION",
    "py": "TEXT+",
    "shell": "STATION",
    "wait": "NUMBER",
    "discover": "NODE*",
    "expect_in_range": "CLIENT AUTHORITY*",
    "wait_in_range": "CLIENT AUTHORITY+",
    "mobile_transfer": "CLIENT ACCOUNT AMOUNT",
    "pay": "CLIENT CLIENT AMOUNT",
    "wait_payments": "[NUMBER] [NUMBER]",
    "progress": "CLIENT",
    "wait_payment": "CLIENT [NUMBER]",
    "receive": "CLIENT [AMOUNT] [NUMBER]",
    "show_peers": "NODE",
    "connection_status": "NODE",
    "balances": "",
    "expect_balance": "CLIENT AMOUNT",
    "daemon": "stop|start|kill NODE",
    "bare_join": "STATION STATION",
    "plot": "[PATH]",
    "net": "", "dump": "",
    "distance": "STATION STATION",
    "pingall": "[AMOUNT]",
    "link": "STATION up|down",
}
_ROLE_OF_KIND = {"CLIENT": ("client",), "AUTHORITY": ("authority",), "PLAIN": ("plain",),
                 "NODE": ("authority", "client"), "STATION": None}
_HEX_ADDRESS = re.compile(r"[0-9a-fA-F]{64}")


def _check_keys(table: Any, known: frozenset[str], where: str) -> None:
    """Raise ScenarioError for the first key of ``table`` not in ``known``."""
    if not isinstance(table, dict):
        raise ScenarioError(f"{where}: expected a table")
    for key in table:
        if key not in known:
            nearest = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = (f"did you mean '{nearest[0]}'?" if nearest
                    else f"known keys: {', '.join(sorted(known))}")
            raise ScenarioError(f"{where}: unknown key '{key}' ({hint})")


def check_command(line: str, roles: dict[str, str]) -> None:
    """Raise ValueError if ``line`` is not a valid CLI line for stations ``roles``
    (name → role): an unknown command, a missing/extra/malformed argument, a station that
    does not exist or has the wrong role."""
    words = line.split()
    if not words:
        raise ValueError("empty command")
    verb, args = words[0], words[1:]
    if verb not in TIMELINE_COMMANDS:
        if verb in roles:
            if not args:
                raise ValueError(f"'{verb}' needs a shell command after the station name")
            return  # <station> <shell command>
        nearest = difflib.get_close_matches(verb, sorted(TIMELINE_COMMANDS), n=1)
        hint = f"did you mean '{nearest[0]}'?" if nearest else "not a command or a station"
        raise ValueError(f"unknown command '{verb}' ({hint})")
    spec = TIMELINE_COMMANDS[verb].split()
    usage = f"usage: {verb} {TIMELINE_COMMANDS[verb]}".rstrip()
    if verb == "move":  # "x,y" or "x y"
        args = " ".join(args).replace(",", " ").split()
        if len(args) != 3:
            raise ValueError(usage)
        _check_arg("STATION", args[0], roles, usage)
        for value in args[1:]:
            _number(value, usage)
        return
    i = 0
    for token in spec:
        optional = token.startswith("[")
        kind = token.strip("[]")
        if optional and kind.islower():  # an optional leading word, e.g. "[no]"
            if i < len(args) and args[i] == kind:
                i += 1
            continue
        if kind.endswith(("*", "+")):
            base, rest = kind[:-1], args[i:]
            if kind.endswith("+") and not rest:
                raise ValueError(usage)
            if base != "TEXT":
                for value in rest:
                    _check_arg(base, value, roles, usage)
            i = len(args)
            continue
        if i >= len(args):
            if optional:
                break
            raise ValueError(usage)
        _check_arg(kind, args[i], roles, usage)
        i += 1
    if i < len(args):
        raise ValueError(f"{usage} (unexpected '{args[i]}')")


def _number(value: str, usage: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{usage} ('{value}' is not a number)") from None
    if not number >= 0:
        raise ValueError(f"{usage} ('{value}' must not be negative)")
    return number


def _check_arg(kind: str, value: str, roles: dict[str, str], usage: str) -> None:
    if "|" in kind:
        if value not in kind.split("|"):
            raise ValueError(f"{usage} ('{value}' is not one of {kind})")
    elif kind == "NUMBER":
        _number(value, usage)
    elif kind == "AMOUNT":
        if not value.isdigit():
            raise ValueError(f"{usage} ('{value}' is not a whole amount)")
    elif kind == "ACCOUNT":
        if not _HEX_ADDRESS.fullmatch(value):
            _check_arg("CLIENT", value, roles, usage)
    elif kind in _ROLE_OF_KIND:
        if value not in roles:
            nearest = difflib.get_close_matches(value, sorted(roles), n=1)
            hint = f" (did you mean '{nearest[0]}'?)" if nearest else ""
            raise ValueError(f"no station '{value}'{hint}")
        wanted = _ROLE_OF_KIND[kind]
        if wanted is not None and roles[value] not in wanted:
            raise ValueError(f"'{value}' is a {roles[value]} station; {usage} wants "
                             f"{' or '.join(wanted)} here")


def load(path: str | Path, clients: int | None = None) -> Scenario:
    """Read and validate a scenario file (``clients``: the ``[crowd]``'s size instead of
    its ``count``); raise ScenarioError."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    try:
        scenario = parse(data, default_name=path.stem, clients=clients)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    scenario.path = path
    return scenario


def parse(data: dict[str, Any], default_name: str = "scenario",
          clients: int | None = None) -> Scenario:
    """Build a Scenario from parsed TOML (``clients``: override the ``[crowd]``'s
    ``count``); raise ScenarioError."""
    try:
        return _parse(data, default_name, clients)
    except ScenarioError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(str(exc)) from exc


def _parse(data: dict[str, Any], default_name: str, clients: int | None) -> Scenario:
    _check_keys(data, _KNOWN_TOP, "top level")
    area_data = data.get("area", {})
    _check_keys(area_data, _KNOWN_AREA, "[area]")
    area = Area(float(area_data.get("x_min", 0)), float(area_data.get("y_min", 0)),
                float(area_data.get("x_max", 1000)), float(area_data.get("y_max", 1000)))
    medium = data.get("medium", {})
    _check_keys(medium, _KNOWN_MEDIUM, "[medium]")
    fastpay = data.get("fastpay", {})
    _check_keys(fastpay, _KNOWN_FASTPAY, "[fastpay]")
    _check_keys(fastpay.get("link", {}), FASTPAY_LINK_KEYS, "[fastpay] link")
    pathloss = PathLoss(tx_power_dbm=float(medium.get("tx_power", PathLoss.tx_power_dbm)),
                        exponent=float(medium.get("exponent", PathLoss.exponent)))
    seed = int(data.get("seed", 0))
    backend = str(data.get("backend", "auto"))
    if backend not in BACKENDS:
        raise ScenarioError(f"backend must be one of {BACKENDS}, not {backend!r}")

    stations = []
    raw_stations = data.get("stations", [])
    if not isinstance(raw_stations, list):
        raise ScenarioError("'stations' must be an array of tables ([[stations]])")
    if "crowd" in data:
        raw_stations = raw_stations + expand_crowd(data["crowd"], area, clients)
    elif clients is not None:
        raise ScenarioError("--clients needs a [crowd] table in the scenario")
    if not raw_stations:
        raise ScenarioError("a scenario needs at least one [[stations]] entry (or a [crowd])")
    for index, raw in enumerate(raw_stations):
        where = f"stations[{index}]"
        _check_keys(raw, _KNOWN_STATION | _FASTPAY_STATION,
                    f"{where} ({raw.get('name', '?')})" if isinstance(raw, dict) else where)
        if "name" not in raw:
            raise ScenarioError(f"{where}: missing name")
        position = raw.get("position", [0, 0])
        if len(position) != 2:
            raise ScenarioError(f"{where} ({raw['name']}): position must be [x, y]")
        try:
            spec = StationSpec(
                name=str(raw["name"]), role=str(raw.get("role", "plain")),
                position=(float(position[0]), float(position[1])),
                range=float(raw.get("range", 100.0)), mobility=raw.get("mobility"),
                extra={k: v for k, v in raw.items() if k not in _KNOWN_STATION})
            if not area.contains(spec.position):
                raise ValueError(f"position {list(spec.position)} is outside the area")
            make_model(spec.mobility, spec.position, area, seed)  # validate it now
        except ValueError as exc:
            raise ScenarioError(f"{where} ({raw['name']}): {exc}") from exc
        stations.append(spec)
    names = [s.name for s in stations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScenarioError(f"duplicate station names: {', '.join(duplicates)}")

    timeline = []
    roles = {s.name: s.role for s in stations}
    payments: list[Payment] = []
    if "payments" in data:
        default_balance = int(fastpay.get("balance", DEFAULT_BALANCE))
        payments = schedule_payments(
            data["payments"], {s.name: int(s.extra.get("balance", default_balance))
                               for s in stations if s.role == "client"})
    raw_timeline = data.get("timeline", [])
    if not isinstance(raw_timeline, list):
        raise ScenarioError("'timeline' must be an array of tables ([[timeline]])")
    for index, raw in enumerate(raw_timeline):
        where = f"timeline[{index}]"
        _check_keys(raw, _KNOWN_TIMELINE, where)
        if "do" not in raw:
            raise ScenarioError(f"{where}: missing do")
        if not isinstance(raw["do"], str):
            raise ScenarioError(f"{where}: do must be a string")
        try:
            check_command(raw["do"], roles)
        except ValueError as exc:
            raise ScenarioError(f"{where}: do = {raw['do']!r}: {exc}") from None
        entry = TimelineEntry(at=float(raw.get("at", 0.0)), do=raw["do"],
                              retry_for=float(raw.get("retry_for", 0.0)))
        if entry.at < 0 or entry.retry_for < 0:
            raise ScenarioError(f"{where}: at and retry_for must not be negative")
        timeline.append(entry)
    timeline += [TimelineEntry(at=p.at, do=f"pay {p.payer} {p.payee} {p.amount}")
                 for p in payments]
    timeline.sort(key=lambda e: e.at)
    return Scenario(
        name=str(data.get("name", default_name)), stations=stations, area=area, seed=seed,
        duration=float(data.get("duration", 0.0)), backend=backend, pathloss=pathloss,
        timeline=timeline, extra={k: v for k, v in data.items() if k in _LAYER_TOP},
        payments=payments)


def _positive_int(table: dict[str, Any], key: str, where: str, default: int | None = None,
                  minimum: int = 1) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"{where}: {key} must be a whole number >= {minimum}, "
                            f"not {value!r}")
    return value


def _pair(table: dict[str, Any], key: str, where: str, default: list[float]) -> list[float]:
    value = table.get(key, default)
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] <= value[1]):
        raise ScenarioError(f"{where}: {key} must be [low, high] with 0 <= low <= high, "
                            f"not {value!r}")
    return [float(v) for v in value]


def expand_crowd(crowd: Any, area: Area, clients: int | None = None) -> list[dict[str, Any]]:
    """The ``[[stations]]`` tables a ``[crowd]`` stands for: ``count`` (or ``clients``)
    client stations named ``<name_prefix><i>``, each starting at a uniform random point of
    the bounds and walking random waypoints inside them at ``min_v..max_v`` m/s, pausing
    ``pause`` s.  Everything is drawn from the crowd's ``seed``.  Raises ScenarioError."""
    where = "[crowd]"
    _check_keys(crowd, _KNOWN_CROWD, where)
    count = clients if clients is not None else _positive_int(crowd, "count", where, 10)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ScenarioError(f"{where}: the number of clients must be >= 1, not {count!r}")
    try:
        bounds = Area(float(crowd.get("min_x", area.x_min)), float(crowd.get("min_y", area.y_min)),
                      float(crowd.get("max_x", area.x_max)), float(crowd.get("max_y", area.y_max)))
        min_v, max_v = float(crowd.get("min_v", 0.5)), float(crowd.get("max_v", 2.0))
        pause = float(crowd.get("pause", 2.0))
        radio = float(crowd.get("range", 100.0))
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    if not (area.contains((bounds.x_min, bounds.y_min))
            and area.contains((bounds.x_max, bounds.y_max))):
        raise ScenarioError(f"{where}: min_x..max_x, min_y..max_y leave the [area]")
    if not 0 < min_v <= max_v:
        raise ScenarioError(f"{where}: need 0 < min_v <= max_v, got {min_v:g}, {max_v:g}")
    if pause < 0 or radio <= 0:
        raise ScenarioError(f"{where}: pause must not be negative and range must be positive")
    seed = int(crowd.get("seed", 0))
    prefix = str(crowd.get("name_prefix", "client"))
    rng = random.Random(f"crowd-{seed}")
    out = []
    for i in range(count):
        x, y = bounds.random_point(rng)
        station: dict[str, Any] = {
            "name": f"{prefix}{i}", "role": "client", "position": [x, y],
            "range": radio,
            "mobility": {"model": "random_waypoint", "min_speed": min_v, "max_speed": max_v,
                         "pause": pause, "seed": rng.randrange(1 << 31),
                         "min_x": bounds.x_min, "max_x": bounds.x_max,
                         "min_y": bounds.y_min, "max_y": bounds.y_max}}
        if "balance" in crowd:
            station["balance"] = _positive_int(crowd, "balance", where, minimum=0)
        out.append(station)
    return out


def schedule_payments(table: Any, balances: dict[str, int]) -> list[Payment]:
    """The payments a ``[payments]`` table schedules between the clients ``balances``
    (name → genesis balance), by time: ``count`` payments in all, or ``per_client`` from
    every client (payers take turns in a shuffled order, so every client pays), each to
    another client chosen at random, of a random amount in ``amount = [low, high]`` at a
    random time in ``window = [start, end]`` (timeline seconds).  A payer never pays
    itself nor more in all than its genesis balance.  Raises ScenarioError."""
    where = "[payments]"
    _check_keys(table, _KNOWN_PAYMENTS, where)
    if len(balances) < 2:
        raise ScenarioError(f"{where}: payments need at least two client stations")
    if ("count" in table) == ("per_client" in table):
        raise ScenarioError(f"{where}: give exactly one of count (payments in all) and "
                            "per_client (payments from each client)")
    names = list(balances)
    count = (_positive_int(table, "count", where) if "count" in table
             else _positive_int(table, "per_client", where) * len(names))
    low, high = _pair(table, "amount", where, [1, 10])
    if low < 1 or low != int(low) or high != int(high):
        raise ScenarioError(f"{where}: amount must be whole numbers >= 1, not "
                            f"{table.get('amount')!r}")
    start, end = _pair(table, "window", where, [0, 60])
    rng = random.Random(f"payments-{int(table.get('seed', 0))}")
    order = names[:]
    rng.shuffle(order)
    spent = dict.fromkeys(names, 0)
    out = []
    for i in range(count):
        payer = order[i % len(order)]
        payee = rng.choice([n for n in names if n != payer])
        amount = rng.randint(int(low), int(high))
        spent[payer] += amount
        if spent[payer] > balances[payer]:
            raise ScenarioError(f"{where}: {payer} would pay {spent[payer]} in all, more "
                                f"than its balance {balances[payer]} (fewer payments or "
                                "smaller amounts)")
        out.append(Payment(round(rng.uniform(start, end), 3), payer, payee, amount))
    out.sort(key=lambda p: p.at)
    return out
