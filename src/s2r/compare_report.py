"""The report of `s2r compare`: many methods (rows) on one task over several seeds, as one
self-contained HTML page (inline SVG, no scripts, no network) and a plain-text table.

`results` is results.json: {"seeds": [...], "test_problems": int, "rows": {seed: [{"name", "metrics"}]},
"seconds": {seed: {stage: seconds}}, "summary": summarise(rows, KEYS)}. Every mean shown is over the
seeds, with the half-width of its 95% Student-t interval (compare_stats.interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from s2r.compare_stats import RowsBySeed, Separation, row_names, separated, summarise, values_of
from s2r.report import CSS, PALETTE, bar_chart, line_chart, nice_ceiling, svg_head
from s2r.selective import risk_coverage_curve

# (metric key, column head, format): "pct" shown × 100, "num" as is, "tok" rounded to whole tokens
COLUMNS: list[tuple[str, str, str]] = [
    ("eval/acc_first", "acc first %", "pct"),
    ("eval/acc_final", "acc final %", "pct"),
    ("eval/i2c", "i→c %", "pct"),
    ("eval/c2i", "c→i %", "pct"),
    ("eval/cl", "CL %", "pct"),
    ("eval/cs", "CS %", "pct"),
    ("eval/rss", "RSS", "num"),
    ("verify/tpr", "verifier TPR %", "pct"),
    ("verify/tnr", "verifier TNR %", "pct"),
    ("eval/tokens_mean", "tokens / problem", "tok"),
    ("select/coverage", "answered %", "pct"),
    ("select/acc_answered", "acc answered %", "pct"),
    ("select/ap", "AP", "num"),
]
KEYS = [key for key, _, _ in COLUMNS]  # what `summarise` is asked for
FINAL = "eval/acc_final"
REFERENCES = ("base", "bi")  # every row is compared with these rows, when present

EXTRA_CSS = """
td.name,th.name{text-align:left;font-family:monospace}
td.hi{background:rgba(85,168,104,.35)}td.lo{background:rgba(196,78,82,.35)}td.na{color:#999}
"""


def _num(v: float, kind: str) -> str:
    return f"{v * 100:.1f}" if kind == "pct" else f"{v:.0f}" if kind == "tok" else f"{v:.3f}"


def fmt_stat(stat: dict[str, Any] | None, kind: str, seeds: int | None = None) -> str:
    """"mean ± half-width" (the mean alone from one seed, — from none); "(n=2)" when the row has
    fewer seeds than `seeds`."""
    if not stat or stat["n"] == 0:
        return "—"
    text = _num(stat["mean"], kind)
    if stat["high"] is not None:
        text += " ± " + _num(stat["high"] - stat["mean"], kind)
    return text + (f" (n={stat['n']})" if seeds is not None and stat["n"] < seeds else "")


def ranking(summary: dict[str, dict[str, dict]], key: str = FINAL) -> list[str]:
    """Row names by mean `key`, highest first; rows without a value last, in their order."""
    return sorted(summary, key=lambda n: -summary[n][key]["mean"] if summary[n][key]["n"] else math.inf)


def pairs_to_compare(names: Sequence[str], ranked: Sequence[str]) -> list[tuple[str, str]]:
    """Every row against each reference row present (base, bi), and neighbours in the ranking
    (better first); each unordered pair once."""
    pairs = [(n, ref) for ref in REFERENCES if ref in names for n in ranked if n != ref]
    pairs += list(zip(ranked, ranked[1:]))
    out, seen = [], set()
    for a, b in pairs:
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append((a, b))
    return out


# ----------------------------------------------------------------------------------- charts


def scatter_chart(points: dict[str, tuple[float, float, float | None, float | None]], title: str,
                  x_label: str, y_label: str, width: int = 640, height: int = 340) -> str:
    """Labelled points (x, y) with vertical error bars [low, high] as SVG; x from 0, y a percent axis
    zoomed to the points and their bars (within [0, 1])."""
    left, bottom, right, head = 52, 40, 20, 28
    plot_w, plot_h = width - left - right, height - bottom - head
    x_top = nice_ceiling(max([p[0] for p in points.values()] + [1.0]) * 1.1)
    ys = [min(1.0, max(0.0, v)) for x, y, lo, hi in points.values() for v in (y, lo, hi) if v is not None]
    lo, hi = max(0.0, min(ys, default=0.0) - 0.02), min(1.0, max(ys, default=1.0) + 0.02)
    for step in (0.01, 0.02, 0.025, 0.05, 0.1, 0.25):  # four grid steps of a round size that hold [lo, hi]
        y_lo = max(0.0, min(math.floor(lo / step) * step, 1 - 4 * step))
        if y_lo + 4 * step >= hi:
            break
    y_hi = y_lo + 4 * step
    tick = "{:.1%}" if step == 0.025 else "{:.0%}"

    def px(x: float, y: float) -> tuple[float, float]:  # data -> pixels, y kept inside the plot
        y = min(y_hi, max(y_lo, y))
        return left + plot_w * x / x_top, head + plot_h * (y_hi - y) / (y_hi - y_lo)

    out = [svg_head(title, width, height)]
    for k in range(5):  # grid and labels on both axes
        y, x = head + plot_h * (1 - k / 4), left + plot_w * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
                   f'{tick.format(y_lo + (y_hi - y_lo) * k / 4)}</text>'
                   f'<text x="{x:.1f}" y="{head + plot_h + 14}" text-anchor="middle" fill="#555">{x_top * k / 4:.4g}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{head + plot_h + 30}" text-anchor="middle">{escape(x_label)}</text>'
               f'<text x="12" y="{head + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 12 {head + plot_h / 2})">{escape(y_label)}</text>')
    for s, (name, (x, y, lo, hi)) in enumerate(points.items()):
        color = PALETTE[s % len(PALETTE)]
        a, b = px(x, y)
        if lo is not None and hi is not None:
            _, b_lo = px(x, lo)
            _, b_hi = px(x, hi)
            out.append(f'<path d="M{a:.1f},{b_lo:.1f}V{b_hi:.1f}M{a - 4:.1f},{b_lo:.1f}h8M{a - 4:.1f},{b_hi:.1f}h8" '
                       f'stroke="{color}" fill="none"/>')
        span = f" [{lo:.1%}, {hi:.1%}]" if lo is not None and hi is not None else ""
        label = name[:24]
        left_of = a + 6 + 6.5 * len(label) > left + plot_w  # would run off the plot: the label goes left of its point
        anchor = ' text-anchor="end"' if left_of else ""
        out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4" fill="{color}"><title>{escape(name)}: '
                   f'{x:.4g}, {y:.1%}{span}</title></circle>'
                   f'<text x="{a - 6 if left_of else a + 6:.1f}" y="{b - 5:.1f}"{anchor} fill="{color}">{escape(label)}</text>')
    return "".join(out) + "</svg>"


def _legend_width(names: Sequence[str]) -> int:
    """Width that holds report.legend's row of names (and at least 640)."""
    return max(640, 60 + sum(24 + 7 * len(n) for n in names))


# ----------------------------------------------------------------------------------- tables


def summary_table(summary: dict[str, dict[str, dict]], names: Sequence[str], seeds: int) -> str:
    """Rows × the metric columns that any row has, each cell mean ± half-width."""
    cols = [(k, head, kind) for k, head, kind in COLUMNS if any(summary[n].get(k, {}).get("n") for n in names)]
    head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in cols)
    body = "".join(f"<tr><td class='name'>{escape(n)}</td>"
                   + "".join(f"<td>{fmt_stat(summary[n].get(k), kind, seeds)}</td>" for k, _, kind in cols)
                   + "</tr>" for n in names)
    return f"<table><tr><th class='name'>row</th>{head}</tr>{body}</table>"


