"""A self-contained `report.html`: inline SVG plots and tables, no scripts, no network.

`render_report(title, runs, meta)` takes named runs (benchmarks of one model, or the stages of the
demo) mapped to their trajectory records and shows: first vs final accuracy, fixes and breakages,
the verification confusion matrix, accuracy and attempts by level, every metric, and examples.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone

from s2r.metrics import compute_metrics

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _esc(x) -> str:
    return html.escape(str(x))


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 4, 5, 8 × 10^k at or above x (so that quarter ticks read well)."""
    scale = 10 ** math.floor(math.log10(x))
    return next(m * scale for m in (1, 2, 2.5, 4, 5, 8, 10) if m * scale >= x - 1e-12)


def svg_head(title: str, width: int, height: int) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{_esc(title)}" font-family="sans-serif" font-size="11">'
            f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{_esc(title)}</text>')


def legend(names, left: int, height: int) -> str:
    """A colour square and the name of each series, in a row along the bottom, then the closing tag."""
    out, lx = [], left
    for s, name in enumerate(names):
        out.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
                   f'<text x="{lx + 14}" y="{height - 7}">{_esc(name)}</text>')
        lx += 24 + 7 * len(name)
    return "".join(out) + "</svg>"


def bar_chart(categories: Sequence[str], series: dict[str, Sequence[float | None]], title: str,
              y_max: float | None = None, percent: bool = True, width: int = 640, height: int = 260) -> str:
    """Grouped vertical bars as SVG: one group per category, one bar per series; None = no bar."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = y_max if y_max is not None else nice_ceiling(max(values + [1e-9]) * 1.1)
    left, bottom, right, head = 48, 46, 10, 28
    plot_w, plot_h = width - left - right, height - bottom - head
    group_w = plot_w / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(series))
    fmt = (lambda v: f"{v:.0%}" if top > 0.1 else f"{v:.1%}") if percent else (lambda v: f"{v:.3g}")
    out = [svg_head(title, width, height)]
    for k in range(5):  # horizontal grid and y labels
        v = top * k / 4
        y = head + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{fmt(v)}</text>')
    for c, cat in enumerate(categories):
        gx = left + c * group_w + group_w * 0.1
        for s, (name, vs) in enumerate(series.items()):
            v = vs[c]
            if v is None:
                continue
            h = plot_h * max(0.0, v) / top
            x, y = gx + s * bar_w, head + plot_h - h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.92:.1f}" height="{h:.1f}" '
                       f'fill="{PALETTE[s % len(PALETTE)]}"><title>{_esc(name)} · {_esc(cat)}: {fmt(v)}</title></rect>')
            if bar_w > 22:
                out.append(f'<text x="{x + bar_w * 0.46:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="9">{fmt(v)}</text>')
        out.append(f'<text x="{left + (c + 0.5) * group_w:.1f}" y="{head + plot_h + 14}" text-anchor="middle">{_esc(cat)[:24]}</text>')
    out.append(legend(series, left, height))
    return "".join(out)


def line_chart(series: dict[str, Sequence[tuple[float, float]]], title: str, x_label: str, y_label: str,
               width: int = 640, height: int = 280) -> str:
    """Lines with dots as SVG, one per series of (x, y) points in [0, 1] × [0, 1] (shown as percents)."""
    left, bottom, right, head = 48, 58, 10, 28
    plot_w, plot_h = width - left - right, height - bottom - head

    def px(x: float, y: float) -> tuple[float, float]:  # data -> pixels
        return left + plot_w * x, head + plot_h * (1 - y)

    out = [svg_head(title, width, height)]
    for k in range(5):  # grid and labels on both axes
        v = k / 4
        y, x = head + plot_h * (1 - v), left + plot_w * v
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{v:.0%}</text>'
                   f'<text x="{x:.1f}" y="{head + plot_h + 14}" text-anchor="middle" fill="#555">{v:.0%}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{head + plot_h + 28}" text-anchor="middle">{_esc(x_label)}</text>'
               f'<text x="12" y="{head + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 12 {head + plot_h / 2})">{_esc(y_label)}</text>')
    for s, (name, points) in enumerate(series.items()):
        color = PALETTE[s % len(PALETTE)]
        pixels = [px(x, y) for x, y in points]
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                   f'points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pixels)}"><title>{_esc(name)}</title></polyline>')
        out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}">'
                   f'<title>{_esc(name)}: {x:.1%}, {y:.1%}</title></circle>' for (a, b), (x, y) in zip(pixels, points))
    out.append(legend(series, left, height))
    return "".join(out)


def confusion(records: Sequence[dict]) -> dict[str, int]:
    """Counts of (truth, model verdict) over every verified attempt with a known grade."""
    counts = {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "unparsable": 0}
    for r in records:
        for a in r["attempts"]:
            v, g = a.get("verdict"), a["grade"]
            if v is None or g == "unverifiable":
                continue
            if v == "unparsable":
                counts["unparsable"] += 1
            else:
                counts[{("correct", "correct"): "tp", ("correct", "incorrect"): "fn",
                        ("incorrect", "correct"): "fp", ("incorrect", "incorrect"): "tn"}[(g, v)]] += 1
    return counts


def confusion_table(name: str, c: dict[str, int]) -> str:
    total = max(1, c["tp"] + c["fn"] + c["fp"] + c["tn"])

    def cell(n: int, good: bool) -> str:
        alpha = 0.15 + 0.7 * n / total
        color = f"rgba(85,168,104,{alpha:.2f})" if good else f"rgba(196,78,82,{alpha:.2f})"
        return f'<td style="background:{color}">{n}</td>'

    return (f'<table class="cm"><caption>{_esc(name)}</caption>'
            '<tr><th></th><th>says correct</th><th>says incorrect</th></tr>'
            f'<tr><th>attempt correct</th>{cell(c["tp"], True)}{cell(c["fn"], False)}</tr>'
            f'<tr><th>attempt incorrect</th>{cell(c["fp"], False)}{cell(c["tn"], True)}</tr>'
            f'<tr><td colspan="3" class="note">{c["unparsable"]} unparsable verdicts</td></tr></table>')


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}" if isinstance(v, float) else str(v)


def metrics_table(names: Sequence[str], metrics: dict[str, dict]) -> str:
    keys = list(dict.fromkeys(k for n in names for k in metrics[n]["overall"]))
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    rows = "".join(f"<tr><td>{_esc(k)}</td>" + "".join(f"<td>{_fmt(metrics[n]['overall'].get(k))}</td>" for n in names)
                   + "</tr>" for k in keys)
    return f'<table class="metrics"><tr><th>metric</th>{head}</tr>{rows}</table>'


def _examples(name: str, records: Sequence[dict], limit: int = 2) -> str:
    def ok(r, j):
        return r["attempts"][j]["grade"] == "correct"

    picks = [("fixed", [r for r in records if not ok(r, 0) and ok(r, -1)]),
             ("broken", [r for r in records if ok(r, 0) and not ok(r, -1)]),
             ("wrong", [r for r in records if not ok(r, -1)])]
    out = []
    for label, rs in picks:
        for r in rs[:limit]:
            answers = " → ".join(f"{a['answer']} ({a['grade']}, says {a['verdict']})" for a in r["attempts"])
            out.append(f"<details><summary>{_esc(name)} · {label} · {_esc(r['id'])}: {_esc(answers)[:200]}</summary>"
                       f"<pre>{_esc(r['problem'])}</pre><p>gold: <code>{_esc(r['gold'])}</code></p>"
                       f"<pre>{_esc(r.get('text', ''))}</pre></details>")
    return "".join(out)


CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 12px 8px 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}
table.metrics td:first-child{text-align:left;font-family:monospace}
table.cm{display:inline-table}caption{font-weight:bold;padding:4px}.note{color:#666;text-align:left}
pre{background:#f7f7f7;padding:8px;white-space:pre-wrap;font-size:12px}.meta{color:#555;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
"""


