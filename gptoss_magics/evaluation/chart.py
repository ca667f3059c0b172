"""The evaluation chart: accuracy against tokens per row, one point per setting.

:func:`vegalite` is a Vega-Lite v5 spec (JupyterLab renders the
``application/vnd.vegalite.v5+json`` MIME type natively); :func:`svg` draws the same
chart as a static SVG, the fallback for front ends without Vega-Lite (and for HTML
exports). Each point carries its 95% Wilson interval as a vertical bar.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

MIME = "application/vnd.vegalite.v5+json"
X = "tokens per row"
Y = "accuracy"


def points(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One point per setting: tokens per row (reasoning + answer), accuracy and its
    interval (settings without an accuracy are left out)."""
    out = []
    for label, row in table.iterrows():
        acc = float(row.get("accuracy", float("nan")))
        tokens = float(row["reasoning tokens per row"]) + float(row["answer tokens per row"])
        if not (math.isfinite(acc) and math.isfinite(tokens)):
            continue
        out.append({"setting": str(label), X: round(tokens, 2), Y: round(acc, 4),
                    "low": round(float(row["accuracy 95% low"]), 4),
                    "high": round(float(row["accuracy 95% high"]), 4),
                    "reasoning tokens per row": round(float(row["reasoning tokens per row"]),
                                                      2)})
    return out


def vegalite(table: pd.DataFrame, title: str = "Accuracy against tokens per row"
             ) -> dict[str, Any]:
    """The Vega-Lite v5 spec of the chart."""
    x = {"field": X, "type": "quantitative", "title": "tokens per row (reasoning + answer)",
         "scale": {"zero": True}}
    y = {"field": Y, "type": "quantitative", "title": "accuracy (95% Wilson interval)",
         "scale": {"domain": [0, 1]}}
    tooltip = [{"field": k, "type": "quantitative" if k != "setting" else "nominal"}
               for k in ("setting", Y, "low", "high", X, "reasoning tokens per row")]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title, "width": 360, "height": 240,
        "data": {"values": points(table)},
        "layer": [
            {"mark": {"type": "rule"},
             "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"},
                          "y2": {"field": "high"}}},
            {"mark": {"type": "point", "filled": True, "size": 80},
             "encoding": {"x": x, "y": y, "color": {"field": "setting", "type": "nominal"},
                          "tooltip": tooltip}},
            {"mark": {"type": "text", "dy": -12, "fontSize": 11},
             "encoding": {"x": x, "y": y, "text": {"field": "setting"}}},
        ],
    }


def _ticks(top: float) -> Sequence[float]:
    step = 10 ** math.floor(math.log10(top)) if top > 0 else 1.0
    while top / step > 6:
        step *= 2
    return [i * step for i in range(int(top / step) + 1)]


def svg(table: pd.DataFrame, width: int = 420, height: int = 260) -> str:
    """The chart as a static SVG (every text escaped)."""
    data = points(table)
    left, right, top_pad, bottom = 48, 16, 16, 36
    top_x = max([p[X] for p in data] + [1.0]) * 1.1
    plot_w, plot_h = width - left - right, height - top_pad - bottom

    def sx(v: float) -> float:
        return left + plot_w * v / top_x

    def sy(v: float) -> float:
        return top_pad + plot_h * (1 - v)

    parts = [f"<line x1='{left}' y1='{sy(0)}' x2='{width - right}' y2='{sy(0)}' "
             "stroke='#444'/>",
             f"<line x1='{left}' y1='{sy(0)}' x2='{left}' y2='{sy(1)}' stroke='#444'/>"]
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f"<text x='{left - 4}' y='{sy(v) + 4:.1f}' text-anchor='end' "
                     f"font-size='10'>{v:g}</text>")
    for v in _ticks(top_x):
        parts.append(f"<text x='{sx(v):.1f}' y='{sy(0) + 14:.1f}' text-anchor='middle' "
                     f"font-size='10'>{v:g}</text>")
    parts.append(f"<text x='{left + plot_w / 2}' y='{height - 4}' text-anchor='middle' "
                 "font-size='11'>tokens per row (reasoning + answer)</text>")
    parts.append(f"<text x='12' y='{top_pad + plot_h / 2}' text-anchor='middle' "
                 f"font-size='11' transform='rotate(-90 12 {top_pad + plot_h / 2})'>"
                 "accuracy</text>")
    for p in data:
        x = sx(p[X])
        parts.append(f"<line x1='{x:.1f}' y1='{sy(p['low']):.1f}' x2='{x:.1f}' "
                     f"y2='{sy(p['high']):.1f}' stroke='#1f4e8c'/>")
        parts.append(f"<circle cx='{x:.1f}' cy='{sy(p[Y]):.1f}' r='4' fill='#1f4e8c'/>")
        parts.append(f"<text x='{x + 6:.1f}' y='{sy(p[Y]) - 6:.1f}' font-size='10'>"
                     f"{html.escape(p['setting'])}</text>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"class='gptoss-evaluation-chart'>{''.join(parts)}</svg>")
