"""`s2r compare`'s statistics over seeds, by hand, and its HTML and text reports."""

import pytest

from s2r.compare_report import KEYS, format_summary, pairs_to_compare, ranking, render_compare
from s2r.compare_stats import interval, separated, summarise, t_quantile


def row(name, **metrics):
    return {"name": name, "metrics": {f"eval/{k}": v for k, v in metrics.items()}}


def test_t_quantiles_match_the_tables():
    # t_{0.975, df} from any printed table (3 decimals); beyond df 100 the expansion, then the normal's 1.960
    for df, t in [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (10, 2.228), (30, 2.042),
                  (60, 2.000), (100, 1.984), (120, 1.980), (10**6, 1.960)]:
        assert t_quantile(df) == pytest.approx(t, abs=5e-4)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_interval_by_hand():
    # [1, 2, 3]: mean 2, sd 1, t(2) = 4.303, half-width 4.303 / √3 = 2.484
    mean, low, high = interval([1, 2, 3])
    assert mean == 2 and low == pytest.approx(2 - 2.484, abs=1e-3) and high == pytest.approx(2 + 2.484, abs=1e-3)
    # [0.5, 0.7]: mean 0.6, sd 0.1414, t(1) = 12.706, half-width 12.706 · 0.1414 / √2 = 1.2706
    mean, low, high = interval([0.5, 0.7])
    assert mean == pytest.approx(0.6) and high - mean == pytest.approx(1.2706, abs=1e-3)
    assert interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # no spread, no width
    assert interval([0.4]) == (0.4, None, None)  # one seed: no interval
    assert interval([]) == (None, None, None)


ROWS = {  # three seeds; "bi" is missing in seed 2; "sc" has an undefined ratio (None) in seed 1
    "0": [row("base", acc_first=0.5, acc_final=0.5, tokens_mean=100.0), row("bi", acc_first=0.5, acc_final=0.6),
          row("sc", acc_first=0.5, acc_final=0.8, cl=0.9)],
    "1": [row("base", acc_first=0.6, acc_final=0.6, tokens_mean=120.0), row("bi", acc_first=0.5, acc_final=0.9),
          row("sc", acc_first=0.6, acc_final=0.9, cl=None)],
    "2": [row("base", acc_first=0.7, acc_final=0.7, tokens_mean=140.0),
          row("sc", acc_first=0.7, acc_final=0.95, cl=0.7)],
}


def test_summarise_skips_missing_rows_and_none():
    s = summarise(ROWS, ["eval/acc_final", "eval/cl", "eval/tokens_mean"])
    assert list(s) == ["base", "bi", "sc"]
    base = s["base"]["eval/acc_final"]  # [0.5, 0.6, 0.7]: mean 0.6, sd 0.1, half-width 4.303 · 0.1 / √3 = 0.2484
    assert base["n"] == 3 and base["mean"] == pytest.approx(0.6) and base["high"] == pytest.approx(0.8484, abs=1e-3)
    assert s["bi"]["eval/acc_final"]["n"] == 2 and s["bi"]["eval/acc_final"]["mean"] == pytest.approx(0.75)
    assert s["sc"]["eval/cl"]["n"] == 2 and s["sc"]["eval/cl"]["mean"] == pytest.approx(0.8)  # None of seed 1 skipped
    assert s["bi"]["eval/tokens_mean"] == {"mean": None, "low": None, "high": None, "n": 0}


def test_separated_by_hand():
    # sc − base per seed: 0.3, 0.3, 0.25 -> mean 0.2833, sd 0.0289, half-width 4.303 · 0.0289 / √3 = 0.0717
    s = separated(ROWS, "eval/acc_final", "sc", "base")
    assert s.n == 3 and s.diff == pytest.approx(0.2833, abs=1e-4)
    assert s.low == pytest.approx(0.2116, abs=1e-3) and s.high == pytest.approx(0.3550, abs=1e-3)
    assert s.separated is True and s.note == "sc higher"
    # reversed: the same interval mirrored, "sc higher" still
    r = separated(ROWS, "eval/acc_final", "base", "sc")
    assert r.separated is True and r.high == pytest.approx(-s.low) and r.note == "sc higher"
    # bi − base over the two seeds both have: 0.1, 0.3 -> mean 0.2, sd 0.1414, half-width 12.706 · 0.1 = 1.27
    b = separated(ROWS, "eval/acc_final", "bi", "base")
    assert b.n == 2 and b.diff == pytest.approx(0.2) and b.low == pytest.approx(-1.0706, abs=1e-3)
    assert b.separated is False and b.note == "within the seed spread"
    # acc_first of sc and base: identical every seed -> differences 0, interval [0, 0] holds 0
    assert separated(ROWS, "eval/acc_first", "sc", "base").separated is False
    one = {"0": ROWS["0"]}
    o = separated(one, "eval/acc_final", "sc", "base")
    assert o.separated is None and o.n == 1 and o.diff == pytest.approx(0.3) and "not decidable" in o.note
    assert separated(ROWS, "eval/cl", "sc", "base").note == "no seed has both"