def render_report(title: str, runs: dict[str, list[dict]], meta: dict | None = None) -> str:
    names = [n for n, rs in runs.items() if rs]
    metrics = {n: compute_metrics(runs[n]) for n in names}
    o = {n: metrics[n]["overall"] for n in names}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_esc(title)}</h1>",
             f"<p class='meta'>written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} · "
             + " · ".join(f"{_esc(n)}: {metrics[n]['counts']['trajectories']} trajectories" for n in names) + "</p>"]
    parts.append("<h2>Answers</h2><div class='charts'>")
    parts.append(bar_chart(names, {"first attempt": [o[n]["eval/acc_first"] for n in names],
                                   "final answer": [o[n]["eval/acc_final"] for n in names]},
                           "Accuracy: first attempt vs final answer", y_max=1.0))
    parts.append(bar_chart(names, {"fixed (i2c)": [o[n]["eval/i2c"] for n in names],
                                   "broken (c2i)": [o[n]["eval/c2i"] for n in names]},
                           "Self-correction: fixes and breakages (share of problems)"))
    parts.append(bar_chart(names, {"right answer lost": [o[n]["fail/lost_right"] for n in names],
                                   "wrong answer accepted": [o[n]["fail/accepted_wrong"] for n in names],
                                   "never right": [o[n]["fail/never_right"] for n in names]},
                           "Where the wrong final answers come from (share of problems)"))
    parts.append("</div><h2>The model's own verification</h2>")
    tables = {n: confusion(runs[n]) for n in names}
    verified = [n for n in names if sum(tables[n].values())]
    parts.append("".join(confusion_table(n, tables[n]) for n in verified)
                 or "<p class='meta'>No run verified its own answers.</p>")
    curves = {n: [(c, r) for _, c, r in metrics[n]["risk_coverage"]["points"]] for n in names if "risk_coverage" in metrics[n]}
    if curves:  # the answered trajectories grow as the certainty threshold falls
        parts.append("<h2>Knowing when it is wrong</h2>" + line_chart(
            curves, "Risk–coverage: answering only above a certainty threshold", "coverage (share answered)",
            "risk (share of answered wrong)"))
        parts.append("<p class='meta'>Certainty: " + " · ".join(
            f"{_esc(n)}: " + ", ".join(f"{_esc(k)} ({v})" for k, v in metrics[n]["risk_coverage"]["signals"].items())
            for n in curves) + ". Definitions: docs/metrics-selective.md.</p>")
    leveled = [n for n in names if "by_level" in metrics[n]]
    if leveled:  # every run side by side: accuracy, and how attempts grow with difficulty
        levels = sorted({lv for n in leveled for lv in metrics[n]["by_level"]}, key=lambda s: (len(s), s))

        def by_level(key: str) -> dict[str, list]:
            return {n: [metrics[n]["by_level"].get(lv, {}).get(key) for lv in levels] for n in leveled}

        cats = [f"level {lv}" for lv in levels]
        width = max(640, 60 + len(levels) * len(leveled) * 16, 60 + sum(24 + 7 * len(n) for n in leveled))  # bars, legend
        parts.append("<h2>By difficulty level</h2><div class='charts'>")
        parts.append(bar_chart(cats, by_level("eval/acc_final"), "Final-answer accuracy by level", y_max=1.0, width=width))
        parts.append(bar_chart(cats, by_level("eval/acc_first"), "First-attempt accuracy by level", y_max=1.0, width=width))
        parts.append(bar_chart(cats, by_level("eval/attempts_mean"), "Attempts per problem by level", percent=False, width=width))
        parts.append(bar_chart(cats, by_level("eval/tokens_mean"), "Tokens per problem by level", percent=False, width=width))
        parts.append("</div>")
    parts.append("<h2>Every metric</h2>" + metrics_table(names, metrics))
    parts.append("<p class='meta'>Definitions: docs/metrics.md. Undefined ratios are shown as —.</p>")
    parts.append("<h2>Examples</h2>" + "".join(_examples(n, runs[n]) for n in names))
    if meta:
        parts.append(f"<h2>Settings</h2><pre>{_esc(json.dumps(meta, indent=1, default=str))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
