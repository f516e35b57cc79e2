"""Reports of load runs: a human table, a self-contained HTML page (hand-drawn SVG, no
dependencies) and a PNG (matplotlib, a dev/bench dependency only)."""

from __future__ import annotations

import html as _html
import importlib.util
from pathlib import Path
from typing import Any

PERCENTILES = ("p50", "p90", "p99", "max")


def matplotlib_missing() -> str | None:
    """A message when matplotlib cannot be imported (PNG output needs it), else None."""
    if importlib.util.find_spec("matplotlib") is None:
        return "--png needs matplotlib, which is not installed (pip install matplotlib; it is in requirements-dev.txt)"
    return None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _load_label(result: dict[str, Any]) -> str:
    if result["mode"] == "rate":
        return f"rate {result['rate']:g}/s"
    return f"concurrency {result['concurrency']}"


def table(result: dict[str, Any]) -> str:
    """One run as a human table."""
    errors = ", ".join(f"{k} {v}" for k, v in result["errors_by_kind"].items()) or "none"
    lines = [
        f"{result['url']}  {'stream' if result['stream'] else 'no stream'}, {_load_label(result)}, "
        f"{result['duration_s']:.2f} s measured (warm-up {result['warmup_s']:g} s excluded)"
        + ("" if result["grammar_checked"] else "; streams NOT checked (--no-check)"),
        f"  requests   {result['requests']:>10}  ok {result['ok']}  errors {result['errors']} ({errors})",
        f"  req/s      {result['requests_per_s']:>10,.1f}",
        f"  events/s   {result['events_per_s']:>10,.0f}   ({result['events']:,} events)",
        f"  MB/s       {result['bytes_per_s'] / 1e6:>10,.2f}",
        f"  {'ms':<12}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}{'mean':>10}",
    ]
    for key, name in (("ttfe_ms", "first event"), ("gap_ms", "event gap"), ("latency_ms", "whole request")):
        s = result[key]
        lines.append(f"  {name:<12}" + "".join(f"{_ms(s[p]):>10}" for p in (*PERCENTILES, "mean")))
    per_event = result["client_cpu_us_per_event"]
    lines.append(
        f"  load generator CPU {result['client_cpu_s']:.2f} s ({result['client_cpu_percent']:.0f}% of one core"
        + (f", {per_event:.2f} µs/event)" if per_event is not None else ")")
    )
    if result["late_starts"]:
        lines.append(f"  {result['late_starts']} requests started > 1 ms late (the generator fell behind its schedule)")
    for kind, example in result["error_examples"].items():
        lines.append(f"  e.g. {kind}: {example[:200]}")
    return "\n".join(lines)


def sweep_table(results: list[dict[str, Any]], key: str) -> str:
    """Several runs, one row each."""
    head = (
        f"{key:>12}{'req/s':>10}{'events/s':>12}{'errors':>8}{'ttfe p50':>10}{'ttfe p99':>10}"
        f"{'gap p50':>10}{'gap p99':>10}{'gen CPU%':>10}"
    )
    rows = [head]
    rows.extend(
        (
            f"{r[key]:>12g}{r['requests_per_s']:>10,.1f}{r['events_per_s']:>12,.0f}{r['errors']:>8}"
            f"{_ms(r['ttfe_ms']['p50']):>10}{_ms(r['ttfe_ms']['p99']):>10}"
            f"{_ms(r['gap_ms']['p50']):>10}{_ms(r['gap_ms']['p99']):>10}{r['client_cpu_percent']:>10.0f}"
        )
        for r in results
    )
    return "\n".join(rows)


def _series(results: list[dict[str, Any]], key: str) -> list[tuple[str, str, list[tuple[float, float]]]]:
    """(metric, percentile, points) for the latency plots."""
    out = []
    for metric in ("ttfe_ms", "gap_ms"):
        for p in ("p50", "p90", "p99"):
            points = [(float(r[key]), float(r[metric][p])) for r in results if r[metric][p] is not None]
            out.append((metric, p, points))
    return out


_COLORS = {"p50": "#1f77b4", "p90": "#ff7f0e", "p99": "#d62728"}
_TITLES = {"ttfe_ms": "time to first event (ms)", "gap_ms": "inter-event gap (ms)"}


def _svg_chart(title: str, series: list[tuple[str, list[tuple[float, float]]]], xlabel: str) -> str:
    width, height, left, bottom, top, right = 460, 300, 60, 40, 30, 20
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    if not xs:
        return f"<p>{_html.escape(title)}: no data</p>"
    x0, x1 = min(xs), max(xs)
    y1 = max(ys) * 1.1 or 1.0
    span = (x1 - x0) or 1.0

    def sx(x: float) -> float:
        return left + (x - x0) / span * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - y / y1 * (height - bottom - top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">']
    parts.append(f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold">{_html.escape(title)}</text>')
    parts.append(
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>'
    )
    for i in range(5):
        y = y1 * i / 4
        parts.append(f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
        parts.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" stroke="#eee"/>')
    parts.extend(
        f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x:g}</text>' for x in sorted(set(xs))
    )
    parts.append(f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">{_html.escape(xlabel)}</text>')
    for n, (name, pts) in enumerate(series):
        color = _COLORS.get(name, "#555")
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        for x, y in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        parts.append(f'<text x="{width - right - 40}" y="{top + 14 * n}" fill="{color}">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html(results: list[dict[str, Any]], key: str, title: str = "ferroute load test") -> str:
    """A self-contained HTML page: the runs' table and latency-against-load charts (inline SVG)."""
    charts = []
    series = _series(results, key)
    for metric in ("ttfe_ms", "gap_ms"):
        chart_series = [(p, pts) for m, p, pts in series if m == metric]
        charts.append(_svg_chart(_TITLES[metric], chart_series, key))
    rows = []
    for r in results:
        cells = [
            f"{r[key]:g}", f"{r['requests_per_s']:,.1f}", f"{r['events_per_s']:,.0f}", str(r["errors"]),
            *(_ms(r["ttfe_ms"][p]) for p in PERCENTILES), *(_ms(r["gap_ms"][p]) for p in PERCENTILES),
            f"{r['client_cpu_percent']:.0f}%",
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in cells) + "</tr>")
    head = [key, "req/s", "events/s", "errors", *(f"TTFE {p}" for p in PERCENTILES), *(f"gap {p}" for p in PERCENTILES),
            "generator CPU"]  # fmt: skip
    url = _html.escape(results[0]["url"]) if results else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style>"
        f"</head><body><h1>{_html.escape(title)}</h1><p>{url}; times in ms</p>"
        "<table><tr>" + "".join(f"<th>{_html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
        "<div>" + "".join(charts) + "</div></body></html>\n"
    )


def png(results: list[dict[str, Any]], key: str, path: Path, title: str = "ferroute load test") -> None:
    """Latency percentiles against load, as a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("ttfe_ms", "gap_ms"), strict=True):
        for m, p, pts in _series(results, key):
            if m == metric and pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=p, color=_COLORS[p])
        ax.set_title(_TITLES[metric])
        ax.set_xlabel(key)
        ax.set_ylabel("ms")
        if len(results) > 2 and key == "concurrency":
            ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
