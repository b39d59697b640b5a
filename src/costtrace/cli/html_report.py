"""``costtrace report --html``: one self-contained HTML page with charts, readable offline.

Inline CSS and inline SVG drawn here in Python: no JavaScript, no fonts, images or styles fetched from
anywhere, so the file opens the same from a laptop, a CI artifact or an e-mail attachment. Every piece
of text from the ledger (task, feature, route, model names) is user data and goes through
:func:`html.escape`.

Charts: cost per successful task over time (day buckets), the routes compared (cost per successful task
next to first-pass rate, per feature), cost by feature, retry tax by feature, the model comparison (list
price vs effective price per million useful tokens) and latency (p50 / p95 to success next to failed
tasks). Every bar chart has a value axis with tick labels and a title saying its unit; a value that is
unknown (None) is drawn as a dashed, empty track reading "no data", never as a zero-length bar. Each SVG
carries a ``<title>`` and a ``<desc>`` listing its values, its text alternative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from html import escape
from typing import Any

from costtrace._money import usd
from costtrace.cli.output import Column, Row, display, pct, seconds

__all__ = ["Bar", "ChartRow", "Kpi", "Panel", "Point", "RouteFigures", "render"]

PALETTE = ("#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6")
_FONT = "font-family=\"-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif\""


@dataclass(frozen=True)
class Kpi:
    label: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class Point:
    """One point of a time series: its label (a day), its value (None: no value that day)."""

    label: str
    value: Decimal | None
    note: str = ""


@dataclass(frozen=True)
class Bar:
    label: str
    values: tuple[Decimal | None, ...]
    note: str = ""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _f(x: float) -> str:
    return f"{x:.1f}"


def nice_max(value: float) -> tuple[float, float]:
    """An axis maximum >= ``value`` and its tick step, on a 1-2-5 scale.

    Example:
        >>> nice_max(0.0437)
        (0.06, 0.02)
    """
    if value <= 0 or not math.isfinite(value):
        return 1.0, 0.25
    raw = value / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    top = step * math.ceil(value / step - 1e-9)
    return float(f"{top:.12g}"), float(f"{step:.12g}")


def _tick_label(value: float, kind: str) -> str:
    d = Decimal(f"{value:.12g}")
    if kind == "pct":
        return pct(d, 0)
    if not d:
        return "$0"
    text = format(d.normalize(), "f")
    return f"${text}" if d < 1 else usd(d)


def line_chart(
    points: Sequence[Point], *, width: int = 1080, height: int = 270, kind: str = "usd", title: str = ""
) -> str:
    """An SVG line chart of ``points`` (in order), with a y axis from 0, gaps where a value is None."""
    if not points:
        return _empty("no data in this window")
    left, right, top, bottom = 80, 30, 24, 44
    inset = 36  # keeps the first and last points (and their labels) clear of the axes
    w, h = width - left - right, height - top - bottom
    known = [float(p.value) for p in points if p.value is not None]
    if not known:
        return _empty("no successful task in this window: cost per successful task is undefined")
    ymax, step = nice_max(max(known))
    n = len(points)

    def x(i: int) -> float:
        return left + (w / 2 if n == 1 else inset + i * (w - 2 * inset) / (n - 1))

    def y(v: float) -> float:
        return top + h - v / ymax * h

    label = "USD per successful task" if kind == "usd" else "% of tasks"
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title or label)}" {_FONT} '
        f'font-size="12"><title>{_e(title or label)}</title>',
        "<desc>"
        + _e("; ".join(f"{p.label}: {'no data' if p.value is None else _value_text(p.value, kind)}" for p in points))
        + "</desc>",
        f'<text transform="rotate(-90)" x="{_f(-(top + h / 2))}" y="16" text-anchor="middle" class="axistitle">'
        f"{_e(label)}</text>",
        f'<text x="{_f(left + w / 2)}" y="{height - 2}" text-anchor="middle" class="axistitle">day</text>',
    ]
    ticks = round(ymax / step)
    for t in range(ticks + 1):
        v = t * step
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{_f(y(v))}" y2="{_f(y(v))}" class="grid"/>')
        out.append(
            f'<text x="{left - 8}" y="{_f(y(v) + 4)}" text-anchor="end" class="axis">{_e(_tick_label(v, kind))}</text>'
        )
    label_every = max(1, math.ceil(n / 12))
    for i, p in enumerate(points):
        if i % label_every == 0 or i == n - 1:
            out.append(f'<text x="{_f(x(i))}" y="{height - 22}" text-anchor="middle" class="axis">{_e(p.label)}</text>')
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, p in enumerate(points):
        if p.value is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{_f(x(i))},{_f(y(float(p.value)))}")
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) > 1:
            area = f"{seg[0].split(',')[0]},{_f(top + h)} " + " ".join(seg) + f" {seg[-1].split(',')[0]},{_f(top + h)}"
            out.append(f'<polygon points="{area}" fill="{PALETTE[0]}" fill-opacity="0.08"/>')
            out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{PALETTE[0]}" stroke-width="2.5"/>')
    for i, p in enumerate(points):
        if p.value is None:
            continue
        shown = display(p.value, "usd") if kind == "usd" else pct(p.value)
        tip = f"{p.label}: {shown}" + (f" ({p.note})" if p.note else "")
        out.append(
            f'<circle cx="{_f(x(i))}" cy="{_f(y(float(p.value)))}" r="4" fill="#fff" stroke="{PALETTE[0]}" '
            f'stroke-width="2"><title>{_e(tip)}</title></circle>'
        )
    if n <= 16:
        for i, p in enumerate(points):
            if p.value is not None:
                text = display(p.value, "usd") if kind == "usd" else pct(p.value)
                out.append(
                    f'<text x="{_f(x(i))}" y="{_f(y(float(p.value)) - 10)}" text-anchor="middle" class="value">'
                    f"{_e(text)}</text>"
                )
    out.append(f'<line x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}" class="axisline"/>')
    if n == 1:
        out.append(
            f'<text x="{left + w / 2:.1f}" y="{top + h - 12}" text-anchor="middle" class="axis">'
            "one day of data so far: the line starts with the second day</text>"
        )
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class ChartRow:
    """One row of a :func:`panel_chart`: its label and, per panel, one value per series (None: unknown).

    ``group``: rows with the same group are drawn under one heading (e.g. the feature of a route).
    """

    label: str
    values: tuple[tuple[Decimal | None, ...], ...]
    group: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Panel:
    """One column of bars in a :func:`panel_chart`, on its own value axis.

    Attributes:
        axis: The axis title, with its unit ("USD per successful task"). For ``kind="seconds"`` the unit
            is added here: "(milliseconds)" when every value is under a second, else "(seconds)".
        kind: ``usd``, ``pct`` (a fraction, shown as %) or ``seconds``.
        series: The series' names, for the legend ("" for a lone unnamed series).
        top: A fixed axis maximum in the value's own unit (1.0 for a rate), else one fitted to the data.
        best: ``"min"`` or ``"max"``: mark the row(s) of each group with the lowest / highest value.
        best_label: The mark's text.
        missing: What a row without a value shows instead of a bar.
        colors: One colour per series.
    """

    axis: str
    kind: str = "usd"
    series: tuple[str, ...] = ("",)
    top: float | None = None
    best: str = ""
    best_label: str = ""
    missing: str = "no data"
    colors: tuple[str, ...] = PALETTE


def _value_text(value: Decimal, kind: str) -> str:
    if kind == "seconds":
        return seconds(value)
    return display(value, "usd") if kind == "usd" else pct(value)


def _axis_scale(panel: Panel, known: Sequence[float]) -> tuple[float, float, float, str]:
    """(factor, top, step, axis title): values times ``factor`` are in the axis' unit, from 0 to ``top``."""
    factor, title = 1.0, panel.axis
    if panel.kind == "seconds":
        factor = 1000.0 if known and max(known) < 1 else 1.0
        title = f"{panel.axis} ({'milliseconds' if factor > 1 else 'seconds'})"
    if panel.top is not None:
        top = panel.top * factor
        return factor, top, nice_max(top)[1], title
    top, step = nice_max(max(known) * factor if known else 0.0)
    return factor, top, step, title