def test_separated_needs_the_interval_to_exclude_zero():
    # differences [0.2, 0.3, 0.25]: mean 0.25, sd 0.05, hw 0.124 -> separated; [0.1, 0.2, 0.3]: hw 0.248 -> not
    def rows(diffs):
        return {str(i): [row("a", acc_final=0.5 + d), row("b", acc_final=0.5)] for i, d in enumerate(diffs)}

    assert separated(rows([0.2, 0.3, 0.25]), "eval/acc_final", "a", "b").separated is True
    s = separated(rows([0.1, 0.2, 0.3]), "eval/acc_final", "a", "b")
    assert s.separated is False and s.low == pytest.approx(0.2 - 0.2484, abs=1e-3)


def test_ranking_and_pairs():
    s = summarise(ROWS, KEYS)
    assert ranking(s) == ["sc", "bi", "base"]
    pairs = pairs_to_compare(["base", "bi", "sc"], ranking(s))
    assert pairs == [("sc", "base"), ("bi", "base"), ("sc", "bi")]  # each unordered pair once


def att(grade, verdict=None):
    return {"answer": "1", "grade": grade, "verdict": verdict}


def record(i, ok, certainty):
    return {"id": str(i), "problem": "p", "gold": "1", "sample": 0, "attempts": [att("correct" if ok else "incorrect")],
            "tokens": 10, "truncated": False, "certainty": certainty}


def results_of(rows):
    return {"seeds": [int(s) for s in rows], "test_problems": 3, "rows": rows,
            "seconds": {s: {"sft": 12.0, "eval": 3.5} for s in rows}, "summary": summarise(rows, KEYS)}


def test_render_three_seeds_with_hostile_names_and_curves():
    rows = {seed: rs + [row("<script>alert(1)</script>", acc_first=0.1, acc_final=None, tokens_mean=9.0)]
            for seed, rs in ROWS.items()}
    curves = {"sc": [record(0, True, 1.0), record(1, False, 0.0), record(2, True, 0.5)],
              "base": [{**record(0, True, None), "certainty": None}]}  # no signal: no curve
    page = render_compare("compare <b>", results_of(rows), curves=curves, curves_seed=0)
    assert "<script" not in page and "&lt;script&gt;" in page and "compare &lt;b&gt;" in page
    for name in ("base", "bi", "sc"):
        assert f">{name}<" in page
    assert "(n=2)" in page  # bi has two seeds of three
    assert "Risk–coverage" in page and "sc: stated (3)" in page
    assert "sc higher" in page and "within the seed spread" in page
    assert "CL %" in page and "verifier TPR %" not in page  # columns only where some row has a value
    assert page.count("<svg") == 3 and "seed 2" in page and "sft" in page


def test_render_one_seed_and_the_text_table():
    results = results_of({"7": ROWS["0"]})
    page = render_compare("one", results)
    assert "not decidable" in page and " ± " not in page.split("<h2>Every row</h2>")[1].split("</table>")[0]
    assert "Risk–coverage" not in page
    text = format_summary(results_of(ROWS))
    lines = text.splitlines()
    assert lines[0].split() == ["row", "acc", "final", "%", "acc", "first", "%", "tokens", "seeds"]
    assert lines[1].split()[0] == "sc" and "—" in lines[2]  # bi has no tokens
    assert lines[3].startswith("base") and "60.0 ± 24.8" in lines[3] and "120 ± 50" in lines[3]
    assert format_summary(results).splitlines()[1].split()[:2] == ["sc", "80.0"]


def test_render_without_any_value():
    page = render_compare("empty", results_of({"0": [row("x", acc_final=None)], "1": []}))
    assert ">x<" in page and "no seed has both" not in page  # one row: no pairs
    assert "Final accuracy vs tokens" not in page  # no point to place


def test_scatter_zooms_to_round_ticks():
    import re

    from s2r.compare_report import scatter_chart

    # y from 0.58 (a's bar, less 0.02) to 0.71: four steps of 5% from 55% hold it
    svg = scatter_chart({"a": (100, 0.62, 0.60, 0.64), "b": (200, 0.66, 0.63, 0.69)}, "t", "x", "y")
    assert re.findall(r'fill="#555">(\d+%)<', svg) == ["55%", "60%", "65%", "70%", "75%"]
    # a bar past 100% (a t interval need not stay in [0, 1]) is cut at the top of the plot
    svg = scatter_chart({"<c>": (10, 0.6, 0.2, 1.3)}, "t", "x", "y")
    assert re.findall(r'fill="#555">(\d+%)<', svg) == ["0%", "25%", "50%", "75%", "100%"] and "&lt;c&gt;" in svg
