"""Mobility models: where a station is at time ``t`` (seconds since the emulation started).

Every model answers ``position(t)``; it is pure (no clock, no I/O) and, for the random
ones, fully determined by its seed, so a run can be replayed. The network asks each
model for positions on a fixed tick and sends them to the medium.

A trajectory is a chain of straight *legs* (start time, start point, end time, end
point); models generate legs lazily as time advances, and a position is a linear
interpolation inside a leg. Speeds stay within the model's limits and positions within
the area: a random walk that would leave the area is reflected at its border (the
reflected end point is closer than the unreflected one, so the speed only drops).

Models: :class:`Static`, :class:`Waypoints` (timed waypoints, also what a scenario's
scripted moves become), :class:`RandomWalk`, :class:`RandomWaypoint`.
:func:`make_model` builds one from a scenario's ``mobility`` table.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

Point = tuple[float, float]


@dataclass(frozen=True)
class Area:
    """The rectangle stations live in (metres)."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def __post_init__(self) -> None:
        if self.x_max <= self.x_min or self.y_max <= self.y_min:
            raise ValueError(f"empty area {self}")

    def contains(self, p: Point, eps: float = 1e-9) -> bool:
        """True if ``p`` lies in the area (borders included)."""
        return (self.x_min - eps <= p[0] <= self.x_max + eps
                and self.y_min - eps <= p[1] <= self.y_max + eps)

    def reflect(self, p: Point) -> Point:
        """Fold a point that left the area back in, as a ball bouncing off the walls."""
        return (_fold(p[0], self.x_min, self.x_max), _fold(p[1], self.y_min, self.y_max))

    def random_point(self, rng: random.Random) -> Point:
        """A uniformly random point of the area."""
        return (rng.uniform(self.x_min, self.x_max), rng.uniform(self.y_min, self.y_max))