def _axis_tick(value: float, kind: str) -> str:
    if kind == "seconds":
        return f"{value:.12g}"
    return _tick_label(value, kind)


def _best_rows(rows: Sequence[ChartRow], p: int, how: str) -> set[int]:
    """Indexes of the rows holding the best first-series value of panel ``p`` in their group (2+ known)."""
    if how not in ("min", "max"):
        return set()
    groups: dict[str | None, list[tuple[Decimal, int]]] = {}
    for i, r in enumerate(rows):
        v = r.values[p][0] if r.values[p] else None
        if v is not None and v.is_finite():
            groups.setdefault(r.group, []).append((v, i))
    marked: set[int] = set()
    for known in groups.values():
        if len(known) > 1:
            best = min(v for v, _ in known) if how == "min" else max(v for v, _ in known)
            marked.update(i for v, i in known if v == best)
    return marked


def panel_chart(
    rows: Sequence[ChartRow],
    panels: Sequence[Panel],
    *,
    title: str,
    width: int = 1080,
    label_width: int = 200,
    value_width: int = 96,
) -> str:
    """Horizontal bars: one row per :class:`ChartRow`, one column of bars per :class:`Panel`.

    The panels share the rows (e.g. the routes) and each has its own value axis: grid lines, tick labels
    and the axis title with its unit under the bars. A value that is None is no bar at all: a dashed
    track reading ``panel.missing``. Every bar has a ``<title>`` (its row, series and value) and the
    SVG a ``<desc>`` listing every value, as its text alternative.
    """
    if not rows or not panels:
        return _empty("no data in this window")
    bar_h, gap, row_gap, head_h, panel_gap = 16, 4, 12, 24, 28
    n_series = [max([len(p.series), *(len(r.values[i]) for r in rows)]) for i, p in enumerate(panels)]
    row_h = max(n * bar_h + (n - 1) * gap for n in n_series)
    legend_h = 26 if any(name for p in panels for name in p.series) else 0
    layout: list[tuple[str, float, int]] = []  # ("head" | "row", y, row index)
    y = float(legend_h + 6)
    previous: object = object()
    for i, r in enumerate(rows):
        if r.group is not None and r.group != previous:
            layout.append(("head", y, i))
            y += head_h
        previous = r.group
        layout.append(("row", y, i))
        y += row_h + row_gap
    plot_top, plot_bottom = float(legend_h), y - row_gap + 6
    height = plot_bottom + 44
    # Room right of the bars for the value and, where a panel marks its best row, the mark's text.
    value_width = max([value_width, *(value_width + 7 * len(p.best_label) for p in panels if p.best_label)])
    panel_w = (width - label_width - panel_gap * (len(panels) - 1)) / len(panels)
    bar_w = panel_w - value_width
    chars = max(8, label_width // 7)
    desc: list[list[str]] = [[] for _ in rows]
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {_f(height)}" role="img" aria-label="{_e(title)}" {_FONT} '
        f'font-size="12"><title>{_e(title)}</title>'
    ]
    body: list[str] = []
    for kind, ry, i in layout:
        r = rows[i]
        if kind == "head":
            body.append(
                f'<text x="4" y="{_f(ry + 15)}" class="group">{_e(r.group)}</text>'
                f'<line x1="0" x2="{width}" y1="{_f(ry + 2)}" y2="{_f(ry + 2)}" class="grid"/>'
            )
            continue
        label = r.label if len(r.label) <= chars else r.label[: chars - 1] + "\u2026"
        full = (f"{r.group}: " if r.group is not None else "") + r.label + (f" ({r.note})" if r.note else "")
        body.append(
            f'<text x="{label_width - 10}" y="{_f(ry + row_h / 2 + 4)}" text-anchor="end" class="label">'
            f"<title>{_e(full)}</title>{_e(label)}</text>"
        )
    for p, panel in enumerate(panels):
        x0 = label_width + p * (panel_w + panel_gap)
        known = [float(v) for r in rows for v in r.values[p] if v is not None and v.is_finite()]
        factor, top, step, axis_title = _axis_scale(panel, known)
        for t in range(round(top / step) + 1):
            tx = x0 + t * step / top * bar_w
            body.append(f'<line x1="{_f(tx)}" x2="{_f(tx)}" y1="{_f(plot_top)}" y2="{_f(plot_bottom)}" class="grid"/>')
            body.append(
                f'<text x="{_f(tx)}" y="{_f(plot_bottom + 15)}" text-anchor="middle" class="axis tick">'
                f"{_e(_axis_tick(t * step, panel.kind))}</text>"
            )
        body.append(
            f'<line x1="{_f(x0)}" x2="{_f(x0 + bar_w)}" y1="{_f(plot_bottom)}" y2="{_f(plot_bottom)}" '
            'class="axisline"/>'
            f'<text x="{_f(x0 + bar_w / 2)}" y="{_f(plot_bottom + 35)}" text-anchor="middle" class="axistitle">'
            f"{_e(axis_title)}</text>"
        )
        lx = x0
        for s, name in enumerate(panel.series):
            if name:
                body.append(
                    f'<rect x="{_f(lx)}" y="4" width="12" height="12" rx="2" '
                    f'fill="{panel.colors[s % len(panel.colors)]}"/>'
                    f'<text x="{_f(lx + 18)}" y="14" class="axis">{_e(name)}</text>'
                )
                lx += 30 + 7 * len(name)
        best = _best_rows(rows, p, panel.best)
        for kind, ry, i in layout:
            if kind != "row":
                continue
            r = rows[i]
            shown: list[str] = []
            for s, v in enumerate(r.values[p]):
                by = ry + s * (bar_h + gap)
                name = panel.series[s] if s < len(panel.series) and panel.series[s] else panel.axis
                who = (f"{r.group}: " if r.group is not None else "") + r.label
                if v is None or not v.is_finite():
                    missing = panel.missing + (f" ({name})" if len(panel.series) > 1 else "")
                    body.append(
                        f'<rect x="{_f(x0)}" y="{_f(by)}" width="{_f(bar_w)}" height="{bar_h}" rx="3" '
                        f'class="nodata" data-row="{_e(who)}" data-series="{_e(name)}"/>'
                        f'<text x="{_f(x0 + 8)}" y="{_f(by + 12)}" class="nodata">{_e(missing)}</text>'
                    )
                    shown.append(f"{name} {panel.missing}")
                    continue
                body.append(
                    f'<rect x="{_f(x0)}" y="{_f(by)}" width="{_f(bar_w)}" height="{bar_h}" rx="3" class="track"/>'
                )
                text = _value_text(v, panel.kind)
                bw = max(2.0, min(float(v) * factor / top, 1.0) * bar_w) if v > 0 else 0.0
                body.append(
                    f'<rect x="{_f(x0)}" y="{_f(by)}" width="{_f(bw)}" height="{bar_h}" rx="3" class="bar" '
                    f'fill="{panel.colors[s % len(panel.colors)]}" data-row="{_e(who)}" data-series="{_e(name)}" '
                    f'data-value="{_e(str(Decimal(v)))}"><title>{_e(f"{who}, {name}: {text}")}</title></rect>'
                )
                mark = s == 0 and i in best
                body.append(
                    f'<text x="{_f(x0 + bar_w + 8)}" y="{_f(by + 12)}" class="value{" best" if mark else ""}">'
                    f"{_e(text + (f' {panel.best_label}' if mark and panel.best_label else ''))}</text>"
                )
                shown.append(f"{name} {text}")
            desc[i].append(", ".join(shown))
    described = (
        f"{'' if r.group is None else f'{r.group}: '}{r.label}: {'; '.join(desc[i])}" for i, r in enumerate(rows)
    )
    out.append(f"<desc>{_e('. '.join(described))}</desc>")
    out.extend(body)
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    bars: Sequence[Bar],
    *,
    axis: str,
    series: Sequence[str] = (),
    kind: str = "usd",
    title: str = "",
    width: int = 520,
    label_width: int = 150,
    top: float | None = None,
) -> str:
    """Horizontal bars, one group per :class:`Bar` (one bar per series value), on one axis titled ``axis``."""
    panel = Panel(axis=axis, kind=kind, series=tuple(series) or ("",), top=top)
    rows = [ChartRow(b.label, (b.values,), note=b.note) for b in bars]
    return panel_chart(rows, [panel], title=title or axis, width=width, label_width=label_width)


