"""The run report's pictures: the topology with each payment's milestones on the client
tracks, the latency CDFs, and a per-client timeline.

:func:`write` draws ``<stem>-topology.png``, ``<stem>-latency.png`` and
``<stem>-timeline.png`` and returns their paths; the run calls it at the end
(:meth:`emulation.fastpay.FastPayLayer.finish`) and the CLI's ``plot`` mid-run, from what
is known by then.

What is drawn is first extracted by plain functions, tested on recorded events without a
figure (``tests/emulation/test_plots.py``):

* :func:`position_at` — where a station was at a time, interpolated between the track's
  samples (before the first sample: the first; after the last: the last; no track: the
  station's own position);
* :func:`milestones` — a client's payment milestones (order sent, each vote, the
  certificate, each confirmation, the certificate handed to the payee, the payee's credit
  by channel), each at the position the client had then;
* :func:`intervals` — a client's spans: in its daemon's table of authorities in range,
  in an authority's radio range (the layer's samples), in an authority's P2P group, in
  a hand-off group with another client;
* :func:`place_labels` — offsets that keep labels off each other and off the marks.

Times: every ``t`` is ``time.monotonic()`` of the one machine -- the daemons' events, the
layer's track samples and range changes share that clock -- and the pictures show seconds
since ``t0``, the timeline's start.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

Events = dict[str, list[dict[str, Any]]]
Track = Sequence[tuple[float, float, float]]


class Milestone(NamedTuple):
    """One step of a payment at a client, where and when it happened."""

    t: float
    kind: str  # a key of MARKS
    x: float
    y: float
    who: str = ""  # the authority (order, vote, confirmation) or the other client
    sequence_number: int | None = None


class Span(NamedTuple):
    """A stretch of time a client spent in some relation with a station."""

    start: float
    end: float
    kind: str  # "in_range" (daemon's table), "radio", "group", "handoff_group"
    other: str  # the authority, or the other client of a hand-off group


# Milestone kind -> (legend label, matplotlib marker, size, colour; None: the authority's).
MARKS: dict[str, tuple[str, str, float, str | None]] = {
    "order": ("order sent", "|", 7.0, "dimgray"),
    "vote": ("vote received", "o", 4.0, None),
    "certificate": ("certificate formed", "*", 14.0, "gold"),
    "confirmation": ("confirmation delivered", "s", 4.5, None),
    "handed_over": ("certificate handed to payee", ">", 8.0, "black"),
    "handoff_direct": ("payee credited, direct hand-off", "D", 8.0, "black"),
    "handoff_authority": ("payee credited via an authority", "D", 8.0, "white"),
}
# The events behind the kinds a client's own log holds (``payment_received`` by channel).
_KINDS = {"order_sent": "order", "vote_received": "vote",
          "certificate_formed": "certificate", "confirmation_delivered": "confirmation",
          "certificate_delivered": "handed_over"}
# Kinds too many to draw on the map (one per authority and retry); the timeline has them.
_MAP_SKIPS = frozenset({"order"})
AUTHORITY_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown",
                     "tab:pink", "tab:olive", "tab:cyan")
CLIENT_COLOURS = ("tab:blue", "navy", "teal", "slateblue", "steelblue", "darkcyan",
                  "royalblue", "cadetblue")


def position_at(track: Track, t: float,
                default: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Where the station of ``track`` (``[(t, x, y), ...]``) was at ``t``: linear between
    the samples around ``t``, the first/last sample outside them, ``default`` with none."""
    if not track:
        return float(default[0]), float(default[1])
    pts = sorted(track)
    if t <= pts[0][0]:
        return float(pts[0][1]), float(pts[0][2])
    for (ta, xa, ya), (tb, xb, yb) in zip(pts, pts[1:], strict=False):
        if ta <= t <= tb:
            f = 0.0 if tb == ta else (t - ta) / (tb - ta)
            return xa + (xb - xa) * f, ya + (yb - ya) * f
    return float(pts[-1][1]), float(pts[-1][2])


