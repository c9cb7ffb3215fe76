"""The geometry of the quality report's charts: where each polygon, bar, point and label goes,
as plain numbers and strings. The SVG markup is laid out by templates/charts.html; a chart with
nothing to draw is ``None`` (the template says so instead).
"""

from __future__ import annotations

import math
from typing import Any

from lifecycle.quality import dimensions as q

GRADE_COLOURS = {"A": "#2d7a2d", "B": "#6b9a2d", "C": "#c98a1b", "D": "#b33a3a"}
UNGRADED_COLOUR = "#555"

Point = tuple[float, float]


def radar(dims: dict[str, float], size: int = 320) -> dict[str, Any] | None:
    """The dimensions as a radar: rings at a quarter, a half, three quarters and one, a spoke
    and a label per dimension, the values' polygon and a point per value. ``None`` for fewer
    than three dimensions (a radar needs three; show them as bars)."""
    names = list(dims)
    k = len(names)
    if k < 3:
        return None
    cx = cy = size / 2
    r = size / 2 - 70

    def point(i: int, v: float) -> Point:
        a = -math.pi / 2 + 2 * math.pi * i / k
        return cx + r * v * math.cos(a), cy + r * v * math.sin(a)

    spokes = []
    for i, name in enumerate(names):
        lx, ly = point(i, 1.16)
        spokes.append({"name": name, "value": dims[name], "end": point(i, 1.0),
                       "label": (lx, ly), "value_at": point(i, dims[name]),
                       "anchor": "middle" if abs(lx - cx) < 5 else ("start" if lx > cx
                                                                    else "end")})
    return {"kind": "radar", "size": size, "centre": (cx, cy),
            "rings": [[point(i, ring) for i in range(k)] for ring in (0.25, 0.5, 0.75, 1.0)],
            "spokes": spokes, "series": [s["value_at"] for s in spokes]}


def bars(items: list[tuple[str, float]], label: str, maximum: float | None = None,
         width: int = 460) -> dict[str, Any] | None:
    """Horizontal bars, one per item, scaled to ``maximum`` (else the largest value); values
    are shown to three decimals on a scale up to one, else as whole numbers."""
    if not items:
        return None
    top = maximum or max((v for _, v in items), default=1) or 1
    row, left = 22, 150
    rows = []
    for i, (name, value) in enumerate(items):
        y = 5 + i * row
        w = (width - left - 70) * (value / top)
        rows.append({"name": name, "y": y, "width": max(w, 1), "value_x": left + w + 4,
                     "shown": (f"{value:.3f}" if isinstance(value, float) and top <= 1
                               else f"{value:,.0f}")})
    return {"kind": "bars", "label": label, "width": width, "height": row * len(items) + 10,
            "left": left, "bar_height": row - 6, "rows": rows}


def histogram(edges: list[int], counts: list[int], label: str, width: int = 460,
              height: int = 180) -> dict[str, Any] | None:
    """Vertical bars, one per bin, scaled to the fullest bin; the bins' edges ticked at the
    start, the middle and the end."""
    if not counts:
        return None
    top = max(counts) or 1
    left, bottom = 40, 24
    w = (width - left - 10) / len(counts)
    binned = []
    for i, c in enumerate(counts):
        h = (height - bottom - 16) * c / top
        binned.append({"x": left + i * w, "y": height - bottom - h, "width": max(w - 2, 1),
                       "height": h, "low": edges[i], "high": edges[i + 1], "count": c})
    return {"kind": "histogram", "label": label, "width": width, "height": height, "top": top,
            "bins": binned, "ticks": [(left + i * w, edges[i])
                                      for i in (0, len(counts) // 2, len(counts))]}


def curve(points: list[dict[str, Any]], width: int = 520,
          height: int = 180) -> dict[str, Any] | None:
    """The value curve: score per evaluation, oldest first, with a line at each grade's floor
    within the range shown; published versions filled, candidates hollow."""
    if not points:
        return None
    lo = min(0.7, min(p["score"] for p in points))
    left, right, top, bottom = 64, 24, 20, 30
    step = (width - left - right) / max(len(points) - 1, 1)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - lo) / (1 - lo or 1))

    placed = []
    for i, p in enumerate(points):
        colour = GRADE_COLOURS.get(p["grade"], UNGRADED_COLOUR)
        placed.append({"x": left + i * step, "y": y(p["score"]), "grade": p["grade"],
                       "score": p["score"], "label": p["label"], "colour": colour,
                       "fill": colour if p.get("published") else "#fff"})
    return {"kind": "curve", "width": width, "height": height, "left": left,
            "right": width - right,
            "floors": [{"grade": g, "floor": floor, "y": y(floor)}
                       for g, floor in q.GRADES if floor >= lo],
            "points": placed, "line": [(p["x"], p["y"]) for p in placed]}