@dataclass(frozen=True)
class RouteFigures:
    """One route's figures for the route comparison: over the tasks of ``feature`` that took ``route``."""

    route: str
    feature: str | None
    tasks: int
    cost_per_successful_task_usd: Decimal | None
    """None: no successful task (undefined, not zero)."""
    first_pass_rate: Decimal | None
    note: str = ""


LATENCY_SERIES = ("success p50", "success p95", "failed p50", "failed p95")
_LATENCY_COLORS = ("#4f46e5", "#a5b4fc", "#ef4444", "#fca5a5")


def route_chart(routes: Sequence[RouteFigures]) -> str:
    """Cost per successful task and first-pass rate per route, side by side, routes grouped by feature.

    Within a feature the routes are ordered by cost per successful task, cheapest first (routes with no
    success last); the cheapest and the highest first-pass rate of each feature are marked.
    """
    ordered = sorted(
        routes,
        key=lambda r: (
            r.feature is None,
            r.feature or "",
            r.cost_per_successful_task_usd is None,
            r.cost_per_successful_task_usd or Decimal(0),
            r.route,
        ),
    )
    rows = [
        ChartRow(
            r.route,
            ((r.cost_per_successful_task_usd,), (r.first_pass_rate,)),
            group=r.feature if r.feature is not None else "(no feature)",
            note=f"{r.tasks:,} task(s)" + (f"; {r.note}" if r.note else ""),
        )
        for r in ordered
    ]
    panels = [
        Panel(
            "USD per successful task",
            "usd",
            best="min",
            best_label="\u2190 cheapest",
            missing="no data: no successful task",
        ),
        Panel(
            "first-pass rate (% of tasks)",
            "pct",
            top=1.0,
            best="max",
            best_label="\u2190 highest",
            colors=(PALETTE[3],),
        ),
    ]
    return panel_chart(rows, panels, title="Routes compared: cost per successful task and first-pass rate")