def milestones(events: Events, client: str, track: Track = (),
               default: tuple[float, float] = (0.0, 0.0)) -> list[Milestone]:
    """``client``'s payment milestones in time order (see :data:`MARKS` for the kinds),
    each once (the first order/vote/confirmation per authority and transfer, the first
    certificate per transfer, the first credit per payment), at the client's position
    then (:func:`position_at` on ``track``)."""
    out: list[Milestone] = []
    seen: set[tuple[Any, ...]] = set()
    for e in sorted(events.get(client, []), key=lambda e: float(e.get("t", 0.0))):
        name = e.get("event")
        seq = e.get("sequence_number")
        if name in _KINDS:
            kind = _KINDS[str(name)]
            who = str(e.get("authority") or e.get("recipient") or "")
        elif name == "payment_received":
            kind = "handoff_direct" if e.get("channel") == "direct" else "handoff_authority"
            who = str(e.get("sender") or "")
        else:
            continue
        key = (kind, seq, who if kind != "certificate" else "")
        if "t" not in e or key in seen:
            continue
        seen.add(key)
        t = float(e["t"])
        x, y = position_at(track, t, default)
        out.append(Milestone(t, kind, x, y, who, None if seq is None else int(seq)))
    return out


def _pair_spans(marks: Iterable[tuple[float, str, bool]], kind: str,
                end: float) -> list[Span]:
    """Spans from (t, other, entering) marks: a repeated enter or an unmatched leave is
    ignored; what is still open ends at ``end``."""
    open_at: dict[str, float] = {}
    out = []
    for t, other, entering in sorted(marks, key=lambda m: m[0]):
        if entering:
            open_at.setdefault(other, t)
        elif other in open_at:
            out.append(Span(open_at.pop(other), t, kind, other))
    out += [Span(t, max(t, end), kind, other) for other, t in open_at.items()]
    return out


def _names_by_address(events: Events, client: str) -> dict[str, str]:
    """A radio address → the station name events give it (the client's own first)."""
    out: dict[str, str] = {}
    for node in [n for n in events if n != client] + [client]:
        for e in events.get(node, []):
            name = e.get("authority") or e.get("client") or e.get("device_name")
            if e.get("address") and name and e.get("event") != "handoff_hosted":
                out[str(e["address"])] = str(name)
    return out


def intervals(events: Events, client: str, end: float,
              changes: Iterable[dict[str, Any]] = ()) -> list[Span]:
    """``client``'s spans, sorted by (kind, other, start); one still open ends at
    ``end``. ``in_range``: ``authority_in_range`` → ``authority_out_of_range`` (its
    daemon's view); ``radio``: the layer's sampled ``changes`` (``in``/``initial`` →
    ``out``), the radios' truth; ``group``: ``group_joined`` → ``group_left`` (an
    authority's group); ``handoff_group``: the payer's ``handoff_group_joined`` →
    ``handoff_group_left`` (its ``authority`` field names the payee) or the payee's
    ``handoff_hosted`` → ``handoff_ended`` (they name the payer's address only: its name
    comes from the events that pair an address with one, e.g. ``peer_found``)."""
    pairs = {"authority_in_range": ("in_range", True),
             "authority_out_of_range": ("in_range", False),
             "group_joined": ("group", True), "group_left": ("group", False),
             "handoff_group_joined": ("handoff_group", True),
             "handoff_group_left": ("handoff_group", False),
             "handoff_hosted": ("handoff_group", True),
             "handoff_ended": ("handoff_group", False)}
    names = _names_by_address(events, client)
    marks: dict[str, list[tuple[float, str, bool]]] = {}
    for e in events.get(client, []):
        what = pairs.get(str(e.get("event")))
        other = e.get("authority")
        if other is None and e.get("address") is not None:
            other = names.get(str(e["address"]), e["address"])
        if what is not None and "t" in e and other is not None:
            marks.setdefault(what[0], []).append((float(e["t"]), str(other), what[1]))
    for ch in changes:
        if ch.get("client") == client and ch.get("change") in ("in", "initial", "out"):
            marks.setdefault("radio", []).append((float(ch["t"]), str(ch["authority"]),
                                                  ch["change"] != "out"))
    spans = [s for kind, ms in marks.items() for s in _pair_spans(ms, kind, end)]
    return sorted(spans, key=lambda s: (s.kind, s.other, s.start))


