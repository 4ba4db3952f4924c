"""Mobility models: pure, seeded, bounded, speed-limited."""

from __future__ import annotations

import math

import pytest

from emulation.mobility import (
    Area,
    RandomWalk,
    RandomWaypoint,
    Static,
    Waypoints,
    make_model,
)

AREA = Area(0.0, 0.0, 100.0, 50.0)


def _samples(model, until: float = 600.0, step: float = 0.25):
    t = 0.0
    while t <= until:
        yield t, model.position(t)
        t += step


def test_static_never_moves() -> None:
    model = Static((3.0, 4.0))
    assert not model.dynamic
    assert model.position(0) == model.position(1e6) == (3.0, 4.0)


def test_waypoints_interpolate_and_stay_at_last() -> None:
    model = Waypoints((0.0, 0.0), [(10.0, (10.0, 0.0)), (20.0, (10.0, 20.0))])
    assert model.dynamic
    assert model.position(0) == (0.0, 0.0)
    assert model.position(5) == pytest.approx((5.0, 0.0))
    assert model.position(15) == pytest.approx((10.0, 10.0))
    assert model.position(1000) == (10.0, 20.0)


def test_waypoints_repeat_a_point_to_wait() -> None:
    model = Waypoints((0.0, 0.0), [(5.0, (0.0, 0.0)), (6.0, (1.0, 0.0))])
    assert model.position(4.9) == (0.0, 0.0)
    assert model.position(5.5) == pytest.approx((0.5, 0.0))


def test_waypoints_too_fast_rejected() -> None:
    with pytest.raises(ValueError, match="m/s"):
        Waypoints((0.0, 0.0), [(1.0, (100.0, 0.0))], max_speed=10.0)


@pytest.mark.parametrize("cls", [RandomWalk, RandomWaypoint])
def test_random_models_reproducible_with_seed(cls) -> None:
    a = cls((10.0, 10.0), AREA, seed=7)
    b = cls((10.0, 10.0), AREA, seed=7)
    c = cls((10.0, 10.0), AREA, seed=8)
    times = [0.5 * i for i in range(400)]
    assert [a.position(t) for t in times] == [b.position(t) for t in times]
    assert [a.position(t) for t in times] != [c.position(t) for t in times]


@pytest.mark.parametrize("cls", [RandomWalk, RandomWaypoint])
def test_random_models_stay_in_area_and_under_max_speed(cls) -> None:
    model = cls((50.0, 25.0), AREA, min_speed=1.0, max_speed=3.0, seed=3)
    previous = None
    moved = 0.0
    for t, p in _samples(model):
        assert AREA.contains(p), (t, p)
        if previous is not None:
            step = math.dist(previous[1], p)
            assert step / (t - previous[0]) <= 3.0 + 1e-6
            moved += step
        previous = (t, p)
    assert moved > 100.0  # it really moves


def test_random_models_query_order_does_not_matter() -> None:
    a = RandomWaypoint((0.0, 0.0), AREA, seed=1)
    b = RandomWaypoint((0.0, 0.0), AREA, seed=1)
    late = a.position(300.0)
    for t in range(0, 301, 10):
        b.position(float(t))
    assert b.position(300.0) == late


def test_area_reflect_folds_back_inside() -> None:
    assert AREA.reflect((110.0, -5.0)) == (90.0, 5.0)
    assert AREA.reflect((-30.0, 120.0)) == (30.0, 20.0)


def test_area_empty_rejected() -> None:
    with pytest.raises(ValueError):
        Area(0, 0, 0, 10)


def test_make_model_builds_each_kind() -> None:
    assert isinstance(make_model(None, (1.0, 2.0), AREA), Static)
    assert isinstance(make_model({"model": "random_walk", "max_speed": 2}, (1, 2), AREA),
                      RandomWalk)
    assert isinstance(make_model({"model": "random_waypoint", "pause": 0}, (1, 2), AREA),
                      RandomWaypoint)
    wp = make_model({"model": "waypoints", "points": [[2, 5, 5]]}, (1.0, 1.0), AREA)
    assert wp.position(2) == (5.0, 5.0)


def test_make_model_seed_field_overrides() -> None:
    spec = {"model": "random_walk", "seed": 42}
    a = make_model(spec, (5, 5), AREA, seed=1)
    b = make_model(spec, (5, 5), AREA, seed=2)
    assert a.position(50) == b.position(50)


@pytest.mark.parametrize("spec, message", [
    ({"model": "teleport"}, "unknown mobility model"),
    ({"model": "random_walk", "sped": 3}, "no field"),
    ({"model": "random_walk", "min_speed": 5, "max_speed": 1}, "min_speed"),
])
def test_make_model_bad_spec_rejected(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_model(spec, (0, 0), AREA)