def latency_chart(bars: Sequence[Bar]) -> str:
    """Per scope, p50 and p95 wall time of successful tasks next to those of failed tasks (:data:`LATENCY_SERIES`).

    Each :class:`Bar` holds the four values in that order, in seconds; None (no timed task) is "no data".
    """
    panel = Panel("wall time, task start to end", "seconds", series=LATENCY_SERIES, colors=_LATENCY_COLORS)
    rows = [ChartRow(b.label, (b.values,), note=b.note) for b in bars]
    return panel_chart(rows, [panel], title="Latency to a correct answer and of failed tasks", label_width=220)


def _empty(message: str) -> str:
    return f'<p class="empty">{_e(message)}</p>'


def html_table(columns: Sequence[Column], rows: Sequence[Row]) -> str:
    cols = [c for c in columns if c.table]
    head = "".join(f'<th class="{"t" if c.kind == "text" else "n"}">{_e(c.header)}</th>' for c in cols)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"t" if c.kind == "text" else "n"}">{_e(display(r.get(c.key), c.kind))}</td>' for c in cols
        )
        + "</tr>"
        for r in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f9;color:#1f2330;
 font:14px/1.45 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 28px 48px}
header h1{margin:0 0 4px;font-size:26px;letter-spacing:-.01em}
header p{margin:0;color:#5b6172}
.meta{display:flex;flex-wrap:wrap;gap:6px 18px;margin-top:8px;color:#5b6172;font-size:13px}
.meta b{color:#1f2330;font-weight:600}
.kpis{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin:22px 0}
.kpi{background:#fff;border-radius:10px;padding:14px 16px;
 box-shadow:0 1px 2px rgba(16,24,40,.06),0 1px 3px rgba(16,24,40,.08)}
.kpi .l{color:#5b6172;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.kpi .v{font-size:24px;font-weight:650;margin-top:4px;font-variant-numeric:tabular-nums}
.kpi .n{color:#8a90a0;font-size:12px;margin-top:2px}
.kpi.main{background:#4f46e5;color:#fff}.kpi.main .l,.kpi.main .n{color:#dcdcff}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.card{background:#fff;border-radius:10px;padding:16px 18px 14px;margin-bottom:16px;
 box-shadow:0 1px 2px rgba(16,24,40,.06),0 1px 3px rgba(16,24,40,.08)}
.card h2{font-size:16px;margin:0 0 2px}
.card p.sub{margin:0 0 10px;color:#5b6172;font-size:12.5px}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:#eceef3}svg .axisline{stroke:#c9ccd6}
svg .axis{fill:#6b7080}svg .label{fill:#1f2330}svg .value{fill:#1f2330;font-weight:600}
svg .track{fill:#f1f2f6}svg .axistitle{fill:#3d4252;font-weight:600}svg .group{fill:#1f2330;font-weight:650}
svg rect.nodata{fill:none;stroke:#b8bcc8;stroke-dasharray:4 3}svg text.nodata{fill:#8a90a0;font-style:italic}
svg .best{fill:#047857}
.empty{color:#8a90a0;font-style:italic;margin:18px 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:12px;font-variant-numeric:tabular-nums}
th,td{padding:6px 6px;border-bottom:1px solid #eceef3;white-space:nowrap}
td.t{white-space:normal;overflow-wrap:anywhere;max-width:220px}
th{color:#5b6172;font-weight:600;background:#fafbfc}
td.n,th.n{text-align:right}td.t,th.t{text-align:left}
.notes{color:#5b6172;font-size:12.5px}.notes li{margin:2px 0}
footer{color:#8a90a0;font-size:12px;margin-top:18px}
@media print{body{background:#fff}.card,.kpi{box-shadow:none;border:1px solid #ddd}}
"""


def render(
    *,
    title: str,
    meta: Sequence[tuple[str, str]],
    kpis: Sequence[Kpi],
    over_time: Sequence[Point],
    cost_by_feature: Sequence[Bar],
    retry_tax_by_feature: Sequence[Bar],
    models: Sequence[Bar],
    table: tuple[Sequence[Column], Sequence[Row]],
    table_title: str,
    latency: tuple[Sequence[Column], Sequence[Row]] | None = None,
    context: tuple[Sequence[Column], Sequence[Row]] | None = None,
    routes: Sequence[RouteFigures] = (),
    routes_note: str = "",
    latency_bars: Sequence[Bar] = (),
    latency_note: str = "",
    notes: Sequence[str] = (),
    generated_at: datetime | None = None,
    version: str = "",
) -> str:
    """The whole page as one string. Every argument is escaped here; pass plain text.

    ``latency``: the columns and rows of the latency table (wall time to success and of failed tasks
    per group), shown under the main table when given, under the chart of ``latency_bars`` (one
    :class:`Bar` per group, values in :data:`LATENCY_SERIES` order). ``context``: those of the context-tax table
    (spend by kind of token, cached share of input, the upper bound of caching savings), shown next.
    ``routes``: the route comparison chart, with ``routes_note`` saying what it covers (left out when empty).
    """
    generated = (generated_at or datetime.now()).strftime("%Y-%m-%d %H:%M")
    meta_html = "".join(f"<span>{_e(k)}: <b>{_e(v)}</b></span>" for k, v in meta)
    kpi_html = "".join(
        f'<div class="kpi{" main" if i == 0 else ""}"><div class="l">{_e(k.label)}</div>'
        f'<div class="v">{_e(k.value)}</div><div class="n">{_e(k.note)}</div></div>'
        for i, k in enumerate(kpis)
    )
    notes_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    columns, rows = table
    parts: list[Any] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        # No network: forbid every fetch, so the page renders the same offline.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<header><h1>{_e(title)}</h1><p>What each successful task really costs, failures and retries included.</p>",
        f'<div class="meta">{meta_html}</div></header>',
        f'<section class="kpis">{kpi_html}</section>',
        '<section class="card"><h2>Cost per successful task over time</h2>'
        '<p class="sub">Per day: all spend of the day (failed tasks and retries included) / successful tasks.</p>'
        f"{line_chart(over_time, title='Cost per successful task over time')}</section>",
    ]
    if routes:
        parts.append(
            '<section class="card" id="routes"><h2>Routes compared</h2>'
            '<p class="sub">Per route: cost per successful task (all spend on the route, failures and retries '
            "included, / its successful tasks; lower is better) and first-pass rate (tasks that succeeded on "
            "their first attempt, no retry or escalation; higher is better). Routes are compared within a "
            f"feature, cheapest per success first. {_e(routes_note)}</p>"
            f"{route_chart(routes)}</section>"
        )
    parts += [
        '<div class="grid2">',
        '<section class="card"><h2>Cost by feature</h2><p class="sub">Total spend in the window.</p>'
        f"{bar_chart(cost_by_feature, axis='USD, total spend', title='Cost by feature')}</section>",
        '<section class="card"><h2>Retry tax by feature</h2>'
        '<p class="sub">Share of spend that bought failed attempts (retries and escalations).</p>'
        f"{bar_chart(retry_tax_by_feature, kind='pct', axis='% of spend', title='Retry tax by feature')}</section>",
        "</div>",
        '<section class="card"><h2>Model comparison</h2>'
        '<p class="sub">USD per million tokens: blended list price (spend / all tokens) vs effective price '
        "(all spend on the model / tokens of the final attempts of successful tasks).</p>"
        + bar_chart(
            models,
            series=("list (blended)", "effective per useful MTok"),
            axis="USD per million tokens",
            title="Model comparison",
            width=1080,
            label_width=200,
        )
        + "</section>",
        f'<section class="card"><h2>{_e(table_title)}</h2>{html_table(columns, rows)}</section>',
    ]
    if latency is not None or latency_bars:
        parts.append(
            '<section class="card" id="latency"><h2>Latency to a correct answer</h2>'
            '<p class="sub">Wall time from task start to its end, retries and escalations included: nearest-rank '
            "p50 / p95 of the successful tasks, next to the failed ones (failure or escalated to a human). "
            "Tasks without a recorded duration are left out and counted; a group with no timed task of a kind "
            f"shows no data. {_e(latency_note)}</p>"
            + (latency_chart(latency_bars) if latency_bars else "")
            + (html_table(*latency) if latency is not None else "")
            + "</section>"
        )
    if context is not None:
        parts.append(
            '<section class="card"><h2>Context tax</h2>'
            '<p class="sub">Share of the priced spend on uncached input, cache reads, cache writes and output '
            "(reasoning included); input tokens per task, nearest-rank p50 / p95; cached input: cache reads / all "
            "input tokens. <b>Caching saves \u2264</b> is an <b>upper bound</b>: every uncached input token priced "
            "as a cache read at the provider's cache price. Real caches hold only a repeated prefix, need a "
            "minimum prompt length, expire, and some charge a write first. Calls whose model has no cache-read "
            "price are counted, not guessed.</p>"
            f"{html_table(*context)}</section>"
        )
    if notes:
        parts.append(f'<section class="card notes"><h2>Notes</h2><ul>{notes_html}</ul></section>')
    parts.append(f"<footer>Generated by costtrace {_e(version)} on {_e(generated)}.</footer></main></body></html>")
    return "\n".join(str(p) for p in parts)


def day_label(value: str | None) -> str:
    """A day bucket's key as ``YYYY-MM-DD`` (whatever ISO form the analytics return)."""
    if value is None:
        return "-"
    text = str(value)
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        try:
            return date.fromisoformat(text[:10]).isoformat()
        except ValueError:
            return text