# -- labels -----------------------------------------------------------------------------

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
# Directions tried around an anchor, in order of preference.
_DIRECTIONS = ((1, 1), (-1, 1), (1, -1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                 obstacles: Sequence[tuple[float, float]] = (), gap: float = 4.0,
                 mark: float = 4.0) -> list[tuple[float, float]]:
    """Offsets (from its anchor to its centre) for each label, in the anchors' units
    (pixels): labels are placed in order, each at the first of 8 directions x 3
    distances whose box overlaps no placed label, no anchor and no obstacle (each a
    square of half-side ``mark``); failing that, where it overlaps least. Deterministic."""
    blocked = [(x - mark, y - mark, x + mark, y + mark)
               for x, y in list(anchors) + list(obstacles)]
    placed: list[Box] = []
    out = []
    for (ax, ay), (w, h) in zip(anchors, sizes, strict=True):
        best: tuple[float, int, tuple[float, float], Box] | None = None
        rank = 0
        for step in (1, 2.5, 4.5):
            for dx, dy in _DIRECTIONS:
                r = gap * step
                cx = ax + dx * (r + w / 2)
                cy = ay + dy * (r + h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                own = (ax - mark, ay - mark, ax + mark, ay + mark)
                cost = sum(_overlap(box, b) for b in placed) * 4 + sum(
                    _overlap(box, b) for b in blocked if b != own)
                if best is None or (cost, rank) < (best[0], best[1]):
                    best = (cost, rank, (cx - ax, cy - ay), box)
                rank += 1
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        placed.append(best[3])
        out.append(best[2])
    return out


# -- drawing ----------------------------------------------------------------------------


def _pyplot() -> Any:
    # In the VM root's home is read-only (9p): give matplotlib a cache dir it can write.
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "fastpay-mpl"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(names: Sequence[str], palette: Sequence[str]) -> dict[str, str]:
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def _mark_style(kind: str, who: str, auth_colour: dict[str, str]) -> dict[str, Any]:
    _, marker, size, colour = MARKS[kind]
    face = colour or auth_colour.get(who, "gray")
    return {"marker": marker, "markersize": size, "color": face, "markerfacecolor": face,
            "markeredgecolor": face if marker == "|" else "black",
            "markeredgewidth": 0.6, "linestyle": "none"}


def _legend_handles(kinds: Iterable[str]) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = []
    for kind in MARKS:
        if kind in kinds:
            style = _mark_style(kind, "", {})
            if MARKS[kind][3] is None:  # drawn in the authority's colour
                style.update(color="lightgray", markerfacecolor="lightgray")
            label = MARKS[kind][0] + (" (authority's colour)" if MARKS[kind][3] is None
                                      else "")
            handles.append(Line2D([], [], label=label, **style))
    return handles


def _text_size(text: str, fontsize: float, dpi: float) -> tuple[float, float]:
    """A label's size in pixels (a monospace-ish estimate: deterministic, no renderer)."""
    scale = dpi / 72.0
    return 0.62 * fontsize * len(text) * scale + 4, 1.35 * fontsize * scale + 2


def _topology(path: str, topology: dict[str, Any], tracks: Mapping[str, Track],
              events: Events, t0: float) -> None:
    plt = _pyplot()
    from matplotlib.patches import Circle

    dpi = 110
    auths = [n for n, st in topology.items() if st["role"] == "authority"]
    clients = [n for n, st in topology.items() if st["role"] == "client"]
    auth_colour = _colours(auths, AUTHORITY_COLOURS)
    client_colour = _colours(clients, CLIENT_COLOURS)
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    labels: list[tuple[str, tuple[float, float], float]] = []  # text, anchor, fontsize
    obstacles: list[tuple[float, float]] = []
    kinds: set[str] = set()
    moved = False
    for name, st in topology.items():
        x, y = (float(v) for v in st["position"])
        role = st["role"]
        c = auth_colour.get(name) or client_colour.get(name) or "tab:gray"
        if role == "authority":
            ax.add_patch(Circle((x, y), st["range"], color=c, alpha=0.06, lw=0))
            ax.add_patch(Circle((x, y), st["range"], color=c, fill=False, lw=0.8))
        track = sorted(tracks.get(name, []))
        if len({(px, py) for _, px, py in track}) > 1:
            ax.plot([p[1] for p in track], [p[2] for p in track], "-", color=c, lw=1.2,
                    alpha=0.75, zorder=2)
            ax.plot(track[0][1], track[0][2], "o", color=c, mfc="white", zorder=3)
            obstacles.append((track[0][1], track[0][2]))
            moved = True
            x, y = track[-1][1], track[-1][2]  # where it is now (or was at the end)
        ax.plot(x, y, "^" if role == "authority" else "o", color=c, ms=8, zorder=4,
                markeredgecolor="black", markeredgewidth=0.5)
        labels.append((name, (x, y), 8.5))
        if role != "client":
            continue
        for m in milestones(events, name, track, (x, y)):
            if m.kind in _MAP_SKIPS:
                continue
            kinds.add(m.kind)
            ax.plot(m.x, m.y, zorder=5, **_mark_style(m.kind, m.who, auth_colour))
            obstacles.append((m.x, m.y))
            # When, for the steps one per payment; named by the payer's transfer
            # (payer#seq), so a payee's credit points back to its certificate.
            if m.kind == "certificate":
                labels.append((f"{name}#{m.sequence_number} cert {m.t - t0:.0f} s",
                               (m.x, m.y), 7.0))
            elif m.kind in ("handoff_direct", "handoff_authority"):
                labels.append((f"{m.who}#{m.sequence_number} paid {m.t - t0:.0f} s",
                               (m.x, m.y), 7.0))
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.margins(0.08)
    ax.apply_aspect()
    to_px = ax.transData.transform
    anchors = [tuple(to_px(a)) for _, a, _ in labels]
    sizes = [_text_size(text, fs, dpi) for text, _, fs in labels]
    offsets = place_labels(anchors, sizes, [tuple(to_px(o)) for o in obstacles])
    for (text, anchor, fs), (dx, dy) in zip(labels, offsets, strict=True):
        far = math.hypot(dx, dy) > 30
        ax.annotate(text, anchor, textcoords="offset points",
                    xytext=(dx * 72 / dpi, dy * 72 / dpi), ha="center", va="center",
                    fontsize=fs, zorder=6,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.75},
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray"}
                    if far else None)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title("Topology: authority ranges, client tracks and payment milestones")
    handles = _legend_handles(kinds)
    if moved:
        from matplotlib.lines import Line2D

        handles.insert(0, Line2D([], [], marker="o", color="gray", mfc="white",
                                 linestyle="-", lw=1.2, label="track (hollow: start)"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1),
                  borderaxespad=0)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _latency(path: str, metrics: dict[str, Any]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    series = dict(metrics.get("payment_latency_s") or {})
    if "connection_time_s" in metrics:
        series["group join"] = metrics["connection_time_s"]
    for label, s in series.items():
        vals = sorted(s.get("values") or [])
        if vals:
            ys = [(i + 1) / len(vals) for i in range(len(vals))]
            ax.step(vals, ys, where="post", label=f"{label} (n={len(vals)})")
    ax.set_xlabel("seconds")
    ax.set_ylabel("CDF")
    ax.set_ylim(0, 1.05)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title("Latency distributions")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _timeline(path: str, topology: dict[str, Any], tracks: Mapping[str, Track],
              events: Events, t0: float, end: float,
              changes: Sequence[dict[str, Any]]) -> None:
    plt = _pyplot()
    from matplotlib.patches import Patch

    clients = [n for n, st in topology.items() if st["role"] == "client"]
    auths = [n for n, st in topology.items() if st["role"] == "authority"]
    per_client = {c: intervals(events, c, end, changes) for c in clients}
    for spans in per_client.values():  # an authority the topology does not name
        auths += sorted({s.other for s in spans if s.kind != "handoff_group"} - set(auths))
    auth_colour = _colours(auths, AUTHORITY_COLOURS)
    slot = 0.34 / max(1, len(auths))
    fig, ax = plt.subplots(figsize=(10, 1.4 + 0.95 * max(1, len(clients))))
    kinds: set[str] = set()
    n = len(clients)
    for i, c in enumerate(clients):
        base = n - 1 - i  # the first client on top
        ax.axhline(base + 0.5, color="lightgray", lw=0.6)
        for s in per_client[c]:
            x, w = s.start - t0, max(s.end - s.start, 0.2)
            if s.kind in ("in_range", "radio"):
                k = auths.index(s.other)
                y0 = base + 0.08 + k * slot
                if s.kind == "radio":  # the radios' truth: light, the whole slot
                    ax.broken_barh([(x, w)], (y0, slot * 0.9), color=auth_colour[s.other],
                                   alpha=0.25, lw=0)
                else:  # the daemon's table: solid, the slot's lower part
                    ax.broken_barh([(x, w)], (y0, slot * 0.55), color=auth_colour[s.other],
                                   lw=0)
            elif s.kind == "group":
                ax.broken_barh([(x, w)], (base - 0.42, 0.3), color=auth_colour[s.other],
                               alpha=0.85, lw=0)
            else:
                ax.broken_barh([(x, w)], (base - 0.42, 0.3), facecolor="white",
                               edgecolor="black", hatch="////", lw=0.6)
                ax.text(x + w / 2, base - 0.27, s.other, ha="center", va="center",
                        fontsize=6.5, bbox={"boxstyle": "round,pad=0.1", "fc": "white",
                                            "ec": "none"})
        default = tuple(topology[c]["position"])
        for m in milestones(events, c, tracks.get(c, []), (default[0], default[1])):
            kinds.add(m.kind)
            ax.plot(m.t - t0, base - 0.02, zorder=5, **_mark_style(m.kind, m.who,
                                                                    auth_colour))
    ax.set_yticks(range(n), [clients[n - 1 - j] for j in range(n)])
    ax.set_ylim(-0.55, max(n, 1) - 0.45)
    left = min([0.0] + [s.start - t0 for spans in per_client.values() for s in spans])
    ax.set_xlim(left, max(end - t0, left + 1.0) * 1.02)
    ax.set_xlabel("seconds since the run's start")
    ax.set_title("Timeline per client: authorities in range (thin: solid = its daemon's "
                 "table,\nlight = radio range), P2P groups (thick), payment milestones",
                 fontsize=10)
    handles = [Patch(color=auth_colour[a], label=a) for a in auths]
    if any(s.kind == "handoff_group" for spans in per_client.values() for s in spans):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="////",
                             label="hand-off group (other client)"))
    handles += _legend_handles(kinds)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1),
              borderaxespad=0)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _times(events: Events, tracks: Mapping[str, Track],
           changes: Sequence[dict[str, Any]]) -> list[float]:
    out = [float(e["t"]) for evs in events.values() for e in evs if "t" in e]
    out += [float(p[0]) for track in tracks.values() for p in track]
    return out + [float(c["t"]) for c in changes if "t" in c]


def write(stem: Path | str, metrics: dict[str, Any], topology: dict[str, Any],
          tracks: Mapping[str, Track], events: Events | None = None, *,
          t0: float | None = None, end: float | None = None,
          changes: Sequence[dict[str, Any]] = ()) -> list[str]:
    """Draw ``<stem>-topology.png``, ``<stem>-latency.png`` and ``<stem>-timeline.png``;
    return their paths.

    ``topology``: station → ``{role, position, range}``; ``tracks``: station →
    ``[(t, x, y), ...]``; ``events``: the daemons' events so far; ``t0``: the
    timeline's start (default: the earliest time known), ``end``: where open spans end
    (default: the latest time known); ``changes``: the layer's sampled range changes.
    Raises what matplotlib raises (the run keeps its report without pictures)."""
    events = events or {}
    known = _times(events, tracks, changes)
    t0 = t0 if t0 else min(known, default=0.0)
    end = end if end is not None else max(known, default=t0)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [f"{stem}-topology.png", f"{stem}-latency.png", f"{stem}-timeline.png"]
    _topology(paths[0], topology, tracks, events, t0)
    _latency(paths[1], metrics)
    _timeline(paths[2], topology, tracks, events, t0, end, changes)
    return paths