def _pp(s: Separation) -> str:
    """The mean difference and its interval in percentage points."""
    if s.diff is None:
        return "—"
    text = f"{s.diff * 100:+.1f}"
    return text + (f" [{s.low * 100:+.1f}, {s.high * 100:+.1f}]" if s.low is not None else "")


def separation_list(rows: RowsBySeed, pairs: Sequence[tuple[str, str]], key: str = FINAL) -> str:
    body = []
    for a, b in pairs:
        s = separated(rows, key, a, b)
        cls = "na" if s.separated is None else "hi" if s.separated and s.diff > 0 else "lo" if s.separated else ""
        body.append(f"<tr><td class='name'>{escape(a)} − {escape(b)}</td><td>{_pp(s)}</td><td>{s.n}</td>"
                    f"<td class='name {cls}'>{escape(s.note)}</td></tr>")
    return ("<table><tr><th class='name'>pair</th><th>Δ acc final, pp [95% interval]</th><th>seeds</th>"
            f"<th class='name'>verdict</th></tr>{''.join(body)}</table>")


def separation_matrix(rows: RowsBySeed, ranked: Sequence[str], key: str = FINAL) -> str:
    """Row minus column for every pair, in the ranking's order: green / red where the row is higher /
    lower by more than the seed spread, grey where not decidable."""
    head = "".join(f"<th>{escape(n[:12])}</th>" for n in ranked)
    body = []
    for a in ranked:
        cells = []
        for b in ranked:
            if a == b:
                cells.append("<td></td>")
                continue
            s = separated(rows, key, a, b)
            cls = "na" if s.separated is None else ("hi" if s.diff > 0 else "lo") if s.separated else ""
            text = "—" if s.diff is None else f"{s.diff * 100:+.1f}"
            cells.append(f"<td class='{cls}' title='{escape(a)} − {escape(b)}: {escape(s.note)}'>{text}</td>")
        body.append(f"<tr><th class='name'>{escape(a)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th class='name'>row − column (pp)</th>{head}</tr>{''.join(body)}</table>"


def per_seed_table(rows: RowsBySeed, names: Sequence[str]) -> str:
    """The raw values of every seed: acc first, acc final (%), tokens per problem."""
    shown = [("eval/acc_first", "first", "pct"), (FINAL, "final", "pct"), ("eval/tokens_mean", "tokens", "tok")]
    seeds = list(rows)
    head = "".join(f"<th colspan='{len(shown)}'>seed {escape(str(s))}</th>" for s in seeds)
    sub = "".join(f"<th>{h}</th>" for _ in seeds for _, h, _ in shown)
    body = []
    for n in names:
        got = {k: values_of(rows, n, k) for k, _, _ in shown}
        body.append(f"<tr><td class='name'>{escape(n)}</td>" + "".join(
            f"<td>{_num(got[k][s], kind) if s in got[k] else '—'}</td>" for s in seeds for k, _, kind in shown) + "</tr>")
    return (f"<table><tr><th class='name' rowspan='2'>row</th>{head}</tr><tr>{sub}</tr>"
            f"{''.join(body)}</table>")


def seconds_table(seconds: dict[Any, dict[str, float]]) -> str:
    """Seconds per stage (rows) and seed (columns), with the total of each seed."""
    seeds = list(seconds)
    stages = list(dict.fromkeys(stage for s in seeds for stage in seconds[s]))
    head = "".join(f"<th>seed {escape(str(s))}</th>" for s in seeds)
    body = "".join(f"<tr><td class='name'>{escape(st)}</td>" + "".join(
        f"<td>{seconds[s][st]:.0f}</td>" if st in seconds[s] else "<td>—</td>" for s in seeds) + "</tr>" for st in stages)
    total = "".join(f"<td>{sum(seconds[s].values()):.0f}</td>" for s in seeds)
    return (f"<table><tr><th class='name'>stage (s)</th>{head}</tr>{body}"
            f"<tr><th class='name'>total</th>{total}</tr></table>")


# ----------------------------------------------------------------------------------- the page


def render_compare(title: str, results: dict[str, Any], curves: dict[str, list[dict]] | None = None,
                   curves_seed: Any = None) -> str:
    """The HTML page of `s2r compare`'s results.json; `curves` (row name -> trajectory records of one
    seed, `curves_seed`) adds their risk–coverage curves."""
    rows = results["rows"]
    summary = summarise(rows, KEYS)
    names, seeds = row_names(rows), len(rows)
    ranked = ranking(summary)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{CSS}{EXTRA_CSS}</style></head><body><h1>{escape(title)}</h1>",
             f"<p class='meta'>{len(names)} rows · seeds {escape(', '.join(map(str, rows)))} · "
             f"{escape(str(results.get('test_problems', '?')))} test problems per seed. Each cell: the mean over "
             "the seeds ± the half-width of its 95% Student-t interval; one value where one seed has the row; "
             "(n=…) where fewer seeds than all do; — where no seed has it.</p>"]
    parts.append("<h2>Every row</h2>" + summary_table(summary, ranked, seeds))

    stat = {n: summary[n][FINAL] for n in ranked}
    tokens = {n: summary[n]["eval/tokens_mean"]["mean"] for n in ranked}
    points = {n: (tokens[n], stat[n]["mean"], stat[n]["low"], stat[n]["high"])
              for n in ranked if stat[n]["n"] and tokens[n] is not None}
    width = max(640, 60 + 80 * len(names))
    parts.append("<h2>Accuracy and compute</h2><div class='charts'>")
    if points:
        parts.append(scatter_chart(points, "Final accuracy vs tokens per problem (95% interval over seeds)",
                                   "tokens per problem (mean over seeds)", "final accuracy"))
    parts.append(bar_chart(ranked, {"first attempt": [summary[n]["eval/acc_first"]["mean"] for n in ranked],
                                    "final answer": [stat[n]["mean"] for n in ranked]},
                           "Accuracy: first attempt vs final answer (mean over seeds)", y_max=1.0, width=width))
    parts.append("</div>")

    parts.append("<h2>Which differences exceed the seed spread</h2><p class='meta'>Final accuracy, row minus "
                 "row, paired by seed (the same test problems): the mean difference in percentage points and its "
                 "95% t interval. Separated (coloured) when the interval excludes 0; with many pairs, "
                 "about 1 in 20 pairs that do not differ is separated by chance. Rows are in the order of their mean "
                 "final accuracy.</p>")
    parts.append(separation_list(rows, pairs_to_compare(names, ranked)))
    if len(ranked) > 2:
        parts.append(separation_matrix(rows, ranked))

    parts.append("<h2>Per seed</h2>" + per_seed_table(rows, ranked))
    if results.get("seconds"):
        parts.append("<h2>Time per stage</h2>" + seconds_table(results["seconds"]))

    scored = {n: c for n, rs in (curves or {}).items() if rs and (c := risk_coverage_curve(rs))}
    if scored:
        seed = f" (seed {escape(str(curves_seed))})" if curves_seed is not None else ""
        parts.append(f"<h2>Knowing when it is wrong{seed}</h2>" + line_chart(
            {n: [(cov, risk) for _, cov, risk in c["points"]] for n, c in scored.items()},
            "Risk–coverage: answering only above a certainty threshold", "coverage (share answered)",
            "risk (share of answered wrong)", width=_legend_width(list(scored))))
        parts.append("<p class='meta'>Certainty: " + " · ".join(
            f"{escape(n)}: " + ", ".join(f"{escape(k)} ({v})" for k, v in c["signals"].items())
            for n, c in scored.items()) + ". Definitions: docs/metrics-selective.md.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table for the terminal: row, final accuracy (mean ± half-width), first accuracy,
    tokens per problem, seeds; rows ranked by final accuracy."""
    summary = summarise(results["rows"], KEYS)
    ranked = ranking(summary)
    heads = ("row", "acc final %", "acc first %", "tokens", "seeds")
    table = [heads] + [(n, fmt_stat(summary[n][FINAL], "pct"), fmt_stat(summary[n]["eval/acc_first"], "pct"),
                        fmt_stat(summary[n]["eval/tokens_mean"], "tok"), str(summary[n][FINAL]["n"])) for n in ranked]
    widths = [max(len(r[i]) for r in table) for i in range(len(heads))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in table]
    return "\n".join(lines + [f"(mean over {len(results['rows'])} seeds ± half-width of the 95% t interval)"])
