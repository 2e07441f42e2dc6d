"""Grids that do not stop at their edge.

A grid's choice (made on validation) that sits on the grid's highest or lowest value of a
setting says the best value may lie beyond it: `find_edges` names such settings (`lr high`,
`wd low`), and `extend` adds one value beyond the edge at a time, at the grid's own ratio there
(1e-3, 3e-3, 1e-2 chosen at 1e-2: next 3.33e-2), until the choice is inside or a limit of steps
is reached. The edge is judged among the members that share the chosen member's head, head
options and feature set: a learning rate is an edge of its own head's grid. A grid of one value
in a setting has no edge in it, and 0 is no edge (nothing lies below it); an edge whose step
comes from 0 has no ratio and is named but not extended. Selection stays on validation: the
caller's `choose` is what picks. Pure Python: the caller scores new members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# the numeric settings a grid varies, as a member's results entry names them
AXES = ("lr", "wd", "C")


@dataclass(frozen=True)
class Edge:
    axis: str  # "lr", "wd" or "C"
    side: str  # "high" or "low"
    value: float  # the chosen value, on the edge
    next: float | None  # one step beyond it at the grid's ratio there; None: no ratio (a step from 0)

    def __str__(self) -> str:
        return f"{self.axis} {self.side}"


def _group(member: dict) -> tuple:
    return member.get("head"), repr(member.get("options", {})), member.get("feature_set")


def _step(x: float) -> float:
    # three significant digits keep the values readable (3.33e-2, not 0.033333333333333333)
    return float(f"{x:.3g}")


def find_edges(members: list[dict], selected: int) -> list[Edge]:
    """The settings whose chosen value is the highest or lowest its grid tried, among the members
    of the chosen member's head, options and feature set."""
    chosen = members[selected]
    peers = [m for m in members if _group(m) == _group(chosen)]
    edges = []
    for axis in AXES:
        if axis not in chosen:
            continue
        values = sorted({float(m[axis]) for m in peers if axis in m})
        v = float(chosen[axis])
        if len(values) < 2:
            continue
        if v == values[-1]:
            below = values[-2]
            edges.append(Edge(axis, "high", v, _step(v * v / below) if below > 0 else None))
        elif v == values[0] and v > 0:
            edges.append(Edge(axis, "low", v, _step(v * v / values[1])))
    return edges


def beyond(members: list[dict], selected: int, edge: Edge) -> dict[str, tuple[float, ...]]:
    """The new members one step beyond an edge, as a grid: the new value of its setting, with
    every value the chosen member's peers tried of the other settings (e.g. lr 3.33e-2 x the wds)."""
    chosen = members[selected]
    peers = [m for m in members if _group(m) == _group(chosen)]
    grid = {a: tuple(sorted({float(m[a]) for m in peers if a in m})) for a in AXES if a in chosen}
    return {**grid, edge.axis: (edge.next,)}


def extend(
    members: list[dict],
    choose: Callable[[list[dict]], int],
    score_more: Callable[[dict, dict[str, tuple[float, ...]]], list[dict]],
    limit: int,
) -> tuple[list[dict], dict]:
    """Extend the grid past its edges, one step a round, for at most `limit` rounds.

    members: scored results entries (each with its "val"); choose(members) -> the index chosen
    on validation; score_more(chosen entry, new grid) -> the new members' scored entries.
    Returns (all members, a record: the limit, each step's edges and added values, and why it
    stopped: "inside", "limit" or "no ratio")."""
    if limit < 0:
        raise ValueError(f"the limit of edge extensions must be 0 or more, got {limit}")
    members = list(members)
    steps: list[dict] = []
    while True:
        selected = choose(members)
        edges = find_edges(members, selected)
        if not edges:
            stopped = "inside"
            break
        if len(steps) >= limit:
            stopped = "limit"
            break
        ready = [e for e in edges if e.next is not None]
        if not ready:
            stopped = "no ratio"
            break
        added = []
        for e in ready:
            new = score_more(members[selected], beyond(members, selected, e))
            added.append({"edge": str(e), "value": e.next, "members": len(new)})
            members += new
        steps.append({"from": {e.axis: e.value for e in ready}, "added": added})
    return members, {"limit": limit, "steps": steps, "stopped": stopped}


def edge_note(edges: list[str], extension: dict | None) -> str:
    """One line on where the choice sits: '' when inside its grid."""
    if not edges:
        if extension and extension["steps"]:
            return f"inside its grid after {len(extension['steps'])} extension step(s) past the edge"
        return ""
    text = "edge: " + ", ".join(edges)
    if extension is None:
        return f"{text} (the chosen value is the grid's last; --extend-edges N tries beyond it)"
    if extension["stopped"] == "no ratio":
        return f"{text} (not extended: its grid steps from 0, which gives no ratio to step by)"
    return f"{text} (still there after {len(extension['steps'])} extension step(s), the limit)"
