"""The run report's pictures, from recorded-looking events (no radios, real matplotlib on
the Agg backend): what each picture marks is extracted by plain functions, tested here on
their values; the PNGs are drawn for the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulation import plots, report

PNG = b"\x89PNG\r\n\x1a\n"


def ev(t: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"t": t, "event": event, **fields}


def paid_directly() -> dict[str, Any]:
    """Two authorities (a0 at x=0, a1 at x=100, range 60), c0 walks x 0 → 100 → 0 in
    40 s and pays c1 (standing at (95, 10)) 10: a vote from a0, then a1 (the
    certificate), a1 confirms, c0 hands the certificate to c1 over a hand-off group, then
    a0 confirms on the way back. The timeline starts at t0 = 100."""
    c0 = [
        ev(100.0, "link_up"),
        ev(101.0, "authority_in_range", authority="a0"),
        ev(102.0, "group_joined", authority="a0", elapsed=1.0),
        ev(103.0, "transfer_started", recipient="c1", amount=10, sequence_number=0),
        ev(103.5, "order_sent", authority="a0", sequence_number=0),
        ev(104.0, "vote_received", authority="a0", sequence_number=0, weight=1),
        ev(105.0, "group_left", authority="a0", reason="done"),
        ev(110.0, "authority_in_range", authority="a1"),
        ev(111.0, "group_joined", authority="a1", elapsed=1.0),
        ev(111.5, "order_sent", authority="a1", sequence_number=0),
        ev(112.0, "vote_received", authority="a1", sequence_number=0, weight=1),
        ev(112.0, "certificate_formed", sequence_number=0, signers=["a0", "a1"]),
        ev(113.0, "confirmation_delivered", authority="a1", sequence_number=0),
        ev(113.5, "confirmation_delivered", authority="a1", sequence_number=0),  # repeat
        ev(114.0, "group_left", authority="a1", reason="done"),
        ev(115.0, "authority_out_of_range", authority="a0", reason="lost"),
        ev(118.0, "handoff_group_joined", authority="c1", elapsed=2.0),
        ev(119.0, "certificate_delivered", recipient="c1", sequence_number=0),
        ev(120.0, "handoff_group_left", authority="c1", reason="done"),
        ev(128.0, "authority_in_range", authority="a0"),
        ev(129.0, "group_joined", authority="a0", elapsed=1.0),
        ev(130.0, "confirmation_delivered", authority="a0", sequence_number=0),
        ev(130.0, "confirmation_caught_up", authority="a0", sequence_number=0),
        ev(130.1, "transfer_completed", sequence_number=0),
        ev(131.0, "group_left", authority="a0", reason="done"),
        ev(133.0, "authority_out_of_range", authority="a1", reason="lost"),
    ]
    c1 = [
        ev(100.5, "link_up"),
        ev(101.0, "authority_in_range", authority="a1"),
        ev(117.5, "peer_found", address="02:00:00:00:04:00", device_name="c0"),
        # The payee hosts the hand-off group: its events name the payer's address only.
        ev(118.0, "handoff_hosted", address="02:00:00:00:04:00", elapsed=0.5),
        ev(119.0, "payment_received", channel="direct", peer="c0", sender="c0",
           sequence_number=0, amount=10),
        ev(120.0, "handoff_ended", address="02:00:00:00:04:00", duration=2.0),
    ]
    tracks = {"c0": [(100.0, 0.0, 0.0), (120.0, 100.0, 0.0), (140.0, 0.0, 0.0)],
              "c1": [(100.0, 95.0, 10.0), (120.0, 95.0, 10.0), (140.0, 95.0, 10.0)],
              "a0": [(100.0, 0.0, 0.0), (140.0, 0.0, 0.0)],
              "a1": [(100.0, 100.0, 0.0), (140.0, 100.0, 0.0)]}
    changes = [{"t": 100.0, "client": "c0", "authority": "a0", "change": "initial"},
               {"t": 100.0, "client": "c1", "authority": "a1", "change": "initial"},
               {"t": 108.0, "client": "c0", "authority": "a1", "change": "in"},
               {"t": 112.0, "client": "c0", "authority": "a0", "change": "out"},
               {"t": 128.0, "client": "c0", "authority": "a0", "change": "in"},
               {"t": 132.0, "client": "c0", "authority": "a1", "change": "out"}]
    topology = {"a0": {"role": "authority", "position": [0, 0], "range": 60},
                "a1": {"role": "authority", "position": [100, 0], "range": 60},
                "c0": {"role": "client", "position": [0, 0], "range": 60},
                "c1": {"role": "client", "position": [95, 10], "range": 60}}
    return {"events": {"c0": c0, "c1": c1, "a0": [ev(99.0, "group_started")]},
            "tracks": tracks, "changes": changes, "topology": topology, "t0": 100.0}


def test_position_at_interpolates_between_samples_and_holds_outside() -> None:
    track = paid_directly()["tracks"]["c0"]
    assert plots.position_at(track, 104.0) == pytest.approx((20.0, 0.0))
    assert plots.position_at(track, 130.0) == pytest.approx((50.0, 0.0))
    assert plots.position_at(track, 90.0) == (0.0, 0.0)  # before the first sample
    assert plots.position_at(track, 150.0) == (0.0, 0.0)  # after the last
    assert plots.position_at([], 104.0, (7.0, 8.0)) == (7.0, 8.0)  # no track: its place


def test_milestones_mark_where_and_when_each_step_happened() -> None:
    run = paid_directly()
    got = plots.milestones(run["events"], "c0", run["tracks"]["c0"])
    assert [(m.t, m.kind, m.who) for m in got] == [
        (103.5, "order", "a0"), (104.0, "vote", "a0"), (111.5, "order", "a1"),
        (112.0, "vote", "a1"), (112.0, "certificate", ""),
        (113.0, "confirmation", "a1"),  # its repeat is not a second one
        (119.0, "handed_over", "c1"),
        (130.0, "confirmation", "a0"),  # the catch-up is not one
    ]
    # Where c0 was then, on its track (x = 5 m/s out to 100, then back).
    assert [m.x for m in got] == pytest.approx([17.5, 20, 57.5, 60, 60, 65, 95, 50])
    assert [m.y for m in got] == [0.0] * 8
    assert {m.sequence_number for m in got} == {0}
    # The payee: credited once, over the payer's own group.
    assert plots.milestones(run["events"], "c1", run["tracks"]["c1"]) == [
        plots.Milestone(119.0, "handoff_direct", 95.0, 10.0, "c0", 0)]


def test_milestones_of_a_credit_through_an_authority_and_of_no_events() -> None:
    events = {"c1": [ev(50.0, "payment_received", channel="authority", sender="c0",
                        sequence_number=3, amount=1), {"event": "vote_received"}]}
    assert plots.milestones(events, "c1", (), (1.0, 2.0)) == [
        plots.Milestone(50.0, "handoff_authority", 1.0, 2.0, "c0", 3)]
    assert plots.milestones(events, "nobody") == []


def test_intervals_pair_entries_with_exits_and_close_at_the_end() -> None:
    run = paid_directly()
    spans = plots.intervals(run["events"], "c0", 140.0, run["changes"])
    assert [tuple(s) for s in spans] == [
        (102.0, 105.0, "group", "a0"), (129.0, 131.0, "group", "a0"),
        (111.0, 114.0, "group", "a1"),
        (118.0, 120.0, "handoff_group", "c1"),
        (101.0, 115.0, "in_range", "a0"), (128.0, 140.0, "in_range", "a0"),  # still in
        (110.0, 133.0, "in_range", "a1"),
        (100.0, 112.0, "radio", "a0"), (128.0, 140.0, "radio", "a0"),
        (108.0, 132.0, "radio", "a1"),
    ]
    assert [tuple(s) for s in plots.intervals(run["events"], "c1", 140.0)] == [
        (118.0, 120.0, "handoff_group", "c0"), (101.0, 140.0, "in_range", "a1")]
    # An address no event names stays an address.
    del run["events"]["c1"][2]
    assert plots.intervals(run["events"], "c1", 140.0)[0].other == "02:00:00:00:04:00"


def test_intervals_ignore_repeated_entries_and_unmatched_exits() -> None:
    events = {"c": [ev(5.0, "group_left", authority="a"),
                    ev(6.0, "authority_in_range", authority="a"),
                    ev(7.0, "authority_in_range", authority="a"),
                    ev(9.0, "authority_out_of_range", authority="a"),
                    ev(9.5, "authority_out_of_range", authority="a")]}
    assert plots.intervals(events, "c", 20.0) == [plots.Span(6.0, 9.0, "in_range", "a")]
    assert plots.intervals({}, "c", 20.0) == []


def test_place_labels_keeps_labels_apart_and_off_the_marks() -> None:
    anchors = [(100.0, 100.0), (100.0, 100.0), (104.0, 102.0)]  # three on one spot
    sizes = [(40.0, 12.0)] * 3
    offsets = plots.place_labels(anchors, sizes, obstacles=[(130.0, 115.0)])
    boxes = [(ax + dx - w / 2, ay + dy - h / 2, ax + dx + w / 2, ay + dy + h / 2)
             for (ax, ay), (dx, dy), (w, h) in zip(anchors, offsets, sizes, strict=True)]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert plots._overlap(a, b) == 0
        assert not a[0] - 4 < 130.0 < a[2] + 4 or not a[1] - 4 < 115.0 < a[3] + 4
    assert plots.place_labels(anchors, sizes, [(130.0, 115.0)]) == offsets  # deterministic
    (dx, dy), = plots.place_labels([(0.0, 0.0)], [(40.0, 12.0)])
    assert dx > 0 and dy > 0  # alone: up and to the right


def test_write_draws_the_three_pictures(tmp_path: Path) -> None:
    run = paid_directly()
    metrics = report.compute(run["events"], clients=["c0", "c1"], authorities=["a0", "a1"])
    paths = plots.write(tmp_path / "out" / "run", metrics, run["topology"], run["tracks"],
                        run["events"], t0=run["t0"], changes=run["changes"])
    assert [Path(p).name for p in paths] == ["run-topology.png", "run-latency.png",
                                             "run-timeline.png"]
    for p in paths:
        data = Path(p).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000


def test_write_survives_no_events_and_stations_that_never_moved(tmp_path: Path) -> None:
    topology = {"a0": {"role": "authority", "position": [0, 0], "range": 60},
                "c0": {"role": "client", "position": [10, 0], "range": 60},
                "c1": {"role": "client", "position": [20, 5], "range": 60},
                "p0": {"role": "plain", "position": [30, 5], "range": 60}}
    metrics = report.compute({}, clients=["c0", "c1"], authorities=["a0"])
    events = {"c1": [ev(3.0, "authority_in_range", authority="elsewhere"),
                     ev(4.0, "payment_received", sender="c0", sequence_number=0)]}
    paths = plots.write(tmp_path / "r", metrics, topology,
                        {"c0": [(1.0, 10.0, 0.0), (2.0, 10.0, 0.0)]}, events)
    paths += plots.write(tmp_path / "empty", {}, topology, {})
    assert all(Path(p).read_bytes()[:8] == PNG for p in paths)
