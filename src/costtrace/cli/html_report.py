"""``costtrace report --html``: one self-contained HTML page with charts, readable offline.

Inline CSS and inline SVG drawn here in Python: no JavaScript, no fonts, images or styles fetched from
anywhere, so the file opens the same from a laptop, a CI artifact or an e-mail attachment. Every piece
of text from the ledger (task, feature, route, model names) is user data and goes through
:func:`html.escape`.

Charts: cost per successful task over time (day buckets), cost by feature, retry tax by feature, and the
model comparison (list price vs effective price per million useful tokens).
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
from costtrace.cli.output import Column, Row, display, pct

__all__ = ["Bar", "Kpi", "Point", "render"]

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


def line_chart(points: Sequence[Point], *, width: int = 1080, height: int = 260, kind: str = "usd") -> str:
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

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" {_FONT} font-size="12">']
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
            out.append(f'<text x="{_f(x(i))}" y="{height - 18}" text-anchor="middle" class="axis">{_e(p.label)}</text>')
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


def bar_chart(
    bars: Sequence[Bar], *, series: Sequence[str] = (), kind: str = "usd", width: int = 520, label_width: int = 150
) -> str:
    """Horizontal bars, one group per :class:`Bar` (one bar per series value), value printed at the end."""
    if not bars:
        return _empty("no data in this window")
    n_series = max(len(b.values) for b in bars)
    bar_h, gap, group_gap = 16, 4, 14
    legend_h = 26 if series else 0
    group_h = n_series * bar_h + (n_series - 1) * gap
    height = legend_h + len(bars) * (group_h + group_gap) + 8
    value_w = 90
    w = width - label_width - value_w
    known = [float(v) for b in bars for v in b.values if v is not None and v.is_finite()]
    vmax = nice_max(max(known))[0] if known else 1.0
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" {_FONT} font-size="12">']
    lx = label_width
    for s, name in enumerate(series):
        color = PALETTE[s % len(PALETTE)]
        out.append(f'<rect x="{lx}" y="4" width="12" height="12" rx="2" fill="{color}"/>')
        out.append(f'<text x="{lx + 18}" y="14" class="axis">{_e(name)}</text>')
        lx += 28 + 7 * len(name)
    for g, b in enumerate(bars):
        gy = legend_h + g * (group_h + group_gap) + 4
        label = b.label if len(b.label) <= 22 else b.label[:21] + "\u2026"
        out.append(
            f'<text x="{label_width - 10}" y="{_f(gy + group_h / 2 + 4)}" text-anchor="end" class="label">'
            f"<title>{_e(b.label + (f' ({b.note})' if b.note else ''))}</title>{_e(label)}</text>"
        )
        for s, v in enumerate(b.values):
            by = gy + s * (bar_h + gap)
            color = PALETTE[s % len(PALETTE)]
            out.append(f'<rect x="{label_width}" y="{by}" width="{w}" height="{bar_h}" rx="3" class="track"/>')
            if v is None or not v.is_finite():
                text = "n/a"
            else:
                bw = max(2.0, float(v) / vmax * w) if v > 0 else 0.0
                out.append(
                    f'<rect x="{label_width}" y="{by}" width="{_f(bw)}" height="{bar_h}" rx="3" fill="{color}"/>'
                )
                text = display(v, "usd") if kind == "usd" else pct(v)
            out.append(f'<text x="{label_width + w + 8}" y="{by + 12}" class="value">{_e(text)}</text>')
    out.append("</svg>")
    return "".join(out)


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
svg .track{fill:#f1f2f6}
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
    notes: Sequence[str] = (),
    generated_at: datetime | None = None,
    version: str = "",
) -> str:
    """The whole page as one string. Every argument is escaped here; pass plain text.

    ``latency``: the columns and rows of the latency table (wall time to success and of failed tasks
    per group), shown under the main table when given. ``context``: those of the context-tax table
    (spend by kind of token, cached share of input, the upper bound of caching savings), shown next.
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
        f"{line_chart(over_time)}</section>",
        '<div class="grid2">',
        '<section class="card"><h2>Cost by feature</h2><p class="sub">Total spend in the window.</p>'
        f"{bar_chart(cost_by_feature)}</section>",
        '<section class="card"><h2>Retry tax by feature</h2>'
        '<p class="sub">Share of spend that bought failed attempts (retries and escalations).</p>'
        f"{bar_chart(retry_tax_by_feature, kind='pct')}</section>",
        "</div>",
        '<section class="card"><h2>Model comparison</h2>'
        '<p class="sub">USD per million tokens: blended list price (spend / all tokens) vs effective price '
        "(all spend on the model / tokens of the final attempts of successful tasks).</p>"
        f"{bar_chart(models, series=('list (blended)', 'effective per useful MTok'), width=1080, label_width=200)}"
        "</section>",
        f'<section class="card"><h2>{_e(table_title)}</h2>{html_table(columns, rows)}</section>',
    ]
    if latency is not None:
        parts.append(
            '<section class="card"><h2>Latency to a correct answer</h2>'
            '<p class="sub">Wall time from task start to its end, retries and escalations included: nearest-rank '
            "p50 / p95 of the successful tasks, next to the failed ones (failure or escalated to a human). "
            "Tasks without a recorded duration are left out and counted.</p>"
            f"{html_table(*latency)}</section>"
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