def _fold(v: float, lo: float, hi: float) -> float:
    span = hi - lo
    u = (v - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


class Model(Protocol):
    """Anything that says where a station is."""

    dynamic: bool

    def position(self, t: float) -> Point:
        """The position at time ``t`` >= 0."""
        ...


@dataclass
class Static:
    """A station that does not move."""

    point: Point
    dynamic: bool = False

    def position(self, t: float) -> Point:
        return (float(self.point[0]), float(self.point[1]))


class _Legs:
    """A lazily extended chain of straight legs; subclasses add legs in ``_extend``."""

    dynamic = True

    def __init__(self, start: Point) -> None:
        self._times = [0.0]
        self._points = [(float(start[0]), float(start[1]))]

    def _extend(self) -> bool:
        """Append at least one leg; return False if the trajectory is finished."""
        raise NotImplementedError

    def _add(self, duration: float, point: Point) -> None:
        self._times.append(self._times[-1] + max(duration, 0.0))
        self._points.append((float(point[0]), float(point[1])))

    def position(self, t: float) -> Point:
        t = max(t, 0.0)
        while t > self._times[-1]:
            if not self._extend():
                return self._points[-1]
        i = bisect.bisect_right(self._times, t) - 1
        if i >= len(self._times) - 1:
            return self._points[-1]
        t0, t1 = self._times[i], self._times[i + 1]
        p0, p1 = self._points[i], self._points[i + 1]
        if t1 <= t0:
            return p1
        f = (t - t0) / (t1 - t0)
        return (p0[0] + f * (p1[0] - p0[0]), p0[1] + f * (p1[1] - p0[1]))


class Waypoints(_Legs):
    """Timed waypoints ``[(t, (x, y)), ...]``: be at (x, y) at time t.

    The station moves in straight lines from ``start`` (at t=0) through the waypoints and
    stays at the last one; to wait somewhere, repeat its point at a later time. With
    ``max_speed`` a waypoint that cannot be reached in time raises ValueError.
    """

    def __init__(self, start: Point, waypoints: list[tuple[float, Point]],
                 max_speed: float | None = None) -> None:
        super().__init__(start)
        last_t, last_p = 0.0, self._points[0]
        for t, p in sorted(waypoints, key=lambda w: w[0]):
            if t < 0:
                raise ValueError(f"waypoint time {t} is negative")
            if max_speed is not None and t > last_t and \
                    math.dist(last_p, p) / (t - last_t) > max_speed + 1e-9:
                raise ValueError(f"waypoint {p} at t={t} needs more than {max_speed} m/s")
            self._times.append(float(t))
            self._points.append((float(p[0]), float(p[1])))
            last_t, last_p = t, p
        self.dynamic = len(self._points) > 1

    def _extend(self) -> bool:
        return False


class RandomWalk(_Legs):
    """Random walk: every ``interval`` seconds a new uniform direction and speed.

    Speeds are uniform in [``min_speed``, ``max_speed``] m/s; the walk is reflected at
    the area's border.
    """

    def __init__(self, start: Point, area: Area, *, min_speed: float = 0.5,
                 max_speed: float = 2.0, interval: float = 5.0, seed: int = 0) -> None:
        _check_speeds(min_speed, max_speed)
        if interval <= 0:
            raise ValueError("interval must be positive")
        super().__init__(area.reflect(start))
        self.area, self.interval = area, interval
        self.min_speed, self.max_speed = min_speed, max_speed
        self.rng = random.Random(seed)

    def _extend(self) -> bool:
        p = self._points[-1]
        angle = self.rng.uniform(0, 2 * math.pi)
        speed = self.rng.uniform(self.min_speed, self.max_speed)
        d = speed * self.interval
        self._add(self.interval, self.area.reflect((p[0] + d * math.cos(angle),
                                                    p[1] + d * math.sin(angle))))
        return True


class RandomWaypoint(_Legs):
    """Random waypoint: go to a uniform random point at a uniform random speed, pause, repeat."""

    def __init__(self, start: Point, area: Area, *, min_speed: float = 0.5,
                 max_speed: float = 2.0, pause: float = 2.0, seed: int = 0) -> None:
        _check_speeds(min_speed, max_speed)
        if pause < 0:
            raise ValueError("pause must not be negative")
        super().__init__(area.reflect(start))
        self.area, self.pause = area, pause
        self.min_speed, self.max_speed = min_speed, max_speed
        self.rng = random.Random(seed)

    def _extend(self) -> bool:
        p = self._points[-1]
        target = self.area.random_point(self.rng)
        speed = self.rng.uniform(self.min_speed, self.max_speed)
        self._add(math.dist(p, target) / speed, target)
        if self.pause > 0:
            self._add(self.pause, target)
        return True


def _check_speeds(min_speed: float, max_speed: float) -> None:
    if not 0 < min_speed <= max_speed:
        raise ValueError(f"need 0 < min_speed <= max_speed, got {min_speed}, {max_speed}")


MODELS = {"static": Static, "waypoints": Waypoints, "random_walk": RandomWalk,
          "random_waypoint": RandomWaypoint}


def make_model(spec: dict[str, Any] | None, start: Point, area: Area, seed: int = 0) -> Model:
    """Build a model from a scenario's ``mobility`` table (None means static).

    ``{model = "random_walk", min_speed, max_speed, interval}``,
    ``{model = "random_waypoint", min_speed, max_speed, pause, min_x?, max_x?, min_y?,
    max_y?}`` (Mininet-WiFi's bounds: the waypoints are drawn inside them, default the
    whole area),
    ``{model = "waypoints", max_speed?, points = [[t, x, y], ...]}``; a ``seed`` in the
    table overrides the one given. Raises ValueError on unknown models or fields.
    """
    if not spec:
        return Static(start)
    spec = dict(spec)
    name = spec.pop("model", "static")
    seed = int(spec.pop("seed", seed))
    if name == "static":
        _no_extra(name, spec)
        return Static(start)
    if name == "waypoints":
        points = spec.pop("points", [])
        max_speed = spec.pop("max_speed", None)
        _no_extra(name, spec)
        return Waypoints(start, [(float(t), (float(x), float(y))) for t, x, y in points],
                         max_speed=max_speed)
    if name == "random_walk":
        kwargs = {k: float(spec.pop(k)) for k in ("min_speed", "max_speed", "interval")
                  if k in spec}
        _no_extra(name, spec)
        return RandomWalk(start, area, seed=seed, **kwargs)
    if name == "random_waypoint":
        bounds = _bounds(spec, area)
        kwargs = {k: float(spec.pop(k)) for k in ("min_speed", "max_speed", "pause")  # type: ignore[misc]
                  if k in spec}
        _no_extra(name, spec)
        return RandomWaypoint(start, bounds, seed=seed, **kwargs)
    raise ValueError(f"unknown mobility model {name!r} (known: {', '.join(MODELS)})")


def _bounds(spec: dict[str, Any], area: Area) -> Area:
    """Pop ``min_x..max_x``, ``min_y..max_y`` from ``spec``: a rectangle inside ``area``
    (missing sides are the area's); ValueError if it is empty or leaves the area."""
    keys = ("min_x", "min_y", "max_x", "max_y")
    if not any(k in spec for k in keys):
        return area
    values = [float(spec.pop(k, default)) for k, default in
              zip(keys, (area.x_min, area.y_min, area.x_max, area.y_max), strict=True)]
    bounds = Area(*values)
    if not (area.contains((bounds.x_min, bounds.y_min))
            and area.contains((bounds.x_max, bounds.y_max))):
        raise ValueError(f"bounds min_x..max_x {values[0]:g}..{values[2]:g}, min_y..max_y "
                         f"{values[1]:g}..{values[3]:g} leave the area {area}")
    return bounds


def _no_extra(name: str, spec: dict[str, Any]) -> None:
    if spec:
        raise ValueError(f"mobility model {name!r} has no field(s) {', '.join(spec)}")
